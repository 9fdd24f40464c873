"""Model specs -> :class:`~univ.sources.wrapper.SourceModel`: ``load_model`` and the py:, zoo: and
torchvision: sources (hf: and tl: live in :mod:`univ.sources.hf`). Weights are read from safetensors or from
a plain state dict with ``torch.load(..., weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .._checks import check_path, check_seed
from ..activations import hook_table
from ..models import MODELS, build_model
from . import MODEL_SOURCES, split_spec
from . import hf as _hf  # noqa: F401 (registers hf: and tl:)
from .wrapper import SourceModel, seeded, untrained_twin

__all__ = ["load_model", "SourceModel", "untrained_twin", "read_state_dict"]


def load_model(spec: str, **options) -> SourceModel:
    """The model a spec string names, with univ's model contract (:class:`SourceModel`).

    spec: ``hf:<hub id or folder>``, ``tl:<hub id or folder>``, ``py:<module>:<factory>``, ``zoo:<name or
        run folder>`` or ``torchvision:<name>`` (optional extra). Unknown prefixes list the valid ones.
    options: the source's own keyword options (see each loader: ``load_hf``, ``load_tl``, ``load_py``,
        ``load_zoo``, ``load_torchvision``); an option the source does not take is a TypeError naming it.
    """
    prefix, rest = split_spec(spec, "spec", MODEL_SOURCES)
    if not rest:
        raise ValueError(f"spec: {spec!r} names no model after {prefix + ':'!r}")
    return MODEL_SOURCES[prefix](rest, **options)


def read_state_dict(path, name: str = "weights") -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or from a torch file readable with ``weights_only=True``
    (a dict of tensors, possibly under "state_dict" or "model"). Anything that would need unpickling
    arbitrary objects is a ValueError: nothing is executed."""
    path = check_path(path, name)
    if not path.is_file():
        raise ValueError(f"{name}: no such file {str(path)!r}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors' and pickle's own errors: say which file and why
        raise ValueError(f"{name}: cannot read {str(path)!r} as safetensors or as a plain state dict with "
                         f"torch.load(weights_only=True) ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{name}: {str(path)!r} holds a {type(state).__name__}, not a state dict of tensors")
    return dict(state)


def load_weights(net: nn.Module, path, name: str = "weights") -> nn.Module:
    """Load ``path`` (see :func:`read_state_dict`) into ``net`` strictly; mismatches name the keys."""
    state = read_state_dict(path, name)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{name}: {str(path)!r} does not fit the model: {str(e).splitlines()[0]} "
                         f"({' '.join(str(e).split())[:300]})") from None
    return net


def _tensor_call(net, inputs):
    if len(inputs) == 1:
        return net(next(iter(inputs.values())))
    return net(**inputs)


def wrap_module(net: nn.Module, spec: str, layers=None, feature_axis=None, untrained=None,
                reduce: str | None = None) -> SourceModel:
    """Any nn.Module as a :class:`SourceModel`: a tensor goes in as its one argument, a dict batch as
    keyword arguments; its module paths (and TransformerLens hooks) are the capture names."""
    if layers is None:
        layers = getattr(net, "layers", None) or [n for n, _ in net.named_children()]
    names = hook_table(net)
    for i, layer in enumerate(layers):
        if layer not in names:
            raise ValueError(f"layers[{i}]: {layer!r} is not a capture name of {spec}")
    if feature_axis is None:
        feature_axis = getattr(net, "feature_axis", None)
    own = getattr(net, "feature_axes", None)
    return SourceModel(net, spec=spec, layers=layers, call=_tensor_call, feature_axis=feature_axis,
                       feature_axes=dict(own) if isinstance(own, Mapping) else None,
                       reduce=reduce or getattr(net, "reduce", "flatten"), untrained=untrained,
                       takes_tokens=bool(getattr(net, "takes_tokens", False)))


