"""On-disk activation store: activations written in shards as they are produced and read back shard by shard,
so activations larger than memory can be captured, compared (:func:`univ.similarity.compare_stores`) and fed
to SAEs (``sae.fit(store.batch_source(name))``).

    store = capture_to_store(model, inputs, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                             reduce="mean", shard_rows=8192)
    for xb in store.batches("blocks.0.hook_resid_post", 4096): ...     # (b, d), one shard in memory
    store["blocks.0.hook_resid_post"]                                  # (n, d), everything

A store is a folder ``<root>/<key>/``, key a hash of everything that determines its contents (the model's
class and weights, the inputs, the names in order, reduce, dtype and shard size):

    meta.json       key, names, widths, rows, shard_rows, n_shards, dtype (+ the producer's info); atomic
    shard-00000/    an integrity entry (:mod:`univ.integrity`): acts.safetensors {name: (rows_i, d)} + manifest;
    shard-00001/    shard i holds input rows [i * shard_rows, (i + 1) * shard_rows) (reduce="tokens": token rows)
    ...
    complete.json   written last: the SHA-256 of every shard's manifest

A killed run leaves finished shards; a rerun keeps every shard that verifies and computes only the rest. A
damaged shard is announced (:class:`CacheWarning` naming its path) and removed: by a rerun, which recomputes
it, or by a reader, which then raises and marks the store incomplete. One writer per store at a time.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_choice, check_finite, check_int, to_tensor, unknown_name_error
from .activations import REDUCTIONS, capture, resolve
from .batch import batch_hash, batch_len, batch_mask, batch_slice, check_batch
from .integrity import MANIFEST, discard, entry_meta, file_digest, read_entry, verify_entry, write_entry, write_file
from .utils import cache_dir, resolve_device, stable_hash, tensor_hash

FORMAT = 1
META, COMPLETE, SHARD_FILE = "meta.json", "complete.json", "acts.safetensors"
_RESERVED = {"format", "key", "names", "widths", "rows", "shard_rows", "n_shards", "dtype"}
_END = object()


def _shard_dir(path: Path, i: int) -> Path:
    return path / f"shard-{i:05d}"


def _load_shard(folder: Path, names: Sequence[str], digest: str) -> dict[str, torch.Tensor]:
    """The tensors ``names`` of a verified shard entry (only those are read)."""
    if file_digest(folder / MANIFEST) != digest:
        raise ValueError("not the shard the store was completed with (its manifest changed)")
    with safe_open(str(folder / SHARD_FILE), framework="pt") as f:
        return {n: f.get_tensor(n) for n in names}


class ActivationStore:
    """A completed activation store on disk (see the module docstring); opening one reads only its JSON files.

    path: the store's folder. max_bytes: the most ``store[name]`` loads (None: no limit).
    Attributes: ``names`` (layer names in capture order), ``dims`` ({name: d}), ``len(store)`` (rows n),
    ``n_shards``, ``shard_rows``, ``dtype``, ``key``, ``meta`` (meta.json). Every shard is verified against
    its manifest and the completion marker when read.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int | None = None):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a folder path, got {type(path).__name__}")
        self.path = Path(path)
        self.max_bytes = None if max_bytes is None else check_int(max_bytes, "max_bytes", 1)
        meta = _read_json(self.path / META)
        if meta is None or not _RESERVED <= set(meta):
            raise ValueError(f"path: no activation store at {str(self.path)!r} (no valid {META})")
        done = _read_json(self.path / COMPLETE)
        if done is None or done.get("key") != meta["key"] or len(done.get("manifests", ())) != meta["n_shards"]:
            have = sum(_shard_dir(self.path, i).is_dir() for i in range(meta["n_shards"]))
            raise ValueError(f"path: the activation store {str(self.path)!r} is incomplete ({have} of "
                             f"{meta['n_shards']} shards written); rerun capture_to_store (or write_store) with "
                             "the same arguments to finish it")
        self.meta, self._digests = meta, list(done["manifests"])
        self.key, self.names, self.dims = meta["key"], list(meta["names"]), dict(meta["widths"])
        self.n_shards, self.shard_rows = int(meta["n_shards"]), int(meta["shard_rows"])
        self.dtype = getattr(torch, meta["dtype"].removeprefix("torch."))

    def __len__(self) -> int:
        return int(self.meta["rows"])

    def __contains__(self, name) -> bool:
        return name in self.dims

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}: {len(self)} rows x {self.dims}, {self.n_shards} shards of "
                f"{self.shard_rows}, {self.meta['dtype']})")

    def _names(self, names, arg: str = "names") -> list[str]:
        if names is None:
            return list(self.names)
        names = [names] if isinstance(names, str) else list(names)
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"{arg}: layer names are strings, got {type(n).__name__} {n!r}")
            if n not in self.dims:
                raise ValueError(f"{arg}: {unknown_name_error('layer', n, self.names)}") from None
        if not names:
            raise ValueError(f"{arg}: give at least one layer name (or None for all)")
        return names

    def shard(self, i: int, names: Sequence[str] | str | None = None) -> dict[str, torch.Tensor]:
        """Shard i's activations {name: (rows_i, d)} (rows [i * shard_rows, ...)), verified; only ``names``
        (default all) are read. A damaged shard is announced, removed, and raises ValueError."""
        i = check_int(i, "i", 0, self.n_shards - 1)
        names = self._names(names)
        folder = _shard_dir(self.path, i)
        got = read_entry(folder, lambda f: _load_shard(f, names, self._digests[i]), "activation store shard")
        if got is None:
            (self.path / COMPLETE).unlink(missing_ok=True)
            raise ValueError(f"activation store {str(self.path)!r}: shard {i} ({str(folder)!r}) is missing or "
                             "damaged and was removed; rerun capture_to_store (or write_store) with the same "
                             "arguments to recompute it")
        return got

    def blocks(self, names: Sequence[str] | str | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Shard after shard, {name: (rows_i, d)} for ``names`` (default all): one shard in memory at a time."""
        names = self._names(names)
        return (self.shard(i, names) for i in range(self.n_shards))

    def batches(self, name: str, batch_size: int = 4096, *, shuffle: bool = False, seed: int = 0
                ) -> Iterator[torch.Tensor]:
        """(b, d) batches of layer ``name``, every row once, b = batch_size except the last; memory: one shard
        of that layer plus one batch (batches are copies, so keeping one does not keep its shard; two shards
        while one is shuffled).
        shuffle: visit the shards, and the rows within each, in an order drawn from ``seed`` (the same on
        every call, so a resumed SAE fit sees the same stream)."""
        (name,) = self._names([name], "name")
        batch_size = check_int(batch_size, "batch_size", 1)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle: expected True or False, got {shuffle!r}")
        seed = check_int(seed, "seed")
        return self._batches(name, batch_size, shuffle, seed)

    def _batches(self, name: str, batch_size: int, shuffle: bool, seed: int) -> Iterator[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(self.n_shards, generator=g).tolist() if shuffle else range(self.n_shards)
        carry: list[torch.Tensor] = []  # rows (fewer than batch_size) left from earlier shards
        held = 0
        for i in order:
            t = self.shard(i, [name])[name]
            if shuffle:
                t = t[torch.randperm(len(t), generator=g)]
            start = 0
            if held:  # complete the carried rows first, never concatenating whole shards
                start = min(batch_size - held, len(t))
                carry.append(t[:start].clone())
                held += start
                if held == batch_size:
                    yield torch.cat(carry)
                    carry, held = [], 0
            while len(t) - start >= batch_size:
                yield t[start:start + batch_size].clone()
                start += batch_size
            if start < len(t):
                carry.append(t[start:].clone())
                held += len(t) - start
            del t  # before the next shard is read: one shard in memory
        if held:
            yield torch.cat(carry)

    def batch_source(self, name: str, batch_size: int = 4096, *, shuffle: bool = False, seed: int = 0
                     ) -> Callable[[], Iterator[torch.Tensor]]:
        """A zero-argument callable returning a fresh :meth:`batches` iterator per call: the streaming source
        ``univ.sae`` fit accepts (``sae.fit(store.batch_source(name))``), re-read from disk on every pass."""
        self.batches(name, batch_size, shuffle=shuffle, seed=seed)  # validate now, not on the first pass
        return functools.partial(self.batches, name, batch_size, shuffle=shuffle, seed=seed)

    def nbytes(self, name: str) -> int:
        """Bytes that layer ``name`` takes in memory: rows x d x itemsize."""
        (name,) = self._names([name], "name")
        return len(self) * self.dims[name] * self.dtype.itemsize

    def load(self, name: str, max_bytes: int | None = None) -> torch.Tensor:
        """All rows of layer ``name``: (n, d). Raises ValueError naming the size when it exceeds ``max_bytes``."""
        size = self.nbytes(name)
        if max_bytes is not None and size > check_int(max_bytes, "max_bytes", 1):
            raise ValueError(f"{name!r}: loading it takes {_size(size)} ({len(self)} x {self.dims[name]} "
                             f"{self.meta['dtype']}), more than max_bytes = {_size(max_bytes)}; stream it with "
                             "store.batches(name, batch_size) instead")
        out = torch.empty(len(self), self.dims[name], dtype=self.dtype)
        for i in range(self.n_shards):
            out[i * self.shard_rows:(i + 1) * self.shard_rows] = self.shard(i, [name])[name]
        return out

    def __getitem__(self, name: str) -> torch.Tensor:
        """``store.load(name, store.max_bytes)``."""
        return self.load(name, self.max_bytes)


def _size(n: int) -> str:
    for unit, k in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 2**k:
            return f"{n / 2**k:.1f} {unit}"
    return f"{n} bytes"


def _read_json(path: Path) -> dict | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _write_json(path: Path, obj: dict) -> None:
    write_file(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def _check_dtype(dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch dtype such as torch.float32, got {dtype!r}")
    return dtype


def _shard_tensors(block, i: int, rows: int, names: list[str] | None, widths: dict | None, dtype
                   ) -> dict[str, torch.Tensor]:
    """Validate shard i's {name: (rows, d)} dict (the names and widths of earlier shards, ``rows`` rows) and
    return its tensors as contiguous CPU ``dtype``."""
    arg = f"batches_by_shard[{i}]"
    if not isinstance(block, dict) or not block:
        raise TypeError(f"{arg}: expected a non-empty dict {{name: (rows, d) array}}, got {type(block).__name__}")
    if names is not None and list(block) != names:
        raise ValueError(f"{arg}: has layers {list(block)}, but the store's are {names} (in that order)")
    out = {}
    for name, v in block.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{arg}: layer names must be non-empty strings, got {name!r}")
        t = to_tensor(v, f"{arg}[{name!r}]")
        if t.ndim != 2 or not t.is_floating_point():
            raise ValueError(f"{arg}[{name!r}]: expected a floating (rows, d) matrix, got shape {tuple(t.shape)} "
                             f"{t.dtype} (capture with reduce='flatten', 'mean' or 'last' for 2-D activations)")
        if t.shape[0] != rows or (widths is not None and t.shape[1] != widths[name]):
            want = f"({rows}, {widths[name]})" if widths is not None else f"({rows}, d)"
            raise ValueError(f"{arg}[{name!r}]: expected shape {want} (shard {i} of the store), got {tuple(t.shape)}")
        out[name] = check_finite(t, f"{arg}[{name!r}]").to("cpu", dtype).contiguous()
    return out


def write_store(path: str | os.PathLike, key: str, batches_by_shard: Iterable, *, n_rows: int, shard_rows: int,
                dtype: torch.dtype = torch.float32, info: dict | None = None, progress: bool = False
                ) -> ActivationStore:
    """Write (or finish) the store at ``path`` from any producer -> the completed :class:`ActivationStore`.

    batches_by_shard: an iterable whose item i is shard i: a {name: (rows_i, d)} dict of input rows
        [i * shard_rows, (i + 1) * shard_rows), or a zero-argument callable returning one. A callable is called
        only when shard i is missing or damaged, so a rerun after a kill skips finished shards without
        recomputing them; the first ceil(n_rows / shard_rows) items are used.
    key: what identifies the contents (e.g. a hash of the producer's inputs); a folder that holds another
        key is refused. n_rows: total rows. shard_rows: rows per shard (the last may have fewer).
    dtype: the stored dtype. info: extra JSON fields for meta.json (e.g. {"inputs": <hash>}, which
        :func:`univ.similarity.compare_stores` checks).
    Memory: one shard as the producer gives it (plus its dtype conversion, if any); nothing else is held.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a folder path, got {type(path).__name__}")
    if not isinstance(key, str) or not key:
        raise ValueError(f"key: expected a non-empty string, got {key!r}")
    if isinstance(batches_by_shard, (dict, torch.Tensor, str, bytes)) or not isinstance(batches_by_shard, Iterable):
        raise TypeError(f"batches_by_shard: expected an iterable of {{name: (rows, d)}} dicts (or callables "
                        f"returning them), one per shard, got {type(batches_by_shard).__name__}")
    n_rows, shard_rows = check_int(n_rows, "n_rows", 1), check_int(shard_rows, "shard_rows", 1)
    dtype = _check_dtype(dtype)
    info = {} if info is None else info
    if not isinstance(info, dict) or _RESERVED & set(info):
        raise ValueError(f"info: expected a dict of extra fields without the reserved keys {sorted(_RESERVED)}")
    try:
        json.dumps(info)
    except (TypeError, ValueError) as e:
        raise ValueError(f"info: must be JSON-serialisable ({e})") from None
    path = Path(path)
    n_shards = math.ceil(n_rows / shard_rows)
    layout = {"format": FORMAT, "key": key, "rows": n_rows, "shard_rows": shard_rows, "n_shards": n_shards,
              "dtype": str(dtype).removeprefix("torch.")}
    meta = _read_json(path / META)
    if meta is not None and {k: meta.get(k) for k in layout} != layout:
        raise ValueError(f"path: {str(path)!r} holds another activation store ({ {k: meta.get(k) for k in layout} }); "
                         f"this one is {layout}")
    if (meta is None or not _RESERVED <= set(meta)) and (path / META).exists():
        discard(path / META, f"not a valid {META}", "activation store meta file")
        meta = None
    names, widths = (meta["names"], meta["widths"]) if meta else (None, None)
    items = iter(batches_by_shard)
    digests = []
    for i in tqdm(range(n_shards), desc="store", disable=not progress, leave=False):
        folder, rows = _shard_dir(path, i), min(shard_rows, n_rows - i * shard_rows)
        item = next(items, _END)
        if item is _END:
            raise ValueError(f"batches_by_shard: yielded {i} shards; {n_shards} are needed for {n_rows} rows of "
                             f"{shard_rows}")
        if folder.exists():
            problem = verify_entry(folder)
            if problem is None:
                m = entry_meta(folder)
                if (m.get("key"), m.get("index"), m.get("rows")) != (key, i, rows) or \
                        (names is not None and (m.get("names"), m.get("widths")) != (names, widths)):
                    problem = "from another store or layout"
                else:
                    names, widths = m["names"], m["widths"]
            if problem is not None:
                (path / COMPLETE).unlink(missing_ok=True)
                discard(folder, f"not usable: {problem}", "activation store shard")
        if not folder.exists():
            (path / COMPLETE).unlink(missing_ok=True)
            block = _shard_tensors(item() if callable(item) else item, i, rows, names, widths, dtype)
            names, widths = list(block), {n: t.shape[1] for n, t in block.items()}
            write_entry(folder, lambda f, b=block: save_file(b, str(f / SHARD_FILE)),
                        meta={"key": key, "index": i, "rows": rows, "names": names, "widths": widths})
            del block  # before the next shard is produced: one shard in memory
        del item
        if meta is None:
            meta = {**layout, "names": names, "widths": widths, **info}
            _write_json(path / META, meta)
        digests.append(file_digest(folder / MANIFEST))
    for stale in path.glob(".shard-*.partial-*"):  # temporary folders of killed writers
        shutil.rmtree(stale, ignore_errors=True)
    _write_json(path / COMPLETE, {"key": key, "n_shards": n_shards, "manifests": digests})
    return ActivationStore(path)


def capture_shard(model: nn.Module, inputs, names: Sequence[str], reduce: str, *, batch_size: int,
                  dtype: torch.dtype, device=None, rows: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """One shard: {name: (rows, d)} activations of ``inputs`` ((m, ...) tensor or dict batch), captured with
    :func:`univ.capture` batch by batch into one buffer per name, so memory is the shard plus one capture batch.
    rows: (skip, n): keep output rows [skip, skip + n) (a shard of reduce="tokens" rows may start and end inside
    a context); default: every row, one per input. The one place that knows the input form (slicing rows)."""
    skip, n = rows if rows is not None else (0, batch_len(inputs))
    out: dict[str, torch.Tensor] = {}
    at = -skip  # where the next captured block starts in the shard
    for start in range(0, batch_len(inputs), batch_size):
        acts = capture(model, batch_slice(inputs, start, start + batch_size), names, batch_size=batch_size,
                       reduce=reduce, device=device, dtype=dtype)
        for name, a in acts.items():
            if name not in out:
                out[name] = a.new_empty((n, *a.shape[1:]))
            lo, hi = max(at, 0), min(at + len(a), n)
            if hi > lo:
                out[name][lo:hi] = a[lo - at:hi - at]
        at += len(a)
    if at < n:
        raise ValueError(f"inputs: capture gave {at + skip} rows where the attention mask promised {n + skip}")
    return out


def _token_shards(mask: torch.Tensor, shard_rows: int) -> list[tuple[int, int, int, int]]:
    """(first context, stop context, rows to skip, rows) of each shard of ``shard_rows`` token rows, for
    reduce="tokens" on inputs with this (n, T) attention mask (rows: the real tokens, sample-major)."""
    ends = mask.long().sum(1).cumsum(0)  # (n,): the token row after each context's last
    starts = ends - mask.long().sum(1)
    total = int(ends[-1])
    plan = []
    for a in range(0, total, shard_rows):
        b = min(a + shard_rows, total)
        first = int(torch.searchsorted(ends, a, right=True))
        stop = int(torch.searchsorted(starts, b))
        plan.append((first, stop, a - int(starts[first]), b - a))
    return plan


def _store_key(model: nn.Module, inputs_hash: str, names: list[str], reduce: str, dtype, shard_rows: int) -> str:
    return stable_hash({
        "model": type(model).__name__, "params": tensor_hash(*model.state_dict().values()),
        "inputs": inputs_hash, "names": names, "reduce": reduce, "dtype": str(dtype), "shard_rows": shard_rows,
    }, length=20)


def capture_to_store(model: nn.Module, inputs, names: Sequence[str] | str | None = None, reduce: str | None = None,
                     *, shard_rows: int = 8192, batch_size: int = 512, root: str | os.PathLike | None = None,
                     dtype: torch.dtype = torch.float32, device=None, progress: bool = True) -> ActivationStore:
    """Capture activations of ``model`` on ``inputs`` at ``names`` into an on-disk store, shard by shard.

    inputs: (n, ...) tensor or array, or a dict batch (``{"input_ids": (n, T), "attention_mask": (n, T)}``,
    e.g. a TokenDataset's ``.inputs``); names, reduce, batch_size, device, dtype: as :func:`univ.capture`
    (reduce must give 2-D activations: "flatten", "mean", "last", "none" at 2-D points, or "tokens":
    one row per real token, which needs an attention mask). shard_rows: rows per shard (input rows; token
    rows for "tokens"). root: the parent folder (default ``$UNIV_CACHE/stores``); the store is
    ``root/<key>``, key a hash of the model's class and weights, the inputs, the names in order, reduce,
    dtype and shard_rows, so the same call finds the same store. progress: a progress bar over shards.

    Memory: one shard, shard_rows x sum of the widths x 4 bytes (float32; the dtype's itemsize otherwise),
    plus one capture batch (its inputs and forward pass). A completed store is verified and returned
    without running the model; after a kill, a rerun recomputes only the shards that are missing or damaged.
    Returns the :class:`ActivationStore`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch nn.Module, got {type(model).__name__}")
    x = check_batch(model, inputs, "inputs") if isinstance(inputs, Mapping) else to_tensor(inputs, "inputs")
    shape = tuple(next(iter(x.values())).shape) if isinstance(x, Mapping) else tuple(x.shape)
    if not shape or shape[0] == 0:
        raise ValueError(f"inputs: need at least one sample, got shape {shape}")
    if names is None:
        names = getattr(model, "layers", None)
        if names is None:
            raise ValueError("names: required for models without a `layers` attribute")
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("names: empty list of hook names")
    for n in names:
        resolve(model, n)  # unknown names list the valid ones
    reduce = reduce or getattr(model, "reduce", "flatten")
    check_choice(reduce, "reduce", REDUCTIONS)
    shard_rows, batch_size = check_int(shard_rows, "shard_rows", 1), check_int(batch_size, "batch_size", 1)
    dtype = _check_dtype(dtype)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root: expected a folder path or None, got {type(root).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected True or False, got {progress!r}")
    device = None if device is None else resolve_device(device)
    inputs_hash = stable_hash(batch_hash(x), length=20) if isinstance(x, Mapping) else tensor_hash(x, length=20)
    key = _store_key(model, inputs_hash, names, reduce, dtype, shard_rows)
    path = Path(root if root is not None else cache_dir() / "stores") / key
    n = batch_len(x)
    if reduce == "tokens":
        mask = batch_mask(x)
        if mask is None or not mask.any():
            raise ValueError("inputs: reduce='tokens' in a store needs a dict batch with an attention_mask (it "
                             "says how many rows each sample gives) and at least one real token")
        plan = _token_shards(mask, shard_rows)
    else:
        plan = [(i, min(i + shard_rows, n), 0, min(shard_rows, n - i)) for i in range(0, n, shard_rows)]
    shards = (functools.partial(capture_shard, model, batch_slice(x, a, b), names, reduce, batch_size=batch_size,
                                dtype=dtype, device=device, rows=(skip, rows)) for a, b, skip, rows in plan)
    info = {"inputs": inputs_hash, "model": type(model).__name__, "reduce": reduce, "hook_names": names}
    return write_store(path, key, shards, n_rows=sum(p[3] for p in plan), shard_rows=shard_rows, dtype=dtype,
                       info=info, progress=progress)
