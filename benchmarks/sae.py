"""Training throughput (activations/s) of univ's TopK and ReLU SAEs against sae-lens's, one run.

    python benchmarks/sae.py [--threads 1] [--steps 20] [--warmup 4] [--repeats 2]

Results are printed and written to benchmarks/results/sae.json (ignored by git).

Configuration: d_in=256, d_sae=2048, k=32, batch 4096, float32, CPU, Gaussian activations (a pool of 8
batches, cycled). Each side trains in its own subprocess with torch threads pinned (torch.set_num_threads
and OMP/MKL env); steady-state time is measured between the end of step ``warmup`` and the last step
(initial statistics, e.g. univ's geometric median and norm estimate, are excluded on both sides). Sides
alternate ``repeats`` times and each keeps its best time, so that load from neighbours hurts both alike.

sae-lens downgrades transformer-lens, so it lives in its own venv, ``benchmarks/.venv-sae`` (created on
first use: ``torch==2.13.0``, the local CPU wheel, then ``sae-lens``). Both sides use their library's
defaults otherwise: univ's TopK decodes sparsely (embedding_bag); sae-lens's TopK is timed with its
default dense activations and with ``use_sparse_activations=True``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".venv-sae"
D_IN, D_SAE, K, BATCH = 256, 2048, 32, 4096


def _pin(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _pool():
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH, D_IN, generator=g) for _ in range(8)]


def worker_univ(kind: str, steps: int, warmup: int, threads: int) -> float:
    _pin(threads)
    import univ.sae as S

    pool = _pool()
    sae = S.TopKSAE(D_IN, D_SAE, k=K) if kind == "topk" else S.ReluSAE(D_IN, D_SAE)
    marks = {}

    def cb(step, _sae, _rec):
        if step == warmup:
            marks["t0"] = time.perf_counter()

    batches = [pool[i % len(pool)] for i in range(warmup + steps)]
    sae.fit(batches, batch_size=BATCH, max_steps=warmup + steps, patience=None, eval_every=warmup,
            progress=False, callback=cb, init_samples=BATCH)
    return steps * BATCH / (time.perf_counter() - marks["t0"])


def worker_saelens(kind: str, steps: int, warmup: int, threads: int, sparse: bool = False) -> float:
    _pin(threads)
    from sae_lens import SAETrainer, StandardTrainingSAE, TopKTrainingSAE
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    pool = _pool()
    if kind == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, use_sparse_activations=sparse))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=1.0))
    marks = {}

    def provider():
        for i in range(10**9):
            if i == warmup:
                marks["t0"] = time.perf_counter()
            yield pool[i % len(pool)]

    cfg = SAETrainerConfig(total_training_samples=(warmup + steps) * BATCH, train_batch_size_samples=BATCH,
                           lr=3e-4, lr_end=3e-5, device="cpu", logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(cfg, sae, provider())
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        trainer.fit()
    return steps * BATCH / (time.perf_counter() - marks["t0"])


def _ensure_peer_venv() -> Path:
    py = PEER_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "sae-lens", "torch==2.13.0"], check=True)
    return py


def _run(python: str, side: str, kind: str, args, extra_env=None) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if side == "univ":
        env["PYTHONPATH"] = str(HERE.parent)
    cmd = [python, __file__, "--worker", side, "--kind", kind, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        lines = [ln for ln in out.stderr.splitlines() if "registered at" not in ln and ln.strip()]
        raise RuntimeError(f"{side}/{kind} worker failed:\n" + "\n".join(lines[-5:]))
    return float(out.stdout.strip().splitlines()[-1])


def _versions(python: str) -> dict:
    code = ("import importlib.metadata as m, json, torch;"
            "print(json.dumps({p: m.version(p) for p in ('torch', 'sae-lens') "
            "if any(d.metadata['Name'] == p for d in m.distributions())}))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True).stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--kinds", default="topk,relu")
    p.add_argument("--worker", choices=["univ", "saelens", "saelens-sparse"])
    p.add_argument("--kind", default="topk")
    args = p.parse_args()
    if args.worker:
        if args.worker == "univ":
            r = worker_univ(args.kind, args.steps, args.warmup, args.threads)
        else:
            r = worker_saelens(args.kind, args.steps, args.warmup, args.threads, args.worker.endswith("sparse"))
        print(r)
        return
    peer = str(_ensure_peer_venv())
    sides = {"univ": sys.executable, "saelens": peer}
    results = {}
    for kind in args.kinds.split(","):
        todo = [("univ", kind), ("saelens", kind)] + ([("saelens-sparse", kind)] if kind == "topk" else [])
        for _ in range(args.repeats):
            for side, k in todo:
                try:
                    r = _run(sides.get(side, peer), side, k, args)
                except RuntimeError as e:
                    print(f"  {side:15s} {k:5s} failed: {str(e).splitlines()[-1][:200]}", flush=True)
                    continue
                results[(side, k)] = max(results.get((side, k), 0.0), r)
                print(f"  {side:15s} {k:5s} {r:10.0f} activations/s", flush=True)
    print(f"\nd_in={D_IN} d_sae={D_SAE} k={K} batch={BATCH}, torch threads={args.threads}, steps={args.steps} "
          f"(after {args.warmup} warm-up), best of {args.repeats}; peer versions {_versions(peer)}")
    out = HERE / "results" / "sae.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"config": {"d_in": D_IN, "d_sae": D_SAE, "k": K, "batch": BATCH, **vars(args)},
                               "peer_versions": _versions(peer),
                               "activations_per_s": {f"{s}/{k}": v for (s, k), v in results.items()}}, indent=2))
    for kind in args.kinds.split(","):
        if ("univ", kind) not in results:
            continue
        ours = results[("univ", kind)]
        for side in ("saelens", "saelens-sparse"):
            if (side, kind) in results:
                theirs = results[(side, kind)]
                print(f"{kind:5s} univ {ours:9.0f}/s   {side} {theirs:9.0f}/s   ratio {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
