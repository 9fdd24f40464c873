"""The stages of ``univ compare``: check the specs, load models and data, capture, compare, build the report.

Each stage returns plain values (NamedTuples, tidy DataFrames); ``analyses/compare.py`` strings them together.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch

import univ
from univ.config import SettingError
from univ.report import Report

from . import _compare_report as R

TEXT_SOURCES = ("corpus", "text")
"""Data sources whose rows are token contexts (they need the models' tokenizers)."""
STATS = R.STATS
SHARD_BYTES = 256 * 2**20
"""Target size of one activation-store shard (the memory the on-disk path holds per model)."""


class Entry(NamedTuple):
    """One compared network: a model at its position in ``models``, or that model's untrained twin."""

    id: str
    spec: str
    model: torch.nn.Module
    layers: list[str]
    position: int
    trained: bool
    seed: int | None
    """The twin's init seed (None for a trained model)."""


class Loaded(NamedTuple):
    entries: list[Entry]
    """The models, in the order given (a spec given twice: two entries sharing one model)."""
    twins: list[Entry]
    """entries[i]'s untrained twin at twins[i] (empty with untrained=False)."""
    inputs: dict
    """model spec -> its inputs (a dict batch or a tensor); a twin uses its model's."""
    exclude_first: bool
    """Whether the first (BOS) position is left out of mean and tokens."""
    reduce: str
    """The reduction that runs (mean where rows are text segments of different tokenizers)."""
    data_text: str
    """One sentence on what the data are and what a row is."""
    data_meta: dict


class Captured(NamedTuple):
    acts: dict
    """entry id -> {layer: (rows, d)} (in memory) or an ActivationStore (on disk)."""
    on_disk: bool
    rows: int
    bytes: int
    """rows x summed widths x 4: what holding every activation in memory would take."""


# --- checks before any model loads ------------------------------------------------------------------------


def check_specs(cfg) -> None:
    """The model and data specs name known sources and, where they name local files, existing ones."""
    import univ.sources.models  # noqa: F401 (every model source registered)
    from univ.models import MODELS
    from univ.sources import DATA_SOURCES, MODEL_SOURCES, split_spec
    from univ.sources.hf import local_folder
    from univ.sources.text import find_text_files

    for spec in cfg.models:
        try:
            prefix, rest = split_spec(spec, "models", MODEL_SOURCES)
            if prefix in ("hf", "tl"):
                local_folder(rest, f"{prefix}:")
            elif prefix == "py" and rest.count(":") != 1:
                raise ValueError(f"expected py:<module>:<factory>, got {spec!r}")
            elif prefix == "zoo" and rest not in MODELS and not Path(rest).expanduser().is_dir():
                raise ValueError(f"zoo:{rest} is neither a zoo model ({sorted(MODELS)}) nor a saved model folder")
        except ValueError as e:
            raise SettingError("models", _strip(str(e))) from None
    try:
        if cfg.data in DATA_SOURCES:
            prefix, rest = cfg.data, ""
        else:
            prefix, rest = split_spec(cfg.data, "data", DATA_SOURCES)
        if prefix == "text":
            find_text_files(rest)
        elif prefix in ("images", "npy", "safetensors") and not Path(rest).expanduser().exists():
            raise ValueError(f"{cfg.data!r}: {rest!r} does not exist")
    except ValueError as e:
        raise SettingError("data", _strip(str(e))) from None


def _strip(message: str) -> str:
    return re.sub(r"^(models|spec|data|text): ", "", message)


# --- loading -----------------------------------------------------------------------------------------------


def short_ids(specs) -> list[str]:
    """A short unique name per spec: the last part of its path or hub id ("hf:EleutherAI/pythia-70m" ->
    "pythia-70m"); repeats get "#2", "#3"."""
    out: list[str] = []
    for spec in specs:
        base = re.split(r"[/:\\]", spec.rstrip("/"))[-1] or spec
        name, k = base, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        out.append(name)
    return out


def resolve_layers(model, selectors, model_id: str) -> list[str]:
    """The hook names ``selectors`` pick for ``model``: hook names, or positions in ``model.layers``."""
    if not selectors:
        return list(model.layers)
    names = univ.hook_names(model)
    out = []
    for sel in selectors:
        if re.fullmatch(r"-?\d+", sel):
            i = int(sel)
            if not -len(model.layers) <= i < len(model.layers):
                raise SettingError("layers", f"position {i} is out of range for {model_id}, which has "
                                   f"{len(model.layers)} layers ({model.layers[0]} ... {model.layers[-1]})")
            name = model.layers[i]
        elif sel in names:
            name = sel
        else:
            near = [n for n in names if sel in n or n in sel][:5] or list(model.layers)[:5]
            raise SettingError("layers", f"{sel!r} is not a hook name of {model_id} (e.g. {near}); give hook "
                               "names every model has, or positions such as 0,-1")
        if name not in out:
            out.append(name)
    return out


def check_context(model, cfg, model_id: str) -> None:
    """A text model must take ``cfg.context`` positions (its config's n_positions / max_position_embeddings /
    n_ctx, where it says)."""
    if cfg.data.partition(":")[0] not in TEXT_SOURCES:
        return
    net = getattr(model, "net", model)
    config = getattr(net, "config", None) or getattr(net, "cfg", None)
    limit = next((getattr(config, k) for k in ("max_position_embeddings", "n_positions", "n_ctx")
                  if isinstance(getattr(config, k, None), int)), None)
    if limit is not None and cfg.context > limit:
        raise SettingError("context", f"must be <= {limit}: {model_id} takes at most {limit} positions, got "
                           f"{cfg.context}")


def load(cfg) -> Loaded:
    """Load every model (each distinct spec once), its layers, its untrained twin and the data."""
    from univ.sources import load_model, untrained_twin

    device = univ.utils.resolve_device(cfg.device)
    ids = short_ids(cfg.models)
    models: dict[str, tuple] = {}
    entries = []
    for i, (spec, mid) in enumerate(zip(cfg.models, ids)):
        if spec not in models:
            try:
                model = load_model(spec, device=device)
            except (ValueError, TypeError) as e:
                raise SettingError("models", f"cannot load {spec}: {_strip(str(e))}") from None
            check_context(model, cfg, mid)
            models[spec] = (model, resolve_layers(model, cfg.layers, mid))
        model, layers = models[spec]
        entries.append(Entry(mid, spec, model, layers, i, True, None))
    twins = []
    if cfg.untrained:
        for e in entries:
            twin = untrained_twin(e.model, seed=cfg.seed + e.position)
            twins.append(Entry(f"{e.id} (untrained)", e.spec, twin, e.layers, e.position, False,
                               cfg.seed + e.position))
    return Loaded(entries, twins, *load_data(cfg, entries))


def _tokenizer_error(e: ValueError) -> SettingError:
    detail = str(e).removeprefix("tokenizers: ").split("; use models with one tokenizer")[0]
    return SettingError("allow_different_tokenizers", f"is off, and {detail}; turn it on "
                        "(--allow-different-tokenizers) to compare per text segment, or use models with one tokenizer")


def load_data(cfg, entries: list[Entry]) -> tuple[dict, bool, str, str, dict]:
    """(inputs per model spec, exclude_first, reduce, a sentence on the data, its description)."""
    from univ.sources import DATA_SOURCES, check_same_tokenizer, per_sequence_data
    from univ.sources import load_data as load_spec

    prefix = cfg.data if cfg.data in DATA_SOURCES else cfg.data.partition(":")[0]
    if prefix not in TEXT_SOURCES:
        ds = load_spec(cfg.data)
        x = torch.cat([ds.x_test, ds.x_train])[:cfg.n_inputs]
        text = f"{len(x)} inputs of {cfg.data} (the test split first), shape {tuple(x.shape[1:])}."
        return {e.spec: x for e in entries}, False, cfg.reduce, text, {"data": cfg.data, "n": len(x)}
    toks = {}
    for e in entries:
        if getattr(e.model, "tokenizer", None) is None:
            raise SettingError("data", f"{cfg.data} is text, but {e.spec} has no tokenizer")
        toks.setdefault(e.spec, e.model.tokenizer)
    try:
        same = check_same_tokenizer(list(toks.values()), allow_different=cfg.allow_different_tokenizers)
    except ValueError as e:
        raise _tokenizer_error(e) from None
    bos = all(t.bos_token_id is not None for t in toks.values())
    reduce = cfg.reduce
    if same:
        data = load_spec(cfg.data, tokenizer=next(iter(toks.values())), context=cfg.context, n_tokens=cfg.n_tokens,
                         prepend_bos=bos)
        rows = {"tokens": "one row per text token (BOS left out)", "mean": "one row per context: its text tokens "
                "averaged (BOS left out)", "last": "one row per context: its last token"}[reduce]
        text = (f"{cfg.data}: {int(data.content_mask.sum())} text tokens in {len(data)} contexts of {cfg.context} "
                f"tokens{' (BOS first)' if bos else ''}, tokenised once with the models' one tokenizer "
                f"({data.tokenizer_name}); {rows}.")
        return {e.spec: data.inputs for e in entries}, bos, reduce, text, data.describe()
    from univ.sources import corpus_path, read_texts

    docs = {"corpus": corpus_path().read_text(encoding="utf-8")} if prefix == "corpus" else \
        read_texts(cfg.data.partition(":")[2])
    per = per_sequence_data(docs, toks, context=cfg.context, prepend_bos=bos,
                            max_sequences=math.ceil(cfg.n_tokens / (cfg.context - 1)))
    if reduce == "tokens":
        reduce = "mean"  # token positions of different tokenizers pair different text
    first = next(iter(per.values()))
    text = (f"{cfg.data}: the tokenizers differ, so rows are {len(first)} text segments that every tokenizer fits "
            f"in one context of {cfg.context} (univ.sources.per_sequence_data: row i is the same text for every "
            "model), each tokenised by its model's own tokenizer; "
            + ("one row per segment: the mean over its text tokens (BOS left out)"
               + (" (reduce=tokens cannot pair tokens across tokenizers)" if cfg.reduce == "tokens" else "")
               if reduce == "mean" else "one row per segment: its last token") + ".")
    meta = {"strategy": "per-sequence", **{spec: d.describe() for spec, d in per.items()}}
    return {e.spec: per[e.spec].inputs for e in entries}, bos, reduce, text, meta


# --- capture -------------------------------------------------------------------------------------------------


def _networks(loaded: Loaded) -> list[Entry]:
    """Entries whose activations are distinct (a spec given twice is captured once)."""
    seen, out = set(), []
    for e in loaded.entries + loaded.twins:
        if id(e.model) not in seen:
            seen.add(id(e.model))
            out.append(e)
    return out


def capture_all(cfg, loaded: Loaded) -> Captured:
    """Every layer of every network: in memory when rows x widths fit ``max_memory_mb``, else via the store."""
    from univ.batch import batch_len, batch_slice
    from univ.store import capture_to_store, token_counts

    device = univ.utils.resolve_device(cfg.device)
    nets = _networks(loaded)
    kw = dict(reduce=loaded.reduce, exclude_first=loaded.exclude_first and loaded.reduce != "last")
    widths, rows = {}, {}
    for e in nets:
        probe = univ.capture(e.model, batch_slice(loaded.inputs[e.spec], 0, 1), e.layers, device=device, **kw)
        widths[e.id] = sum(a.shape[1] for a in probe.values())
        x = loaded.inputs[e.spec]
        rows[e.id] = int(token_counts(e.model, x, e.layers, kw["exclude_first"]).sum()) \
            if loaded.reduce == "tokens" else batch_len(x)
    n = max(rows.values())
    size = sum(rows[e.id] * widths[e.id] * 4 for e in nets)
    on_disk = size > cfg.max_memory_mb * 2**20
    if on_disk:
        bad = [m for m in cfg.metrics if m not in univ.similarity.STREAMABLE]
        if bad:
            raise SettingError("metrics", f"{bad} need every row in memory, but the activations take "
                               f"{size / 2**20:.0f} MiB > --max-memory-mb {cfg.max_memory_mb}; drop them, raise "
                               "--max-memory-mb or lower --n-tokens")
    acts, by_model = {}, {}
    for e in nets:
        x = loaded.inputs[e.spec]
        if on_disk:
            shard = max(256, min(65536, SHARD_BYTES // (4 * widths[e.id])))
            by_model[id(e.model)] = capture_to_store(e.model, x, e.layers, shard_rows=shard, batch_size=cfg.batch_size,
                                                     device=device, progress=False, **kw)
        else:
            by_model[id(e.model)] = univ.capture(e.model, x, e.layers, batch_size=cfg.batch_size, device=device,
                                                 cache=True, **kw)
    for e in loaded.entries + loaded.twins:
        acts[e.id] = by_model[id(e.model)]
    return Captured(acts, on_disk, n, size)


# --- comparison --------------------------------------------------------------------------------------------


def pairs(loaded: Loaded) -> list[tuple[Entry, Entry, str]]:
    """(A, B, category): every pair of models (a model alone: with itself), every pair of their untrained twins,
    and every model with its own twin."""
    es, ts = loaded.entries, loaded.twins
    out = [(es[0], es[0], "same model")] if len(es) == 1 else []
    out += [(a, b, "same model" if a.spec == b.spec else "models") for i, a in enumerate(es) for b in es[i + 1:]]
    out += [(a, b, "untrained twins") for i, a in enumerate(ts) for b in ts[i + 1:]]
    out += [(e, t, "model vs its untrained twin") for e, t in zip(es, ts)]
    return out


COLUMNS = ["model_a", "layer_a", "model_b", "layer_b", "metric", "value", "baseline_mean", "p_value", "ci_low",
           "ci_high", "category"]


def compare_store_pair(path_a: str, path_b: str, metrics: list, device: str) -> pd.DataFrame:
    """Job: :func:`univ.similarity.compare_stores` of the two on-disk activation stores at these paths."""
    from univ.store import ActivationStore

    return univ.similarity.compare_stores(ActivationStore(path_a), ActivationStore(path_b), metrics, device=device)


def similarity(cfg, loaded: Loaded, cap: Captured) -> pd.DataFrame:
    """The tidy table: every layer pair of every compared pair and metric (:data:`COLUMNS`); one job per pair
    (univ.jobs: in-process, a process pool or Ray, as ``--executor`` says; finished pairs are not recomputed)."""
    from univ.jobs import Job, Resources, run_jobs
    from univ.jobs.similarity import compare_grid_jobs

    device = univ.utils.resolve_device(cfg.device)
    res = Resources(gpus=1 if device.type == "cuda" else 0)
    ps = pairs(loaded)
    if cap.on_disk:
        jobs = []
        for a, b, _ in ps:
            sa, sb = cap.acts[a.id], cap.acts[b.id]
            jobs.append(Job("analyses._compare_stages:compare_store_pair",
                            {"path_a": str(sa.path), "path_b": str(sb.path), "metrics": list(cfg.metrics),
                             "device": str(device)}, name=f"{a.id} vs {b.id}", resources=res,
                            key={"a": sa.key, "b": sb.key, "metrics": list(cfg.metrics), "device": str(device)}))
        frames = []
        for (a, b, category), df in zip(ps, run_jobs(jobs, desc="similarity")):
            df.insert(0, "model_a", a.id)
            df.insert(2, "model_b", b.id)
            df["category"] = category
            frames.append(df[COLUMNS])
        return pd.concat(frames, ignore_index=True)
    # in memory: the one grid code of univ.similarity (each layer's resampled statistics once per draw), in chunks
    # of model pairs, one job each (the same table; q-values over all of it)
    ids = list(dict.fromkeys(m for a, b, _ in ps for m in (a.id, b.id)))
    df = compare_grid_jobs(
        {i: cap.acts[i] for i in ids}, [(a.id, b.id) for a, b, _ in ps], list(cfg.metrics),
        statistics=[(a.id, b.id) for a, b, c in ps if c in STATS],
        baseline="permutation" if cfg.n_permutations else None, n_permutations=max(cfg.n_permutations, 1),
        ci=0.95 if cfg.n_bootstrap else None, n_bootstrap=max(cfg.n_bootstrap, 1), seed=cfg.seed,
        device=str(device), resources=res)
    cat = {(a.id, b.id): c for a, b, c in ps}
    df["category"] = [cat[a, b] for a, b in zip(df.model_a, df.model_b)]
    return df[COLUMNS]


def build_report(cfg, loaded: Loaded, sim: pd.DataFrame, cap: Captured) -> Report:
    """The report: setup, models (and twins), summary, the similarity table and one heatmap per pair and metric."""
    return R.report(cfg, loaded, sim, cap, pairs(loaded))
