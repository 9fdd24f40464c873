"""Similarity benchmark: univ's metrics vs plain numpy float64 formulas vs peers from PyPI.

One run, threads pinned (default 1, set before numpy/torch load their BLAS), n = 10,000 samples of
d = 512 features (RBF CKA and RSA at n = 2,000). Every time is the best of ``--repeat`` calls.
Peers run in their own venv (benchmarks/.venv-sim, created here on first use, never our deps),
with the same local CPU torch wheel: a peer whose install would change torch is skipped.

    .venv/bin/python benchmarks/similarity.py [--threads 1] [--n 10000] [--d 512] [--no-peers]
    .venv/bin/python benchmarks/similarity.py --grid [--threads 1] [--rounds 3]   (the main job's grid with the
        default statistics against a naive per-cell loop: benchmarks/similarity_grid.py)

Prints a table (metric, implementation, value, |diff| to univ, seconds, speed ratio) and writes it
to benchmarks/results/similarity.csv.
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__" and "--grid" in sys.argv:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from similarity_grid import main as _grid

    _grid([a for a in sys.argv[1:] if a != "--grid"])
    sys.exit(0)

_p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_p.add_argument("--threads", type=int, default=1)
_p.add_argument("--n", type=int, default=10_000)
_p.add_argument("--d", type=int, default=512)
_p.add_argument("--n-rbf", type=int, default=2_000)
_p.add_argument("--repeat", type=int, default=3)
_p.add_argument("--n-small", type=int, default=2_000, help="second, smaller n for the peer comparison")
_p.add_argument("--peer-timeout", type=float, default=120.0, help="seconds per peer call (its own subprocess)")
_p.add_argument("--no-peers", action="store_true")
_p.add_argument("--paired-rounds", type=int, default=15,
                help="interleaved rounds for the linear-CKA speed ratio (the machine is noisy: a ratio from "
                     "one best-of-3 pair can swing between 1.4x and 2.1x)")
ARGS = _p.parse_args() if __name__ == "__main__" else _p.parse_args([])
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = str(ARGS.threads)

import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)

from univ import similarity as sim  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEER_VENV = HERE / ".venv-sim"
TORCH_PIN = "torch==2.13.0"
PEERS = ["ckatorch", "rsatoolbox", "cca-zoo", "repsim", "torch-cka"]
# torch-cka installs, but it compares two nn.Modules over a DataLoader, not two arrays: not timed here


def paired_ratios(base, fns: dict, rounds: int) -> dict:
    """Time ``base`` and each of ``fns`` in interleaved rounds; per name, the per-round ratios
    base time / fn time (so load changes hit both sides of a ratio alike)."""
    base()
    for fn in fns.values():
        fn()
    ratios = {name: [] for name in fns}
    for _ in range(rounds):
        t0 = time.perf_counter()
        base()
        tb = time.perf_counter() - t0
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ratios[name].append(tb / (time.perf_counter() - t0))
    return ratios


def best_time(fn, repeat: int):
    """(value, best wall time over ``repeat`` calls)."""
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return value, best


# ---------------------------------------------------------------------------------------------------
# Plain numpy float64 formulas (the textbook/reference recipes, written directly)


def np_linear_cka(X, Y):
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def np_rbf_cka(X, Y, threshold=0.8):
    def gram(Z):
        dot = Z @ Z.T
        sq = np.diag(dot)
        d2 = -2 * dot + sq[:, None] + sq[None, :]
        K = np.exp(-d2 / (2 * threshold**2 * np.median(d2)))
        H = np.eye(len(Z)) - 1.0 / len(Z)
        return H @ K @ H

    Kx, Ky = gram(X), gram(Y)
    return np.sum(Kx * Ky) / (np.linalg.norm(Kx) * np.linalg.norm(Ky))


def _np_cov_cca(A, B, eps=1e-10):
    """Covariance CCA as google/svcca does it: np.cov, rescale, +eps, pinv, eigh square roots, SVD."""
    p = A.shape[1]
    C = np.cov(A.T, B.T)
    sxx, syy, sxy = C[:p, :p], C[p:, p:], C[:p, p:]
    xm, ym = np.abs(sxx).max(), np.abs(syy).max()
    sxx, syy, sxy = sxx / xm + eps * np.eye(p), syy / ym + eps * np.eye(len(syy)), sxy / np.sqrt(xm * ym)

    def isqrt(S):
        w, V = np.linalg.eigh(np.linalg.pinv(S))
        return V @ np.diag(np.sqrt(w)) @ V.T

    u, s, _ = np.linalg.svd(isqrt(sxx) @ sxy @ isqrt(syy))
    return u, np.abs(s)


def np_cca_mean(X, Y):
    return _np_cov_cca(X, Y)[1].mean()


def np_svcca(X, Y, keep=0.99):
    def reduce(Z):
        Zc = Z - Z.mean(0)
        U, s, _ = np.linalg.svd(Zc, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), keep) + 1)
        return U[:, :k] * s[:k]

    return _np_cov_cca(reduce(X), reduce(Y))[1].mean()


def np_pwcca(X, Y):
    u, rho = _np_cov_cca(X, Y)
    m = X.mean(0)
    D = (X - m) @ u + m  # (n, p): the directions as columns
    P, _ = np.linalg.qr(D)
    w = np.abs(P.T @ X).sum(1)
    w = w / w.sum()
    return float(np.sum(w * rho))


def np_procrustes(X, Y):
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.svd(X.T @ Y, compute_uv=False).sum() / (np.linalg.norm(X) * np.linalg.norm(Y))


def torch_mutual_knn_argsort(X, Y, k=10):
    """platonic-rep's recipe: full (n, n) similarity, a full argsort of every row."""
    def knn(Z):
        S = Z @ Z.T
        S.fill_diagonal_(-1e8)
        return S.argsort(dim=1, descending=True)[:, :k]

    a, b = knn(torch.from_numpy(X)), knn(torch.from_numpy(Y))
    n = len(a)
    ma, mb = torch.zeros(n, n), torch.zeros(n, n)
    r = torch.arange(n)[:, None]
    ma[r, a] = 1.0
    mb[r, b] = 1.0
    return float(((ma * mb).sum(1) / k).mean())