@MODEL_SOURCES.register("py")
def load_py(target: str, *, weights=None, kwargs: Mapping | None = None, layers=None, feature_axis=None,
            device=None) -> SourceModel:
    """``py:<module>:<factory>``: ``factory(**kwargs)`` from an importable module (your own code), weights
    from ``weights=`` (safetensors or a state dict; :func:`read_state_dict`). layers: default capture
    names (default: the module's ``layers`` attribute, else its top-level children); feature_axis: where
    the features of its 3-D+ outputs lie (1 channels-first, -1 channels-last; needed for capture's
    mean/last/tokens on outputs whose axis univ cannot know)."""
    module_name, sep, factory_name = target.partition(":")
    if not sep or not module_name or not factory_name:
        raise ValueError(f"spec: expected py:<module>:<factory> (e.g. py:mypkg.nets:make_net), got py:{target}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs: expected a dict of factory arguments, got {type(kwargs).__name__}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"spec: cannot import {module_name!r} for py:{target} ({e})") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ValueError(f"spec: {module_name!r} has no callable {factory_name!r}")

    def build():
        try:
            net = factory(**(kwargs or {}))
        except TypeError as e:
            raise TypeError(f"kwargs: {factory_name}() does not take {dict(kwargs or {})!r} ({e})") from None
        if not isinstance(net, nn.Module):
            raise ValueError(f"spec: py:{target} returned {type(net).__name__}, not a torch.nn.Module")
        return net.to(device) if device is not None else net

    net = build()
    if weights is not None:
        load_weights(net, weights)
    net.eval()
    spec = f"py:{target}"
    return wrap_module(net, spec, layers, feature_axis,
                       lambda seed: wrap_module(seeded(seed, build).eval(), spec, layers, feature_axis))


@MODEL_SOURCES.register("zoo")
def load_zoo(name: str, *, seed: int = 0, device=None, **config) -> SourceModel:
    """``zoo:<name>``: a univ zoo model (``mlp``, ``cnn``, ...; untrained, seeded, built from ``config``),
    or ``zoo:<folder>``: a model saved by univ (``univ.train.save_model``: config.json + model.safetensors,
    e.g. a cached run folder)."""
    from ..train import load_model as load_saved

    seed = check_seed(seed)
    folder = Path(name).expanduser()
    if folder.is_dir():
        if config:
            raise TypeError(f"zoo: a saved model takes no config options, got {sorted(config)}")
        net = load_saved(folder, device)
    elif name in MODELS:
        net = build_model(name, seed=seed, **config)
        net = net.to(device) if device is not None else net
    else:
        raise ValueError(f"spec: zoo:{name} is neither a zoo model ({sorted(MODELS)}) nor a saved model folder")
    net.eval()

    def untrained(s: int) -> SourceModel:
        return wrap_module(untrained_twin(net, s), f"zoo:{name}", net.layers)

    return wrap_module(net, f"zoo:{name}", net.layers, untrained=untrained)


_CONV_FAMILIES = ("resnet", "resnext", "wide_resnet", "vgg", "alexnet", "densenet", "mobilenet", "efficientnet",
                  "regnet", "convnext", "squeezenet", "googlenet", "inception", "mnasnet", "shufflenet")


@MODEL_SOURCES.register("torchvision")
def load_torchvision(name: str, *, weights=None, untrained: bool = False, layers=None, feature_axis=None,
                     device=None, **kwargs) -> SourceModel:
    """``torchvision:<name>`` (optional extra: ``pip install torchvision``): ``torchvision.models.get_model
    (name, weights=None, **kwargs)`` with weights from a local file (``weights=``; or ``untrained=True``).
    Convolutional families (resnet, vgg, convnext, ...) are channels-first; for others (vit, swin) pass
    ``feature_axis=``. layers: default the ResNet stages (layer1..layer4) or the top-level children."""
    try:
        tv = importlib.import_module("torchvision.models")
    except ImportError:
        raise ValueError("spec: torchvision: needs the optional extra torchvision (pip install torchvision "
                         "matching your torch); it is not installed") from None
    if weights is None and not untrained:
        raise ValueError(f"weights: torchvision:{name} needs a local weights file (weights=PATH), or "
                         "untrained=True for a random init; nothing is downloaded")

    def build():
        try:
            net = tv.get_model(name, weights=None, **kwargs)
        except ValueError as e:
            raise ValueError(f"spec: torchvision:{name}: {e}") from None
        return net.to(device) if device is not None else net

    net = build()
    if weights is not None:
        load_weights(net, weights)
    net.eval()
    if feature_axis is None and name.startswith(_CONV_FAMILIES):
        feature_axis = 1
    if layers is None:
        stages = [f"layer{i}" for i in range(1, 5) if hasattr(net, f"layer{i}")]
        layers = stages or [n for n, _ in net.named_children()][:-1]
    spec = f"torchvision:{name}"
    def twin(seed: int) -> SourceModel:
        return wrap_module(seeded(seed, build).eval(), spec, layers, feature_axis, reduce="mean")

    return wrap_module(net, spec, layers, feature_axis, twin, "mean")
