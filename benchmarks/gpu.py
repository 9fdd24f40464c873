"""Every stage on the GPU: equal to the CPU within stated tolerances, and how much faster. A short prepared
script (a few minutes); without a GPU it says so and exits 0.

    python benchmarks/gpu.py [--device cuda] [--threads 1]

Checks (CPU result vs ``--device`` result; ``--device cpu`` runs the same code against itself, a dry run):

- zoo training: test accuracy of an MLP and a CNN trained 5 epochs on digits, within 0.03 (float rounding
  changes a few steps);
- capture: mean-reduced activations of every layer (MLP, CNN), max abs difference within 1e-3 x the layer's
  max abs (TF32 convolutions allowed, as torch allows them by default);
- similarity: univ.similarity.compare values (linear and debiased CKA, SVCCA, PWCCA), within 1e-4;
- SAE training: FVU of a TopK SAE (400 steps, same seed and batches), within 0.02;
- PGD: robust accuracy under L-inf PGD (eps 0.1, 20 steps), within 0.03 (the random starts come from the
  device's own generator).

Throughput (rows or steps per second, CPU with ``--threads`` torch threads vs the device, after a warm-up):
capture of 20k inputs, linear CKA of (8192 x 512) pairs, SAE training steps (d_in 512, d_sae 4096, k 32, batch
4096), PGD examples. Exit code 1 when a check fails. Results: benchmarks/results/gpu.json (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(fn, device, repeats: int = 3) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs after one warm-up (synchronising the device)."""
    import torch

    def sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def checks(dev) -> list[dict]:
    import univ
    from univ.cache import cached_model
    from univ.train import TrainConfig

    data = univ.data.digits()
    x, y = data.x_test, data.y_test
    rows = []

    def check(stage, what, diff, tol):
        rows.append({"stage": stage, "what": what, "diff": float(diff), "tolerance": tol, "ok": bool(diff <= tol)})

    cfg = TrainConfig(epochs=5)
    models = {}
    for arch in ("mlp", "cnn"):
        on_cpu = cached_model(arch, data, seed=0, train_cfg=cfg, progress=False, device="cpu")
        on_dev = cached_model(arch, data, seed=0, train_cfg=cfg, progress=False, device=dev,
                              root=HERE / "results" / "gpu-models")  # a cache of its own: trained here, not loaded
        check("zoo training", f"{arch} test accuracy", abs(on_cpu.metrics["test_acc"] - on_dev.metrics["test_acc"]),
              0.03)
        models[arch] = on_cpu.model.cpu()
    acts = {}
    for arch, model in models.items():
        a_cpu = univ.capture(model, x, model.layers, reduce="mean")
        a_dev = univ.capture(_moved(model, dev), x, model.layers, reduce="mean", device=dev)
        worst = max(float((a_cpu[k] - a_dev[k]).abs().max() / a_cpu[k].abs().max().clamp_min(1e-12)) for k in a_cpu)
        check("capture", f"{arch} activations (relative max diff)", worst, 1e-3)
        acts[arch] = {k: v for k, v in a_cpu.items() if k != model.layers[-1]}
    metrics = ["linear_cka", "linear_cka_debiased", "svcca", "pwcca"]
    s_cpu = univ.similarity.compare(acts["mlp"], acts["cnn"], metrics, seed=0)
    s_dev = univ.similarity.compare(acts["mlp"], acts["cnn"], metrics, seed=0, device=dev)
    check("similarity", "compare values (max abs diff)", (s_cpu["value"] - s_dev["value"]).abs().max(), 1e-4)
    layer = models["mlp"].layers[-2]
    tr = univ.capture(models["mlp"], data.x_train, [layer], reduce="mean")[layer]
    fvu = {}
    for where in ("cpu", dev):
        sae = univ.sae.TopKSAE(tr.shape[1], 4 * tr.shape[1], k=8, seed=0)
        sae.fit(tr, max_steps=400, seed=0, progress=False, device=where)
        fvu[str(where)] = univ.sae.evaluate(sae.cpu(), acts["mlp"][layer]).fvu
    check("SAE training", "TopK FVU", abs(fvu["cpu"] - fvu[str(dev)]), 0.02)
    for arch, model in models.items():
        acc = []
        for where in ("cpu", dev):
            m = _moved(model, where)
            xa = univ.adversarial.pgd(m, x.to(where), y.to(where), eps=0.1, steps=20, bounds=data.bounds, seed=0)
            acc.append(float((univ.models.predict(m, xa) == y.to(where)).float().mean()))
        check("PGD", f"{arch} robust accuracy", abs(acc[0] - acc[1]), 0.03)
    return rows


