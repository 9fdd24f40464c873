"""Feature dashboards: one self-contained HTML page per dictionary (SAE or crosscoder) and the models it reads.

For every latent of every model: its top-activating examples (images for image data, token contexts with
per-token highlighting for text), the histogram of its non-zero activations, the logits its decoder direction
promotes and suppresses (where the model has an unembedding) and its best matches in the other models, shown
side by side with their own top examples and the match score. An index lists every latent (searchable;
filtered by model, tag, density and matched-or-not); a latent's card opens from it, and ``page.html#MODEL/J``
opens latent J of MODEL directly.

The dashboard is generic over the dictionary: :func:`features` reads any object with ``encode()`` (an SAE of
:mod:`univ.sae`; a crosscoder's per-model codes can be given directly as :class:`ModelFeatures`), and
:func:`build` takes one :class:`ModelFeatures` per model: (codes, and the images or token contexts the rows of
the codes are). Matches are given (``univ.sae.match`` tables) or measured here as the correlation of codes when
every model's rows are the same inputs.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .html import asset, script_json


@dataclass
class ModelFeatures:
    """One model's side of a dashboard.

    codes: (n, d_sae) latent activations, one row per example (an image or a token).
    images: (n, H, W) or (n, C, H, W) with C in (1, 3): what row i is, for image data.
    signals: (n, L): what row i is, for 1-D data (drawn as a line).
    tokens: for text, the contexts as lists of token strings; the rows of ``codes`` are their tokens in order
        (``sum(len(c) for c in tokens) == n``, as ``univ.capture(..., reduce="tokens")`` gives).
    logits: per latent, the tokens its decoder direction promotes and suppresses (:func:`top_logits`).
    tags: one label per latent (e.g. shared / exclusive); labels: a name per example (e.g. its class).
    """

    codes: object
    images: object = None
    signals: object = None
    tokens: list | None = None
    logits: list | None = None
    tags: list | None = None
    labels: list | None = None


def _np(x, name: str, ndim: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__}") from None
    if a.ndim not in ndim:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in ndim)} array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return a


def top_logits(decoder, unembed, vocab, n: int = 8, chunk: int = 256) -> list:
    """Per latent, the ``n`` tokens its decoder direction promotes most and the ``n`` it suppresses most (its direct
    effect on the logits, a final norm left out): [[(token, weight), ...], [(token, weight), ...]] per latent.

    decoder: (d_sae, d_in); unembed: (d_in, vocab); vocab: the token strings (a sequence, or a function of the
    token id). Computed ``chunk`` latents at a time, so a large vocabulary never needs a (d_sae, vocab) matrix.
    """
    import torch

    dec = torch.as_tensor(_np(decoder, "decoder", (2,), np.float32))
    u = torch.as_tensor(_np(unembed, "unembed", (2,), np.float32))  # a large vocabulary: float32 halves the copy
    if dec.shape[1] != u.shape[0]:
        raise ValueError(f"unembed: expected ({dec.shape[1]}, vocab) to follow the decoder, got {tuple(u.shape)}")
    word = vocab if callable(vocab) else None
    if word is None:
        if vocab is None or len(vocab) != u.shape[1]:
            raise ValueError(f"vocab: expected the {u.shape[1]} token strings of the unembedding's columns, got "
                             f"{'None' if vocab is None else len(vocab)}")
        word = vocab.__getitem__
    n = min(n, u.shape[1])
    out = []
    for i in range(0, len(dec), chunk):
        w = dec[i:i + chunk] @ u
        up, down = w.topk(n, dim=1), (-w).topk(n, dim=1)
        for r in range(len(w)):
            out.append([[[str(word(int(t))), float(v)] for v, t in zip(up.values[r], up.indices[r])],
                        [[str(word(int(t))), -float(v)] for v, t in zip(down.values[r], down.indices[r])]])
    return out


def features(dictionary, acts, batch_size: int = 4096, decoder=None, unembed=None, vocab=None,
             n_logits: int = 8, **views) -> ModelFeatures:
    """A :class:`ModelFeatures` from a dictionary with ``encode()`` and the activations it reads.

    acts: (n, d_in). unembed: (d_in, vocab), the model's unembedding, with ``vocab`` its token strings (or a
    function of the id): the logits each latent's decoder direction (``decoder`` (d_sae, d_in), default the
    dictionary's ``W_dec``) promotes and suppresses. views: the other :class:`ModelFeatures` fields (images,
    tokens, tags, labels).
    """
    import torch

    if not callable(getattr(dictionary, "encode", None)):
        raise TypeError(f"dictionary: expected an object with encode() (an SAE), got {type(dictionary).__name__}")
    x = torch.as_tensor(_np(acts, "acts", (2,)), dtype=torch.float32)
    with torch.no_grad():
        codes = torch.cat([dictionary.encode(x[i:i + batch_size]).float().cpu() for i in range(0, len(x),
                                                                                                  batch_size)])
        logits = None
        if unembed is not None:
            dec = getattr(dictionary, "W_dec", None) if decoder is None else decoder
            if dec is None:
                raise ValueError("decoder: the dictionary has no W_dec; pass decoder=(d_sae, d_in)")
            logits = top_logits(dec, unembed, vocab, n_logits)
    return ModelFeatures(codes.numpy(), logits=logits, **views)


@dataclass
class Dashboard:
    """The JSON-ready data of a dashboard page (what :func:`render` draws)."""

    data: dict


def _check(name: str, m: ModelFeatures) -> np.ndarray:
    if not isinstance(m, ModelFeatures):
        raise TypeError(f"models[{name!r}]: expected ModelFeatures, got {type(m).__name__}")
    codes = _np(m.codes, f"models[{name!r}].codes", (2,), np.float32)  # (tokens x latents) can be large
    n, d = codes.shape
    if m.images is not None:
        im = np.asarray(m.images)
        if im.ndim not in (3, 4) or len(im) != n or (im.ndim == 4 and im.shape[1] not in (1, 3)):
            raise ValueError(f"models[{name!r}].images: expected ({n}, H, W) or ({n}, 1|3, H, W), got {im.shape}")
    if m.signals is not None and (np.ndim(m.signals) != 2 or len(m.signals) != n):
        raise ValueError(f"models[{name!r}].signals: expected ({n}, L), got shape {np.shape(m.signals)}")
    if sum(v is not None for v in (m.images, m.signals, m.tokens)) > 1:
        raise ValueError(f"models[{name!r}]: give one of images, signals and tokens (what the rows are)")
    if m.tokens is not None:
        total = sum(len(c) for c in m.tokens)
        if total != n:
            raise ValueError(f"models[{name!r}].tokens: the contexts hold {total} tokens but codes has {n} rows")
    for field, size in (("tags", d), ("labels", n), ("logits", d)):
        v = getattr(m, field)
        if v is not None and len(v) != size:
            raise ValueError(f"models[{name!r}].{field}: expected {size} entries, got {len(v)}")
    return codes


def correlation_matches(codes_a: np.ndarray, codes_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each latent of A, its most correlated latent of B over the same rows: (partner (d_a,), score (d_a,));
    a latent that never fires has partner -1 and score NaN."""
    def z(c):
        c = c - c.mean(0)
        s = np.sqrt((c * c).sum(0))
        return c / np.where(s > 0, s, 1), s > 0
    za, la = z(codes_a)
    zb, lb = z(codes_b)
    corr = np.where(lb[None, :], za.T @ zb, -np.inf)
    partner = corr.argmax(1)
    score = corr[np.arange(len(partner)), partner]
    bad = ~la | ~np.isfinite(score)
    return np.where(bad, -1, partner), np.where(bad, np.nan, score)


