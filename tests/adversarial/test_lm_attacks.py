"""GCG, embedding PGD and their controls on a hand-built LM whose optimal substitution is known: the next token
is TARGET exactly when the TRIGGER token is in the context."""

import pytest
import torch
from torch import nn

from tests.named_errors import assert_named_error
from univ.adversarial import lm as alm

V, TRIGGER, TARGET, DEFAULT, FILLER = 20, 7, 3, 5, 11
FORBIDDEN = [0, 1]


class TriggerLM(nn.Module):
    """One-hot embeddings (d = V); the residual stream after its one block is the running sum of the embeddings
    (causal); logits = resid @ U + b. U[TRIGGER, TARGET] = 5 and b[DEFAULT] = 2, every other weight is small:
    TARGET wins exactly when the context holds TRIGGER, so for one editable slot the unique optimal substitution
    is TRIGGER."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.eye(V))
        U = 0.1 * torch.randn(V, V, generator=g)
        U[:, TARGET] = -0.05
        U[TRIGGER, TARGET] = 5.0
        self.U = nn.Parameter(U)
        b = torch.zeros(V)
        b[DEFAULT] = 2.0
        self.b = nn.Parameter(b)

    @property
    def embedding_matrix(self):
        return self.W

    def embed(self, ids):
        return self.W[ids]

    def forward_embeds(self, emb, resid=False):
        h = emb.cumsum(1)
        logits = h @ self.U + self.b
        return (logits, [h]) if resid else logits


@pytest.fixture(scope="module")
def model():
    return TriggerLM().eval()


def prompt():
    return torch.tensor([2, 12, 13, 14, 15, 16])


def test_trigger_model_is_what_the_test_assumes(model):
    ids = prompt()
    assert alm.evaluate(model, ids[None], alm.TargetToken(TARGET))[1].item() is False
    ids[3] = TRIGGER
    assert alm.evaluate(model, ids[None], alm.TargetToken(TARGET))[1].item() is True


@pytest.mark.parametrize("slot", [1, 3, 5])
def test_gcg_in_place_finds_the_trigger(model, slot):
    res = alm.gcg(model, prompt(), alm.TargetToken(TARGET), [slot], steps=5, search_width=8, topk=3,
                  forbidden=FORBIDDEN)
    assert res.success
    assert res.ids[slot].item() == TRIGGER
    assert res.n_edits == 1
    assert torch.equal(res.ids[torch.arange(6) != slot], prompt()[torch.arange(6) != slot])


def test_gcg_suffix_uses_one_edit_and_stops_early(model):
    ids, pos = alm.with_suffix(prompt(), 4, FILLER)
    assert pos.tolist() == [6, 7, 8, 9]
    res = alm.gcg(model, ids, alm.TargetToken(TARGET), pos, steps=20, search_width=16, topk=2, forbidden=FORBIDDEN)
    assert res.success and res.n_edits == 1 and res.steps == 1
    assert TRIGGER in res.ids[pos].tolist()


def test_gcg_respects_forbidden_tokens(model):
    """With the trigger forbidden the target is unreachable from one slot: GCG must fail, never insert it."""
    res = alm.gcg(model, prompt(), alm.TargetToken(TARGET), [4], steps=6, search_width=32, topk=V,
                  forbidden=[*FORBIDDEN, TRIGGER])
    assert not res.success
    assert TRIGGER not in res.ids.tolist()


def test_loss_maximisation_pushes_the_clean_token_off(model):
    clean = int(model.forward_embeds(model.embed(prompt()[None]))[0, -1].argmax())
    assert clean == DEFAULT
    res = alm.gcg(model, prompt(), alm.AvoidToken(clean), [2], steps=5, search_width=16, topk=4, forbidden=FORBIDDEN)
    assert res.success and res.ids[2].item() == TRIGGER  # the only token that outbids b[DEFAULT]


DETECTED = 9


def detector_sae():
    """A TopK SAE (k=1) on the running sum whose latent 0 fires exactly when DETECTED is in the context; the other
    latents never fire. DETECTED barely moves the logits, so raising latent 0 while keeping the output is possible."""
    from univ.sae import TopKSAE

    sae = TopKSAE(V, 4, k=1)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[DETECTED, 0] = 1.0
        sae.b_enc.copy_(torch.tensor([-0.5, -1.0, -1.0, -1.0]))
        sae.b_dec.zero_()
    return sae


@pytest.mark.parametrize("raise_", [True, False])
def test_sae_targeted_gcg_flips_the_latent_and_keeps_the_output(model, raise_):
    sae = detector_sae()
    ids = prompt()
    if not raise_:
        ids[2] = DETECTED
    clean = model.forward_embeds(model.embed(ids[None]))[0, -1].detach()
    obj = alm.MoveLatent(sae, 0, 0, clean, raise_=raise_, keep=1.0)
    assert not alm.evaluate(model, ids[None], obj)[1].item()
    res = alm.gcg(model, ids, obj, [2], steps=5, search_width=16, topk=4, forbidden=FORBIDDEN)
    assert res.success
    z = sae.encode(alm.last_residuals(model, res.ids[None])[:, 0])[0]
    assert (z[0] > 0) == raise_
    if raise_:
        assert res.ids[2].item() == DETECTED  # the one token that turns the latent on
    else:
        assert res.ids[2].item() not in (DETECTED, TRIGGER)  # off, and the output (argmax) kept
    assert int(model.forward_embeds(model.embed(res.ids[None]))[0, -1].argmax()) == int(clean.argmax())


def test_random_substitution_control_has_the_known_success_rate(model):
    """One slot, 18 allowed tokens of which 17 differ from the current one: success iff TRIGGER is drawn, 1/17."""
    n = 680
    cand = torch.stack([alm.random_substitution(prompt(), [4], 1, V, forbidden=FORBIDDEN, seed=s) for s in range(n)])
    assert ((cand != prompt()).sum(1) == 1).all()
    assert not torch.isin(cand[:, 4], torch.tensor(FORBIDDEN)).any()
    rate = alm.evaluate(model, cand, alm.TargetToken(TARGET))[1].double().mean().item()
    # binomial sd at p = 1/17, n = 680 is 0.009: 4 sd either side
    assert abs(rate - 1 / 17) < 0.036


def test_embedding_pgd_and_its_nearest_token_projection(model):
    obj = alm.TargetToken(TARGET)
    small = alm.embedding_pgd(model, prompt(), obj, [4], eps=0.6, norm="2", steps=30, forbidden=FORBIDDEN)
    # 0.6 along the trigger axis lifts the target logit by 3 > 2: the continuous attack works ...
    assert small.success and small.delta.norm() <= 0.6 + 1e-5
    # ... but the nearest token is still the original one, so the projection fails
    assert small.n_projected_changes == 0 and not small.projected_success
    big = alm.embedding_pgd(model, prompt(), obj, [4], eps=3.0, norm="2", steps=30, forbidden=FORBIDDEN)
    assert big.projected_success and big.projected_ids[4].item() == TRIGGER
    linf = alm.embedding_pgd(model, prompt(), obj, [4], eps=0.5, norm="inf", steps=30, forbidden=FORBIDDEN)
    assert linf.delta.abs().max() <= 0.5 + 1e-6 and linf.success
    r = alm.random_embedding(small.delta, seed=1)
    assert torch.isclose(r.norm(), small.delta.norm())
    assert not torch.allclose(r, small.delta)


def test_last_residuals_reads_the_running_sum(model):
    ids = torch.stack([prompt(), prompt().flip(0)])
    res = alm.last_residuals(model, ids)
    assert res.shape == (2, 1, V)
    assert torch.allclose(res[:, 0], torch.nn.functional.one_hot(ids, V).float().sum(1))


@pytest.mark.parametrize("call, exc, fragment", [
    (lambda m: alm.gcg(m, prompt().float(), alm.TargetToken(TARGET), [1]), ValueError, "ids: expected a 1-D integer"),
    (lambda m: alm.gcg(m, torch.tensor([1, 99]), alm.TargetToken(TARGET), [1]), ValueError, r"ids: .*\[0, 20\)"),
    (lambda m: alm.gcg(m, prompt(), alm.TargetToken(TARGET), [6]), ValueError, "positions: expected distinct"),
    (lambda m: alm.gcg(m, prompt(), alm.TargetToken(TARGET), [1, 1]), ValueError, "positions: expected distinct"),
    (lambda m: alm.gcg(m, prompt(), alm.TargetToken(TARGET), [1], steps=0), ValueError, "steps: must be >= 1"),
    (lambda m: alm.gcg(m, prompt(), alm.TargetToken(TARGET), [1], forbidden=range(V)), ValueError,
     "forbidden: every token"),
    (lambda m: alm.gcg(nn.Linear(2, 2), prompt(), alm.TargetToken(TARGET), [1]), ValueError, "model: expected"),
    (lambda m: alm.embedding_pgd(m, prompt(), alm.TargetToken(TARGET), [1], eps=-1.0), ValueError, "eps"),
    (lambda m: alm.embedding_pgd(m, prompt(), alm.TargetToken(TARGET), [1], eps=1.0, norm="l7"), ValueError,
     "norm: unknown norm"),
    (lambda m: alm.random_substitution(prompt(), [1, 2], 3, V), ValueError, "n_edits: must satisfy"),
    (lambda m: alm.TargetToken(-1), ValueError, "target: must be >= 0"),
])
def test_bad_input_names_the_argument(model, call, exc, fragment):
    assert_named_error(lambda: call(model), exc, fragment)
