"""univ.group_measures on constructed networks whose irreps are known by construction."""

import math

import numpy as np
import pytest
import torch

from univ import group_measures as gm
from univ import groups as gr


@pytest.fixture(scope="module")
def S4():
    G = gr.symmetric(4)
    return G, {f.name: f for f in gr.irreps(G)}


def _flat(M):
    return M.reshape(len(M), -1)


def test_embedding_of_one_irrep_is_all_that_irrep(S4):
    G, ir = S4
    E = _flat(ir["standard"].matrices) @ np.random.default_rng(0).standard_normal((9, 5))
    fr = {n: gm.element_fraction(E, G, [n]) for n in ir if n != "trivial"}
    assert fr["standard"] == pytest.approx(1.0)
    assert all(abs(v) < 1e-10 for n, v in fr.items() if n != "standard")
    assert gm.key_irreps(fr) == ["standard"]
    assert gm.key_irreps({"standard": 0.5, "2d": 0.06}, chance={"2d": 0.04}) == ["standard"]
    # a random embedding spreads over the irreps in proportion to d^2 (chance), and sums to 1
    R = np.random.default_rng(1).standard_normal((24, 4000))
    rf = {n: gm.element_fraction(R, G, [n]) for n in ir if n != "trivial"}
    assert sum(rf.values()) == pytest.approx(1.0)
    for n, v in rf.items():
        assert v == pytest.approx(gm.chance_fraction(G, n), abs=0.02)


def test_hidden_products_and_logit_traces_have_known_answers(S4):
    G, ir = S4
    n = len(G)
    a, b = np.divmod(np.arange(n * n), n)
    rho = ir["2d"].matrices
    H = _flat(rho[a] @ rho[b])  # the product rho(a) rho(b) = rho(ab), what the hidden layer must compute
    assert gm.pair_fraction(H, G, ["2d"]) == pytest.approx(1.0)
    assert gm.pair_fraction(H, G, ["standard"]) == pytest.approx(0.0, abs=1e-10)
    cols = np.concatenate([H[:, :2], _flat(ir["standard"].matrices)[a][:, :1]], 1)  # two 2d columns, one of a only
    assert np.allclose(gm.pair_fraction(cols, G, ["2d"], per_column=True), [1.0, 1.0, 0.0], atol=1e-10)
    chi = ir["standard"].character
    L = 5.0 * chi[G.table[:, G.inverse][G.table.reshape(-1)]]  # logits = 5 chi(a b c^-1): the paper's algorithm
    sim = gm.trace_similarity(L, G)
    assert sim["standard"] == pytest.approx(1.0)
    assert all(abs(v) < 1e-10 for k, v in sim.items() if k not in ("standard", "trivial"))
    assert math.isnan(sim["trivial"])
    assert gm.logit_fraction(L, G, ["standard"]) == pytest.approx(1.0)
    # restricted to the key irrep nothing changes; excluding it leaves uniform logits: loss log |G|
    full = float(torch.nn.functional.cross_entropy(torch.tensor(L), torch.tensor(G.table.reshape(-1))))
    assert gm.restricted_loss(L, G, ["standard"]) == pytest.approx(full, rel=1e-9)
    assert gm.excluded_loss(L, G, "standard") == pytest.approx(math.log(n), rel=1e-9)
    assert gm.excluded_loss(L, G, "standard_sign") == pytest.approx(full, rel=1e-9)
    assert gm.restricted_loss(L, G, ["sign"]) == pytest.approx(math.log(n), rel=1e-9)


def test_mixture_of_two_irreps_splits_its_variance(S4):
    G, ir = S4
    idx = G.table[:, G.inverse][G.table.reshape(-1)]
    A, B = ir["standard"].character[idx], ir["2d"].character[idx]
    A, B = A - A.mean(1, keepdims=True), B - B.mean(1, keepdims=True)
    L = A / np.linalg.norm(A) * 3 + B / np.linalg.norm(B) * 4  # orthogonal parts: 9/25 and 16/25 of the variance
    assert gm.logit_fraction(L, G, ["standard"]) == pytest.approx(9 / 25)
    assert gm.logit_fraction(L, G, ["2d"]) == pytest.approx(16 / 25)
    assert gm.trace_similarity(L, G, ["standard"])["standard"] == pytest.approx(3 / 5)


def test_learning_order_from_checkpoints():
    steps = {0: {"x": 0.1, "y": 0.1}, 100: {"x": 0.8, "y": 0.2}, 200: {"x": 0.9, "y": 0.7}, 300: {"x": 0.9, "y": 0.8}}
    assert gm.learning_order(steps, ["x", "y"]) == {"x": 100, "y": 200}


def test_group_mlp_with_irrep_embeddings_is_measured_exactly(S4):
    from univ.group_models import GroupMLP

    G, ir = S4
    m = GroupMLP(n_elements=24, d_embed=9, d_hidden=16)
    with torch.no_grad():
        m.W_left.copy_(torch.tensor(_flat(ir["standard"].matrices)))
        m.W_right.copy_(torch.tensor(_flat(ir["standard_sign"].matrices)))
    assert gm.element_fraction(m.W_left, G, ["standard"]) == pytest.approx(1.0)
    both = torch.cat([m.W_left, m.W_right], 1)
    assert gm.element_fraction(both, G, ["standard", "standard_sign"]) == pytest.approx(1.0)
    assert gm.element_fraction(both, G, ["standard"]) == pytest.approx(0.5)


@pytest.mark.parametrize("call, match", [
    (lambda G: gm.element_fraction(np.zeros((5, 2)), G, ["standard"]), "W: expected a \\(24, d\\)"),
    (lambda G: gm.trace_similarity(np.full((576, 24), np.nan), G), "logits: contains NaN"),
    (lambda G: gm.excluded_loss(np.zeros((576, 24)), G, "stnadard"), "unknown irrep of S4 'stnadard'"),
])
def test_bad_input_names_the_argument(S4, call, match):
    with pytest.raises(ValueError, match=match):
        call(S4[0])
