"""What dictionaries over N models share: the models' activations joined side by side, per-model input
normalisation, per-model views of the weights, validation that names the model, and the folder layout.

A multi-model dictionary (:class:`univ.sae.Crosscoder`, :class:`univ.sae.UniversalSAE`) holds its weights
for all models concatenated along the input axis (D = sum(d_ins)): ``W_enc: (D, d_sae)``,
``W_dec: (d_sae, D)``, ``b_dec: (D,)``, ``norm_scale: (D,)`` (constant within a model's block). Model m's
block is columns ``offsets[m]:offsets[m + 1]``: ``W_dec[m]`` (= ``W_decs[m]``), ``W_enc[m]``, ``b_dec[m]``
(views; an integer index of these joined parameters is a model, see :class:`ModelBlocks`). Joined this way, one
input row is the N models' activations on one input, so univ's SAE training loop (``univ.sae.fit``: streams,
resumes, converges by itself, AuxK dead-latent bookkeeping) trains it unchanged; each model's block is scaled
to a mean norm of sqrt(d_m) (``input_scale``), so no model dominates the loss because of its units, and the
decoder rows are kept at unit norm over all blocks together, which fixes the scale between codes and
decoder (a gauge) and leaves the split of a latent's norm between models free.

Folder layout (``univ.sae.save``/``load`` dispatch here for these kinds)::

    cfg.json                    {"univ_multi": {"class": "Crosscoder" | "UniversalSAE", "hparams": {...},
                                 "format_version": 1, "save_id": ...}, "d_ins": [...], "d_sae": ...,
                                 "dtype": ..., "metadata": {...}}
    multi_weights.safetensors   the exact tensors (export_tensors), stamped with the save id
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import as_matrix, check_finite, check_int, check_path, check_seed
from ..integrity import write_file
from . import train
from .model import Configured, StepOutput

MULTI_CFG, MULTI_WEIGHTS, MULTI_FORMAT = "cfg.json", "multi_weights.safetensors", 1
MULTI_CLASSES: dict[str, type] = {}
"""Class name -> multi-model dictionary class (what ``load`` can rebuild); filled by ``register_multi``."""


def register_multi(cls):
    MULTI_CLASSES[cls.__name__] = cls
    return cls


def multi_kind_names() -> list[str]:
    """Every ``kind=`` that ``univ.sae.load`` accepts for a multi-model folder ("crosscoder",
    "crosscoder-batchtopk", ..., "universal")."""
    return [name for cls in MULTI_CLASSES.values() for name in cls.all_kind_names()]


def check_d_ins(d_ins) -> list[int]:
    if isinstance(d_ins, (str, bytes, Mapping)) or not isinstance(d_ins, Iterable):
        raise TypeError(f"d_ins: expected a list of the models' widths, got {type(d_ins).__name__} {d_ins!r}")
    d_ins = [check_int(d, f"d_ins[{m}] (model {m})", low=1) for m, d in enumerate(d_ins)]
    if len(d_ins) < 2:
        raise ValueError(f"d_ins: a multi-model dictionary needs at least 2 models, got {len(d_ins)}")
    return d_ins


class ModelBlocks(nn.Parameter):
    """A joined parameter (``W_enc``, ``W_dec``, ``b_dec``) whose integer index is a model, as for the
    universal SAE's per-model ``b_enc``: ``W_dec[m]`` is model m's block (a view, (d_sae, d_ins[m])),
    ``W_dec[m, i]`` latent i's decoder vector in model m, ``W_dec[-1]`` the last model's block. Any other
    index (a slice, an index list or tensor, a mask) indexes the joined tensor as it is, so latent rows are
    ``W_dec[i:i + 1]`` or ``W_dec[[i, j]]``. Everything else (arithmetic, autograd, optimisers, state dicts)
    sees an ordinary parameter; results of operations on it are plain tensors."""

    def __new__(cls, data: Tensor, d_ins, dim: int, name: str, requires_grad: bool = True):
        p = super().__new__(cls, data, requires_grad)
        p._blocks = (tuple(d_ins), dim, name)
        return p

    def _model(self, m) -> tuple[int, int]:
        d_ins, dim, name = self._blocks
        n = len(d_ins)
        if not -n <= m < n:
            rows = "latent rows" if dim == 1 else "rows"
            raise ValueError(f"model: {name}[{m}] is model {m}'s block, but the models are -{n} .. {n - 1} (d_ins="
                             f"{list(d_ins)}); index {rows} with a slice or a list ({name}[{m}:{m + 1}], "
                             f"{name}[[{m}]])")
        m %= n
        return sum(d_ins[:m]), d_ins[m]

    def _route(self, index):
        """(the model block, the rest of the index) for an index led by an integer, else None."""
        head, rest = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, None)
        if isinstance(head, (bool, np.bool_)) or not isinstance(head, (numbers.Integral, np.integer)):
            return None
        start, width = self._model(int(head))
        return Tensor.narrow(self, self._blocks[1], start, width), rest

    def __getitem__(self, index):
        routed = self._route(index)
        if routed is None:
            return Tensor.__getitem__(self, index)
        block, rest = routed
        return block if rest is None else block[rest]

    def __setitem__(self, index, value):
        routed = self._route(index)
        if routed is None:
            return Tensor.__setitem__(self, index, value)
        block, rest = routed
        block[... if rest is None else rest] = value

    def __deepcopy__(self, memo):
        if id(self) not in memo:
            memo[id(self)] = ModelBlocks(self.data.clone(memory_format=torch.preserve_format), *self._blocks,
                                         requires_grad=self.requires_grad)
        return memo[id(self)]

    def __reduce_ex__(self, proto):
        return ModelBlocks, (self.data, *self._blocks, self.requires_grad)


def _is_array(x) -> bool:
    return isinstance(x, Tensor) or hasattr(x, "__array__")


class MultiModel(Configured, nn.Module):
    """Base of the multi-model dictionaries: parameters laid out as the module docstring says."""

    is_multi_model = True
    has_sparsity_penalty = False

    def __init__(self, d_ins, d_sae: int, *, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.d_ins = check_d_ins(d_ins)
        self.d_sae = check_int(d_sae, "d_sae", low=1)
        seed = check_seed(seed)
        if seed is None:
            raise TypeError("seed: must be an integer, got None")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating torch dtype such as torch.float32, got {dtype!r}")
        self.seed = seed
        self.n_models = len(self.d_ins)
        self.offsets = [0]
        for d in self.d_ins:
            self.offsets.append(self.offsets[-1] + d)
        self.d_in = self.offsets[-1]  # D: the joined width (what univ's training loop sees)
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(self.d_sae, self.d_in, generator=g, dtype=torch.float64)
        # every model's block starts with the same norm, 1 / sqrt(N): no latent starts out favouring a model
        W = torch.cat([b / b.norm(dim=1, keepdim=True) for b in self.split(W)], 1) / math.sqrt(self.n_models)
        # W_dec[m], W_enc[m], b_dec[m]: model m's block (ModelBlocks)
        self.W_dec = ModelBlocks(W.to(dtype), self.d_ins, 1, "W_dec")  # (d_sae, D)
        self.W_enc = ModelBlocks(W.T.clone().to(dtype), self.d_ins, 0, "W_enc")  # (D, d_sae)
        self.b_dec = ModelBlocks(torch.zeros(self.d_in, dtype=dtype), self.d_ins, 0, "b_dec")
        self.register_buffer("norm_scale", torch.ones(self.d_in, dtype=dtype))
        self.metadata: dict = {}

    @classmethod
    def all_kind_names(cls) -> tuple[str, ...]:
        """The ``kind=`` names ``univ.sae.load`` accepts for some dictionary of this class."""
        return (cls.__name__.lower(),)

    def kind_names(self) -> tuple[str, ...]:
        """The ``kind=`` names ``univ.sae.load`` accepts for this dictionary, the most specific last."""
        return (type(self).__name__.lower(),)

    # ---- per-model views ----
    def split(self, t: Tensor, dim: int = -1) -> list[Tensor]:
        """t cut along ``dim`` (of size D) into the N models' blocks (views)."""
        return list(torch.split(t, self.d_ins, dim=dim))

    @property
    def W_encs(self) -> list[Tensor]:
        """Model m's encoder block (d_ins[m], d_sae), in the normalised space, for every m."""
        return self.split(self.W_enc, 0)

    @property
    def W_decs(self) -> list[Tensor]:
        """Model m's decoder block (d_sae, d_ins[m]), in the normalised space, for every m."""
        return self.split(self.W_dec, 1)

    @torch.no_grad()
    def decoder_norms(self) -> Tensor:
        """(d_sae, N) float64: the norm of every latent's decoder block in every model (normalised space,
        where each model's activations have mean norm sqrt(d_m), so the columns are comparable)."""
        return torch.stack([b.double().norm(dim=1) for b in self.W_decs], 1)

    @torch.no_grad()
    def input_scale(self, x: Tensor) -> Tensor:
        """(D,) scale that gives each model's block of x: (n, D) a mean row norm of sqrt(d_m)."""
        parts = [torch.full((d,), math.sqrt(d) / float(b.norm(dim=1).mean().clamp_min(1e-12)), dtype=x.dtype,
                            device=x.device) for d, b in zip(self.d_ins, self.split(x))]
        return torch.cat(parts)

    # ---- input checks (messages name the model) ----
    def check_inputs(self, xs, name: str = "xs", min_rows: int = 1) -> Tensor:
        """The N models' activations xs (a list of (n, d_ins[m]) arrays) joined into (n, D); ValueError naming
        the model index for a wrong count, width, row count or a NaN/Inf."""
        if _is_array(xs) or isinstance(xs, (str, bytes, Mapping)) or not isinstance(xs, (list, tuple)):
            raise ValueError(f"{name}: expected a list of {self.n_models} arrays, one per model (model 0 .. "
                             f"{self.n_models - 1}), got {type(xs).__name__}")
        if len(xs) != self.n_models:
            raise ValueError(f"{name}: expected {self.n_models} arrays (one per model, d_ins={self.d_ins}), got "
                             f"{len(xs)}")
        parts = []
        for m, x in enumerate(xs):
            label = f"{name}[{m}] (model {m})"
            t = as_matrix(x, label, min_rows=min_rows, dtype=self.dtype, device=self.device)
            if t.shape[1] != self.d_ins[m]:
                raise ValueError(f"{label}: expected {self.d_ins[m]} features (d_ins[{m}]), got {t.shape[1]}")
            if parts and len(t) != len(parts[0]):
                raise ValueError(f"{label}: has {len(t)} rows but model 0 has {len(parts[0])}; every model's "
                                 "activations must be on the same inputs, row for row")
            parts.append(t)
        return torch.cat(parts, 1)

    def _source(self, xs):
        """xs as a source univ.sae.fit reads: a joined (n, D) tensor, or a stream of joined batches."""
        if isinstance(xs, (list, tuple)) and (not xs or _is_array(xs[0])):
            return self.check_inputs(xs, min_rows=2)
        if isinstance(xs, Iterator):
            return (self.check_inputs(b, f"xs batch {i}") for i, b in enumerate(xs))
        if isinstance(xs, Iterable) and not isinstance(xs, (str, bytes, Mapping)) and not _is_array(xs):
            return _Joined(lambda: iter(xs), self)
        if callable(xs):
            return _Joined(xs, self)
        raise ValueError(f"xs: expected a list of {self.n_models} arrays (one per model), an iterable of such "
                         f"lists (batches) or a zero-argument callable returning one, got {type(xs).__name__}")

    def fit(self, xs, **kwargs):
        """Train on the N models' activations on the same inputs; returns self.

        xs: a list of N arrays (n, d_ins[m]), or batches of such lists (an iterable, a zero-argument callable
        returning a fresh one, or a one-shot iterator) that stream. The keyword arguments are those of
        :func:`univ.sae.fit` (batch_size, max_steps, patience, checkpoint/resume, progress, ...)."""
        return train.fit(self, self._source(xs), **kwargs)

    # ---- the maps ----
    def reconstruction_loss(self, x_hat: Tensor, xn: Tensor) -> Tensor:
        """Mean over rows of the summed squared error over all models, / D (normalised units)."""
        return (x_hat - xn).pow(2).sum(-1).mean() / self.d_in

    def decode(self, codes) -> list[Tensor]:
        """The N models' reconstructions (n, d_ins[m]), in input units, of codes (n, d_sae)."""
        z = as_matrix(codes, "codes", min_rows=1, dtype=self.dtype, device=self.device)
        if z.shape[1] != self.d_sae:
            raise ValueError(f"codes: expected {self.d_sae} latents (d_sae), got {z.shape[1]}")
        return self.split((z @ self.W_dec + self.b_dec) / self.norm_scale)

    # ---- what save/load read and write ----
    def export_tensors(self) -> dict[str, Tensor]:
        return {name: t for name, t in self.state_dict().items()}

    @torch.no_grad()
    def import_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        self.load_state_dict(dict(tensors))

    @torch.no_grad()
    def folded(self, m: int) -> dict[str, Tensor]:
        """Model m's decoder block and bias with its normalisation folded in (input units, float64 maths):
        ``W_dec`` (d_sae, d_m), ``b_dec`` (d_m,)."""
        m = check_model_index(m, self.n_models)
        s = float(self.split(self.norm_scale)[m][0])
        return {"W_dec": (self.W_decs[m].double() / s).to(self.dtype),
                "b_dec": (self.split(self.b_dec)[m].double() / s).to(self.dtype)}


