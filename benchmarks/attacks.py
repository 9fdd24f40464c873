"""PGD: univ vs foolbox, same models, eps, steps and step size, in one run.

    python benchmarks/attacks.py [--threads 1] [--steps 20] [--repeats 3]

The peer lives in its own venv (benchmarks/.venv-adv, created here on first use with the local CPU
torch==2.13.0 pinned, so nothing touches the project's environment). Both sides attack the same saved
weights and the same digits test set in separate processes, each pinned to ``--threads`` torch threads
(and BLAS threads), one at a time: univ with this interpreter, foolbox with the peer venv's.
Throughput is attacked samples per second: each process reports the fastest of ``--repeats`` timed
runs (after a warm-up); the table gives the median (and the best) over ``--rounds`` processes per side,
the sides interleaved so that load from elsewhere on a shared machine hits both.
Results go to stdout and benchmarks/results/attacks.json.
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
VENV = HERE / ".venv-adv"
RESULTS = HERE / "results"
PEER_PACKAGES = ["torch==2.13.0", "foolbox==3.3.4", "safetensors"]


def build(arch: str):
    """The benchmark models, in plain torch so that the peer venv needs nothing of univ."""
    from torch import nn

    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                             nn.Linear(64, 10))
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))


SETTINGS = [  # (arch, norm, eps)
    ("mlp", "inf", 0.05), ("mlp", "inf", 0.1), ("mlp", "2", 0.5), ("mlp", "2", 1.0),
    ("cnn", "inf", 0.05), ("cnn", "inf", 0.1), ("cnn", "2", 0.5), ("cnn", "2", 1.0),
]


def _timeit(fn, repeats: int):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, min(times)


def run_side(side: str, work: Path, steps: int, repeats: int, threads: int) -> list[dict]:
    """Attack every setting with one library; returns one row per setting."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)  # foolbox draws its random start from the global RNG
    from safetensors.torch import load_file

    blob = load_file(str(work / "data.safetensors"))
    x, y = blob["x"], blob["y"]
    rows = []
    for arch, norm, eps in SETTINGS:
        model = build(arch)
        model.load_state_dict(load_file(str(work / f"{arch}.safetensors")))
        model.eval()
        step_size = 2.5 * eps / steps
        if side == "univ":
            from univ.adversarial import pgd

            def attack(model=model, norm=norm, eps=eps, step_size=step_size):
                return pgd(model, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size, seed=0,
                           bounds=(0.0, 1.0))
        else:
            import foolbox as fb

            fmodel = fb.PyTorchModel(model, bounds=(0, 1))
            cls = fb.attacks.LinfPGD if norm == "inf" else fb.attacks.L2PGD
            fb_attack = cls(abs_stepsize=step_size, steps=steps, random_start=True)

            def attack(fmodel=fmodel, fb_attack=fb_attack, eps=eps):
                _, clipped, _ = fb_attack(fmodel, x, y, epsilons=eps)
                return clipped

        x_adv, seconds = _timeit(attack, repeats)
        with torch.no_grad():
            acc = float((model(x_adv).argmax(1) == y).float().mean())
            clean = float((model(x).argmax(1) == y).float().mean())
        d = (x_adv - x).flatten(1)
        dist = float((d.abs().amax(1) if norm == "inf" else d.norm(dim=1)).max())
        rows.append({"side": side, "arch": arch, "norm": norm, "eps": eps, "steps": steps, "n": len(x),
                     "clean_acc": clean, "robust_acc": acc, "max_dist": dist, "seconds": seconds,
                     "samples_per_s": len(x) / seconds, "threads": torch.get_num_threads(),
                     "torch": torch.__version__})
    return rows


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return py


def prepare(work: Path, seed: int = 0) -> None:
    """Train the two models once (univ's training loop) and save weights + the test set."""
    import torch
    from safetensors.torch import save_file

    from univ.data import digits
    from univ.train import TrainConfig, train

    data = digits()
    for arch in ("mlp", "cnn"):
        torch.manual_seed(seed)
        model = build(arch)
        model, metrics = train(model, data, TrainConfig(epochs=30, lr=3e-3, seed=seed), progress=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(work / f"{arch}.safetensors"))
        print(f"trained {arch}: test acc {metrics['test_acc']:.3f}", flush=True)
    save_file({"x": data.x_test.contiguous(), "y": data.y_test.contiguous()}, str(work / "data.safetensors"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per setting in each process")
    p.add_argument("--rounds", type=int, default=3, help="processes per side, interleaved")
    p.add_argument("--side", choices=["univ", "peer"], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.side:  # a child process: one side only, rows as JSON on stdout
        rows = run_side(args.side, Path(args.work), args.steps, args.repeats, args.threads)
        print("ROWS" + json.dumps(rows))
        return

    import pandas as pd

    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "attacks-work"
    work.mkdir(exist_ok=True)
    peer_py = ensure_venv()
    prepare(work)
    # the machine is shared: interleave the sides (alternating which goes first) and keep each
    # setting's fastest run, so that a burst of load elsewhere does not land on one side only
    sides = [("univ", sys.executable), ("peer", str(peer_py))]
    runs = []
    for rep in range(args.rounds):
        for side, py in sides[::-1] if rep % 2 else sides:
            env = {**os.environ, "PYTHONPATH": str(HERE.parent)} if side == "univ" else dict(os.environ)
            out = subprocess.run([py, __file__, "--side", side, "--work", str(work), "--steps",
                                  str(args.steps), "--repeats", str(args.repeats), "--threads",
                                  str(args.threads)], check=True, capture_output=True, text=True, env=env).stdout
            runs += json.loads(out[out.index("ROWS") + 4:])
    allruns = pd.DataFrame(runs)
    allruns["samples_per_s"] = allruns["n"] / allruns["seconds"]
    keys = ["arch", "norm", "eps"]
    # per process: the best of its runs; across processes: the median (robust to a lucky quiet window)
    # and the best. Robust accuracy is deterministic per side (seeded), so any run's value will do.
    agg = allruns.groupby([*keys, "side"]).agg(robust_acc=("robust_acc", "first"),
                                               median_sps=("samples_per_s", "median"),
                                               best_sps=("samples_per_s", "max")).unstack("side")
    wide = pd.DataFrame({
        "robust_acc foolbox": agg["robust_acc"]["peer"], "robust_acc univ": agg["robust_acc"]["univ"],
        "diff (pp)": 100 * (agg["robust_acc"]["univ"] - agg["robust_acc"]["peer"]),
        "samples/s foolbox (median)": agg["median_sps"]["peer"],
        "samples/s univ (median)": agg["median_sps"]["univ"],
        "ratio univ/foolbox (median)": agg["median_sps"]["univ"] / agg["median_sps"]["peer"],
        "ratio univ/foolbox (best)": agg["best_sps"]["univ"] / agg["best_sps"]["peer"],
    }).reset_index()
    rows = wide.to_dict("records")
    print(f"PGD, {args.steps} steps, step 2.5*eps/steps, random start, n={runs[0]['n']} digits test images, "
          f"torch threads={args.threads}; {args.rounds} interleaved processes per side, each the best of "
          f"{args.repeats} timed runs; foolbox 3.3.4, torch {runs[0]['torch']}")
    print(wide.to_markdown(index=False, floatfmt=".4g"))
    (RESULTS / "attacks.json").write_text(json.dumps({"summary": rows, "all_runs": runs, "args": vars(args)},
                                                     indent=2, default=str))


if __name__ == "__main__":
    main()
