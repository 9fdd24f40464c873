"""The similarity grid as jobs: :func:`univ.similarity.compare_grid` over chunks of the model pairs.

compare_grid's numbers for a pair do not depend on the other pairs of the call (its permutations and
resamples depend only on (seed, n)), so the grid splits into chunks of model pairs, one job each, and the
chunks' rows, put back in pair order, are the whole table's rows. The chunks are balanced by cost (a pair with
the permutation null and the interval costs far more than one without), largest pairs first onto the
chunk with the least work so far: consecutive runs of pairs would leave one worker with every expensive
pair. The one table-wide number, ``q_value`` (Benjamini-Hochberg over every p-value of the table), is
recomputed over the merged table. Warnings the measures raise in a worker come back with its chunk and are
raised again here, once each.
"""

from __future__ import annotations

import warnings


def compare_chunk(acts: dict, model_pairs: list, metrics: list, statistics, layers, options: dict) -> dict:
    """Job: compare_grid on one chunk; its table and the distinct warnings it raised."""
    from ..similarity import compare_grid

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = compare_grid(acts, model_pairs, metrics, statistics=statistics, layers=layers, progress=False,
                             **options)
    return {"table": table, "warnings": list(dict.fromkeys(str(w.message) for w in caught))}


compare_chunk.job_version = 2
"""2: PWCCA's null mean from its first 100 draws (``min_draws`` of univ.similarity.statistics.infer)."""


def compare_grid_jobs(acts: dict, model_pairs, metrics, *, statistics=None, layers: dict | None = None,
                      chunks: int | None = None, desc: str = "similarity", resources=None, **options):
    """:func:`univ.similarity.compare_grid` (same arguments, same table) run as at most ``chunks`` jobs on the
    current executor (:func:`univ.jobs.use_executor`); ``resources``: each job's :class:`univ.jobs.Resources`.

    chunks: default, the executor's workers (in-process: one job, the single compare_grid call). Fewer chunks
    compute less in all: compare_grid computes each layer's resampled statistics once per call, so a model in
    two chunks has them computed twice."""
    import numpy as np
    import pandas as pd

    from ..similarity.statistics import bh_qvalues
    from .executors import current_executor
    from .grid import run_jobs
    from .job import Job, Resources

    if chunks is None:
        chunks = current_executor().workers
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks: expected an int >= 1, got {chunks!r}")
    pairs = [tuple(p) for p in model_pairs]
    if not pairs:
        raise ValueError("model_pairs: give at least one (model_a, model_b) pair")
    stats = None if statistics is None else {tuple(p) for p in statistics}
    for p in pairs:
        missing = [m for m in p if m not in acts]
        if missing:
            raise ValueError(f"model_pairs: {missing!r} not in acts ({sorted(acts)})")
    parts = _balanced(pairs, stats, acts, layers, chunks, options)
    jobs = []
    for part in parts:
        used = list(dict.fromkeys(m for p in part for m in p))
        jobs.append(Job("univ.jobs.similarity:compare_chunk", {
            "acts": {m: acts[m] for m in used}, "model_pairs": [list(p) for p in part], "metrics": list(metrics),
            "statistics": None if stats is None else [list(p) for p in part if p in stats],
            "layers": None if layers is None else {m: list(layers[m]) for m in used if m in layers},
            "options": options}, name=f"{len(part)} pairs from {part[0][0]}-{part[0][1]}",
            resources=resources or Resources()))
    results = run_jobs(jobs, desc=desc)
    for msg in dict.fromkeys(m for r in results for m in r["warnings"]):
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    first = {}
    for i, p in enumerate(pairs):
        first.setdefault(p, i)
    table = pd.concat([r["table"] for r in results], ignore_index=True)
    order = np.array([first[(a, b)] for a, b in zip(table["model_a"], table["model_b"])])
    table = table.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)  # the pairs' order of the call
    table.attrs.update(results[0]["table"].attrs)
    if "q_value" in table:
        table["q_value"] = bh_qvalues(table["p_value"].to_numpy(dtype=float))
        table.attrs["q_family"] = (f"Benjamini-Hochberg over the {int(table['p_value'].notna().sum())} p-values "
                                   "of this table")
    return table


def _balanced(pairs: list, stats, acts: dict, layers, chunks: int, options: dict) -> list[list]:
    """At most ``chunks`` non-empty lists of ``pairs`` (each in the call's order; repeats of a pair together)
    with about equal estimated work: a pair's cells (layer pairs) each cost one computation of the measures,
    and with statistics one more per permutation and resample (batched, so counted at a tenth each)."""
    def n_layers(m):
        return len(layers[m]) if layers and m in layers else len(acts[m])

    draws = 0
    if options.get("baseline", "permutation") is not None:
        draws += options.get("n_permutations", 1000)
    if options.get("ci", 0.95) is not None:
        draws += options.get("n_bootstrap", 1000)
    groups: dict = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p, []).append(i)
    cost = {p: len(ix) * n_layers(p[0]) * n_layers(p[1]) * (1 + (draws / 10 if stats is None or p in stats else 0))
            for p, ix in groups.items()}
    loads = [0.0] * min(chunks, len(groups))
    members: list[list] = [[] for _ in loads]
    for p in sorted(groups, key=lambda q: (-cost[q], groups[q][0])):  # largest first, ties in call order
        j = loads.index(min(loads))
        loads[j] += cost[p]
        members[j].extend(groups[p])
    return [[pairs[i] for i in sorted(ix)] for ix in members if ix]