def top_rows(codes: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """(d, k): the rows of each column's k largest values, largest first, ``chunk`` columns at a time (no
    (n, d) sort of a large token x latent matrix)."""
    n, d = codes.shape
    out = np.empty((d, k), dtype=np.int64)
    for s in range(0, d, chunk):
        c = codes[:, s:s + chunk]
        part = np.argpartition(-c, k - 1, axis=0)[:k] if k < n else np.broadcast_to(np.arange(n)[:, None], c.shape)
        best = np.argsort(-np.take_along_axis(c, part, 0), axis=0, kind="stable")
        out[s:s + chunk] = np.take_along_axis(part, best, 0).T
    return out


def _image_bytes(im: np.ndarray) -> tuple[str, list[int]]:
    """Images (k, H, W) or (k, C, H, W) as base64 of uint8 (k, H, W, C), scaled to 0..255 over the batch."""
    im = np.asarray(im, dtype=np.float64)
    if im.ndim == 3:
        im = im[:, None]
    im = im.transpose(0, 2, 3, 1)
    lo, hi = im.min(), im.max()
    u8 = np.round(255 * (im - lo) / (hi - lo if hi > lo else 1)).astype(np.uint8)
    return base64.b64encode(u8.tobytes()).decode(), list(u8.shape[1:])


def _model_data(name: str, m: ModelFeatures, codes: np.ndarray, top_k: int, bins: int, window: int) -> dict:
    n, d = codes.shape
    order = top_rows(codes, min(top_k, n))
    active = codes > 0
    density = active.mean(0)
    peak = codes.max(0)
    latents = []
    starts = np.cumsum([0] + [len(c) for c in m.tokens]) if m.tokens is not None else None
    used = sorted({int(r) for j in range(d) if peak[j] > 0 for r in order[j]})
    for j in range(d):
        lat = {"density": float(density[j]), "max": float(peak[j]),
               "tag": None if m.tags is None else str(m.tags[j])}
        if peak[j] > 0:
            rows = [int(r) for r in order[j] if codes[r, j] > 0]
            lat["top"] = [[r, float(codes[r, j])] for r in rows]
            nz = codes[active[:, j], j]
            counts, edges = np.histogram(nz, bins=bins, range=(0, float(peak[j])))
            lat["hist"] = [counts.tolist(), float(edges[-1])]
            if starts is not None:  # a token window around each top token, with this latent's activation per token
                ctx = []
                for r in rows:
                    c = int(np.searchsorted(starts, r, side="right") - 1)
                    pos = r - starts[c]
                    lo_, hi_ = max(0, pos - window), min(len(m.tokens[c]), pos + window // 2 + 1)
                    ctx.append([c, int(lo_), int(pos), [round(float(v), 4) for v in
                                                        codes[starts[c] + lo_:starts[c] + hi_, j]]])
                lat["ctx"] = ctx
        if m.logits is not None:
            lat["logits"] = m.logits[j]
        latents.append(lat)
    out = {"name": name, "n": n, "d": d, "latents": latents, "kind": "tokens" if m.tokens is not None else
           "images" if m.images is not None else "signals" if m.signals is not None else "rows"}
    if m.signals is not None:
        sig = _np(m.signals, f"models[{name!r}].signals", (2,))
        out["signals"] = {str(r): [round(float(v), 4) for v in sig[r]] for r in used}
    if m.images is not None:
        data, shape = _image_bytes(np.asarray(m.images)[used])
        out["images"] = {"rows": used, "data": data, "shape": shape}
    if m.tokens is not None:
        keep = sorted({c[0] for lat in latents for c in lat.get("ctx", [])})
        out["contexts"] = {str(c): [str(t) for t in m.tokens[c]] for c in keep}
    if m.labels is not None:
        out["labels"] = {str(r): str(m.labels[r]) for r in used}
    return out


def build(models: dict[str, ModelFeatures], matches: dict | None = None, top_k: int = 8, bins: int = 24,
          window: int = 12, threshold: float = 0.7) -> Dashboard:
    """The dashboard of one dictionary per model (or one crosscoder's per-model codes).

    models: model name -> :class:`ModelFeatures`. matches: (model_a, model_b) -> a ``univ.sae.match`` table
    (``feature_a``, ``feature_b``, and ``correlation`` or another score column) or (partner (d_a,), score
    (d_a,)); pairs not given are measured as the correlation of codes when both models' rows are the same
    inputs (same count). threshold: the score at which a latent counts as matched (the index filter); a model
    given without tags gets :func:`match_tags` (dead, exclusive, partly shared, universal) from these matches.
    top_k: examples per latent; bins: histogram bins; window: tokens of context before a top token.
    """
    if not isinstance(models, dict) or not models:
        raise ValueError(f"models: expected a non-empty dict of model name -> ModelFeatures, got {models!r:.80}")
    codes = {str(name): _check(str(name), m) for name, m in models.items()}
    for name, value in (("top_k", top_k), ("bins", bins), ("window", window)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    given = {}
    for key, value in (matches or {}).items():
        if not (isinstance(key, tuple) and len(key) == 2 and all(k in codes for k in key)):
            raise ValueError(f"matches: keys must be (model_a, model_b) pairs of {list(codes)}, got {key!r}")
        given[key] = _as_pairs(key, value, codes)
    data = {"threshold": float(threshold), "models": [], "matches": {}}
    names = list(codes)
    hits = {}  # model -> (latents matched per other model, how many other models were measured)
    for a in names:
        for b in names:
            if a == b:
                continue
            pair = given.get((a, b))
            if pair is None and len(codes[a]) == len(codes[b]):
                pair = correlation_matches(codes[a], codes[b])
            if pair is not None:
                data["matches"][f"{a}\u0000{b}"] = [pair[0].astype(int).tolist(), [None if np.isnan(s) else
                                                                                    round(float(s), 4)
                                                                                    for s in pair[1]]]
                count, n = hits.get(a, (0, 0))
                hits[a] = (count + (np.nan_to_num(pair[1], nan=-np.inf) >= threshold), n + 1)
    for name, m in models.items():
        name = str(name)
        if m.tags is None and name in hits:
            m = replace(m, tags=match_tags(codes[name], *hits[name]))
        data["models"].append(_model_data(name, m, codes[name], int(top_k), int(bins), int(window)))
    return Dashboard(data)


def match_tags(codes: np.ndarray, matched: np.ndarray, n_other: int) -> list[str]:
    """A tag per latent from its matches: dead (never fires on these rows), exclusive (no match at the threshold
    in any other model), universal (one in every other model), else partly shared.

    codes: (n, d_sae); matched: (d_sae,) how many of the ``n_other`` other models hold a match."""
    alive = codes.max(0) > 0
    return ["dead" if not a else "exclusive" if h == 0 else "universal" if h == n_other else "partly shared"
            for a, h in zip(alive, np.broadcast_to(matched, alive.shape))]


def _as_pairs(key, value, codes) -> tuple[np.ndarray, np.ndarray]:
    d_a, d_b = codes[key[0]].shape[1], codes[key[1]].shape[1]
    if isinstance(value, pd.DataFrame):
        score_col = next((c for c in ("correlation", "similarity", "cos_encoder", "score") if c in value.columns),
                         None)
        if "feature_a" not in value.columns or "feature_b" not in value.columns or score_col is None:
            raise ValueError(f"matches[{key!r}]: expected a table with feature_a, feature_b and a correlation or "
                             f"similarity column, got columns {list(value.columns)}")
        partner, score = np.full(d_a, -1), np.full(d_a, np.nan)
        fa = value["feature_a"].to_numpy(int)
        partner[fa] = value["feature_b"].fillna(-1).to_numpy(int)
        score[fa] = value[score_col].to_numpy(float)
    else:
        partner, score = (np.asarray(v) for v in value)
    partner = np.asarray(partner).astype(int)
    score = np.asarray(score, dtype=np.float64)
    if partner.shape != (d_a,) or score.shape != (d_a,) or partner.max(initial=-1) >= d_b:
        raise ValueError(f"matches[{key!r}]: expected a partner in 0..{d_b - 1} (or -1) and a score for each of "
                         f"{key[0]}'s {d_a} latents")
    return partner, np.where(partner < 0, np.nan, score)


def render(dashboard: Dashboard, title: str = "feature dashboard") -> str:
    """The dashboard page: one HTML file with its data, styles and script inline."""
    if not isinstance(dashboard, Dashboard):
        raise TypeError(f"dashboard: expected a Dashboard (univ.report.dashboard.build), got "
                        f"{type(dashboard).__name__}")
    return PAGE.format(title=html.escape(title), css=asset("report.css") + asset("dashboard.css"),
                       data=script_json(dashboard.data), js=asset("dashboard.js"))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><link rel="icon" href="data:,"><style>{css}</style></head>
<body class="dash"><main><h1>{title}</h1>
<div id="filters" class="tbl-tools"></div>
<div class="dash-body"><div id="index" class="tbl-wrap"></div><div id="card" class="card">
<p class="hint">Choose a latent in the index to open its card.</p></div></div>
</main>
<script type="application/json" id="dashboard">{data}</script>
<script>{js}</script>
</body></html>
"""

__all__ = ["ModelFeatures", "Dashboard", "features", "top_logits", "build", "render", "correlation_matches",
           "match_tags", "top_rows"]
