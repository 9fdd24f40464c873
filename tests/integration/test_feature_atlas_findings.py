"""The feature atlas's Findings paragraph from constructed tables with a known reading (fast: no crosscoder)."""

import pandas as pd

from analyses._feature_atlas_stages import CATEGORIES, findings_text


def _categories(counts: dict, null: dict, width: float = 2.0) -> pd.DataFrame:
    n = sum(counts.values())
    rows = []
    for c in CATEGORIES:
        k, k0 = counts.get(c, 0), null.get(c, 0)
        rows.append({"category": c, "count": k, "count_low": max(k - width, 0), "count_high": k + width,
                     "fraction": k / n if n else float("nan"), "n_counted": n, "null_count": k0,
                     "null_count_low": max(k0 - width, 0), "null_count_high": k0 + width})
    return pd.DataFrame(rows)


def _ceiling(paired: float, shuffled: float) -> pd.DataFrame:
    return pd.DataFrame([{"inputs": "paired inputs", "n_latents": 1024, "n_live": 600, "stable_fraction": paired,
                          "mean_cosine": 0.5, "stable_cosine": 0.7},
                         {"inputs": "shuffled pairing (null)", "n_latents": 1024, "n_live": 580,
                          "stable_fraction": shuffled, "mean_cosine": 0.3, "stable_cosine": 0.7}])


def _pairwise(across: float, within: float) -> pd.DataFrame:
    return pd.DataFrame([{"pair": "across architectures", "shared_fraction": across, "shared_fraction_shuffled": 0.02},
                         {"pair": "same architecture", "shared_fraction": within, "shared_fraction_shuffled": 0.01}])


def test_an_unreproducible_dictionary_whose_sharing_sits_in_untrained_twins_is_read_as_such():
    cats = _categories({"trained with untrained twins": 6}, {"trained with untrained twins": 1})
    text = findings_text(cats, _ceiling(0.009, 0.004), _pairwise(0.27, 0.32))
    assert "0.9% of the 600 live latents" in text and "mostly not reproducible" in text
    assert "across architectures: 0 [0, 2], not distinguishable from the shuffled-pairing null" in text
    assert "6 of the 6 counted latents that live in more than one model involve an untrained network" in text
    assert "not evidence that training converges" in text
    assert "across architectures 0.27 (shuffled 0.02)" in text and "upper bound" in text


def test_sharing_beyond_the_null_in_trained_networks_is_reported_without_the_caveats():
    cats = _categories({"across architectures": 40, "one architecture, several seeds": 30, "one model": 100,
                        "trained with untrained twins": 5}, {"across architectures": 3})
    text = findings_text(cats, _ceiling(0.45, 0.05), _pairwise(0.30, 0.35))
    assert "45.0% of the 600 live latents" in text and "not reproducible" not in text
    assert "across architectures: 40 [38, 42], more than the shuffled-pairing null (3 [1, 5])" in text
    assert "5 of the 75 counted latents" in text and "specific to trained networks" in text
    assert "upper bound" not in text  # the crosscoder's across-architecture count is not far below
