"""Save and load SAEs in SAELens's folder layout: ``cfg.json`` + ``sae_weights.safetensors``.

A folder univ writes is one SAELens (6.x) loads as it is (``SAE.load_from_disk``) and runs with univ's
encode/decode (to float rounding):

- ``sae_weights.safetensors`` holds exactly SAELens's state dict for the kind's architecture (ReLU:
  "standard", TopK: "topk", JumpReLU: "jumprelu", Gated: "gated", a trained BatchTopK: "jumprelu" with its
  threshold in every latent, as SAELens exports its own), with univ's input scaling ``norm_scale`` folded
  into W_enc, W_dec and b_dec, so cfg.json says ``normalize_activations: "none"``;
- ``univ_state.safetensors`` holds univ's own tensors that SAELens's cannot give back bit for bit
  (``norm_scale``, JumpReLU's ``log_threshold``, BatchTopK's scalar threshold, and the unfolded weights
  when ``norm_scale`` is not 1), so univ's round trip is bit-identical;
- ``cfg.json`` holds SAELens's fields, ``metadata`` (``hook_name``, ``model_name``, ``context_size``,
  ``prepend_bos``: from ``sae.metadata`` or save's arguments, None when unknown; ``sae_lens_version``: the
  layout's, ``univ_version``), and a ``univ`` block (kind, constructor arguments, format version, and the
  id of the save that the two weight files carry, so a folder mixing two saves is refused).

``load`` reads these folders, univ's older ones (format 1: everything in sae_weights.safetensors), and
folders SAELens wrote (standard, topk, jumprelu, gated; see ``univ.sae.saelens``), giving SAELens's outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .._checks import check_device, check_finite, check_int, check_path
from ..integrity import write_file
from ..registry import unknown_name_error
from . import saelens
from .model import SAE, SAE_KINDS

WEIGHTS, CFG, UNIV_STATE = "sae_weights.safetensors", "cfg.json", "univ_state.safetensors"
FORMAT = 2
_DTYPES = {str(t): t for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def _cpu(tensors) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _save_id(*dicts: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for d in dicts:
        for name in sorted(d):
            h.update(f"{name}:{d[name].dtype}:{tuple(d[name].shape)}".encode())
            h.update(d[name].reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:32]


def save(sae: SAE, path: str | os.PathLike, *, hook_name: str | None = None, model_name: str | None = None,
         context_size: int | None = None, prepend_bos: bool | None = None, metadata: dict | None = None) -> Path:
    """Write ``sae`` to the folder ``path`` (created) in SAELens's layout; returns the folder.

    hook_name / model_name / context_size / prepend_bos: SAELens's metadata (the model's hook the
    activations came from, the model, the sequence length, whether a BOS token was prepended); each
    overrides ``sae.metadata``'s entry of that name, and None leaves it (None when unknown).
    metadata: further metadata entries (JSON values, e.g. ``hook_head_index``, ``dataset_path``).
    Each file is replaced atomically, cfg.json last; ``load`` refuses a folder whose files come from
    different saves (an interrupted save), so it never returns a mix.
    """
    from safetensors.torch import save_file

    if getattr(sae, "is_multi_model", False):  # a crosscoder or universal SAE: its own layout (univ.sae.multi)
        from .multi import save_multi

        return save_multi(sae, path)
    if not isinstance(sae, SAE):
        raise ValueError(f"sae: expected a univ.sae.SAE, got {type(sae).__name__}")
    folder = check_path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path: {str(folder)!r} is a file; save writes a folder (cfg.json + {WEIGHTS})")
    md = saelens.check_metadata(getattr(sae, "metadata", {}), "sae.metadata")
    md.update(saelens.check_metadata(metadata if metadata is not None else {}, "metadata"))
    given = {"hook_name": hook_name, "model_name": model_name, "context_size": context_size,
             "prepend_bos": prepend_bos}
    md.update(saelens.check_metadata({k: v for k, v in given.items() if v is not None}, "metadata"))
    kind, hp = sae.kind, sae.hparams()
    ours = _cpu(sae.export_tensors())
    for name, t in ours.items():
        check_finite(t, f"sae.{name}")
    theirs = _cpu(sae.saelens_tensors())
    for name, t in theirs.items():
        check_finite(t, f"sae.{name} (with the normalisation folded in)")
    # univ's tensors that SAELens's state dict does not give back bit for bit
    own = {k: t for k, t in ours.items()
           if k not in theirs or theirs[k].dtype != t.dtype or theirs[k].shape != t.shape
           or not torch.equal(theirs[k], t)}
    save_id = _save_id(theirs, own)
    cfg = saelens.write_cfg(sae, md, {"kind": kind, "hparams": hp, "format_version": FORMAT, "save_id": save_id})
    folder.mkdir(parents=True, exist_ok=True)
    stamp = {"univ_save_id": save_id}
    write_file(folder / UNIV_STATE, lambda f: save_file(own, str(f), metadata=stamp))
    write_file(folder / WEIGHTS, lambda f: save_file(theirs, str(f), metadata=stamp))
    text = json.dumps(cfg, indent=2)
    write_file(folder / CFG, lambda f: f.write_text(text))
    return folder


def _read_cfg(folder: Path) -> dict:
    """cfg.json as a dict with d_in/d_sae positive integers; ValueError naming the path otherwise."""
    where = str(folder / CFG)
    try:
        cfg = json.loads((folder / CFG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"path: {where!r} is not valid JSON ({e}); the file is damaged or not an SAE "
                         "config") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"path: {str(folder)!r} is not a univ or SAELens SAE (its {CFG} holds a "
                         f"{type(cfg).__name__}, not an object)")
    info = cfg.get("univ")
    if info is not None and (not isinstance(info, dict) or info.get("kind") not in SAE_KINDS
                             or not isinstance(info.get("hparams"), dict)):
        kind = info.get("kind") if isinstance(info, dict) else None
        raise ValueError(f"path: {str(folder)!r} is not a univ SAE of a registered kind (architecture "
                         f"{cfg.get('architecture')!r}, univ kind {kind!r}); known kinds: {list(SAE_KINDS)}")
    for name in ("d_in", "d_sae"):
        v = cfg.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"path: {where!r} has {name}={v!r}, not a positive integer")
    return cfg


def _read_weights(file: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, safetensors metadata) of one file; ValueError naming it when unreadable."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(file), framework="pt") as f:
            stamp = f.metadata() or {}
        return load_file(str(file)), stamp
    except Exception as e:  # safetensors raises its own error type for a truncated or foreign file
        raise ValueError(f"path: {str(file)!r} is not a readable safetensors file ({e})") from None


def _check_tensors(tensors: dict, want: dict[str, torch.Tensor], folder: Path, what: str, cfg: dict,
                   exact: bool) -> None:
    """Each tensor ``want`` names is in ``tensors`` with its shape, a float, finite; with ``exact`` no other
    is (SAELens loads its state dict strictly)."""
    for name, like in want.items():
        if name not in tensors:
            raise ValueError(f"path: {WEIGHTS} in {str(folder)!r} lacks the tensor {name!r} that {what} needs")
        t = tensors[name]
        if tuple(t.shape) != tuple(like.shape):
            raise ValueError(f"path: tensor {name!r} has shape {tuple(t.shape)} in {str(folder / WEIGHTS)!r}, "
                             f"but cfg.json (d_in={cfg['d_in']}, d_sae={cfg['d_sae']}) implies {tuple(like.shape)}")
        if t.is_complex() or not t.is_floating_point():
            raise ValueError(f"path: tensor {name!r} in {WEIGHTS} has dtype {t.dtype}, not a float")
        check_finite(t, f"path: tensor {name!r} in {str(folder / WEIGHTS)!r}")
    extra = sorted(set(tensors) - set(want))
    if exact and extra:
        raise ValueError(f"path: {str(folder / WEIGHTS)!r} holds tensors {extra} that {what} does not have")


def _univ_tensors(folder: Path, cfg: dict) -> dict[str, torch.Tensor]:
    """The tensors of a folder univ wrote: SAELens's file overlaid with univ_state (format 2)."""
    version = cfg["univ"].get("format_version", 1)
    tensors, stamp = _read_weights(folder / WEIGHTS)
    if version == 1:  # everything, norm_scale included, in sae_weights.safetensors
        return tensors
    if version != FORMAT:
        raise ValueError(f"path: {str(folder)!r} was written in univ's SAE format {version!r}; this univ reads "
                         f"formats 1 and {FORMAT} (a newer univ wrote it?)")
    if not (folder / UNIV_STATE).is_file():
        raise ValueError(f"path: {str(folder)!r} lacks {UNIV_STATE}, which univ's format {FORMAT} keeps beside "
                         f"{WEIGHTS}")
    own, own_stamp = _read_weights(folder / UNIV_STATE)
    want = cfg["univ"].get("save_id")
    if stamp.get("univ_save_id") != want or own_stamp.get("univ_save_id") != want:
        raise ValueError(f"path: {str(folder)!r} holds files of different saves ({CFG}, {WEIGHTS} and "
                         f"{UNIV_STATE} do not share one save id): an interrupted save? Save it again")
    return {**tensors, **own}


