"""Grid benchmark: the main job's similarity grid with the default statistics, univ against a naive per-cell loop.

One run, threads pinned (default 1). The grid is what ``univ run universality`` computes with its defaults
(digits, MLP / CNN / transformer x 3 seeds, every hidden-layer pair of every trained model pair, linear CKA,
debiased CKA, SVCCA and PWCCA, 1000 permutations with Besag-Clifford stopping after 20 exceedances, 1000
bootstrap resamples + 50 jackknife groups for the BCa intervals of the CKA family). The zoo comes from univ's
cache (trained on first use).

- univ: ``univ.similarity.compare_grid`` on the whole grid with the similarity stage's arguments (timed once;
  called directly, since the stage's job layer serves a rerun from its cached shards), and
  ``univ.similarity.compare`` on a sample of cells.
- naive: for the same sampled cells, the same computations cell by cell and draw by draw: the metric on
  X and Y[p] for each permutation p (the same permutations and the same stopping rule), and on X[idx], Y[idx]
  for each bootstrap and jackknife resample (the same resamples), then the same intervals.
  The naive full-grid time is stratified: one cell of every (width_a, width_b) class in the grid, its naive
  time x the number of cells of that class (the naive loop's cost does not depend on which cell it is beyond
  the layer widths); ``--cells K`` samples K classes instead and multiplies their mean by the cells.

The ratio that is reported is measured in one run with interleaved rounds (univ, naive, univ, naive, ...) on
the sampled cells, median per cell.

    .venv/bin/python benchmarks/similarity.py --grid [--threads 1] [--rounds 3] [--cells 0]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cells", type=int, default=0,
                   help="width classes sampled for the like-for-like ratio (0: every class in the grid)")
    args = p.parse_args(argv)
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[v] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import univ
    from analyses import _universality_stages as S
    from analyses.universality import ARCH_CFGS, Config
    from univ.cache import zoo
    from univ.similarity.compare import _BUILTIN
    from univ.similarity.statistics import _method, besag_clifford, draws, interval
    from univ.train import TrainConfig

    cfg = Config()
    data = univ.data.load(cfg.data)
    entries = zoo(cfg.archs, [cfg.seed + i for i in range(cfg.seeds)], data, TrainConfig(epochs=cfg.epochs,
                  seed=cfg.seed), model_cfgs=ARCH_CFGS[cfg.data])
    for e in entries:
        e.model.cpu()
    acts = {e.id: univ.capture(e.model, data.x_test, e.model.layers, reduce="mean", cache=True) for e in entries}
    pairs = [(a, b) for a, b in S.model_pairs(entries) if a.trained and b.trained]
    cells = [(a, la, b, lb) for a, b in pairs for la in S.hidden_layers(a) for lb in S.hidden_layers(b)]
    n = len(data.x_test)
    print(f"grid: {len(pairs)} trained model pairs, {len(cells)} layer-pair cells x {len(cfg.metrics)} metrics, "
          f"n = {n} test inputs, {cfg.n_permutations} permutations, {cfg.n_bootstrap} bootstrap resamples, "
          f"threads {args.threads}", flush=True)

    # what the similarity stage computes, called directly: the stage's job layer would serve a rerun from its
    # cached shards
    all_pairs = S.model_pairs(entries)
    by_id = {e.id: e for e in entries}
    ids = list(dict.fromkeys(m for a, b in all_pairs for m in (a.id, b.id)))
    t = time.perf_counter()
    sim = univ.similarity.compare_grid(
        {i: acts[i] for i in ids}, [(a.id, b.id) for a, b in all_pairs], list(cfg.metrics),
        statistics=[(a.id, b.id) for a, b in all_pairs if a.trained and b.trained],
        layers={i: S.hidden_layers(by_id[i]) for i in ids}, n_permutations=cfg.n_permutations,
        n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, progress=False)
    t_grid = time.perf_counter() - t
    print(f"univ full similarity grid (compare_grid; incl. untrained pairs' values): {t_grid:.1f} s", flush=True)

    # one sampled cell per distinct (width_a, width_b), and how many cells of the grid share its widths
    from collections import Counter

    width = {}
    for a, la, b, lb in cells:
        width[(a.id, la, b.id, lb)] = (acts[a.id][la].shape[1], acts[b.id][lb].shape[1])
    n_of = Counter(width.values())
    seen, sample = set(), []
    for a, la, b, lb in cells:
        key = width[(a.id, la, b.id, lb)]
        if key not in seen:
            seen.add(key)
            sample.append((a, la, b, lb))
    if args.cells:
        rng = np.random.default_rng(0)
        sample = [sample[i] for i in sorted(rng.choice(len(sample), min(args.cells, len(sample)), replace=False))]
    weights = np.array([n_of[width[(a.id, la, b.id, lb)]] for a, la, b, lb in sample], dtype=float)
    perms, counts, jack = draws(cfg.seed, n, cfg.n_permutations, cfg.n_bootstrap, 50)

    def naive_cell(X, Y):
        for m in cfg.metrics:
            fn = _BUILTIN[m]
            v = fn(X, Y)
            null = []
            for q in perms:  # the same sequential rule
                null.append(fn(X, Y[q]))
                if sum(z >= v for z in null) >= 20:
                    break
            besag_clifford(v, np.array(null), len(perms), 20)
            res = []  # the jackknife only for BCa intervals, as univ
            for c in torch.cat([counts, jack]) if _method("auto", m) == "bca" else counts:
                idx = torch.repeat_interleave(torch.arange(n), c)
                try:
                    res.append(fn(X[idx], Y[idx]))
                except ValueError:
                    res.append(np.nan)
            interval("auto", m, v, res[:len(counts)], res[len(counts):])

    def univ_cell(X, Y):
        univ.similarity.compare({"a": X}, {"b": Y}, list(cfg.metrics), baseline="permutation",
                                n_permutations=cfg.n_permutations, ci=0.95, n_bootstrap=cfg.n_bootstrap,
                                seed=cfg.seed, progress=False)

    import warnings

    warnings.simplefilter("ignore")
    times = {i: {"univ": [], "naive": []} for i in range(len(sample))}
    for r in range(args.rounds):
        for i, (a, la, b, lb) in enumerate(sample):
            X, Y = acts[a.id][la], acts[b.id][lb]
            for name, f in (("univ", univ_cell), ("naive", naive_cell)):
                t = time.perf_counter()
                f(X, Y)
                times[i][name].append(time.perf_counter() - t)
            print(f"round {r + 1} cell {i} ({a.id}:{la} {tuple(X.shape)} vs {b.id}:{lb} {tuple(Y.shape)}): "
                  f"univ {times[i]['univ'][-1]:.2f} s, naive {times[i]['naive'][-1]:.2f} s", flush=True)
    med = {k: np.array([np.median(times[i][k]) for i in times]) for k in ("univ", "naive")}
    ratio = np.median(med["naive"] / med["univ"])
    # every class sampled: each class's time x its cells (stratified); a subset: the mean cell x the cells
    full = not args.cells or args.cells >= len(n_of)
    naive_full = float(med["naive"] @ weights if full else med["naive"].mean() * len(cells))
    print("\n| quantity | value |\n| --- | --- |")
    print(f"| cells in the grid (trained pairs x hidden-layer pairs) | {len(cells)} x {len(cfg.metrics)} metrics |")
    print(f"| univ, whole similarity stage (measured) | {t_grid:.1f} s |")
    how = (f"each of the {len(n_of)} width classes' cell x its cells" if full else "sampled cells' mean x cells")
    print(f"| naive loop, whole grid ({how}) | {naive_full:.0f} s |")
    print(f"| naive / univ per sampled cell (median of {args.rounds} interleaved rounds; median over cells) | "
          f"{ratio:.1f}x |")
    print(f"| naive full-grid estimate / univ whole stage | {naive_full / t_grid:.1f}x |")
    print(f"| rows of the similarity table | {len(sim)} |")


if __name__ == "__main__":
    main()
