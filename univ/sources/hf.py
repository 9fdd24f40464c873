"""``hf:`` (transformers Auto classes) and ``tl:`` (TransformerLens 4.x TransformerBridge) model sources.

Both take a hub id (``gpt2``, ``EleutherAI/pythia-70m``: downloaded as from_pretrained does, for users with
a network) or a local folder holding ``config.json`` and the weights (``save_pretrained``'s layout).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from .._checks import check_choice
from ..activations import first_tensor
from ..models import eval_mode
from . import MODEL_SOURCES
from .wrapper import SourceModel, seeded

TASKS = {"causal-lm": "AutoModelForCausalLM", "masked-lm": "AutoModelForMaskedLM",
         "sequence-classification": "AutoModelForSequenceClassification",
         "image-classification": "AutoModelForImageClassification", "base": "AutoModel"}
"""task -> the transformers Auto class that loads it."""
_SUFFIXES = (("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"), ("ForMaskedLM", "masked-lm"),
             ("ForSequenceClassification", "sequence-classification"),
             ("ForImageClassification", "image-classification"))
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def local_folder(name: str, what: str) -> Path | None:
    """The folder ``name`` names (None for a hub id); a folder that is no HuggingFace model says what is
    missing."""
    path = Path(name).expanduser()
    if not path.exists():
        if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
            raise ValueError(f"spec: {what}{name}: no such folder")
        return None
    if not path.is_dir():
        raise ValueError(f"spec: {what}{name} is a file; expected a model folder (config.json + weights)")
    if not (path / "config.json").is_file():
        raise ValueError(f"spec: {what}{name} is not a HuggingFace model folder: no config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ValueError(f"spec: {what}{name} is not a HuggingFace model folder: no weights "
                         f"(one of {list(WEIGHT_FILES)})")
    return path


def choose_task(config) -> str:
    """The task a config describes: its ``architectures[0]`` class name (``...ForCausalLM``/``LMHeadModel``
    -> causal-lm, ``ForMaskedLM`` -> masked-lm, ``ForSequenceClassification``, ``ForImageClassification``,
    anything else -> base), or, without one, the Auto mappings that list its ``model_type``
    (image classification, then causal LM unless it is a masked LM, then masked LM, else base)."""
    from transformers.models.auto import modeling_auto as auto

    for arch in getattr(config, "architectures", None) or []:
        return next((task for suffix, task in _SUFFIXES if arch.endswith(suffix)), "base")
    kind = config.model_type
    if kind in auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image-classification"
    if kind in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal-lm"
    return "masked-lm" if kind in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES else "base"


def probe_input(net: nn.Module) -> dict[str, torch.Tensor]:
    """A tiny batch the net accepts: two tokens, or one blank image of the config's size."""
    config = net.config
    if net.main_input_name == "pixel_values":
        size = getattr(config, "image_size", 64)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        return {"pixel_values": torch.zeros(1, getattr(config, "num_channels", 3), *size)}
    return {net.main_input_name: torch.zeros(1, 2, dtype=torch.long)}


def _storage_key(t: torch.Tensor) -> tuple:
    return t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype


