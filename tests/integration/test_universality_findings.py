"""The Findings of the universality report, on constructed tables with a known answer."""

import numpy as np
import pandas as pd

from analyses._universality_findings import findings

CATS = {"same arch, different seed": 9, "different arch": 9, "random init, same arch": 9,
        "random init, different arch": 9}


def _sim(rng):
    rows = []
    for cat, n in CATS.items():
        trained = not cat.startswith("random")
        for i in range(n):
            a, b = f"{cat}-a{i}", f"{cat}-b{i}"
            for metric, (hi, lo) in {"good": (0.8, 0.3), "flat": (0.5, 0.5)}.items():
                rows.append({"category": cat, "model_a": a, "model_b": b, "layer_a": "last", "layer_b": "last",
                             "metric": metric, "value": (hi if trained else lo) + 0.02 * rng.standard_normal(),
                             "p_value": 0.001 if trained else np.nan, "p_min": 1 / 1001,
                             "q_value": 0.002 if trained else np.nan})
    df = pd.DataFrame(rows)
    last = {m: "last" for m in pd.concat([df.model_a, df.model_b])}
    return df, last


def test_findings_flag_the_measure_that_does_not_separate_trained_from_untrained():
    sim, last = _sim(np.random.default_rng(0))
    text, table = findings(sim, last, None, None, None, ["svcca: 40 kept directions for 45 samples"])
    good = table[table.measure == "good"].set_index("comparison")
    assert good.loc["same arch: trained - untrained", "verdict"] == "positive"
    assert abs(good.loc["same arch: trained - untrained", "effect"] - 0.5) < 0.03
    flat = table[table.measure == "flat"].set_index("comparison")
    assert flat.loc["cross arch: trained - untrained", "verdict"] == "not distinguishable from 0"
    failing = text.split("Measures failing a sanity check")[1]
    assert "flat does not separate" in failing and "good does not separate" not in failing
    assert "Warnings raised" in text and "40 kept directions" in text
    assert (table.q_value >= table.p_value - 1e-12).all()


def test_findings_say_when_there_are_too_few_pairs_to_test():
    sim, last = _sim(np.random.default_rng(1))
    keep = sim.groupby("category").head(4)  # 2 pairs per category x 2 metrics
    text, table = findings(keep, last, None, None, None, [])
    assert table.verdict.str.startswith("too few units").all()
    assert "Too few model pairs to test" in text and "Measures failing" not in text
