"""SAELens's folder format: the cfg.json univ writes for SAELens, and how a SAELens cfg.json maps onto a univ kind.

What SAELens (6.x) reads from a folder (``SAE.load_from_disk``): ``cfg.json`` with ``architecture``,
``d_in``, ``d_sae``, ``dtype``, ``device``, ``apply_b_dec_to_input``, ``normalize_activations``,
``reshape_activations``, the architecture's own fields (TopK: ``k``, ``rescale_acts_by_decoder_norm``)
and ``metadata`` (``hook_name``, ``model_name``, ``context_size``, ``prepend_bos``, ..., and
``sae_lens_version``: a config without one of 6.0 or later is read as a pre-6.0 config, whose fields sit
at the top level); ``sae_weights.safetensors`` holding exactly the architecture's state dict (it is
loaded strictly, so an extra tensor is an error).

At inference SAELens applies a normalisation only for ``constant_norm_rescale`` and ``layer_norm`` (both
per input: univ's fixed encode/decode cannot express them, so such folders are refused);
``expected_average_only_in`` and the others are taken as already folded into the weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .._checks import check_int
from .model import SAE, SAE_KINDS

SAELENS_FORMAT = "6.0.0"
"""The SAELens cfg.json layout univ writes (``metadata.sae_lens_version``); no SAELens is needed for it."""
METADATA_FIELDS = ("hook_name", "model_name", "context_size", "prepend_bos")
"""The metadata SAELens needs to run an SAE on a model (``add_sae``, ``ActivationsStore.from_sae``)."""
VERSION_FIELDS = ("sae_lens_version", "sae_lens_training_version", "univ_version")
_IDENTITY_NORMS = ("none", "expected_average_only_in", "covariance_whitening")
_PER_INPUT_NORMS = ("constant_norm_rescale", "layer_norm")
# pre-6.0 configs: top-level names SAELens moves into metadata (its LLM_METADATA_KEYS, less the versions)
_OLD_METADATA = ("model_name", "hook_name", "model_class_name", "hook_head_index", "model_from_pretrained_kwargs",
                 "prepend_bos", "exclude_special_tokens", "neuronpedia_id", "context_size", "seqpos_slice",
                 "dataset_path", "hook_name_out", "hook_head_index_out")


def check_metadata(md, name: str) -> dict:
    """``md`` as a dict of JSON values with the four SAELens fields of the right types (None: unknown);
    TypeError/ValueError naming ``name`` otherwise."""
    if not isinstance(md, Mapping) or not all(isinstance(k, str) for k in md):
        raise TypeError(f"{name}: expected a dict with str keys, got {type(md).__name__}")
    md = dict(md)
    for key in ("hook_name", "model_name"):
        if md.get(key) is not None and not isinstance(md[key], str):
            raise TypeError(f"{name}: {key} must be a str or None, got {type(md[key]).__name__} {md[key]!r}")
    if md.get("context_size") is not None:
        md["context_size"] = check_int(md["context_size"], f"{name}: context_size", low=1)
    if md.get("prepend_bos") is not None and not isinstance(md["prepend_bos"], bool):
        raise TypeError(f"{name}: prepend_bos must be a bool or None, got {md['prepend_bos']!r}")
    try:
        json.dumps(md, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}: values must be JSON (str, number, bool, None, lists, dicts): {e}") from None
    return md


def write_cfg(sae: SAE, metadata: Mapping, univ_block: dict) -> dict:
    """The cfg.json for ``sae`` as SAELens reads it, with univ's own block beside (SAELens ignores it).
    Normalisation is folded into the weights, so ``normalize_activations`` is "none"."""
    from .. import __version__

    md = {k: None for k in METADATA_FIELDS}
    md.update(metadata)
    # the layout's version, not an installed SAELens's; univ trained it, so no SAELens training version
    md.update(sae_lens_version=SAELENS_FORMAT, sae_lens_training_version=None, univ_version=__version__)
    return {"d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": str(sae.dtype).removeprefix("torch."),
            "device": str(sae.device), "apply_b_dec_to_input": True, "normalize_activations": "none",
            "reshape_activations": "none", **sae.saelens_cfg(), "metadata": md, "univ": univ_block}


def _is_v6(cfg: Mapping) -> bool:
    v = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    try:
        return int(str(v).split(".")[0]) >= 6
    except ValueError:
        return False


def as_v6(cfg: Mapping) -> dict:
    """A SAELens cfg.json in the 6.x layout: older configs' top-level metadata, ``hook_point``, boolean
    ``normalize_activations`` and ``activation_fn: topk`` become what SAELens 6 makes of them."""
    cfg = dict(cfg)
    if _is_v6(cfg):
        cfg["metadata"] = dict(cfg.get("metadata") or {})
        return cfg
    if "hook_point" in cfg:
        cfg.setdefault("hook_name", cfg.pop("hook_point"))
    cfg.setdefault("architecture", "standard")
    fn = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    k = (cfg.get("activation_fn_kwargs") or {}).get("k")
    if fn == "topk" and k is not None:
        cfg["architecture"], cfg["k"] = "topk", k
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool) or norm is None:
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    cfg.setdefault("prepend_bos", True)
    cfg["metadata"] = {k: cfg[k] for k in _OLD_METADATA if k in cfg}
    cfg["metadata"]["sae_lens_version"] = cfg.get("sae_lens_version")
    return cfg


def kind_for(cfg: Mapping, where: str) -> type[SAE]:
    """The univ kind that reads a SAELens cfg (6.x layout) of its ``architecture``; ValueError naming
    ``where`` and the architecture when none does, or when the folder needs what univ cannot compute."""
    arch = cfg.get("architecture")
    readers = {cls.architecture: cls for cls in SAE_KINDS.values() if cls.architecture}
    if arch not in readers:
        raise ValueError(f"path: {where!r} holds a SAELens SAE of architecture {arch!r}, which univ cannot "
                         f"read (it reads {sorted(readers)})")
    norm = cfg.get("normalize_activations", "none")
    if norm not in _IDENTITY_NORMS:
        why = ("normalises each input by its own statistics, which univ's encode/decode cannot express"
               if norm in _PER_INPUT_NORMS else "is not a normalisation SAELens knows")
        raise ValueError(f"path: {where!r} holds a SAELens {arch!r} SAE with normalize_activations={norm!r}, "
                         f"which {why}")
    if cfg.get("reshape_activations", "none") not in ("none", "hook_z"):
        raise ValueError(f"path: {where!r} holds a SAELens {arch!r} SAE with reshape_activations="
                         f"{cfg.get('reshape_activations')!r}, which univ cannot read")
    return readers[arch]


def read_metadata(cfg: Mapping) -> dict:
    """The metadata of a cfg.json (6.x layout) without the version fields (save writes its own)."""
    md = cfg.get("metadata") or {}
    return {k: v for k, v in md.items() if k not in VERSION_FIELDS} if isinstance(md, Mapping) else {}
