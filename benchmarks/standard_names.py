"""Every standard name univ supports against the implementations the similarity-repository wraps, on the
fixed input of tests/similarity/similarity_public.json. Prints a Markdown table: name, univ, each peer, the
majority (the value most peers agree on to 1e-6 relative), agree?

Peers run in a separate venv, benchmarks/.venv-simrepo (git-ignored), built once with --setup SRC, where SRC
is a checkout of github.com/nacloos/similarity-repository (optionally also NETREP=a checkout of
ahwillia/netrep in the environment):
    python3 -m venv benchmarks/.venv-simrepo
    benchmarks/.venv-simrepo/bin/pip install torch==2.13.0
    benchmarks/.venv-simrepo/bin/pip install "numpy<2" scipy scikit-learn pydantic matplotlib requests gitpython \
        seaborn rsatoolbox repsim einops loguru pot torchmetrics fastprogress numba torchtyping
    python benchmarks/standard_names.py --setup SRC      # installs SRC --no-deps, registry imports made optional
The registry modules whose dependencies cannot be installed (GitHub-only packages, torchaudio for torch 2.13)
are skipped and listed. Parametric names use sigma=10, dim=10, topk=10, alpha=0.5, folds=5, ridge=1.
    SIMREPO_COMMIT=035b3be NETREP_COMMIT=0186b8a python benchmarks/standard_names.py > benchmarks/standard_names.md
(the two commits are only printed in the table's header, to say which sources the peers came from).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-simrepo" / "bin" / "python"
PARAMS = {"sigma": 10.0, "dim": 10, "topk": 10, "alpha": 0.5, "folds": 5, "ridge": 1.0}
VERSIONED = ("similarity-repository", "netrep", "rsatoolbox", "POT", "scikit-learn", "scipy", "numpy", "torch")


def inputs():
    import numpy as np

    rng = np.random.default_rng
    X = rng(0).standard_normal((500, 64))
    return X, X + 0.5 * rng(3).standard_normal((500, 64))


def setup(src: str) -> None:
    """Install the similarity-repository from ``src`` into the peer venv, its registry imports made optional."""
    tmp = Path(tempfile.mkdtemp()) / "simrepo"
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".git"))
    reg = tmp / "similarity" / "registry" / "__init__.py"
    lines = ["SKIPPED = {}"]
    for line in reg.read_text().splitlines():
        m = re.match(r"from \. import (\w+)", line)
        guarded = m and (f"try:\n    from . import {m.group(1)}\n"
                         f"except Exception as e:\n    SKIPPED[{m.group(1)!r}] = repr(e)")
        lines.append(guarded if m else line)
    reg.write_text("\n".join(lines) + "\n")
    pkgs = [str(tmp)] + ([os.environ["NETREP"]] if os.environ.get("NETREP") else [])
    subprocess.run([str(VENV), "-m", "pip", "install", "-q", "--no-deps", *pkgs], check=True)


def peer_values(names: list[str]) -> dict:
    """(inside the peer venv) {standard name template: {repo: value or error}} for the given names."""
    import signal
    import types
    import warnings

    warnings.filterwarnings("ignore")
    # benchmarks/similarity.py would shadow the similarity-repository's package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    try:
        import torchaudio  # noqa: F401
    except ImportError:  # only platonic's edit-distance kNN uses it; no build exists for torch 2.13
        stub = types.ModuleType("torchaudio")
        stub.functional = types.ModuleType("torchaudio.functional")
        sys.modules.update({"torchaudio": stub, "torchaudio.functional": stub.functional})
    import similarity
    import similarity.registry as reg

    X, Y = inputs()
    wanted = set(names)
    from importlib.metadata import PackageNotFoundError, version

    def _version(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "absent"

    out = {"skipped": reg.SKIPPED, "values": {}, "versions": {p: _version(p) for p in VERSIONED}}

    def timeout(*_):
        raise TimeoutError

    signal.signal(signal.SIGALRM, timeout)
    for key in sorted(similarity.registration.registry):
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "measure" or parts[2] not in wanted:
            continue
        name = parts[2]
        kws = {k: v for k, v in PARAMS.items() if "{" + k + "}" in name}
        signal.alarm(120)
        try:
            v = float(similarity.make(key)(X.copy(), Y.copy(), **kws))
        except Exception as e:  # noqa: BLE001  (a peer's failure is a table entry, not a crash)
            v = f"error: {type(e).__name__}"
        signal.alarm(0)
        out["values"].setdefault(name, {})[parts[1]] = v
    return out


def _majority(vals: list[float]) -> tuple[float | None, int]:
    best, count = None, 0
    for v in vals:
        c = sum(abs(w - v) <= 1e-6 * max(1.0, abs(v)) for w in vals)
        if c > count:
            best, count = v, c
    return best, count


def main() -> None:
    import math

    sys.path.insert(0, str(HERE.parent))  # this checkout's univ, not an installed one
    from univ.similarity import measure, names

    X, Y = inputs()
    supported = names()
    if not VENV.exists():
        sys.exit(f"{VENV} is missing: build it as this file's docstring says")
    res = subprocess.run([str(VENV), __file__, "--peer"], input=json.dumps(supported), capture_output=True,
                         text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    peers = json.loads(res.stdout.strip().splitlines()[-1])
    print("# Standard names: univ against the similarity-repository's wrapped implementations\n")
    print("Input: X = default_rng(0).standard_normal((500, 64)), Y = X + 0.5 default_rng(3).standard_normal((500, "
          f"64)); parameters {PARAMS}. Majority: the value the most peers share (to 1e-6 relative); agree: "
          "|univ - majority| <= 1e-6 max(1, |majority|). Peers that failed or returned NaN are listed, not "
          "counted.\n")
    print("Skipped registry modules (dependency not installable here): "
          + ", ".join(f"{k} ({v.split('(')[0]})" for k, v in peers["skipped"].items()) + "\n")
    repos = sorted({r for got in peers["values"].values() for r in got})
    print(f"Peers: {len(repos)} wrapped repositories answered at least one supported name ({', '.join(repos)}). "
          "Versions in the peer venv: " + ", ".join(f"{k} {v}" for k, v in peers["versions"].items())
          + (f"; similarity-repository source commit {os.environ['SIMREPO_COMMIT']}" if os.environ.get("SIMREPO_COMMIT")
             else "") + (f"; netrep source commit {os.environ['NETREP_COMMIT']}" if os.environ.get("NETREP_COMMIT")
                         else "") + ".\n")
    print("| name | univ | peers (repo: value) | majority (n of m) | agree |")
    print("|---|---|---|---|---|")
    n_agree = n_checked = n_documented = 0
    for name in supported:
        m = measure(name)
        u = m(X, Y, **{k: PARAMS[k] for k in m.needs})
        got = peers["values"].get(name, {})
        nums = {r: v for r, v in got.items() if isinstance(v, float) and math.isfinite(v)}
        maj, count = _majority(list(nums.values()))
        cells = "; ".join(f"{r}: {v:.10g}" if isinstance(v, float) else f"{r}: {v}" for r, v in sorted(got.items()))
        if maj is None:
            verdict, mj = "no peer", "-"
        else:
            n_checked += 1
            ok = abs(u - maj) <= 1e-6 * max(1.0, abs(maj))
            n_agree += ok
            documented = not ok and "Convention:" in (m.__doc__ or "")
            n_documented += documented
            others = [v for v in nums.values() if abs(v - maj) > 1e-6 * max(1.0, abs(maj))]
            tie = _majority(others)[1] == count  # another value has as many peers: no majority
            verdict = "yes" if ok else "NO: convention in docstring" if documented else "NO"
            mj = f"{maj:.10g} ({count} of {len(nums)}{', tie' if tie else ''})"
        print(f"| `{name}` | {u:.10g} | {cells or '-'} | {mj} | {verdict} |")
    print(f"\n{n_agree} of {n_checked} names with a peer agree with the majority; the other "
          f"{n_checked - n_agree} ({n_documented} of them with the convention univ follows, and why, in "
          f"``measure(name).__doc__``) are listed as NO; {len(supported) - n_checked} names have no installable "
          "peer.")


if __name__ == "__main__":
    if "--peer" in sys.argv:
        print(json.dumps(peer_values(json.loads(sys.stdin.read()))))
    elif "--setup" in sys.argv:
        setup(sys.argv[sys.argv.index("--setup") + 1])
    else:
        main()