def scipy_rsa(X, Y):
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    return spearmanr(pdist(X, "correlation"), pdist(Y, "correlation"))[0]


# ---------------------------------------------------------------------------------------------------
# Peers in their own venv


def ensure_peer_venv() -> dict[str, str]:
    """Create benchmarks/.venv-sim with our torch wheel and every peer that installs without changing
    it. Returns {peer: "ok" | reason skipped}."""
    py = PEER_VENV / "bin" / "python"
    status_file = PEER_VENV / "peers.json"
    if status_file.exists():
        return json.loads(status_file.read_text())
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [TORCH_PIN, "numpy", "scipy", "pandas"], check=True)
    status = {}
    for peer in PEERS:
        dry = subprocess.run(pip + ["--dry-run", "--report", "-", peer, TORCH_PIN], capture_output=True, text=True)
        if dry.returncode != 0:
            status[peer] = "skipped: cannot be installed together with " + TORCH_PIN
            continue
        try:
            plan = json.loads(dry.stdout)
            names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in plan.get("install", [])}
        except (json.JSONDecodeError, KeyError):
            names = {}
        if "torch" in names and names["torch"] != TORCH_PIN.split("==")[1]:
            status[peer] = f"skipped: would install torch {names['torch']}"
            continue
        ok = subprocess.run(pip + [peer, TORCH_PIN], capture_output=True, text=True)
        status[peer] = "ok" if ok.returncode == 0 else "skipped: " + ok.stderr.strip().splitlines()[-1][:200]
    status_file.write_text(json.dumps(status, indent=2))
    return status


# One subprocess per peer call, with a timeout. Both sides read the same float64 arrays from .npy files
# in one temp dir; the univ side is timed in this process right before each peer call (back to back, so
# load from other jobs on the shared box hits both sides alike).

PEER_RUNNER = r"""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[2]))
A = np.load(sys.argv[1] + "/" + sys.argv[3] + ".npy"); B = np.load(sys.argv[1] + "/" + sys.argv[4] + ".npy")
repeat, code = int(sys.argv[5]), sys.argv[6]
ns = {"A": A, "B": B, "np": np, "torch": torch}
exec(code, ns)  # imports the peer, defines fn() (setup such as tensor conversion is not timed)
fn, best, val, calls, spent = ns["fn"], float("inf"), None, 0, 0.0
while calls < repeat and not (calls and spent > 10.0):  # a slow peer is called once, not `repeat` times
    t0 = time.perf_counter(); val = float(fn()); dt = time.perf_counter() - t0
    best, calls, spent = min(best, dt), calls + 1, spent + dt
print("@@" + json.dumps({"value": val, "seconds": best, "calls": calls}))
"""

