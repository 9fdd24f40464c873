"""Text to fixed-length token contexts: the ``text:`` and ``corpus`` data sources.

    data = load_text("notes/*.txt", tokenizer, context=128)    # a file, a folder or a glob
    acts = univ.capture(model, data.inputs, ...)                 # {"input_ids", "attention_mask"}: (n, T) each

The files are read in sorted order as UTF-8, each tokenised without special tokens, and packed into one stream
(the tokenizer's EOS between files when it has one, ``eos_between_files``). The stream is cut into contexts of
``context`` tokens: with ``prepend_bos`` each context is ``[BOS] + (context - 1)`` text tokens, otherwise
``context`` text tokens. The last partial context is padded on the right (``attention_mask`` 0 there) or
dropped (``drop_last``).
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_int, check_path
from ..utils import stable_hash, tensor_hash

PROBE_TEXT = "The quick brown fox, naïvely: def f(x): return x ** 2  # 12 jumps!\n\tÜber 3.14 ÷ 2 — done."
"""A fixed text whose tokenisation is part of a tokenizer's fingerprint (same vocab, different merges differ)."""


class Span(NamedTuple):
    """Where a context's text came from: characters [start, stop) of the decoded text of ``file``."""

    file: str
    start: int
    stop: int


@dataclass(frozen=True, eq=False)
class TokenDataset:
    """Token contexts for a language model, with the masks and provenance that comparisons need.

    input_ids: (n, T) int64; attention_mask: (n, T) int64, 1 for BOS and text tokens, 0 for padding.
    """

    name: str
    """The spec or source it came from, e.g. "text:notes/*.txt" or "corpus"."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    texts: tuple[str, ...]
    """The text of each context: the source characters it covers (pieces from several files joined by a newline),
    or the tokenizer's decoding of its tokens for tokenizers without offsets (slow tokenizers)."""
    spans: tuple[tuple[Span, ...], ...] | None
    """Per context, the source spans it covers (one per file touched); None for tokenizers without offsets."""
    tokenizer_name: str
    vocab_size: int
    tokenizer_hash: str
    """:func:`tokenizer_fingerprint` of the tokenizer: equal hashes mean the same ids for the same text."""
    context: int
    prepend_bos: bool
    """Whether column 0 of every context is the tokenizer's BOS token."""
    pad_id: int | None
    """The id used to pad the last context (None when nothing was padded)."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        """``{"input_ids": (n, T), "attention_mask": (n, T)}``, the dict univ.capture accepts."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    @property
    def content_mask(self) -> torch.Tensor:
        """(n, T) int64: the attention mask without the BOS column (the text tokens only), for means over tokens."""
        mask = self.attention_mask.clone()
        if self.prepend_bos:
            mask[:, 0] = 0
        return mask

    @functools.cached_property
    def content_hash(self) -> str:
        """A digest of the token ids and the mask."""
        return tensor_hash(self.input_ids, self.attention_mask)

    def subset(self, n: int) -> TokenDataset:
        """The first ``n`` contexts (for quick runs)."""
        n = check_int(n, "n", 1)
        return replace(self, input_ids=self.input_ids[:n], attention_mask=self.attention_mask[:n],
                       texts=self.texts[:n], spans=None if self.spans is None else self.spans[:n])

    def describe(self) -> dict:
        """A JSON-able summary for cache keys and reports: the spec, shape, BOS/padding, the tokenizer and a hash
        of the contents (the files read are not listed: the content hash stands for them)."""
        return {"name": self.name, "kind": "tokens", "n": len(self), "context": self.context,
                "prepend_bos": self.prepend_bos, "pad_id": self.pad_id, "tokenizer": self.tokenizer_name,
                "vocab_size": self.vocab_size, "tokenizer_hash": self.tokenizer_hash,
                "n_tokens": int(self.attention_mask.sum()), "content_hash": self.content_hash}


def check_tokenizer(tokenizer, name: str = "tokenizer"):
    """``tokenizer`` if it looks like a HuggingFace tokenizer (callable, ``get_vocab``, ``decode``); else raise."""
    if tokenizer is None:
        raise ValueError(f"{name}: text data needs a tokenizer, e.g. tokenizer=AutoTokenizer.from_pretrained(path) "
                         f"or the model's own tokenizer")
    if not (callable(tokenizer) and hasattr(tokenizer, "get_vocab") and hasattr(tokenizer, "decode")):
        raise TypeError(f"{name}: expected a HuggingFace tokenizer (callable, with get_vocab and decode), "
                        f"got {type(tokenizer).__name__}")
    return tokenizer


