"""Minibatches for ``fit`` from every source form, each row used exactly once per pass.

Sources: a (n, d_in) array/tensor (reshuffled each pass, reproducibly from the seed and the pass, so a
resumed run sees the same order); a list or other re-iterable of batches; a zero-argument callable that
returns a fresh iterable per pass; a one-shot iterator or generator (one pass). Batches are re-chunked to
``batch_size`` rows, a minibatch may straddle two passes, and only a one-shot source ends with a short
minibatch. The rows ``sample`` reads for fit's initial statistics are the start of the first pass: they
are trained on like the rest, never skipped or read twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import Tensor

from .._checks import as_matrix

_END = object()


def check_batch(b, name: str, d_in: int, dtype: torch.dtype, device) -> Tensor:
    """b as a finite, real (n, d_in) tensor of ``dtype`` on ``device``; ValueError naming ``name`` otherwise
    (TypeError for complex or non-numeric values), worded as :func:`univ._checks.as_matrix` words it."""
    t = as_matrix(b, name, min_rows=1, dtype=dtype, device=device)
    if t.shape[1] != d_in:
        raise ValueError(f"{name}: expected {d_in} features (the SAE's d_in), got {t.shape[1]}")
    return t


class Batches:
    """An endless (or, for a one-shot source, one-pass) iterable of (batch_size, d_in) minibatches.

    ``position()`` / ``restore(position)`` carry the place in the data through a checkpoint.
    Every source batch is validated when read (NaN/Inf, width, complex), named "acts batch i" by its index
    i within the pass.
    """

    def __init__(self, acts, batch_size: int, d_in: int, dtype, device, seed: int):
        self.batch_size, self.d_in, self.dtype, self.device, self.seed = batch_size, d_in, dtype, device, seed
        self.tensor: Tensor | None = None
        self.epoch, self.pos = 0, 0  # pass and row position in the tensor's permutation
        self.n_batches = 0  # minibatches handed out (the position in a stream)
        self._head: list[Tensor] = []  # the first pass's batches that sample() read, replayed first
        self._pass: Iterator | None = None
        self._index = 0  # batches read in the current pass
        if acts is None or isinstance(acts, (str, bytes, Mapping)):
            raise ValueError(f"acts: expected an array, an iterable of batches or a zero-argument callable "
                             f"returning one, got {type(acts).__name__}")
        if isinstance(acts, Tensor) or hasattr(acts, "__array__"):
            t = check_batch(acts, "acts", d_in, dtype, "cpu")
            if t.shape[0] < 2:
                raise ValueError(f"acts: needs at least 2 samples (rows), got {t.shape[0]}")
            self.tensor = t
            self.batch_size = min(batch_size, len(t))
        elif isinstance(acts, Iterable):
            self._open = lambda: iter(acts)
            self.one_shot = isinstance(acts, Iterator)
        elif callable(acts):
            self._open = lambda: iter(acts())
            self.one_shot = False
        else:
            raise ValueError(f"acts: expected an array, an iterable of batches or a zero-argument callable "
                             f"returning one, got {type(acts).__name__}")

    # ---- checkpoints ----
    def position(self) -> dict:
        """Where the next minibatch starts (JSON-able)."""
        if self.tensor is not None:
            return {"source": "tensor", "epoch": self.epoch, "pos": self.pos}
        return {"source": "stream", "batches": self.n_batches}

    def restore(self, position: dict) -> None:
        """Continue from ``position()`` of an earlier run on the same data; a stream, which cannot be
        rewound, re-reads and skips the minibatches already used."""
        want = "tensor" if self.tensor is not None else "stream"
        if position.get("source") != want:
            raise ValueError(f"acts: the checkpoint was written while training on a {position.get('source')} "
                             f"source, but acts is a {want}; resume with the same data")
        if self.tensor is not None:
            self.epoch, self.pos = int(position["epoch"]), int(position["pos"])
        else:
            self._skip = self.n_batches = int(position["batches"])

    # ---- reading ----
    def sample(self, n: int) -> Tensor:
        """Up to n rows for initial statistics: a seeded random subset of a tensor, or the first rows of a
        stream (which then start the first pass of training)."""
        if self.tensor is not None:
            g = torch.Generator().manual_seed(self.seed + 7919)
            idx = torch.randperm(len(self.tensor), generator=g)[:n]
            return self.tensor[idx]
        self._start_pass()
        got = 0
        while got < n and (b := self._read()) is not _END:
            self._head.append(b)
            got += len(b)
        if got < 2:
            raise ValueError(f"acts: the iterable yielded {got} row(s); fit needs at least 2")
        return torch.cat(self._head)[:n]

    def __iter__(self) -> Iterator[Tensor]:
        it = self._tensor_batches() if self.tensor is not None else self._stream_batches()
        skip, self._skip = getattr(self, "_skip", 0), 0
        for _ in range(skip):
            if next(it, _END) is _END:
                return
        for b in it:
            self.n_batches += 1
            yield b

    def _tensor_batches(self) -> Iterator[Tensor]:
        n, bs = len(self.tensor), self.batch_size
        perm_epoch, perm = None, None
        while True:
            parts, need = [], bs
            while need:
                if perm_epoch != self.epoch:
                    g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
                    perm, perm_epoch = torch.randperm(n, generator=g), self.epoch
                take = perm[self.pos:self.pos + need]
                parts.append(take)
                need -= len(take)
                self.pos += len(take)
                if self.pos == n:
                    self.epoch, self.pos = self.epoch + 1, 0
            idx = parts[0] if len(parts) == 1 else torch.cat(parts)
            yield self.tensor[idx].to(self.device)

    def _start_pass(self) -> None:
        self._pass, self._index = self._open(), 0

    def _read(self):
        """The current pass's next batch, validated, or _END."""
        b = next(self._pass, _END)
        if b is _END:
            return _END
        b = check_batch(b, f"acts batch {self._index}", self.d_in, self.dtype, self.device)
        self._index += 1
        return b

    def _source_batches(self) -> Iterator[Tensor]:
        """Validated source batches, pass after pass (one pass for a one-shot source)."""
        while True:
            if self._pass is None:
                self._start_pass()
            head, self._head = self._head, []
            yield from head
            while (b := self._read()) is not _END:
                yield b
            empty, self._pass = self._index == 0, None
            if self.one_shot or empty:
                return
            self.epoch += 1

    def _stream_batches(self) -> Iterator[Tensor]:
        bs = self.batch_size
        buf: list[Tensor] = []
        held = 0
        for b in self._source_batches():
            buf.append(b)
            held += len(b)
            while held >= bs:
                cat = buf[0] if len(buf) == 1 else torch.cat(buf)  # a view when no joining is needed
                rest = cat[bs:]
                buf, held = ([rest] if len(rest) else []), len(rest)
                yield cat[:bs]
        if held:
            yield torch.cat(buf)
