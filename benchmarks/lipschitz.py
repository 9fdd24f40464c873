"""Tightness and speed of the Lipschitz ladder (univ.lipschitz) on the digits FC100-100-10 net of
``univ run intriguing`` and on small nets whose exact constant is computed.

Run: OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/lipschitz.py [--small-only | --random-only] > out.json
Prints one JSON object; benchmarks/lipschitz.md records a run. Wall and CPU seconds are both reported
(the CPU time of this process is the fairer cost measure on a shared machine); threads pinned to 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

import univ
from univ.cache import cached_model
from univ.lipschitz import branch_and_bound, eclipse, eclipse_fast, exact_lipschitz, lipsdp, lower_bound
from univ.repro import lipschitz as classic
from univ.train import TrainConfig


def timed(f, *args):
    t, c = time.perf_counter(), time.process_time()
    v = f(*args)
    return v, time.perf_counter() - t, time.process_time() - c


def net_rungs(model, shape, x_starts, sdp=True, exact=False):
    out = {}
    for name, f in [("product", lambda: classic.product_bound(classic.layer_bounds(model, shape)["exact"])),
                    ("split", lambda: classic.split_bound(model, shape)),
                    ("ECLipsE-Fast", lambda: eclipse_fast(model, shape).value),
                    *([("ECLipsE", lambda: eclipse(model, shape).value),
                       ("LipSDP-Layer", lambda: lipsdp(model, "layer", input_shape=shape).value),
                       ("LipSDP-Neuron", lambda: lipsdp(model, "neuron", input_shape=shape).value)] if sdp else []),
                    *([("branch-and-bound", lambda: branch_and_bound(model, "2", input_shape=shape).value),
                       ("exact", lambda: exact_lipschitz(model, "2", input_shape=shape).value)] if exact else []),
                    ("lower bound", lambda: max(lower_bound(model, "2", input_shape=shape, seed=0).value,
                                                lower_bound(model, "2", starts=x_starts, input_shape=shape).value))]:
        v, wall, cpu = timed(f)
        out[name] = {"value": v, "wall_s": wall, "cpu_s": cpu}
        print(name, out[name], flush=True, file=sys.stderr)
    return out


def random_small_nets(n: int = 16, seed: int = 0) -> dict:
    """Tightest upper bound / exact constant on random nets with 2 inputs and 1-3 hidden layers of 2-6
    ReLUs (the soundness test's family), globally and on a box, L2 and L-inf: LipSDP-Neuron and the
    branch-and-bound rung (default budget: 2000 nodes, tol 1e-3), each net's ratios and seconds."""
    import numpy as np
    from torch import nn

    rng = np.random.default_rng(seed)
    keys = ("2 global", "2 box", "inf global", "inf box")
    ratios = {k: {"LipSDP-Neuron": [], "branch-and-bound": [], "tightest": []} for k in keys}
    per_net = []
    for i in range(n):
        widths = [int(w) for w in rng.integers(2, 7, size=rng.integers(1, 4))]
        torch.manual_seed(100 + i)
        sizes = [2, *widths, 2]
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        with torch.no_grad():
            for m in layers[::2]:
                m.bias.mul_(3.0)
        model = nn.Sequential(*layers[:-1]).double()
        c = rng.uniform(-1, 1)
        row = {"net": i, "widths": widths}
        for norm in ("2", "inf"):
            for dom, (lo, hi) in (("global", (None, None)), ("box", (c - 0.3, c + 0.3))):
                key = f"{norm} {dom}"
                ex, ex_wall, ex_cpu = timed(exact_lipschitz, model, norm, lo, hi)
                sdp, sdp_wall, sdp_cpu = timed(lipsdp, model, "neuron", norm, lo, hi)
                bab, bab_wall, bab_cpu = timed(branch_and_bound, model, norm, lo, hi)
                assert bab.value >= ex.value * (1 - 1e-7) and sdp.value >= ex.value * (1 - 1e-7), (i, key)  # soundness
                r = {"LipSDP-Neuron": sdp.value / ex.value if ex.value > 0 else 1.0,
                     "branch-and-bound": bab.value / ex.value if ex.value > 0 else 1.0}
                r["tightest"] = min(r.values())
                for k, v in r.items():
                    ratios[key][k].append(v)
                row[key] = {"exact": ex.value, "regions": ex.n_regions, "exact_cpu_s": ex_cpu, **r,
                            "LipSDP_cpu_s": sdp_cpu, "bab_status": bab.status, "bab_nodes": bab.n_nodes,
                            "bab_lps": bab.n_lps, "bab_wall_s": bab_wall, "bab_cpu_s": bab_cpu}
        per_net.append(row)
        print(json.dumps(row), flush=True, file=sys.stderr)
    summary = {k: {m: {"max": max(v), "median": float(np.median(v))} for m, v in d.items()} for k, d in ratios.items()}
    bab_cpu = [row[k]["bab_cpu_s"] for row in per_net for k in keys]
    return {"n": n, "summary": summary, "bab_cpu_s_max": max(bab_cpu), "bab_cpu_s_median": float(np.median(bab_cpu)),
            "nets": per_net}


def training_variants() -> list[dict]:
    """How much room any upper bound has over the product on digits FC100-100-10 nets trained three ways: the
    product / the certified lower bound is the largest ratio any valid bound can reach (LipSDP-Neuron's
    acceptance asks 1.9x, LipDiff's ratio on an MNIST net with 784 inputs)."""
    data = univ.data.digits(seed=0)
    rows = []
    for epochs, wd, lr in [(60, 1e-5, 3e-3), (200, 0.0, 3e-3), (400, 0.0, 1e-3)]:
        tc = TrainConfig(epochs=epochs, batch_size=64, lr=lr, weight_decay=wd, seed=0)
        model = cached_model("mlp", data, seed=0, train_cfg=tc, model_cfg={"widths": [100, 100]},
                             progress=False)[0].eval()
        shape = data.input_shape
        product = classic.product_bound(classic.layer_bounds(model, shape)["exact"])
        fast = eclipse_fast(model, shape).value
        low = max(lower_bound(model, "2", input_shape=shape, seed=0).value,
                  lower_bound(model, "2", starts=data.x_test[:64], input_shape=shape).value)
        with torch.no_grad():
            acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        rows.append({"epochs": epochs, "weight_decay": wd, "lr": lr, "test_accuracy": round(acc, 4),
                     "product": round(product, 3), "ECLipsE-Fast": round(fast, 3), "lower": round(low, 3),
                     "largest_possible_ratio": round(product / low, 3)})
        print(rows[-1], flush=True, file=sys.stderr)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small-only", action="store_true")
    ap.add_argument("--random-only", action="store_true", help="only the random small nets (exact vs tightest)")
    ap.add_argument("--variants", action="store_true",
                    help="only the room over the product on FC100-100-10 nets trained three ways")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.variants:
        print(json.dumps({"variants": training_variants(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__}, indent=1))
        return
    if args.random_only:
        res = random_small_nets()
        res.update({"threads": torch.get_num_threads(), "torch": torch.__version__})
        print(json.dumps(res, indent=1))
        return
    data = univ.data.digits(seed=0)
    tc = TrainConfig(epochs=60, batch_size=64, lr=3e-3, weight_decay=1e-5, seed=0)  # intriguing's full config
    res = {"threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
           "python": platform.python_version(), "torch": torch.__version__, "nets": {}}
    import cvxpy
    import scs

    res["cvxpy"], res["scs"] = cvxpy.__version__, scs.__version__
    specs = [("FC6-6-10", [6, 6], True, True), ("FC8-10", [8], True, True)]
    if not args.small_only:
        specs.insert(0, ("FC100-100-10", [100, 100], True, False))
    for name, widths, sdp, exact in specs:
        model = cached_model("mlp", data, seed=0, train_cfg=tc, model_cfg={"widths": widths}, progress=False)[0].eval()
        res["nets"][name] = net_rungs(model, data.input_shape, data.x_test[:64], sdp, exact)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
