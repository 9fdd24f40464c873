"""Bad input to univ.lipschitz: unsupported layers named, solver failures reported by status, a missing
cvxpy named by its extra."""

import sys

import pytest
import torch
from torch import nn

from tests.named_errors import assert_named_error
from univ.lipschitz import SolverError, branch_and_bound, eclipse, exact_lipschitz, lipsdp, lower_bound
from univ.lipschitz.ladder import ladder
from univ.models import build_model


def _small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.attn = nn.MultiheadAttention(4, 1)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.fc(x))


@pytest.mark.parametrize("call", [lipsdp, eclipse, exact_lipschitz, lower_bound, branch_and_bound])
def test_max_pool_is_named_with_what_is_supported(call):
    model = build_model("cnn", input_shape=(1, 8, 8))
    assert_named_error(lambda: call(model), ValueError, r"layer 'pool' \(MaxPool2d\) is not supported.*Linear, Conv")


def test_attention_is_named_with_what_is_supported():
    assert_named_error(lambda: lipsdp(_Attn(), input_shape=(4,)), ValueError,
                       r"layer 'attn' \(MultiheadAttention\) is not supported.*Linear")


def test_smooth_activation_is_named():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    assert_named_error(lambda: lipsdp(model), ValueError, r"layer '1' \(Tanh\) is not supported")


def test_bad_arguments_are_named():
    m = _small()
    assert_named_error(lambda: lipsdp(m, kind="row"), ValueError, "kind: expected 'neuron' or 'layer', got 'row'")
    assert_named_error(lambda: lipsdp(m, norm="1"), ValueError, "norm: expected '2' or 'inf', got '1'")
    assert_named_error(lambda: lipsdp(m, lower=1.0, upper=0.0), ValueError, "lower, upper: need lower <= upper")
    assert_named_error(lambda: lipsdp(m, lower=0.0), ValueError, "lower, upper: give both")
    assert_named_error(lambda: lipsdp(m, lower=torch.zeros(5), upper=torch.ones(5)), ValueError,
                       "lower: expected 3 values")
    assert_named_error(lambda: lipsdp("net"), TypeError, "model: expected an nn.Module")
    assert_named_error(lambda: exact_lipschitz(m, max_regions=2), ValueError, "max_regions: the net has more than 2")
    assert_named_error(lambda: ladder(m, methods=("LipSDP",)), ValueError, r"methods: unknown \['LipSDP'\]")


@pytest.mark.parametrize("kwargs,fragment", [
    ({"max_nodes": 0}, r"^max_nodes: expected an integer >= 1 \(nodes to expand\), got 0"),
    ({"max_nodes": 2.5}, "max_nodes: expected an integer >= 1.*got 2.5"),
    ({"max_nodes": True}, "max_nodes: expected an integer >= 1.*got True"),
    ({"max_seconds": 0}, "max_seconds: expected None or a finite number of seconds > 0, got 0"),
    ({"max_seconds": float("nan")}, "max_seconds: .*got nan"),
    ({"max_seconds": "1"}, "max_seconds: .*got '1'"),
    ({"tol": -0.1}, "tol: expected a finite relative gap >= 0, got -0.1"),
    ({"tol": float("inf")}, "tol: .*got inf"),
])
def test_bad_branch_and_bound_budget_is_named(kwargs, fragment):
    assert_named_error(lambda: branch_and_bound(_small(), **kwargs), ValueError, fragment)


def test_bad_ladder_budget_is_named():
    m = _small()
    assert_named_error(lambda: ladder(m, bab_max_nodes=-3), ValueError, "^bab_max_nodes: expected an integer >= 1.*-3")
    assert_named_error(lambda: ladder(m, bab_max_seconds=-1.0), ValueError, "^bab_max_seconds: .*got -1.0")
    assert_named_error(lambda: ladder(m, bab_max_relus=-1), ValueError, "^bab_max_relus: expected an integer >= 0")
    assert_named_error(lambda: branch_and_bound(m, norm="1"), ValueError, "norm: expected '2' or 'inf', got '1'")
    assert_named_error(lambda: branch_and_bound(m, lower=0.0), ValueError, "lower, upper: give both")


def test_solver_failure_reports_the_status_never_a_number(monkeypatch):
    import cvxpy as cp

    def fail(self, *a, **k):
        self._status = "infeasible_inaccurate"
        return None

    monkeypatch.setattr(cp.Problem, "solve", fail)
    with pytest.raises(SolverError, match="status 'infeasible_inaccurate'") as info:
        lipsdp(_small())
    assert info.value.status == "infeasible_inaccurate"
    with pytest.raises(SolverError, match="ECLipsE: the SDP solver failed"):
        eclipse(_small())
    df = ladder(_small(), methods=("LipSDP-Neuron", "exact"), n_starts=4, steps=4)
    row = df.set_index("method").loc["LipSDP-Neuron"]
    assert row["status"].startswith("solver failed") and "infeasible_inaccurate" in row["status"]
    assert row["value"] != row["value"]  # NaN, never a number
    assert df.set_index("method").loc["exact", "status"] == "ok"


def test_missing_cvxpy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)
    with pytest.raises(ImportError, match=r"univ\[lipschitz\]"):
        lipsdp(_small())


def test_unsupported_model_in_the_ladder_keeps_the_classic_rungs():
    model = build_model("cnn", input_shape=(1, 8, 8))
    df = ladder(model, methods=("product", "split", "LipSDP-Neuron")).set_index("method")
    assert df.loc["product", "status"] == "ok" and df.loc["product", "value"] > 0
    assert df.loc["LipSDP-Neuron", "status"].startswith("unsupported: model: layer 'pool'")