def tokenizer_name(tokenizer) -> str:
    """The tokenizer's hub id or folder (``name_or_path``), else its class name."""
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of the vocabulary (token -> id), the special-token ids and the ids of :data:`PROBE_TEXT`."""
    tok = check_tokenizer(tokenizer)
    return stable_hash({"vocab": sorted(tok.get_vocab().items()), "special": special_ids(tok),
                        "probe": encode(tok, PROBE_TEXT)[0]})


def special_ids(tokenizer) -> dict[str, int | None]:
    """The BOS, EOS, PAD and UNK ids (None where the tokenizer has none)."""
    return {k: getattr(tokenizer, f"{k}_token_id", None) for k in ("bos", "eos", "pad", "unk")}


def bos_id(tokenizer, prepend_bos: bool) -> int | None:
    """The id to put first in every context: the tokenizer's BOS, None without ``prepend_bos``; a tokenizer with no
    BOS token and ``prepend_bos=True`` is an error (univ does not substitute another token silently)."""
    if not isinstance(prepend_bos, bool):
        raise TypeError(f"prepend_bos: must be True or False, got {prepend_bos!r}")
    if not prepend_bos:
        return None
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise ValueError(f"prepend_bos: the tokenizer {tokenizer_name(tokenizer)!r} has no BOS token "
                         f"(bos_token_id is None); pass prepend_bos=False, or set tokenizer.bos_token first")
    return int(bos)


def resolve_pad_id(tokenizer, pad_id: int | None) -> int:
    """The padding id: ``pad_id`` when given, else the tokenizer's PAD, else its EOS, else an error."""
    if pad_id is not None:
        return check_int(pad_id, "pad_id", 0)
    for key in ("pad_token_id", "eos_token_id"):
        if getattr(tokenizer, key, None) is not None:
            return int(getattr(tokenizer, key))
    raise ValueError(f"pad_id: the tokenizer {tokenizer_name(tokenizer)!r} has neither a PAD nor an EOS token to pad "
                     f"the last context with; pass pad_id=ID or drop_last=True")


def encode(tokenizer, text: str) -> tuple[list[int], np.ndarray | None]:
    """The ids of ``text`` without special tokens, and their character offsets (m, 2) where the tokenizer gives
    them (fast tokenizers; None otherwise)."""
    fast = bool(getattr(tokenizer, "is_fast", False))
    kwargs = {"return_offsets_mapping": True} if fast else {}
    enc = tokenizer(text, add_special_tokens=False, verbose=False, **kwargs)
    ids = list(enc["input_ids"])
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2) if fast else None
    return ids, offsets


def find_text_files(source, pattern: str = "*.txt") -> list[Path]:
    """The files ``source`` names, in a deterministic order: a file; a folder (its files matching ``pattern``,
    recursively, sorted by relative path, hidden files and folders skipped); or a glob (sorted, ``**`` allowed)."""
    where = str(check_path(source, "text"))
    path = Path(where).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted((f for f in path.rglob(pattern) if f.is_file()
                        and not any(p.startswith(".") for p in f.relative_to(path).parts)),
                       key=lambda f: f.relative_to(path).as_posix())
        if not files:
            raise ValueError(f"text: the folder {where!r} has no files matching {pattern!r} "
                             f"(pass pattern='*.md' or similar for other names)")
        return files
    if any(c in where for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(os.path.expanduser(where), recursive=True) if os.path.isfile(f))
        if not files:
            raise ValueError(f"text: the glob {where!r} matches no files")
        return files
    raise ValueError(f"text: {where!r} does not exist (expected a file, a folder or a glob)")


