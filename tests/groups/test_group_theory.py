"""univ.groups: every group offered, its irreps checked by the relations of representation theory."""

import numpy as np
import pytest

from univ import groups as gr
from univ.data import group_composition

GROUPS = ["C2", "C7", "C8", "D3", "D5", "D6", "S3", "S4", "S5", "A4", "A5"]


@pytest.mark.parametrize("name", GROUPS)
def test_group_axioms_and_classes(name):
    G = gr.parse_group(name)
    n = len(G)
    T = G.table
    assert sorted(T[0]) == list(range(n)) and (T[0] == np.arange(n)).all()  # identity first
    for row in T:  # a Latin square: each row and column a permutation
        assert len(set(row)) == n
    assert (T[np.arange(n), G.inverse] == 0).all()
    rng = np.random.default_rng(0)
    a, b, c = rng.integers(0, n, (3, 50))
    assert (T[T[a, b], c] == T[a, T[b, c]]).all()  # associativity
    assert sum(len(c) for c in G.classes) == n
    for cls in G.classes:  # a class is closed under conjugation
        for h in range(0, n, max(1, n // 7)):
            assert {int(T[T[h, g], G.inverse[h]]) for g in cls} == set(cls)


ORDERS = {"C7": 7, "D5": 10, "S4": 24, "S5": 120, "A5": 60, "S6": 720}
N_CLASSES = {"C7": 7, "D5": 4, "D6": 6, "S4": 5, "S5": 7, "A5": 5}


@pytest.mark.parametrize("name", sorted(N_CLASSES))
def test_known_orders_and_class_counts(name):
    G = gr.parse_group(name)
    assert len(G.classes) == N_CLASSES[name]
    if name in ORDERS:
        assert len(G) == ORDERS[name]


@pytest.mark.parametrize("name", GROUPS)
def test_irreps_are_orthogonal_homomorphisms(name):
    G = gr.parse_group(name)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, len(G), (2, 40))
    for f in gr.irreps(G):
        M = f.matrices
        assert np.allclose(M[0], np.eye(f.dim))
        assert np.allclose(M[a] @ M[b], M[G.table[a, b]], atol=1e-9), f.name
        assert np.allclose(M @ M.transpose(0, 2, 1), np.eye(f.dim), atol=1e-9), f.name


@pytest.mark.parametrize("name", GROUPS)
def test_character_orthogonality_and_dimensions(name):
    G = gr.parse_group(name)
    ir = gr.irreps(G)
    chi = np.array([f.character for f in ir])
    gram = chi @ chi.T / len(G)
    norms = np.array([f.norm for f in ir])
    assert np.allclose(gram, np.diag(norms), atol=1e-8)  # first orthogonality relation
    assert set(norms) <= {1.0, 2.0}  # real or complex type (no quaternionic irreps here)
    # over C every real irrep of complex type is a conjugate pair of d/2-dim irreps: sum d^2/<chi,chi> = |G|
    assert np.isclose(sum(f.dim ** 2 / f.norm for f in ir), len(G))
    if name[0] in "DS" or name == "A5":  # only real-type irreps: the plain statement
        assert sum(f.dim ** 2 for f in ir) == len(G)
    # second orthogonality over classes; a real character of complex type is chi + conj(chi), so class g
    # also pairs with the class of g^-1: sum_rho chi(g) chi(h) / <chi,chi> = |G|/|C_g| (d[g~h] + d[g~h^-1]) / 2
    table = gr.character_table(G)
    sizes = np.array([len(c) for c in G.classes])
    reps = [c[0] for c in G.classes]
    same = np.eye(len(reps))
    inv = (G.class_of[G.inverse[reps]][:, None] == np.arange(len(reps))[None, :]).astype(float)
    col = (table / norms[:, None]).T @ table
    assert np.allclose(col, (len(G) / sizes)[:, None] * (same + inv) / 2, atol=1e-8)
    assert len(ir) + sum(norms == 2.0) == len(G.classes)  # complex irreps = conjugacy classes


@pytest.mark.parametrize("name", GROUPS)
def test_matrix_elements_span_the_regular_representation(name):
    G = gr.parse_group(name)
    Q = np.concatenate([gr.irrep_basis(f) for f in gr.irreps(G)], 1)
    assert Q.shape == (len(G), len(G))
    assert np.allclose(Q.T @ Q, np.eye(len(G)), atol=1e-8)  # isotypic parts are orthogonal and fill L2(G)


def test_s5_and_a5_have_the_textbook_dimensions():
    dims = sorted(f.dim for f in gr.irreps(gr.symmetric(5)))
    assert dims == [1, 1, 4, 4, 5, 5, 6]
    assert sorted(f.dim for f in gr.irreps(gr.alternating(5))) == [1, 3, 3, 4, 5]
    names = [f.name for f in gr.irreps(gr.symmetric(5))]
    assert names[:4] == ["trivial", "sign", "standard", "standard_sign"]


@pytest.mark.slow
def test_s6_irreps():
    G = gr.symmetric(6)
    ir = gr.irreps(G)
    assert sorted(f.dim for f in ir) == [1, 1, 5, 5, 5, 5, 9, 9, 10, 10, 16]
    assert len(ir) == len(G.classes) == 11


def test_group_composition_split_and_labels():
    d = group_composition("S4", train_fraction=0.5, seed=3)
    G = d.extra["group"]
    assert len(d.x_train) + len(d.x_test) == 24 * 24 and len(d.x_train) == 288
    assert (d.y_train == G.table[d.x_train[:, 0], d.x_train[:, 1]]).all()
    both = {tuple(r) for r in d.x_train.tolist()} | {tuple(r) for r in d.x_test.tolist()}
    assert len(both) == 576  # every pair exactly once
    again = group_composition("S4", train_fraction=0.5, seed=3)
    assert (again.x_train == d.x_train).all()
    assert d.name == "group_composition_S4" and group_composition(G, 0.5, seed=3).x_train.equal(d.x_train)


@pytest.mark.parametrize("call, match", [
    (lambda: gr.parse_group("Q8"), "group: 'Q8'"),
    (lambda: gr.parse_group(5), "group: expected"),
    (lambda: gr.symmetric(2), "n: the symmetric group"),
    (lambda: gr.cyclic(1.5), "n: the cyclic group"),
    (lambda: group_composition("S3", train_fraction=1.0), "train_fraction"),
    (lambda: group_composition("C2", train_fraction=0.01), "train_fraction"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