@torch.no_grad()
def hidden_state_layers(net: nn.Module) -> tuple[list[str], list[int]]:
    """The module paths that emit ``output_hidden_states[1:]`` (the residual stream after each block; the
    last may be the final norm, as HuggingFace reports it), found by running one probe batch and matching
    each hidden state to the module output it is (the same memory, perhaps reshaped), outermost module
    first, and the rank of each (3: (b, T, d); 4: (b, C, H, W))."""
    emitted: dict[tuple, str] = {}
    kept = []  # holding every output keeps its memory from being reused within the probe
    handles = []
    for path, module in net.named_modules():
        def record(_m, _i, out, path=path):
            try:
                t = first_tensor(out)
            except TypeError:  # a module returning no tensor
                return
            kept.append(t)
            emitted[_storage_key(t)] = path  # hooks fire inner modules first: the outer one overwrites
        if path:
            handles.append(module.register_forward_hook(record))
    try:
        with eval_mode(net):
            hidden = net(**probe_input(net), output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    names = [emitted.get(_storage_key(h)) for h in hidden[1:]]
    if None in names:
        raise ValueError(f"spec: cannot tell which modules of {type(net).__name__} emit its hidden states; pass "
                         "layers=[module paths] to load_model")
    return names, [h.ndim for h in hidden[1:]]


def load_hf_net(name: str, task: str | None, dtype, device):
    """(net, task) loaded with the Auto class of ``task`` (chosen from the config when None)."""
    import transformers

    folder = local_folder(name, "hf:")
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder or name))
        task = task or choose_task(config)
        check_choice(task, "task", TASKS)
        net = getattr(transformers, TASKS[task]).from_pretrained(str(folder or name), dtype=dtype)
    except (OSError, KeyError) as e:
        raise ValueError(f"spec: cannot load hf:{name} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return net.to(device) if device is not None else net, task


def load_tokenizer(name: str, tokenizer, text: bool):
    """The tokenizer: ``tokenizer`` when given (an object or a name), else the model's own when it has
    one; None for non-text models."""
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    if not text:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer or name))
    except (OSError, ValueError, TypeError):
        if tokenizer is not None:
            raise ValueError(f"tokenizer: cannot load a tokenizer from {str(tokenizer)!r}") from None
        return None


def wrap_hf(net: nn.Module, spec: str, tokenizer=None, layers=None) -> SourceModel:
    """A HuggingFace model as a :class:`SourceModel`: layers from its hidden states; features channels-last
    for sequence models (hidden states (b, T, d): every module output of a transformer is (b, T, ...) with
    features last, convolutions excepted), and unknown outside the layers for convolutional ones."""
    found, ranks = hidden_state_layers(net)
    layers = list(layers) if layers is not None else found
    sequence = all(r == 3 for r in ranks)
    text = net.main_input_name == "input_ids"

    def untrained(seed: int) -> SourceModel:
        fresh = seeded(seed, lambda: type(net)(copy.deepcopy(net.config)).eval())
        return wrap_hf(fresh.to(next(net.parameters()).device), spec, tokenizer, layers)

    return SourceModel(net, spec=spec, layers=layers, tokenizer=tokenizer, input_name=net.main_input_name,
                       feature_axis=-1 if sequence else None,
                       feature_axes={n: -1 if r == 3 else 1 for n, r in zip(found, ranks)},
                       reduce="mean", takes_tokens=text, untrained=untrained,
                       trunk=net.base_model if getattr(net, "base_model", net) is not net else None)


@MODEL_SOURCES.register("hf")
def load_hf(name: str, *, task: str | None = None, tokenizer=None, layers=None, dtype=torch.float32,
            device=None) -> SourceModel:
    """``hf:<hub id or folder>``: a transformers model. task: one of :data:`TASKS`, default from the config
    (:func:`choose_task`); tokenizer: an object or a name (default: the model's own; None for images);
    layers: default capture names (default: the modules emitting the hidden states); dtype: weights'
    dtype (float32 unless given; "auto" keeps the checkpoint's)."""
    if task is not None:
        check_choice(task, "task", TASKS)
    net, task = load_hf_net(name, task, dtype, device)
    net.eval()
    return wrap_hf(net, f"hf:{name}", load_tokenizer(name, tokenizer, net.main_input_name == "input_ids"), layers)


# --- tl: -------------------------------------------------------------------------------------------------

_ENABLE = {  # hook name suffix -> how to make it fire (TransformerLens 4.x bridge switches)
    "attn.hook_result": "call model.net.set_use_attn_result(True)",
    "hook_q_input": "call model.net.set_use_split_qkv_input(True)",
    "hook_k_input": "call model.net.set_use_split_qkv_input(True)",
    "hook_v_input": "call model.net.set_use_split_qkv_input(True)",
    "hook_mlp_in": "call model.net.set_use_hook_mlp_in(True)",
    "hook_attn_in": "call model.net.set_use_attn_in(True)",
}
_TL_AXES = (  # TransformerLens's documented layouts: per-head (b, pos, head, d) and patterns (b, head, q, k)
    (("hook_q", "hook_k", "hook_v", "hook_z", "hook_result", "hook_q_input", "hook_k_input", "hook_v_input",
      "q.hook_out", "k.hook_out", "v.hook_out", "o.hook_in"), (-2, -1)),
    (("hook_pattern", "hook_attn_scores"), (1, 3)),
)
_OTHERWISE = ("the bridge does not run it for this architecture in its current mode "
              "(model.net.enable_compatibility_mode() switches to HookedTransformer-compatible processing)")


