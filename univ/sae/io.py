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
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    kind, hp = sae.kind, sae.hparams()
    cfg = {
        "architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
        "dtype": str(sae.dtype).removeprefix("torch."), "device": str(sae.device),
        "apply_b_dec_to_input": True,
        "normalize_activations": "expected_average_only_in" if float(sae.norm_scale) != 1.0 else "none",
        "metadata": {}, "univ": {"kind": kind, "hparams": hp, "format_version": 1},
        **sae.saelens_cfg(),
    }
    # each file atomically, cfg.json last: a folder with cfg.json holds the weights it describes
    write_file(folder / WEIGHTS, lambda f: save_file(_tensors(sae), str(f)))
    text = json.dumps(cfg, indent=2)
    write_file(folder / CFG, lambda f: f.write_text(text))
    return folder


def load(path: str | os.PathLike, kind: str | None = None, d_in: int | None = None,
         d_sae: int | None = None, device=None) -> SAE:
    """Load an SAE written by :func:`save`.

    kind / d_in / d_sae: what the caller expects; a file of another kind or shape raises ValueError
    saying what was found. Weights whose shapes disagree with cfg.json also raise.
    """
    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / CFG).is_file() or not (folder / WEIGHTS).is_file():
        raise ValueError(f"path: {str(folder)!r} does not hold {CFG} and {WEIGHTS}")
    cfg = json.loads((folder / CFG).read_text())
    info = cfg.get("univ")
    if not info or info.get("kind") not in SAE_KINDS:
        raise ValueError(f"path: {str(folder)!r} is not a univ SAE (architecture "
                         f"{cfg.get('architecture')!r}, univ kind {info and info.get('kind')!r}); "
                         f"known kinds: {list(SAE_KINDS)}")
    found = info["kind"]
    if kind is not None and kind != found:
        raise ValueError(f"kind: expected a {kind!r} SAE but {str(folder)!r} holds a {found!r} SAE")
    for name, want in (("d_in", d_in), ("d_sae", d_sae)):
        if want is not None and want != cfg[name]:
            raise ValueError(f"{name}: expected {want} but {str(folder)!r} holds an SAE with {name}={cfg[name]}")
    hp = dict(info["hparams"])
    dtype = _DTYPES.get("torch." + cfg.get("dtype", "float32"), torch.float32)
    sae = SAE_KINDS[found](**hp, dtype=dtype)
    tensors = load_file(str(folder / WEIGHTS))
    want_shapes = {k: tuple(v.shape) for k, v in _tensors(sae).items()}
    for name, shape in want_shapes.items():
        if name not in tensors:
            raise ValueError(f"path: {WEIGHTS} lacks the tensor {name!r} that a {found!r} SAE needs")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"path: tensor {name!r} has shape {tuple(tensors[name].shape)} in {WEIGHTS}, "
                             f"but cfg.json (d_in={cfg['d_in']}, d_sae={cfg['d_sae']}) implies {shape}")
    sae.import_tensors(tensors)
    sae.eval()
    return sae.to(device) if device is not None else sae