def read_text(path) -> str:
    """A file's text as UTF-8 (a leading byte-order mark dropped); a file that is not UTF-8 raises, naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"text: cannot read {str(path)!r} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"text: {str(path)!r} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         f"convert it to UTF-8 or leave it out") from None


def read_texts(source, pattern: str = "*.txt") -> dict[str, str]:
    """{path: text} for the files ``source`` names (see :func:`find_text_files`), in order."""
    return {str(f): read_text(f) for f in find_text_files(source, pattern)}


def load_text(
    source,
    tokenizer,
    context: int = 128,
    prepend_bos: bool = True,
    pad_id: int | None = None,
    drop_last: bool = False,
    max_contexts: int | None = None,
    n_tokens: int | None = None,
    eos_between_files: bool = True,
    pattern: str = "*.txt",
    name: str | None = None,
) -> TokenDataset:
    """Read the text files ``source`` names (file, folder or glob) and cut them into (n, context) token contexts.

    tokenizer: a HuggingFace tokenizer. context: T, tokens per context (BOS included). prepend_bos: put the
    tokenizer's BOS first in every context (an error if it has none). pad_id: the id that pads the last partial
    context (default: the tokenizer's PAD, else EOS, else an error); drop_last: drop that context instead.
    max_contexts: keep at most this many contexts; n_tokens: keep at most this many tokens of the packed stream
    (text tokens and EOS separators; BOS and padding not counted). eos_between_files: put the tokenizer's EOS
    between consecutive files when it has one. Files are read only until the caps are reached.

    Returns a :class:`TokenDataset` whose ``spans``/``texts`` say which characters of which file each context
    covers.
    """
    tok = check_tokenizer(tokenizer)
    bos = bos_id(tok, prepend_bos)
    context = check_int(context, "context", 2 if prepend_bos else 1)
    budget = context - (bos is not None)  # text tokens per context
    caps = [check_int(max_contexts, "max_contexts", 1) * budget if max_contexts is not None else None,
            check_int(n_tokens, "n_tokens", 1) if n_tokens is not None else None]
    limit = min((c for c in caps if c is not None), default=None)
    files = find_text_files(source, pattern)
    eos = getattr(tok, "eos_token_id", None) if eos_between_files else None

    ids: list[int] = []
    where: list[np.ndarray] = []  # per token: (file index, start, stop); -1 for separators
    texts: dict[str, str] = {}
    offsets_known = True
    for i, f in enumerate(files):
        text = read_text(f)
        texts[str(f)] = text
        piece, offsets = encode(tok, text)
        if not piece:
            continue
        if ids and eos is not None:
            ids.append(int(eos))
            where.append(np.array([[-1, 0, 0]]))
        ids.extend(piece)
        offsets_known = offsets_known and offsets is not None
        if offsets is not None:
            where.append(np.column_stack([np.full(len(piece), i), offsets]))
        if limit is not None and len(ids) >= limit:
            break
    if not ids:
        raise ValueError(f"text: {str(source)!r} holds no text ({len(files)} file(s), all empty)")
    ids = ids[:limit]

    n_full, rest = divmod(len(ids), budget)
    pad = None
    if rest and drop_last:
        ids = ids[: n_full * budget]
        if not ids:
            raise ValueError(f"drop_last: {str(source)!r} has {rest} tokens, fewer than one context of {budget}; "
                             f"pass drop_last=False or a smaller context")
    elif rest:
        pad = resolve_pad_id(tok, pad_id)
    n = -(-len(ids) // budget)
    body = torch.full((n * budget,), pad if pad is not None else 0, dtype=torch.long)
    body[: len(ids)] = torch.tensor(ids, dtype=torch.long)
    mask = (torch.arange(n * budget) < len(ids)).long()
    body, mask = body.view(n, budget), mask.view(n, budget)
    if bos is not None:
        body = torch.cat([torch.full((n, 1), bos, dtype=torch.long), body], dim=1)
        mask = torch.cat([torch.ones(n, 1, dtype=torch.long), mask], dim=1)

    if offsets_known:
        spans = _spans(np.concatenate(where)[: len(ids)], budget, [str(f) for f in files])
        ctx_texts = tuple("\n".join(texts[s.file][s.start:s.stop] for s in ss) for ss in spans)
    else:
        spans = None
        ctx_texts = tuple(tok.decode(ids[c * budget:(c + 1) * budget]) for c in range(n))
    return TokenDataset(name or f"text:{source}", body, mask, ctx_texts, spans, tokenizer_name(tok), len(tok),
                        tokenizer_fingerprint(tok), context, bos is not None, pad)


def _spans(where: np.ndarray, budget: int, files: Sequence[str]) -> tuple[tuple[Span, ...], ...]:
    out = []
    for a in range(0, len(where), budget):
        w = where[a:a + budget]
        w = w[w[:, 0] >= 0]
        out.append(tuple(Span(files[f], int(w[w[:, 0] == f, 1].min()), int(w[w[:, 0] == f, 2].max()))
                         for f in np.unique(w[:, 0])))
    return tuple(out)