def bridge_mode(bridge) -> tuple:
    """The switches that decide which hooks fire (cache key for :func:`dormant_hooks`)."""
    return (getattr(bridge, "compatibility_mode", None),
            *sorted((k, v) for k, v in vars(bridge.cfg).items() if k.startswith("use_")))


@torch.no_grad()
def dormant_hooks(bridge, memo: dict) -> dict[str, str]:
    """Hook names of ``bridge`` that do not fire on a probe batch in its current mode -> how to enable."""
    mode = bridge_mode(bridge)
    if mode not in memo:
        fired: set[int] = set()
        points = dict(bridge.hook_dict)
        handles = [hp.register_forward_hook(lambda m, i, o: fired.add(id(m))) for hp in set(points.values())]
        try:
            with eval_mode(bridge):
                bridge(torch.zeros(1, 2, dtype=torch.long))
        finally:
            for h in handles:
                h.remove()
        memo.clear()
        memo[mode] = {n: next((how for s, how in _ENABLE.items() if n.endswith(s)), _OTHERWISE)
                      for n, hp in points.items() if id(hp) not in fired}
    return memo[mode]


def tl_call(bridge, inputs: dict):
    inputs = dict(inputs)
    ids = inputs.pop("input_ids", None)
    if ids is None:
        raise ValueError(f"x: a tl: model takes input_ids (and attention_mask), got {sorted(inputs)}")
    return bridge(ids, **inputs)


def boot_bridge(name: str, hf_net: nn.Module, tokenizer, spec: str, device) -> SourceModel:
    """A TransformerBridge over ``hf_net`` wrapped as a :class:`SourceModel` with TransformerLens names."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(name, hf_model=hf_net, tokenizer=tokenizer,
                                                 device=str(device or next(hf_net.parameters()).device))
    bridge.eval()
    memo: dict = {}

    def untrained(seed: int) -> SourceModel:
        fresh = seeded(seed, lambda: type(hf_net)(copy.deepcopy(hf_net.config)).eval())
        return boot_bridge(name, fresh, tokenizer, spec, device)

    n_layers = bridge.cfg.n_layers
    axes = {n: axis for n in bridge.hook_dict for suffixes, axis in _TL_AXES if n.endswith(suffixes)}
    return SourceModel(bridge, spec=spec, layers=[f"blocks.{i}.hook_resid_post" for i in range(n_layers)],
                       tokenizer=tokenizer, input_name="input_ids", call=tl_call, feature_axis=-1,
                       feature_axes=axes, reduce="mean", takes_tokens=True, names=lambda: dict(bridge.hook_dict),
                       unavailable=lambda: dormant_hooks(bridge, memo), untrained=untrained)


@MODEL_SOURCES.register("tl")
def load_tl(name: str, *, tokenizer=None, dtype=torch.float32, device=None) -> SourceModel:
    """``tl:<hub id or folder>``: a TransformerLens 4.x ``TransformerBridge`` over a HuggingFace causal LM,
    with TransformerLens hook names (``blocks.0.hook_resid_post``, ``blocks.0.attn.hook_z``, ...); per-head
    hooks come back (n, pos, n_heads, d_head) as ``run_with_cache`` shows them. Hook names that cannot fire
    in the bridge's current mode are left out of ``hook_names`` and raise a ValueError saying how to
    enable them (``model.net.set_use_attn_result(True)``, ...)."""
    net, _ = load_hf_net(name, "causal-lm", dtype, device)
    tok = load_tokenizer(name, tokenizer, True)
    if tok is None:
        raise ValueError(f"spec: tl:{name} has no tokenizer (the bridge needs one); pass tokenizer=")
    return boot_bridge(name, net, tok, f"tl:{name}", device)