def check_model_index(m, n_models: int) -> int:
    """m as a model index in 0 .. n_models - 1; negative m counts from the end, as W_dec[m] and lists do."""
    return check_int(m, "model", -n_models, n_models - 1, why=" (the model indices; negative ones count from the "
                     "end)") % n_models


class _Joined:
    """A re-iterable stream of joined batches over a source of per-model batch lists."""

    def __init__(self, open_, mm: MultiModel):
        self._open, self._mm = open_, mm

    def __iter__(self):
        for i, b in enumerate(self._open()):
            yield self._mm.check_inputs(b, f"xs batch {i}")


def _check_expected(model: MultiModel, folder: Path, kind, d_in, d_sae) -> None:
    names = model.kind_names()
    held = f"{names[-1]!r} ({type(model).__name__} over {model.n_models} models, d_ins={model.d_ins})"
    if kind is not None and kind not in names:
        raise ValueError(f"kind: expected a {kind!r} SAE but {str(folder)!r} holds a {held}; load it with "
                         f"kind={' or '.join(map(repr, names))} (or kind=None)")
    if d_sae is not None and check_int(d_sae, "d_sae", low=1) != model.d_sae:
        raise ValueError(f"d_sae: expected {d_sae} but {str(folder)!r} holds a {held} with d_sae={model.d_sae}")
    if d_in is not None:
        if isinstance(d_in, (list, tuple)):
            if list(d_in) != model.d_ins:
                raise ValueError(f"d_in: expected the widths {list(d_in)} but {str(folder)!r} holds a {held}")
        elif check_int(d_in, "d_in", low=1) != model.d_in:
            raise ValueError(f"d_in: expected {d_in} but {str(folder)!r} holds a {held}, whose joined width is "
                             f"{model.d_in}")


