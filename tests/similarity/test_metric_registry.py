"""A new similarity measure is one function and one registry line, defined here in the test alone."""

import numpy as np
import pytest
import torch

from univ import similarity as sim


def first_column_r2(X, Y, device=None) -> float:
    """A toy measure: squared correlation of the two sides' first columns."""
    x, y = torch.as_tensor(X, dtype=torch.float64)[:, 0], torch.as_tensor(Y, dtype=torch.float64)[:, 0]
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) ** 2 / ((x @ x) * (y @ y)))


@pytest.fixture
def toy_metric():
    sim.register_metric("first_column_r2", first_column_r2)
    yield "first_column_r2"
    sim.METRICS.unregister("first_column_r2")


def test_toy_metric_runs_through_compare_with_baseline_and_interval(toy_metric):
    g = np.random.default_rng(0)
    X = g.standard_normal((200, 4))
    acts_a = {"l1": X, "l2": g.standard_normal((200, 3))}
    acts_b = {"m1": np.c_[2 * X[:, :1] + 1, g.standard_normal((200, 2))]}
    df = sim.compare(acts_a, acts_b, metrics=[toy_metric, "linear_cka"], baseline="permutation",
                     n_permutations=50, ci=0.9, n_bootstrap=50, seed=0)
    row = df[(df.metric == toy_metric) & (df.layer_a == "l1")].iloc[0]
    assert row.value == pytest.approx(1.0) and row.p_value == pytest.approx(1 / 51)
    assert row.baseline_mean < 0.2 and row.ci_low <= 1.0 + 1e-12
    other = df[(df.metric == toy_metric) & (df.layer_a == "l2")].iloc[0]
    assert other.value < 0.2
    assert sim.get_metric(toy_metric) is first_column_r2


def test_toy_metric_is_accepted_where_metric_names_are_checked(toy_metric):
    from analyses.universality import Config

    assert Config(metrics=(toy_metric, "linear_cka")).metrics == (toy_metric, "linear_cka")


def test_unregistered_metric_is_refused_again():
    with pytest.raises(ValueError, match="unknown metric 'first_column_r2'"):
        sim.get_metric("first_column_r2")
