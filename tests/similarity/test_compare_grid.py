"""compare_grid: one table over many models equals compare() pair by pair, with one BH family."""

import numpy as np
import pandas as pd
import pytest

from tests.named_errors import assert_named_error
from univ import similarity as sim


def _acts(rng, n=40):
    z = rng.standard_normal((n, 3))
    return {m: {f"l{i}": z @ rng.standard_normal((3, w)) + 0.5 * rng.standard_normal((n, w))
                for i, w in enumerate(ws)} for m, ws in (("a", (4, 6)), ("b", (5,)), ("c", (3, 4)))}


def test_grid_equals_compare_pair_by_pair():
    acts = _acts(np.random.default_rng(0))
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    metrics = ["linear_cka", "linear_cka_debiased", "svcca", "pwcca"]
    kw = dict(n_permutations=50, n_bootstrap=40, seed=3, progress=False)
    g = sim.compare_grid(acts, pairs, metrics, statistics=[("a", "b"), ("b", "c")], **kw)
    for a, b in pairs:
        stats = (a, b) != ("a", "c")
        ref = sim.compare(acts[a], acts[b], metrics, baseline="permutation" if stats else None,
                          ci=0.95 if stats else None, **kw)
        got = g[(g.model_a == a) & (g.model_b == b)].drop(columns=["model_a", "model_b"]).reset_index(drop=True)
        cols = [c for c in ref.columns if c != "q_value"]
        pd.testing.assert_frame_equal(got[cols], ref[cols], check_exact=False, rtol=0, atol=1e-12)
    tested = g.p_value.notna()
    assert tested.sum() == (2 * 1 + 1 * 2) * 4  # (a, b): 2 x 1 layer pairs, (b, c): 1 x 2; 4 metrics
    np.testing.assert_allclose(g.q_value[tested], sim.statistics.bh_qvalues(g.p_value[tested]))


def test_grid_bad_input_names_the_argument():
    acts = _acts(np.random.default_rng(1))
    assert_named_error(lambda: sim.compare_grid(acts, [("a", "z")]), ValueError, r"model_pairs.*\['z'\] missing")
    assert_named_error(lambda: sim.compare_grid(acts, [("a", "b")], layers={"a": ["l9"]}), ValueError,
                       r"layers\['a'\].*l9")
    bad = {**acts, "b": {"l0": np.zeros((7, 2))}}
    assert_named_error(lambda: sim.compare_grid(bad, [("a", "b")]), ValueError, "acts.*same number of samples")
    with pytest.raises(ValueError, match="ci_method"):
        sim.compare_grid(acts, [("a", "b")], ci_method="x")