# ---- save / load ----
def _save_id(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:32]


def save_multi(model: MultiModel, path) -> Path:
    """Write a multi-model dictionary to the folder ``path`` (layout: the module docstring); returns it."""
    from safetensors.torch import save_file

    folder = check_path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path: {str(folder)!r} is a file; save writes a folder ({MULTI_CFG} + {MULTI_WEIGHTS})")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.export_tensors().items()}
    for name, t in tensors.items():
        if t.is_floating_point():
            check_finite(t, f"model.{name}")
    sid = _save_id(tensors)
    name = next(c.__name__ for c in type(model).__mro__ if MULTI_CLASSES.get(c.__name__) is c)
    cfg = {"univ_multi": {"class": name, "hparams": model.hparams(), "format_version": MULTI_FORMAT,
                          "save_id": sid},
           "d_ins": model.d_ins, "d_sae": model.d_sae, "dtype": str(model.dtype).removeprefix("torch."),
           "metadata": dict(getattr(model, "metadata", {}))}
    text = json.dumps(cfg, indent=2)
    folder.mkdir(parents=True, exist_ok=True)
    write_file(folder / MULTI_WEIGHTS, lambda f: save_file(tensors, str(f), metadata={"univ_save_id": sid}))
    write_file(folder / MULTI_CFG, lambda f: f.write_text(text))
    return folder