def _moved(model, device):
    import copy

    return model if str(device) == "cpu" else copy.deepcopy(model).to(device)


def throughput(dev) -> list[dict]:
    import torch

    import univ

    g = torch.Generator().manual_seed(0)
    model = univ.models.build_model("cnn", seed=0, input_shape=[1, 8, 8], n_classes=10)
    x = torch.rand(20000, 1, 8, 8, generator=g)
    A, B = torch.randn(8192, 512, generator=g), torch.randn(8192, 512, generator=g)
    acts = torch.randn(4096 * 4, 512, generator=g)
    return [{**row, "side": side} for side, where in (("cpu", "cpu"), ("device", dev))
            for row in _speeds(where, model, x, A, B, acts)]


def _speeds(where, model, x, A, B, acts) -> list[dict]:
    import univ

    m, xs = _moved(model, where), x.to(where)
    rows = []
    t = timed(lambda: univ.capture(m, xs, m.layers, reduce="mean", batch_size=4096, device=where), where)
    rows.append({"stage": "capture", "device": str(where), "per_s": len(x) / t, "unit": "inputs"})
    a, b = A.to(where), B.to(where)
    t = timed(lambda: univ.similarity.linear_cka(a, b), where)
    rows.append({"stage": "linear CKA 8192x512", "device": str(where), "per_s": 1 / t, "unit": "pairs"})
    sae, steps = univ.sae.TopKSAE(512, 4096, k=32, seed=0), 20
    t = timed(lambda: sae.fit(acts, batch_size=4096, max_steps=steps, patience=None, progress=False, device=where),
              where, repeats=1)
    rows.append({"stage": "SAE training", "device": str(where), "per_s": steps / t, "unit": "steps"})
    y = univ.models.predict(m, xs[:2000])
    t = timed(lambda: univ.adversarial.pgd(m, xs[:2000], y, eps=0.1, steps=10, bounds=(0.0, 1.0)), where, repeats=1)
    rows.append({"stage": "PGD (10 steps)", "device": str(where), "per_s": 2000 / t, "unit": "examples"})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="the device compared with the CPU (default cuda; cpu: dry run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the CPU side")
    args = ap.parse_args()
    import pandas as pd
    import torch

    from univ.utils import available_devices, resolve_device

    torch.set_num_threads(args.threads)
    if args.device != "cpu" and not torch.cuda.is_available() and args.device != "mps":
        print(f"No GPU here (torch {torch.__version__}; devices: {available_devices()}): nothing to check.")
        return 0
    dev = resolve_device(args.device)
    print(f"CPU ({args.threads} threads) vs {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    ok = pd.DataFrame(checks(dev))
    print(ok.to_string(index=False))
    speed = pd.DataFrame(throughput(dev))
    table = speed.pivot(index="stage", columns="side", values="per_s")  # per second; "device": the --device side
    table["speedup"] = table["device"] / table["cpu"]
    print(table.round(2).to_string())
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "gpu.json").write_text(json.dumps({
        "device": str(dev), "threads": args.threads, "torch": torch.__version__,
        "checks": ok.to_dict("records"), "throughput": speed.to_dict("records")}, indent=2))
    return 0 if ok["ok"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