# (peer, metric, univ call, peer label, peer code defining fn(), convention note).
# The univ call and the peer see the same (A, B).
PEER_JOBS = [
    ("ckatorch", "linear_cka", lambda A, B: sim.linear_cka(A, B), "ckatorch cka_base(linear)",
     "import ckatorch\nAt, Bt = torch.from_numpy(A), torch.from_numpy(B)\n"
     "fn = lambda: ckatorch.cka_base(At, Bt, kernel='linear')",
     "same convention (biased HSIC); peer builds two n x n Gram matrices"),
    ("ckatorch", "linear_cka_debiased", lambda A, B: sim.linear_cka(A, B, debiased=True),
     "ckatorch cka_base(linear, unbiased=True)",
     "import ckatorch\nAt, Bt = torch.from_numpy(A), torch.from_numpy(B)\n"
     "fn = lambda: ckatorch.cka_base(At, Bt, kernel='linear', unbiased=True)",
     "same convention (unbiased HSIC, Song et al.); n x n Grams"),
    ("ckatorch", "rbf_cka", lambda A, B: sim.rbf_cka(A, B, threshold=0.8), "ckatorch cka_base(rbf, threshold=0.8)",
     "import ckatorch\nAt, Bt = torch.from_numpy(A), torch.from_numpy(B)\n"
     "fn = lambda: ckatorch.cka_base(At, Bt, kernel='rbf', threshold=0.8)",
     "same convention (Kornblith: sigma = 0.8 x sqrt(median squared distance))"),
    ("repsim", "linear_cka", lambda A, B: sim.linear_cka(A, B), "repsim cka(linear, gretton)",
     "import repsim\nfn = lambda: repsim.cka([A, B], kernel_type='linear', estimator='gretton')[0, 1]",
     "same convention (Gretton = biased HSIC)"),
    ("repsim", "linear_cka_debiased", lambda A, B: sim.linear_cka(A, B, debiased=True), "repsim cka(linear, song)",
     "import repsim\nfn = lambda: repsim.cka([A, B], kernel_type='linear', estimator='song')[0, 1]",
     "nominally the same estimator (Song et al. unbiased HSIC) but repsim's value DIFFERS (0.03-0.07 in a "
     "small test) while ckatorch's unbiased CKA matches univ to ~1e-15: repsim's debiasing recipe differs"),
    ("repsim", "svcca", lambda A, B: sim.svcca(A, B), "repsim svcca (Yanai GCD summary)",
     "import repsim\nfn = lambda: repsim.svcca([A, B])[0, 1]",
     "DIFFERENT summary: repsim reports Yanai's GCD of the CCA subspaces, univ the mean rho "
     "(google/svcca); |diff| is not an error"),
    ("repsim", "pwcca", lambda A, B: sim.pwcca(A, B), "repsim pwcca",
     "import repsim\nfn = lambda: repsim.pwcca([A, B])[0, 1]",
     "Morcos et al. PWCCA; repsim's weighting/sign recipe may differ from google/svcca's (univ follows google)"),
    ("cca-zoo", "cca", lambda A, B: sim.cca(A, B).mean, "cca-zoo CCA(n_components=d).fit().score()",
     "from cca_zoo.linear import CCA\nk = min(A.shape[1], B.shape[1])\n"
     "fn = lambda: CCA(n_components=k).fit([A, B]).score([A, B])",
     "same quantity (mean canonical correlation), fit by cca-zoo's own solver"),
    ("rsatoolbox", "rsa", lambda A, B: sim.rsa(A, B), "rsatoolbox calc_rdm(correlation) + compare(spearman)",
     "import rsatoolbox\n"
     "def fn():\n"
     "    a = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(A), method='correlation')\n"
     "    b = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(B), method='correlation')\n"
     "    return rsatoolbox.rdm.compare(a, b, method='spearman')[0, 0]",
     "same convention (correlation RDM, Spearman with ties averaged)"),
]
# torch-cka installs but compares two nn.Modules over a DataLoader, not two arrays: not timed.
NOT_TIMED = {"torch-cka": "skipped: API compares two nn.Modules over a DataLoader, not two arrays"}
KERNEL_METRICS = {"rbf_cka", "rsa"}  # run at n_rbf (the O(n^2)-by-design metrics)