def is_multi_folder(folder: Path) -> bool:
    try:
        cfg = json.loads((folder / MULTI_CFG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(cfg, dict) and "univ_multi" in cfg


def load_multi(path, device=None, kind: str | None = None, d_in=None, d_sae: int | None = None) -> MultiModel:
    """Rebuild the dictionary :func:`save_multi` wrote at ``path``, bit for bit. kind / d_in / d_sae: what
    the caller expects (kind: one of :func:`multi_kind_names`; d_in: the models' widths as a list, or their
    sum); a folder holding another raises ValueError naming what it holds."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = check_path(path)
    cfg = json.loads((folder / MULTI_CFG).read_text(encoding="utf-8"))
    info = cfg.get("univ_multi")
    if not isinstance(info, dict) or info.get("class") not in MULTI_CLASSES \
            or not isinstance(info.get("hparams"), dict):
        raise ValueError(f"path: {str(folder)!r} holds no multi-model dictionary univ knows (known: "
                         f"{sorted(MULTI_CLASSES)})")
    if info.get("format_version") != MULTI_FORMAT:
        raise ValueError(f"path: {str(folder)!r} has format version {info.get('format_version')!r}; this univ reads "
                         f"{MULTI_FORMAT}")
    dtype = getattr(torch, str(cfg.get("dtype", "float32")), torch.float32)
    try:
        model = MULTI_CLASSES[info["class"]](**info["hparams"], dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"path: {str(folder / MULTI_CFG)!r} holds hyperparameters a {info['class']} does not "
                         f"take ({e})") from None
    _check_expected(model, folder, kind, d_in, d_sae)
    file = folder / MULTI_WEIGHTS
    try:
        with safe_open(str(file), framework="pt") as f:
            stamp = (f.metadata() or {}).get("univ_save_id")
        tensors = load_file(str(file))
    except Exception as e:  # safetensors raises its own error type for a truncated or foreign file
        raise ValueError(f"path: {str(file)!r} is not a readable safetensors file ({e})") from None
    if stamp != info.get("save_id"):
        raise ValueError(f"path: {str(folder)!r} holds files of different saves ({MULTI_CFG} and {MULTI_WEIGHTS} "
                         "do not share one save id): an interrupted save? Save it again")
    want = model.export_tensors()
    for name, like in want.items():
        t = tensors.get(name)
        if t is None or t.shape != like.shape or t.dtype != like.dtype:
            got = None if t is None else f"{t.dtype} {tuple(t.shape)}"
            raise ValueError(f"path: {str(file)!r} holds {name!r} as {got}, expected {like.dtype} {tuple(like.shape)}")
    model.import_tensors({k: tensors[k] for k in want})
    model.metadata = dict(cfg.get("metadata") or {})
    model.eval()
    return model.to(device) if device is not None else model


def topk_step_output(x_hat, losses: dict, vals, idx, pre, d_sae: int, want_codes: bool):
    """A top-k dictionary's training-step result from its k selected codes ``vals`` at latents ``idx`` (rows x k):
    which latents fired, the mean L0, and (``want_codes``) the dense codes shaped like ``pre``."""
    on = vals.detach() > 0
    fired = torch.zeros(d_sae, dtype=torch.bool, device=vals.device)
    fired[idx[on]] = True
    codes = torch.zeros_like(pre).scatter(-1, idx, vals) if want_codes else None
    return StepOutput(x_hat, losses, fired, on.sum(-1).float().mean(), codes)