def load(path: str | os.PathLike, kind: str | None = None, d_in: int | None = None,
         d_sae: int | None = None, device=None) -> SAE:
    """Load an SAE from a folder written by :func:`save` (bit-identical) or by SAELens.

    A SAELens folder (architecture standard, topk, jumprelu or gated) becomes the univ kind of that
    architecture (relu, topk, jumprelu, gated) computing SAELens's encode/decode; its metadata goes to
    ``sae.metadata``. Architectures or normalisations univ cannot compute raise ValueError naming both.
    A folder of a multi-model dictionary (``save`` of a Crosscoder or UniversalSAE) gives that dictionary.
    kind / d_in / d_sae: what the caller expects; a file of another kind or shape raises ValueError
    saying what was found. Multi-model kinds: "crosscoder" (any), "crosscoder-batchtopk" (one kind),
    "universal"; d_in of one: its models' widths (a list) or their sum. A damaged folder (cfg.json that is
    not JSON, weights that are truncated, misshapen, non-finite or disagree with cfg.json) raises ValueError
    naming the path.
    """
    folder = check_path(path)
    from .multi import MULTI_WEIGHTS, is_multi_folder, load_multi, multi_kind_names

    if kind is not None:
        if not isinstance(kind, str):
            raise TypeError(f"kind: expected an SAE kind name, got {type(kind).__name__} {kind!r}")
        if kind not in SAE_KINDS and kind not in multi_kind_names():
            raise unknown_name_error("SAE kind", kind, [*SAE_KINDS, *multi_kind_names()])
    device = check_device(device)
    if (folder / MULTI_WEIGHTS).is_file() and is_multi_folder(folder):
        return load_multi(folder, device, kind=kind, d_in=d_in, d_sae=d_sae)
    if not (folder / CFG).is_file() or not (folder / WEIGHTS).is_file():
        raise ValueError(f"path: {str(folder)!r} does not hold {CFG} and {WEIGHTS}")
    cfg = _read_cfg(folder)
    ours = cfg.get("univ") is not None
    if not ours:
        cfg = saelens.as_v6(cfg)
    cls = SAE_KINDS[cfg["univ"]["kind"]] if ours else saelens.kind_for(cfg, str(folder))
    found = next(name for name, c in SAE_KINDS.items() if c is cls)
    if kind is not None and kind != found:
        raise ValueError(f"kind: expected a {kind!r} SAE but {str(folder)!r} holds a {found!r} SAE")
    for name, want in (("d_in", d_in), ("d_sae", d_sae)):
        if want is not None and check_int(want, name, low=1) != cfg[name]:
            raise ValueError(f"{name}: expected {want} but {str(folder)!r} holds an SAE with {name}={cfg[name]}")
    dtype = _DTYPES.get("torch." + str(cfg.get("dtype", "float32")).removeprefix("torch."), torch.float32)
    try:
        hp = dict(cfg["univ"]["hparams"]) if ours else {"d_in": cfg["d_in"], "d_sae": cfg["d_sae"],
                                                        **cls.saelens_hparams(cfg)}
        sae = cls(**hp, dtype=dtype)
    except (TypeError, ValueError) as e:
        what = "hyperparameters" if ours else f"SAELens {cfg.get('architecture')!r} fields"
        raise ValueError(f"path: {str(folder / CFG)!r} holds {what} a {found!r} SAE does not take ({e})") from None
    if (sae.d_in, sae.d_sae) != (cfg["d_in"], cfg["d_sae"]):
        raise ValueError(f"path: {str(folder / CFG)!r} says d_in={cfg['d_in']}, d_sae={cfg['d_sae']} but its "
                         f"hyperparameters say d_in={sae.d_in}, d_sae={sae.d_sae}")
    if ours:
        tensors = _univ_tensors(folder, cfg)
        _check_tensors(tensors, _cpu(sae.export_tensors()), folder, f"a {found!r} SAE", cfg, exact=False)
        sae.import_tensors(tensors)
    else:
        tensors, _ = _read_weights(folder / WEIGHTS)
        what = f"a SAELens {cfg['architecture']!r} SAE"
        _check_tensors(tensors, _cpu(sae.saelens_tensors()), folder, what, cfg, exact=True)
        sae.import_saelens(tensors, cfg)
    sae.metadata = saelens.read_metadata(cfg)
    sae.eval()
    return sae.to(device) if device is not None else sae