def run_peers(arrays: dict[str, np.ndarray], status: dict[str, str]) -> list[dict]:
    """Every PEER_JOB at the full size (n, or n_rbf for kernel metrics) and, for the rest, also at
    n_small; one subprocess per call, killed after ARGS.peer_timeout seconds."""
    import tempfile

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="univ-sim-"))
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr, dtype=np.float64))
    runner = tmp / "_peer.py"
    runner.write_text(PEER_RUNNER)
    env = {**os.environ, **{v: str(ARGS.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "OPENBLAS_NUM_THREADS")}}
    for peer, metric, ours, label, code, note in PEER_JOBS:
        if status.get(peer) != "ok":
            rows.append({"metric": metric, "impl": label, "note": f"{peer} {status.get(peer, 'not installed')}"})
            continue
        pairs = [("Xr", "Yr")] if metric in KERNEL_METRICS else [("Xs", "Ys"), ("X", "Y")]
        for a, b in pairs:
            A, B = np.load(tmp / f"{a}.npy"), np.load(tmp / f"{b}.npy")
            u_val, u_t = best_time(lambda f=ours, A=A, B=B: f(A, B), ARGS.repeat)
            row = {"metric": metric, "n": A.shape[0], "d": A.shape[1], "univ_seconds": u_t, "univ_value": u_val,
                   "impl": label, "note": note}
            t0 = time.perf_counter()
            try:
                res = subprocess.run([str(PEER_VENV / "bin" / "python"), str(runner), str(tmp), str(ARGS.threads),
                                      a, b, str(ARGS.repeat), code], capture_output=True, text=True, env=env,
                                     timeout=ARGS.peer_timeout)
                lines = [ln for ln in res.stdout.splitlines() if ln.startswith("@@")]
                if lines:
                    row.update(json.loads(lines[-1][2:]))
                else:
                    err = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
                    row["note"] = f"FAILED (rc {res.returncode}): {err}"
            except subprocess.TimeoutExpired:
                row["note"] = (f"TIMED OUT: no result within {ARGS.peer_timeout:.0f} s "
                               f"(wall {time.perf_counter() - t0:.0f} s incl. import); " + note)
            if "seconds" in row:
                row["ratio_peer_over_univ"] = row["seconds"] / u_t
                row["abs_diff"] = abs(row["value"] - u_val)
            rows.append(row)
            print(f"  {metric:20s} n={row['n']:>6} {label:45s} univ {u_t:8.3f}s  peer "
                  f"{row.get('seconds', float('nan')):8.3f}s  |diff| {row.get('abs_diff', float('nan')):.3g}"
                  + ("" if "seconds" in row else "  " + row["note"][:60]), flush=True)
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return rows


def machine() -> str:
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores (shared box: other CPU-heavy jobs may run), "
            f"load avg {os.getloadavg()[0]:.2f}; python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {np.__version__}")


# ---------------------------------------------------------------------------------------------------


