"""Activations: run a model over inputs and collect (or edit) what named hook points / modules emit.

Names resolve in this order:
1. TransformerLens hook names (``model.hook_dict`` on TransformerBridge, HookedRootModule and univ's
   transformer wrappers, or on any submodule that has one, prefixed by its path). Aliases such as
   ``blocks.0.hook_resid_post`` / ``blocks.0.hook_out`` are one HookPoint and are captured once.
2. Dotted module paths of any ``nn.Module`` (``"fc1"``, ``"features.3"``), via forward hooks.

Each name knows the feature axis of its output (:mod:`univ.features`), so capture can average or pick
positions, per sample or per token, masking padding (:mod:`univ.batch` for dict inputs).

Every hook univ places goes through :func:`hooks`, so hook removal, tuple outputs and output replacement
are handled in one place (capture, layer_forward, SAE splicing, feature attacks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ._checks import (
    as_real_tensor,
    check_callable,
    check_choice,
    check_device,
    check_int,
    check_path,
    unknown_name_error,
)
from .batch import batch_hash, batch_len, batch_mask, batch_slice, check_batch
from .features import REDUCTIONS, feature_axis_of, is_tl_hook, reduce_acts, token_mask
from .integrity import MANIFEST, read_entry, verify_entry, write_entry
from .models import check_model, eval_mode, model_device, run_model
from .utils import cache_dir, stable_hash, tensor_hash


class HookPoint(NamedTuple):
    """What a hook name resolves to: the module and the feature axis of its output (see :mod:`univ.features`:
    -1 channels-last as TransformerLens HookPoints, 1 channels-first as convolutions, (-2, -1) per-head,
    None unknown)."""

    module: nn.Module
    feature_axis: int | tuple[int, ...] | None

    @property
    def channels_last(self) -> bool:
        """Whether the output's last axis holds (the last of) its features."""
        axis = self.feature_axis
        return axis is not None and (axis == -1 or (isinstance(axis, tuple) and axis[-1] == -1))


def hook_table(model: nn.Module) -> dict[str, HookPoint]:
    """name -> HookPoint for every capturable name of ``model`` (TransformerLens names first, then dotted
    module paths; a model with ``hook_dict_only = True``, as univ.sources models, offers only its
    ``hook_dict``)."""
    root_hooks = getattr(check_model(model), "hook_dict", None)
    if isinstance(root_hooks, Mapping):
        sources = [("", root_hooks)]
    else:
        sources = [(path + ".", mod.hook_dict) for path, mod in model.named_modules()
                   if path and isinstance(getattr(mod, "hook_dict", None), Mapping)]
    entries: dict[str, nn.Module] = {}
    for prefix, hook_dict in sources:
        for name, module in hook_dict.items():
            entries.setdefault(prefix + name, module)
    if getattr(model, "hook_dict_only", False) is not True:
        for path, mod in model.named_modules():
            if path:
                entries.setdefault(path, mod)
    return {name: HookPoint(mod, feature_axis_of(model, name, mod, is_tl_hook(mod))) for name, mod in entries.items()}


def resolve(model: nn.Module, name: str, what: str = "hook name") -> HookPoint:
    """The HookPoint behind a hook name or module path, as :func:`capture` resolves it; unknown names
    raise ValueError ("unknown <what> ...") listing the closest valid ones. A name the model lists in
    ``model.unavailable_hooks()`` (a hook that cannot fire in its current mode) raises a ValueError saying
    how to enable it."""
    check_model(model)
    if not isinstance(name, str):
        raise TypeError(f"{what}: expected a string, got {type(name).__name__} {name!r}")
    table = hook_table(model)
    if name not in table:
        unavailable = getattr(model, "unavailable_hooks", None)
        how = unavailable().get(name) if callable(unavailable) else None
        if how:
            raise ValueError(f"{what}: {name!r} does not fire in the model's current mode; {how}")
        raise unknown_name_error(what, name, table)
    return table[name]


def hook_names(model: nn.Module) -> list[str]:
    """Every name :func:`capture` accepts for ``model`` (TransformerLens hook names first)."""
    return list(hook_table(check_model(model)))


