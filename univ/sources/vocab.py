"""Models compared on text must see the same tokens, or their positions pair different text.

Same tokenizer (same vocabulary, ids, special tokens and tokenisation): one :class:`TokenDataset` feeds every
model and activations are compared token by token. Different tokenizers, when allowed, use one strategy,
**per-sequence comparison**:

1. the text is cut at whitespace into short segments, each small enough to fit one context for every tokenizer
   (:func:`per_sequence_data`), so that row i holds exactly the same text for every model;
2. each model tokenises the segments with its own tokenizer (its own BOS and padding);
3. each model's token activations (n, T, d) are averaged over the segment's text tokens
   (:func:`masked_mean` with ``data.content_mask``: BOS and padding left out), giving (n, d) per model, and the
   comparison (CKA, SVCCA, ...) runs on those rows.

It is simpler than mapping tokens through character offsets and is exact about what each row covers; what it
loses is the within-sequence (token-position) resolution.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from .._checks import check_int, to_tensor
from .text import (
    PROBE_TEXT,
    Span,
    TokenDataset,
    bos_id,
    check_tokenizer,
    encode,
    resolve_pad_id,
    special_ids,
    tokenizer_fingerprint,
    tokenizer_name,
)


def check_same_tokenizer(tokenizers, allow_different: bool = False) -> bool:
    """True when all ``tokenizers`` (a list, or a dict name -> tokenizer) give the same ids for the same text.

    Compared: the vocabulary (token -> id), the BOS/EOS/PAD/UNK ids and the ids of a probe text (which catches
    the same vocabulary with different merges or normalisation). Different tokenizers raise a ValueError saying
    how they differ, unless ``allow_different``: then the result is False and the caller compares per sequence
    (:func:`per_sequence_data` + :func:`masked_mean`; see the module docstring).
    """
    named = _named(tokenizers)
    if not isinstance(allow_different, bool):
        raise TypeError(f"allow_different: must be True or False, got {allow_different!r}")
    (first, ref), *others = named.items()
    problems = [f"{name} vs {first}: {why}" for name, tok in others if (why := _difference(ref, tok))]
    if problems and not allow_different:
        raise ValueError("tokenizers: the models' tokenizers differ, so token positions would pair different text ("
                         + "; ".join(problems) + "); use models with one tokenizer, or pass allow_different=True and "
                         "compare per sequence (univ.sources.per_sequence_data, masked_mean)")
    return not problems


def _named(tokenizers) -> dict:
    if isinstance(tokenizers, Mapping):
        named = dict(tokenizers)
    elif isinstance(tokenizers, Sequence) and not isinstance(tokenizers, str):
        named = {f"tokenizers[{i}] ({tokenizer_name(t)})": t for i, t in enumerate(tokenizers)}
    else:
        raise TypeError(f"tokenizers: expected a list or a dict of tokenizers, got {type(tokenizers).__name__}")
    if not named:
        raise ValueError("tokenizers: is empty")
    for name, tok in named.items():
        check_tokenizer(tok, f"tokenizers[{name!r}]")
    return named


def _difference(a, b) -> str:
    """How tokenizer ``b`` differs from ``a`` ('' when it does not)."""
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        moved = [t for t in va if t in vb and va[t] != vb[t]]
        return (f"vocabularies differ ({len(va)} vs {len(vb)} tokens, {len(set(va) ^ set(vb))} not in both, "
                f"{len(moved)} with different ids" + (f", e.g. {moved[0]!r}: {va[moved[0]]} vs {vb[moved[0]]}"
                                                      if moved else "") + ")")
    if special_ids(a) != special_ids(b):
        return f"special-token ids differ ({special_ids(a)} vs {special_ids(b)})"
    if encode(a, PROBE_TEXT)[0] != encode(b, PROBE_TEXT)[0]:
        return "the same vocabulary tokenises a probe text differently (different merges or normalisation)"
    return ""


def per_sequence_data(
    texts: str | Sequence[str] | Mapping[str, str],
    tokenizers,
    context: int = 128,
    prepend_bos: bool = True,
    max_chars: int | None = None,
    max_sequences: int | None = None,
    pad_id: Mapping[str, int] | None = None,
) -> dict[str, TokenDataset]:
    """The same text segments tokenised by every tokenizer: {name: TokenDataset}, row i the same text for all.

    texts: documents (a string, a list, or {name: text} e.g. from :func:`univ.sources.read_texts`).
    tokenizers: a dict name -> tokenizer (or a list). Each document is cut at whitespace into segments of at
    most ``max_chars`` characters (default ``2 * context``); a segment longer than one context (BOS included)
    for any tokenizer is halved at the whitespace nearest its middle until it fits all. Each row is
    ``[BOS] + tokens + padding`` (context T), so ``input_ids``/``attention_mask`` are (n, T) per model, and
    ``texts``/``spans`` are identical across models. pad_id: {name: id} for tokenizers without PAD or EOS.
    """
    named = _named(tokenizers)
    docs = {"text": texts} if isinstance(texts, str) else dict(texts) if isinstance(texts, Mapping) \
        else {f"texts[{i}]": t for i, t in enumerate(texts)} if isinstance(texts, Sequence) else None
    if docs is None or not all(isinstance(t, str) for t in docs.values()):
        raise TypeError("texts: expected a string, a list of strings or a dict name -> string")
    bos = {name: bos_id(tok, prepend_bos) for name, tok in named.items()}
    context = check_int(context, "context", 2 if prepend_bos else 1)
    budget = context - int(prepend_bos)
    max_chars = check_int(max_chars, "max_chars", 1) if max_chars is not None else 2 * context
    limit = check_int(max_sequences, "max_sequences", 1) if max_sequences is not None else None

    rows: list[tuple[Span, dict[str, list[int]]]] = []
    for doc, text in docs.items():
        todo = _segments(text, max_chars)[::-1]
        while todo and (limit is None or len(rows) < limit):
            a, b = todo.pop()
            ids = {name: encode(tok, text[a:b])[0] for name, tok in named.items()}
            if all(len(v) <= budget for v in ids.values()):
                rows.append((Span(doc, a, b), ids))
                continue
            if b - a < 2:
                raise ValueError(f"context: one character of {doc!r} ({text[a:b]!r}) needs more than {budget} tokens")
            left, right = _middle_space(text, a, b)
            todo += [(right, b), (a, left)]  # popped in order: the left half first
    if not rows:
        raise ValueError("texts: holds no text (empty or whitespace only)")

    out = {}
    spans = tuple((span,) for span, _ in rows)
    seg_texts = tuple(docs[span.file][span.start:span.stop] for span, _ in rows)
    for name, tok in named.items():
        pad = resolve_pad_id(tok, None if pad_id is None else pad_id.get(name))
        first = [bos[name]] if bos[name] is not None else []
        input_ids = torch.full((len(rows), context), pad, dtype=torch.long)
        mask = torch.zeros(len(rows), context, dtype=torch.long)
        for i, (_, ids) in enumerate(rows):
            row = first + ids[name]
            input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, :len(row)] = 1
        out[name] = TokenDataset(f"per-sequence:{name}", input_ids, mask, seg_texts, spans, tokenizer_name(tok),
                                 len(tok), tokenizer_fingerprint(tok), context, prepend_bos, pad)
    return out


def _segments(text: str, max_chars: int) -> list[tuple[int, int]]:
    """[start, stop) character ranges: whole words packed greedily up to ``max_chars`` (longer words cut)."""
    out: list[tuple[int, int]] = []
    start = stop = None
    for m in re.finditer(r"\S+", text):
        a, b = m.span()
        if start is not None and b - start <= max_chars:
            stop = b
            continue
        if start is not None:
            out.append((start, stop))
        while b - a > max_chars:
            out.append((a, a + max_chars))
            a += max_chars
        start, stop = a, b
    if start is not None:
        out.append((start, stop))
    return out


def _middle_space(text: str, a: int, b: int) -> tuple[int, int]:
    """(end of the left half, start of the right): the whitespace run nearest the middle of [a, b), else the middle."""
    mid = (a + b) // 2
    runs = [(a + 1 + m.start(), a + 1 + m.end()) for m in re.finditer(r"\s+", text[a + 1:b - 1])]
    return min(runs, key=lambda r: abs(r[0] - mid)) if runs else (mid, mid)


def masked_mean(acts, mask) -> torch.Tensor:
    """The mean of token activations over the positions where ``mask`` is 1.

    acts: (n, T, *rest) (numpy or torch); mask: (n, T) of 0/1 (e.g. ``TokenDataset.content_mask``, which leaves
    out BOS and padding). Returns (n, *rest) float. Each row needs at least one position.
    """
    a = to_tensor(acts, "acts")
    m = to_tensor(mask, "mask")
    if a.ndim < 2 or m.ndim != 2 or tuple(a.shape[:2]) != tuple(m.shape):
        raise ValueError(f"acts, mask: expected acts (n, T, ...) and mask (n, T), got {tuple(a.shape)} and "
                         f"{tuple(m.shape)}")
    m = m.to(a.dtype if a.is_floating_point() else torch.float32)
    counts = m.sum(dim=1)
    if bool((counts <= 0).any()):
        raise ValueError(f"mask: rows {torch.nonzero(counts <= 0).flatten().tolist()[:10]} have no position to "
                         f"average over")
    w = m.reshape(*m.shape, *([1] * (a.ndim - 2)))
    return (a * w).sum(dim=1) / counts.reshape(-1, *([1] * (a.ndim - 2)))