def main() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(ARGS.threads)
    rng = np.random.default_rng(0)
    n, d = ARGS.n, ARGS.d
    X = rng.standard_normal((n, d)) * np.linspace(0.2, 3, d)  # a spread spectrum, like activations
    Y = np.maximum(X @ rng.standard_normal((d, d)) / np.sqrt(d) + 0.5 * rng.standard_normal((n, d)), 0)
    Xr, Yr = X[: ARGS.n_rbf], Y[: ARGS.n_rbf]
    rows = []

    def add(metric, impl, fn):
        v, t = best_time(fn, ARGS.repeat)
        rows.append({"metric": metric, "impl": impl, "value": float(v), "seconds": t})

    def stream():
        s = sim.StreamingLinearCKA()
        for i in range(0, n, 1000):
            s.update(X[i:i + 1000], Y[i:i + 1000])
        return s.value()

    add("linear_cka", "univ", lambda: sim.linear_cka(X, Y))
    add("linear_cka", "numpy", lambda: np_linear_cka(X, Y))
    add("linear_cka", "univ precision='mixed'", lambda: sim.linear_cka(X, Y, precision="mixed"))
    add("linear_cka", "univ streaming (1000/batch)", stream)
    add("linear_cka_debiased", "univ", lambda: sim.linear_cka(X, Y, debiased=True))
    add("rbf_cka", "univ", lambda: sim.rbf_cka(Xr, Yr))
    add("rbf_cka", "numpy", lambda: np_rbf_cka(Xr, Yr))
    add("cca", "univ", lambda: sim.cca(X, Y).mean)
    add("cca", "numpy", lambda: np_cca_mean(X, Y))
    add("svcca", "univ", lambda: sim.svcca(X, Y))
    add("svcca", "numpy", lambda: np_svcca(X, Y))
    add("pwcca", "univ", lambda: sim.pwcca(X, Y))
    add("pwcca", "numpy", lambda: np_pwcca(X, Y))
    add("procrustes", "univ", lambda: sim.procrustes(X, Y))
    add("procrustes", "numpy", lambda: np_procrustes(X, Y))
    add("rsa", "univ", lambda: sim.rsa(Xr, Yr))
    add("rsa", "scipy", lambda: scipy_rsa(Xr, Yr))
    add("mutual_knn", "univ", lambda: sim.mutual_knn(X, Y, k=10))
    add("mutual_knn", "torch argsort (platonic-rep recipe)", lambda: torch_mutual_knn_argsort(X, Y, k=10))
    df = pd.DataFrame(rows)
    ours = df[df.impl == "univ"].set_index("metric")
    df["abs_diff_vs_univ"] = [abs(r.value - ours.value.get(r.metric, np.nan)) for r in df.itertuples()]
    df["ratio_over_univ"] = [r.seconds / ours.seconds.get(r.metric, np.nan) for r in df.itertuples()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / "similarity.csv", index=False)
    print(f"machine: {machine()}")
    print(f"threads={ARGS.threads} (OMP/MKL/OPENBLAS_NUM_THREADS, torch.set_num_threads)  n={n}  d={d}  "
          f"(rbf/rsa n={ARGS.n_rbf})  best of {ARGS.repeat}  ratio = other time / univ time")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    ratios = paired_ratios(lambda: np_linear_cka(X, Y), {
        "float64": lambda: sim.linear_cka(X, Y),
        "precision='mixed'": lambda: sim.linear_cka(X, Y, precision="mixed")}, ARGS.paired_rounds)
    print(f"\nlinear CKA speed-up over the numpy float64 formula, {ARGS.paired_rounds} interleaved rounds "
          f"(numpy time / univ time per round):")
    for name, r in ratios.items():
        q = np.percentile(r, [0, 25, 50, 75, 100])
        print(f"  univ {name:20s} median {q[2]:.2f}x  (quartiles {q[1]:.2f}-{q[3]:.2f}, range {q[0]:.2f}-{q[4]:.2f})")

    if ARGS.no_peers:
        return
    status = {**ensure_peer_venv(), **NOT_TIMED}
    print(f"\npeers (benchmarks/.venv-sim), one subprocess per call, timeout {ARGS.peer_timeout:.0f} s, "
          f"threads={ARGS.threads} on both sides; univ timed right before each peer call on the same .npy arrays")
    ns = ARGS.n_small
    prow = run_peers({"X": X, "Y": Y, "Xr": Xr, "Yr": Yr, "Xs": X[:ns], "Ys": Y[:ns]}, status)
    pdf = pd.DataFrame(prow)
    pdf.to_csv(RESULTS / "similarity_peers.csv", index=False)
    cols = ["metric", "n", "d", "univ_seconds", "impl", "seconds", "calls", "ratio_peer_over_univ", "univ_value",
            "value", "abs_diff"]
    print(f"\nmachine: {machine()}")
    with pd.option_context("display.width", 250, "display.max_colwidth", 50):
        print(pdf[[c for c in cols if c in pdf]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("notes:")
    for r in pdf.itertuples():
        print(f"  {r.metric} n={getattr(r, 'n', '')} {r.impl}: {r.note}")
    print("peer install status:", json.dumps(status))


if __name__ == "__main__":
    main()