def first_tensor(out) -> torch.Tensor:
    """The tensor a hooked module emitted: the output itself, or the first element of a tuple/list."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"hooked module returned {type(out).__name__}, not a tensor")


HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def hooks(model: nn.Module, fns: Mapping[str, HookFn], what: str = "hook name") -> Iterator[dict[str, HookPoint]]:
    """Forward hooks at named points for the duration of a ``with`` block; removed on exit, even on error.

    fns: {name: fn}; ``fn(t)`` receives the tensor the point emits (the first element of a tuple output)
    and returns None to observe it or a tensor of the same shape to replace it. Yields {name: HookPoint}.
    """
    if not isinstance(fns, Mapping):
        raise ValueError(f"fns: expected a mapping {{name: function}}, got {type(fns).__name__}")
    points = {name: resolve(model, name, what) for name in fns}
    for name, fn in fns.items():
        check_callable(fn, f"fns[{name!r}]")
    handles = []

    def make(fn, conversion):
        # a TransformerLens 4.x hook conversion (e.g. q/k/v/z split into heads) is what run_with_cache shows
        def hook(_module, _inp, out):
            t = first_tensor(out)
            new = fn(t if conversion is None else conversion.convert(t))
            if new is None:
                return None
            if conversion is not None:
                new = conversion.revert(new)
            if isinstance(out, torch.Tensor):
                return new
            return type(out)([new, *out[1:]])
        return hook

    try:
        for name, fn in fns.items():
            module = points[name].module
            conversion = getattr(module, "hook_conversion", None) if is_tl_hook(module) else None
            handles.append(module.register_forward_hook(make(fn, conversion)))
        yield points
    finally:
        for h in handles:
            h.remove()


def layer_forward(model: nn.Module, x, layer: str, reduce: str | None = None):
    """One forward pass returning (output, acts) with the autograd graph kept to ``x``: acts (n, d) at
    ``layer``, reduced as :func:`capture` would (``model.reduce`` or "flatten" by default). The model's
    mode is left as it is (callers doing attacks or inversion hold :func:`univ.models.eval_mode`).
    x (a tensor or a dict batch) is cast as :func:`univ.models.as_model_input` says; a name whose hook does
    not fire raises ValueError."""
    reduce = reduce or getattr(check_model(model), "reduce", "flatten")
    check_choice(reduce, "reduce", REDUCTIONS)
    x = check_batch(model, x, "x", detach=False)
    store = {}
    axis = resolve(model, layer).feature_axis
    mask = batch_mask(x)
    with hooks(model, {layer: lambda t: store.__setitem__("acts", reduce_acts(t, reduce, axis, mask, name=layer))}):
        out = run_model(model, x)
    if "acts" not in store:
        raise ValueError(f"layer: the hook {layer!r} did not fire during the forward pass; is the module used "
                         "by model.forward?")
    return out, store["acts"]


def cached_batches(path: str | Path, name: str, batch_size: int = 4096):
    """A zero-argument callable yielding (batch, d) float tensors of activation ``name`` read lazily from a
    capture cache file (``capture(..., cache=...)``; see :func:`cache_path`), so an SAE can be fit on
    more activations than fit in memory: ``sae.fit(cached_batches(path, "act2"))``."""
    from safetensors import safe_open

    path = check_path(path)
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__} {name!r}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    if not path.is_file():
        raise ValueError(f"path: no activation cache file at {str(path)!r}")
    if (path.parent / MANIFEST).exists() and (problem := verify_entry(path.parent)) is not None:
        raise ValueError(f"path: the activation cache entry {str(path.parent)!r} is not usable: {problem}")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            shape = f.get_slice(name).get_shape() if name in keys else None
    except Exception as e:  # safetensors raises its own error type for a malformed file
        raise ValueError(f"path: {str(path)!r} is not a readable safetensors file ({e})") from None
    if shape is None:
        raise unknown_name_error("cached activation", name, keys)
    if len(shape) != 2:
        raise ValueError(f"name: the cached activation {name!r} has shape {tuple(shape)}, not (n, d)")
    n = shape[0]

    def batches():
        with safe_open(str(path), framework="pt") as f:
            sl = f.get_slice(name)
            for i in range(0, n, batch_size):
                yield sl[i:i + batch_size]

    return batches


def _targets(model: nn.Module, names: Sequence[str]) -> dict[str, HookPoint]:
    """The distinct hook points behind ``names`` in the order asked; an alias of a point already asked
    for is dropped (its first name is kept)."""
    targets: dict[str, HookPoint] = {}
    seen: set[int] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"names[{i}]: expected a hook name (a string), got {type(name).__name__} {name!r}")
        point = resolve(model, name)
        if id(point.module) not in seen:
            seen.add(id(point.module))
            targets[name] = point
    return targets


def _cache_key(model: nn.Module, inputs, targets: Mapping[str, HookPoint], reduce: str, dtype,
               exclude_first: bool) -> str:
    return stable_hash({
        "model": type(model).__name__,
        "params": tensor_hash(*[p for p in model.state_dict().values()]),
        "inputs": batch_hash(inputs), "names": list(targets), "reduce": reduce, "dtype": str(dtype),
        "feature_axes": [repr(p.feature_axis) for p in targets.values()], "exclude_first": exclude_first,
    }, length=20)


ACTS_FILE = "acts.safetensors"


def cache_path(model: nn.Module, inputs, names: Sequence[str], reduce: str | None = None,
               folder: str | Path | None = None, dtype: torch.dtype = torch.float32, *,
               exclude_first: bool = False) -> Path:
    """The file :func:`capture` caches these activations in (``folder``: as given to ``cache=``). It lies in
    an integrity-checked entry folder (see :mod:`univ.integrity`) named by the key: the model's class and
    weights, every entry of the inputs, the names in order with their feature axes, reduce, dtype and
    exclude_first."""
    reduce = reduce or getattr(check_model(model), "reduce", "flatten")
    check_choice(reduce, "reduce", REDUCTIONS)
    _check_dtype(dtype)
    _check_bool(exclude_first, "exclude_first")
    folder = cache_dir() / "acts" if folder is None else check_path(folder, "folder")
    key = _cache_key(model, check_batch(model, inputs, "inputs"), _targets(model, _names(model, names)),
                     reduce, dtype, exclude_first)
    return folder / key / ACTS_FILE


def _names(model: nn.Module, names) -> list[str]:
    if names is None:
        names = getattr(model, "layers", None)
        if names is None:
            raise ValueError("names: required for models without a `layers` attribute")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, Sequence):
        raise TypeError(f"names: expected a hook name or a list of them, got {type(names).__name__}")
    if not names:
        raise ValueError("names: empty list of hook names")
    return list(names)


def _check_bool(value, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")


def _check_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch dtype such as torch.float32, got {dtype!r}")


def capture(
    model: nn.Module,
    inputs,
    names: Sequence[str] | str | None = None,
    batch_size: int = 512,
    reduce: str | None = None,
    *,
    grad: bool = False,
    device=None,
    cache: bool | str | Path = False,
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
    exclude_first: bool = False,
) -> dict[str, torch.Tensor]:
    """Activations of ``model`` on ``inputs`` at hook points ``names``.

    model: any ``nn.Module`` (univ.sources models, TransformerLens bridges and HookedRootModules included).
    inputs: (n, ...) tensor or array, or a dict batch ``{"input_ids": (n, T), "attention_mask": (n, T)}``
        (``{"pixel_values": ...}`` for images; see :mod:`univ.batch`), fed to ``model`` in batches of
        ``batch_size`` (``model(**batch)`` for a dict); floating inputs are cast to the model's parameter
        dtype, integer inputs (tokens, masks) are passed as they are.
    names: hook names or module paths (see :func:`hook_names`); default ``model.layers``.
    reduce: "flatten" -> (n, prod(rest)); "mean"/"last" -> (n, d), averaging / taking the last entry
        over positions (sequence tokens or conv spatial positions); "tokens" -> (n_tokens, d), one row
        per position, sample-major; "none" -> (n, ...) unchanged. With an ``attention_mask``, mean,
        last and tokens use the real (non-padding) positions only: last is each sequence's last real
        token, for left and right padding alike. mean/last/tokens need the feature axis of a 3-D+ output
        (see :mod:`univ.features`; unknown raises ValueError). Default: ``model.reduce`` or "flatten".
    exclude_first: drop each sequence's first real position (the BOS) from mean and tokens;
        :func:`token_positions` gives the (sample, position) of each "tokens" row.
    grad: keep the autograd graph (for gradients through activations); otherwise runs under no_grad.
    cache: True (univ's cache dir) or a folder: reuse activations saved for the same model weights,
        inputs (every entry of a dict), names (in order), feature axes, reduce, exclude_first and dtype.
    dtype: dtype of the returned activations.
    Returns {name: Tensor(n, d)} in the order of ``names``; alias names of one hook point give one entry
    (the first name asked for). The model's train/eval mode is restored afterwards and every hook is
    removed, even when the forward raises.
    """
    names = _names(check_model(model), names)
    reduce = reduce or getattr(model, "reduce", "flatten")
    check_choice(reduce, "reduce", REDUCTIONS)
    batch_size = check_int(batch_size, "batch_size", low=1)
    _check_dtype(dtype)
    _check_bool(exclude_first, "exclude_first")
    device = check_device(device)
    if not isinstance(cache, bool):
        check_path(cache, "cache")
    x_all = check_batch(model, inputs, "inputs", detach=not grad)
    targets = _targets(model, names)

    path = None
    if cache and not grad:
        folder = None if isinstance(cache, bool) else check_path(cache, "cache")
        path = (cache_dir() / "acts" if folder is None else folder) / _cache_key(
            model, x_all, targets, reduce, dtype, exclude_first) / ACTS_FILE
        stored = read_entry(path.parent, lambda f: load_file(str(f / ACTS_FILE)), "activation cache entry")
        if stored is not None and all(n in stored for n in targets):
            return {n: stored[n] for n in targets}

    dev = device or model_device(model)
    collected: dict[str, list[torch.Tensor]] = {n: [] for n in targets}
    current: dict[str, torch.Tensor] = {}
    mask: dict = {}  # the current batch's attention mask and size

    def observer(name: str, point: HookPoint):
        def observe(t: torch.Tensor) -> None:
            if t.ndim == 0 or len(t) != mask["n"]:
                raise ValueError(f"names: {name!r} emits shape {tuple(t.shape)}, not one entry per sample of the "
                                 f"batch ({mask['n']}): it is not an activation capture can collect")
            current[name] = reduce_acts(t, reduce, point.feature_axis, mask["batch"], exclude_first, name)
        return observe

    n = batch_len(x_all)
    # capture needs no logits: a model that can skip its output head (SourceModel.without_head) does
    trunk = getattr(model, "without_head", None)
    forward = (trunk([p.module for p in targets.values()]) if callable(trunk) and not grad else None) or model
    with eval_mode(model), hooks(model, {n: observer(n, p) for n, p in targets.items()}), \
            torch.set_grad_enabled(grad):
        for start in tqdm(range(0, n, batch_size), desc="capture", disable=not progress, leave=False):
            current.clear()
            batch = batch_slice(x_all, start, start + batch_size, dev)
            mask["batch"], mask["n"] = batch_mask(batch), batch_len(batch)
            run_model(forward, batch, "inputs")
            for name in targets:
                if name not in current:
                    raise ValueError(f"names: the hook {name!r} did not fire during the forward pass; is the module "
                                     "used by model.forward?")
                t = current[name]
                collected[name].append(t if grad else t.detach().to("cpu", dtype))
    acts = {name: torch.cat(ts) for name, ts in collected.items()}
    if path is not None:
        write_entry(path.parent, lambda f: save_file({k: a.contiguous() for k, a in acts.items()}, str(f / ACTS_FILE)),
                    meta={"names": list(acts), "reduce": reduce, "dtype": str(dtype)})
    return acts


def token_positions(inputs, exclude_first: bool = False) -> torch.Tensor:
    """(n_tokens, 2) int64: the (sample, position) of each row :func:`capture` returns with reduce="tokens"
    for these inputs (a dict batch with an ``attention_mask`` (n, T), or the mask itself)."""
    _check_bool(exclude_first, "exclude_first")
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else inputs
    if mask is None:
        raise ValueError("inputs: a dict batch without an attention_mask; every position is a token (use "
                         "torch.cartesian_prod(torch.arange(n), torch.arange(T)))")
    mask = as_real_tensor(mask, "inputs['attention_mask']")
    if mask.ndim != 2:
        raise ValueError(f"inputs['attention_mask']: expected shape (n, T), got {tuple(mask.shape)}")
    return token_mask(mask.bool(), exclude_first).nonzero()
