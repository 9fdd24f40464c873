"""Similarity benchmark: univ's metrics vs plain numpy float64 formulas vs peers from PyPI.

One run, threads pinned (default 1, set before numpy/torch load their BLAS), n = 10,000 samples of
d = 512 features (RBF CKA and RSA at n = 2,000). Every time is the best of ``--repeat`` calls.
Peers run in their own venv (benchmarks/.venv-sim, created here on first use, never our deps),
with the same local CPU torch wheel: a peer whose install would change torch is skipped.

    .venv/bin/python benchmarks/similarity.py [--threads 1] [--n 10000] [--d 512] [--no-peers]

Prints a table (metric, implementation, value, |diff| to univ, seconds, speed ratio) and writes it
to benchmarks/results/similarity.csv.
"""

from __future__ import annotations

import argparse
import os
import sys

_p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_p.add_argument("--threads", type=int, default=1)
_p.add_argument("--n", type=int, default=10_000)
_p.add_argument("--d", type=int, default=512)
_p.add_argument("--n-rbf", type=int, default=2_000)
_p.add_argument("--repeat", type=int, default=3)
_p.add_argument("--no-peers", action="store_true")
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


PEER_CODE = r'''
import json, os, sys, time
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[2]))
X = np.load(sys.argv[1] + "/X.npy"); Y = np.load(sys.argv[1] + "/Y.npy")
Xr = np.load(sys.argv[1] + "/Xr.npy"); Yr = np.load(sys.argv[1] + "/Yr.npy")
repeat = int(sys.argv[3]); out = []

def bench(metric, impl, fn):
    best, val = float("inf"), None
    try:
        for _ in range(repeat):
            t0 = time.perf_counter(); val = float(fn()); best = min(best, time.perf_counter() - t0)
        out.append({"metric": metric, "impl": impl, "value": val, "seconds": best})
    except Exception as e:  # a peer's failure is a result too
        out.append({"metric": metric, "impl": impl, "value": float("nan"), "seconds": float("nan"),
                    "note": f"{type(e).__name__}: {str(e)[:150]}"})

PEERS_CODE

print("@@" + json.dumps(out))
'''

PEER_SNIPPETS = {
    "ckatorch": r'''
try:
    import ckatorch
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    bench("linear_cka", "ckatorch", lambda: ckatorch.cka_base(Xt, Yt, kernel="linear"))
    Xrt, Yrt = torch.from_numpy(Xr), torch.from_numpy(Yr)
    bench("rbf_cka", "ckatorch", lambda: ckatorch.cka_base(Xrt, Yrt, kernel="rbf", threshold=0.8))
except ImportError as e:
    out.append({"metric": "linear_cka", "impl": "ckatorch", "note": str(e)})
''',
    "rsatoolbox": r'''
try:
    import rsatoolbox
    def rsa():
        a = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(Xr), method="correlation")
        b = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(Yr), method="correlation")
        return rsatoolbox.rdm.compare(a, b, method="spearman")[0, 0]
    bench("rsa", "rsatoolbox", rsa)
except ImportError as e:
    out.append({"metric": "rsa", "impl": "rsatoolbox", "note": str(e)})
''',
    "cca-zoo": r'''
try:
    from cca_zoo.linear import CCA
    k = min(X.shape[1], Y.shape[1])
    bench("cca", "cca-zoo CCA.score", lambda: CCA(n_components=k).fit([X, Y]).score([X, Y]))
except ImportError as e:
    out.append({"metric": "cca", "impl": "cca-zoo", "note": str(e)})
''',
    "repsim": r'''
try:
    import repsim
    bench("linear_cka", "repsim", lambda: repsim.cka([X, Y], kernel_type="linear")[0, 1])
    bench("svcca", "repsim (Yanai summary)", lambda: repsim.svcca([X, Y])[0, 1])
    bench("pwcca", "repsim", lambda: repsim.pwcca([X, Y])[0, 1])
except ImportError as e:
    out.append({"metric": "linear_cka", "impl": "repsim", "note": str(e)})
''',
}


def run_peers(X, Y, Xr, Yr, status: dict[str, str]) -> list[dict]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, arr in (("X", X), ("Y", Y), ("Xr", Xr), ("Yr", Yr)):
        np.save(RESULTS / f"{name}.npy", arr)
    code = PEER_CODE.replace("PEERS_CODE", "\n".join(s for p, s in PEER_SNIPPETS.items() if status.get(p) == "ok"))
    script = RESULTS / "_peers.py"
    script.write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": str(ARGS.threads)}
    res = subprocess.run([str(PEER_VENV / "bin" / "python"), str(script), str(RESULTS), str(ARGS.threads),
                          str(ARGS.repeat)], capture_output=True, text=True, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("@@")]
    if not lines:
        print("peer run failed:", res.stderr[-2000:])
        return []
    return json.loads(lines[-1][2:])


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
    peer_status = {}
    if not ARGS.no_peers:
        peer_status = ensure_peer_venv()
        rows += run_peers(X, Y, Xr, Yr, peer_status)

    df = pd.DataFrame(rows)
    ours = df[df.impl == "univ"].set_index("metric")
    df["abs_diff_vs_univ"] = [abs(r.value - ours.value.get(r.metric, np.nan)) for r in df.itertuples()]
    df["univ_speedup"] = [r.seconds / ours.seconds.get(r.metric, np.nan) for r in df.itertuples()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / "similarity.csv", index=False)
    print(f"threads={ARGS.threads}  n={n}  d={d}  (rbf/rsa n={ARGS.n_rbf})  best of {ARGS.repeat}  "
          f"torch {torch.__version__}  numpy {np.__version__}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    if peer_status:
        print("peers:", json.dumps(peer_status, indent=1))


if __name__ == "__main__":
    main()
