"""Save and load SAEs: a folder with ``sae_weights.safetensors`` and ``cfg.json`` (SAELens's layout).

cfg.json holds SAELens's fields (architecture, d_in, d_sae, dtype, device, apply_b_dec_to_input,
normalize_activations, and each kind's own, e.g. k for TopK kinds: ``SAE.saelens_cfg``) plus a ``univ``
block with the kind and every constructor argument (``SAE.hparams``). The weights are what
``SAE.export_tensors`` names (SAELens's W_enc, b_enc, W_dec, b_dec, threshold, plus ``norm_scale``, univ's
input normalisation factor); loading restores every tensor exactly (``SAE.import_tensors``), so
encode/decode after a round trip are bit-identical.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .._checks import check_device, check_finite, check_int, check_path
from ..integrity import write_file
from .model import SAE, SAE_KINDS

WEIGHTS, CFG = "sae_weights.safetensors", "cfg.json"
_DTYPES = {str(t): t for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def _tensors(sae: SAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sae.export_tensors().items()}


def save(sae: SAE, path: str | os.PathLike) -> Path:
    """Write ``sae`` to the folder ``path`` (created) as safetensors + cfg.json; returns the folder. Each file
    is replaced atomically, so an interrupted save leaves the previous SAE (or none), never a mix."""
    from safetensors.torch import save_file

    if not isinstance(sae, SAE):
        raise ValueError(f"sae: expected a univ.sae.SAE, got {type(sae).__name__}")
    folder = check_path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path: {str(folder)!r} is a file; save writes a folder (cfg.json + {WEIGHTS})")
    kind, hp = sae.kind, sae.hparams()
    tensors = _tensors(sae)
    for name, t in tensors.items():
        check_finite(t, f"sae.{name}")
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
        "dtype": str(sae.dtype).removeprefix("torch."), "device": str(sae.device),
        "apply_b_dec_to_input": True,
        "normalize_activations": "expected_average_only_in" if float(sae.norm_scale) != 1.0 else "none",
        "metadata": {}, "univ": {"kind": kind, "hparams": hp, "format_version": 1},
        **sae.saelens_cfg(),
    }
    # each file atomically, cfg.json last: a folder with cfg.json holds the weights it describes
    write_file(folder / WEIGHTS, lambda f: save_file(tensors, str(f)))
    text = json.dumps(cfg, indent=2)
    write_file(folder / CFG, lambda f: f.write_text(text))
    return folder


def _read_cfg(folder: Path) -> dict:
    """cfg.json as a dict with univ's block, its kind registered and d_in/d_sae integers; ValueError naming
    the path otherwise."""
    where = str(folder / CFG)
    try:
        cfg = json.loads((folder / CFG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"path: {where!r} is not valid JSON ({e}); the file is damaged or not an SAE "
                         "config") from None
    info = cfg.get("univ") if isinstance(cfg, dict) else None
    if not isinstance(info, dict) or info.get("kind") not in SAE_KINDS or not isinstance(info.get("hparams"), dict):
        arch = cfg.get("architecture") if isinstance(cfg, dict) else None
        kind = info.get("kind") if isinstance(info, dict) else None
        raise ValueError(f"path: {str(folder)!r} is not a univ SAE (architecture {arch!r}, univ kind "
                         f"{kind!r}); known kinds: {list(SAE_KINDS)}")
    for name in ("d_in", "d_sae"):
        v = cfg.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"path: {where!r} has {name}={v!r}, not a positive integer")
    return cfg


def load(path: str | os.PathLike, kind: str | None = None, d_in: int | None = None,
         d_sae: int | None = None, device=None) -> SAE:
    """Load an SAE written by :func:`save`.

    kind / d_in / d_sae: what the caller expects; a file of another kind or shape raises ValueError
    saying what was found. A damaged folder (cfg.json that is not JSON or lacks univ's fields, weights
    that are truncated, misshapen, non-finite or disagree with cfg.json) raises ValueError naming the path.
    """
    from safetensors.torch import load_file

    folder = check_path(path)
    if kind is not None:
        if not isinstance(kind, str):
            raise TypeError(f"kind: expected an SAE kind name, got {type(kind).__name__} {kind!r}")
        SAE_KINDS[kind]  # an unknown kind raises here, listing the known ones
    device = check_device(device)
    if not (folder / CFG).is_file() or not (folder / WEIGHTS).is_file():
        raise ValueError(f"path: {str(folder)!r} does not hold {CFG} and {WEIGHTS}")
    cfg = _read_cfg(folder)
    found = cfg["univ"]["kind"]
    if kind is not None and kind != found:
        raise ValueError(f"kind: expected a {kind!r} SAE but {str(folder)!r} holds a {found!r} SAE")
    for name, want in (("d_in", d_in), ("d_sae", d_sae)):
        if want is not None and check_int(want, name, low=1) != cfg[name]:
            raise ValueError(f"{name}: expected {want} but {str(folder)!r} holds an SAE with {name}={cfg[name]}")
    hp = dict(cfg["univ"]["hparams"])
    dtype = _DTYPES.get("torch." + str(cfg.get("dtype", "float32")), torch.float32)
    try:
        sae = SAE_KINDS[found](**hp, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"path: {str(folder / CFG)!r} holds hyperparameters a {found!r} SAE does not take "
                         f"({e})") from None
    if (sae.d_in, sae.d_sae) != (cfg["d_in"], cfg["d_sae"]):
        raise ValueError(f"path: {str(folder / CFG)!r} says d_in={cfg['d_in']}, d_sae={cfg['d_sae']} but its "
                         f"hyperparameters say d_in={sae.d_in}, d_sae={sae.d_sae}")
    try:
        tensors = load_file(str(folder / WEIGHTS))
    except Exception as e:  # safetensors raises its own error type for a truncated or foreign file
        raise ValueError(f"path: {str(folder / WEIGHTS)!r} is not a readable safetensors file ({e})") from None
    want_shapes = {k: tuple(v.shape) for k, v in _tensors(sae).items()}
    for name, shape in want_shapes.items():
        if name not in tensors:
            raise ValueError(f"path: {WEIGHTS} in {str(folder)!r} lacks the tensor {name!r} that a {found!r} SAE "
                             "needs")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"path: tensor {name!r} has shape {tuple(tensors[name].shape)} in "
                             f"{str(folder / WEIGHTS)!r}, but cfg.json (d_in={cfg['d_in']}, d_sae={cfg['d_sae']}) "
                             f"implies {shape}")
        if tensors[name].is_complex() or not tensors[name].is_floating_point():
            raise ValueError(f"path: tensor {name!r} in {WEIGHTS} has dtype {tensors[name].dtype}, not a float")
        check_finite(tensors[name], f"path: tensor {name!r} in {str(folder / WEIGHTS)!r}")
    sae.import_tensors(tensors)
    sae.eval()
    return sae.to(device) if device is not None else sae
