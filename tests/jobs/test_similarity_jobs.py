"""The similarity grid in chunks of model pairs gives compare_grid's table: values, row order and q-values."""

import warnings

import pandas as pd
import pytest
import torch

import univ
from tests.named_errors import assert_named_error
from univ.jobs.similarity import compare_grid_jobs


def acts_of(seed: int, n: int = 60) -> dict:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 6, generator=g)
    return {"l0": base @ torch.randn(6, 8, generator=g), "l1": torch.tanh(base @ torch.randn(6, 5, generator=g))}


@pytest.mark.parametrize("chunks", [None, 1, 2, 5])  # None: the executor's workers (in-process: 1)
def test_chunks_give_the_whole_grid(chunks):
    acts = {m: acts_of(i) for i, m in enumerate("abcd")}
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("c", "d"), ("a", "d")]
    kw = dict(statistics=[("a", "b"), ("c", "d"), ("a", "d")], n_permutations=30, n_bootstrap=20, seed=3)
    whole = univ.similarity.compare_grid(acts, pairs, ["linear_cka", "svcca"], progress=False, **kw)
    parts = compare_grid_jobs(acts, pairs, ["linear_cka", "svcca"], chunks=chunks, **kw)
    pd.testing.assert_frame_equal(parts, whole, check_exact=True)
    assert parts.attrs["q_family"] == whole.attrs["q_family"]
    assert parts["q_value"].notna().sum() == 2 * 4 * 3  # 2 metrics x 4 layer pairs x 3 pairs with statistics


def test_a_warning_raised_in_a_chunk_is_raised_again():
    acts = {"a": {"x": torch.randn(5, 40)}, "b": {"x": torch.randn(5, 40)}}  # fewer samples than directions
    with warnings.catch_warnings(record=True) as direct:
        warnings.simplefilter("always")
        univ.similarity.compare_grid(acts, [("a", "b")], ["svcca"], baseline=None, ci=None, progress=False)
    with warnings.catch_warnings(record=True) as via_jobs:
        warnings.simplefilter("always")
        compare_grid_jobs(acts, [("a", "b")], ["svcca"], baseline=None, ci=None)
    assert direct and {str(w.message) for w in direct} <= {str(w.message) for w in via_jobs}


@pytest.mark.parametrize("call, exc, fragment", [
    (lambda: compare_grid_jobs({"a": {}}, [("a", "a")], ["linear_cka"], chunks=0), ValueError,
     r"^chunks: expected an int >= 1, got 0"),
    (lambda: compare_grid_jobs({"a": {}}, [], ["linear_cka"]), ValueError, r"^model_pairs: give at least one"),
    (lambda: compare_grid_jobs({"a": {}}, [("a", "z")], ["linear_cka"]), ValueError,
     r"^model_pairs: \['z'\] not in acts"),
])
def test_bad_input_is_named(call, exc, fragment):
    assert_named_error(call, exc, fragment)


def test_chunks_share_the_expensive_pairs():
    # the pairs with statistics come first in the call; consecutive runs would give one chunk all of them
    from univ.jobs.similarity import _balanced

    acts = {m: acts_of(i) for i, m in enumerate("abcdefgh")}
    pairs = [("a", "b"), ("a", "c"), ("b", "c"), ("a", "d"), ("e", "f"), ("e", "g"), ("f", "g"), ("g", "h")]
    stats = set(pairs[:4])
    parts = _balanced(pairs, stats, acts, None, 2, {"n_permutations": 100, "n_bootstrap": 100})
    assert [sum(p in stats for p in part) for part in parts] == [2, 2]
    assert sorted(p for part in parts for p in part) == sorted(pairs)
    assert all(part == sorted(part, key=pairs.index) for part in parts)  # each chunk keeps the call's order
    assert len(_balanced(pairs, stats, acts, None, 20, {})) == len(pairs)  # never an empty chunk
