"""fit's data handling: every source form trains on every row once per pass, every batch validated."""

import pytest
import torch

import univ.sae as S

N_BATCHES, ROWS, D = 10, 32, 8


class Loader:
    """A re-iterable source, as a DataLoader is: each ``iter`` starts a new pass."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


SOURCES = {  # name -> (make the source from the batches, one-shot?)
    "tensor": (lambda b: torch.cat(b), False),
    "list": (lambda b: b, False),
    "iterable": (lambda b: Loader(b), False),
    "callable": (lambda b: (lambda: (t for t in b)), False),
    "generator": (lambda b: (t for t in b), True),
    "iterator": (lambda b: iter(b), True),
}


def id_batches():
    """10 batches of 32 rows; column 0 holds each row's id (0..319), so training inputs can be traced."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_BATCHES * ROWS, D, generator=g)
    x[:, 0] = torch.arange(N_BATCHES * ROWS, dtype=torch.float32)
    return list(x.split(ROWS))


def spy_on_training(sae, seen: list):
    """Record the row ids of every batch training_step receives (inputs are not rescaled: normalize=False)."""
    step = sae.training_step

    def spy(xn, *args):
        seen.append(xn[:, 0].detach().round().long())
        return step(xn, *args)

    sae.training_step = spy
    return sae


@pytest.mark.parametrize("batch_size", [32, 40, 48])
@pytest.mark.parametrize("form", list(SOURCES))
def test_every_row_trained_exactly_once_per_pass(form, batch_size):
    make, one_shot = SOURCES[form]
    n = N_BATCHES * ROWS
    if not one_shot and n % batch_size:
        batch_size = 40  # a whole number of steps per pass, so that "twice each" is exact
    passes = 1 if one_shot else 2
    seen: list = []
    sae = spy_on_training(S.TopKSAE(D, 16, k=2), seen)
    sae.fit(make(id_batches()), batch_size=batch_size, max_steps=1000 if one_shot else passes * n // batch_size,
            init_samples=100, normalize=False, patience=None, progress=False)
    counts = torch.bincount(torch.cat(seen), minlength=n)
    assert len(counts) == n and bool((counts == passes).all()), (form, counts.tolist())
    assert sae.n_steps_ == len(seen) == (-(-n // batch_size) if one_shot else passes * n // batch_size)


@pytest.mark.parametrize("init_samples", [64, 10_000])
def test_nan_in_batch_7_of_a_generator_raises(init_samples):
    batches = id_batches()
    batches[7] = batches[7].clone()
    batches[7][5, 3] = float("nan")
    with pytest.raises(ValueError, match=r"acts batch 7.*NaN"):
        S.ReluSAE(D, 16).fit((b for b in batches), batch_size=32, init_samples=init_samples, max_steps=1000,
                             progress=False)


def test_complex_activations_refused():
    z = torch.randn(40, D, dtype=torch.complex64)
    with pytest.raises(ValueError, match="acts.*complex"):
        S.TopKSAE(D, 16, k=2).fit(z, progress=False)
    with pytest.raises(ValueError, match="acts batch 1.*complex"):
        S.TopKSAE(D, 16, k=2).fit([z.real, z], batch_size=20, init_samples=10, progress=False)
    with pytest.raises(ValueError, match="x.*dtype"):
        S.TopKSAE(D, 16, k=2).encode(z)
