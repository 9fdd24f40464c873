"""fit's data handling (every source form trains on every row once per pass, every batch validated) and
its checkpoints (safetensors + JSON, atomic, verified, never unpickled)."""

import json
import pickle
import re

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
    with pytest.raises(TypeError, match="acts.*complex"):
        S.TopKSAE(D, 16, k=2).fit(z, progress=False)
    with pytest.raises(TypeError, match="acts batch 1.*complex"):
        S.TopKSAE(D, 16, k=2).fit([z.real, z], batch_size=20, init_samples=10, progress=False)
    with pytest.raises(TypeError, match="x.*complex"):
        S.TopKSAE(D, 16, k=2).encode(z)


# ---- checkpoints ----

KW = dict(max_steps=40, eval_every=10, progress=False, patience=None, batch_size=64)


@pytest.fixture(scope="module")
def x():
    return torch.randn(300, D, generator=torch.Generator().manual_seed(1)) * 2 + 1


@pytest.fixture(scope="module")
def reference(x):
    return S.ReluSAE(D, 16).fit(x, **KW)


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


class Marker:
    """Unpickling this object creates the file ``path`` (what a malicious pickle could do instead)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_at_checkpoint_path_is_never_unpickled(x, reference, tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Marker(probe))).close()
    assert probe.exists()  # the payload works: unpickling it would leave the marker
    for name, write in (("raw.pkl", lambda p, m: p.write_bytes(pickle.dumps({"sae": Marker(m)}))),
                        ("old.pt", lambda p, m: torch.save({"sae": Marker(m), "state": {}}, p))):
        ck, marker = tmp_path / name, tmp_path / f"{name}.marker"
        write(ck, marker)
        with pytest.warns(UserWarning, match=re.escape(str(ck)) + ".*pickle.*restarts from scratch"):
            sae = S.ReluSAE(D, 16).fit(x, checkpoint=ck, resume=True, **KW)
        assert not marker.exists()
        assert same_weights(sae, reference)  # trained from scratch
        assert json.loads(ck.read_text())["format"] == "univ.sae.fit-checkpoint"  # replaced by a real one


def test_checkpoint_files_safetensors_and_json(x, tmp_path):
    ck = tmp_path / "run" / "ck"
    S.ReluSAE(D, 16).fit(x, checkpoint=ck, checkpoint_every=10, **KW)
    manifest = json.loads(ck.read_text())
    assert manifest["state"]["state"]["step"] == 40 and manifest["state"]["data"]["source"] == "tensor"
    files = sorted(p.name for p in ck.parent.iterdir())
    assert files == ["ck", manifest["tensors"]] and manifest["tensors"].endswith(".safetensors")
    from safetensors.torch import load_file

    tensors = load_file(str(ck.parent / manifest["tensors"]))
    assert {"sae.W_enc", "since_fired", "optimizer.0.exp_avg"} <= set(tensors)


@pytest.mark.parametrize("damage", ["truncated tensors", "missing tensors", "partial manifest", "flipped byte"])
def test_damaged_checkpoint_warns_and_restarts(x, reference, tmp_path, damage):
    ck = tmp_path / "ck"
    S.ReluSAE(D, 16).fit(x, checkpoint=ck, **{**KW, "max_steps": 20})
    tensors = ck.parent / json.loads(ck.read_text())["tensors"]
    if damage == "truncated tensors":
        tensors.write_bytes(tensors.read_bytes()[:100])
    elif damage == "missing tensors":
        tensors.unlink()
    elif damage == "partial manifest":
        ck.write_text(ck.read_text()[:50])
    else:
        blob = bytearray(tensors.read_bytes())
        blob[-3] ^= 0xFF
        tensors.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match=re.escape(str(ck)) + ".*restarts from scratch"):
        sae = S.ReluSAE(D, 16).fit(x, checkpoint=ck, resume=True, **KW)
    assert same_weights(sae, reference)


def test_checkpoint_of_another_sae_refused(x, tmp_path):
    ck = tmp_path / "ck"
    S.ReluSAE(D, 16).fit(x, checkpoint=ck, **{**KW, "max_steps": 10})
    with pytest.raises(ValueError, match="checkpoint.*another SAE"):
        S.ReluSAE(D, 24).fit(x, checkpoint=ck, resume=True, **KW)
    with pytest.raises(ValueError, match="acts.*same data"):
        S.ReluSAE(D, 16).fit(list(x.split(50)), checkpoint=ck, resume=True, **KW)


def test_resume_of_a_one_shot_generator(x, tmp_path):
    """A generator cannot be rewound: the resumed run is handed a fresh one and skips what was used."""
    kw = {**KW, "batch_size": 32, "init_samples": 64, "max_steps": 1000}
    ref = S.JumpReluSAE(D, 16).fit((b for b in x.split(50)), **kw)

    def crash(step, sae, rec):
        if step == 6:
            raise KeyboardInterrupt

    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        S.JumpReluSAE(D, 16).fit((b for b in x.split(50)), checkpoint=ck, checkpoint_every=3, callback=crash,
                                 **{**kw, "eval_every": 2})
    resumed = S.JumpReluSAE(D, 16).fit((b for b in x.split(50)), checkpoint=ck, resume=True,
                                       **{**kw, "eval_every": 2})
    again = S.JumpReluSAE(D, 16).fit((b for b in x.split(50)), **{**kw, "eval_every": 2})
    assert resumed.n_steps_ == again.n_steps_ == ref.n_steps_ == 10
    assert same_weights(resumed, again)


@pytest.mark.parametrize("max_steps, eval_every", [(100, 10), (50, 5), (37, 4)])
def test_a_capped_run_takes_max_steps_and_decays_to_zero(max_steps, eval_every, monkeypatch):
    # an evaluation at exactly 80% of the cap used to start a decay of a fifth of the steps so far (16 of
    # 100), which ended the run at 96 steps
    x = torch.cat(id_batches())[:, 1:]
    sae, opts, lrs = S.TopKSAE(D - 1, 16, k=2, seed=0), [], []
    real_adam, step = torch.optim.Adam, sae.training_step
    monkeypatch.setattr(torch.optim, "Adam", lambda *a, **kw: opts.append(real_adam(*a, **kw)) or opts[-1])
    monkeypatch.setattr(sae, "training_step", lambda *a: lrs.append(opts[0].param_groups[0]["lr"]) or step(*a))
    sae.fit(x, batch_size=32, max_steps=max_steps, eval_every=eval_every, patience=None, warmup_steps=2,
            progress=False)
    assert sae.n_steps_ == len(lrs) == max_steps
    start = eval_every * -(-int(0.8 * max_steps) // eval_every)  # the first evaluation at or past 80%
    assert lrs[start - 1] == pytest.approx(lrs[5]) and lrs[-1] < lrs[-2] < lrs[start - 1]
    assert lrs[-1] == pytest.approx(lrs[5] / (max_steps - start))  # the last step of a decay to max_steps
