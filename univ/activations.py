"""Activations: run a model over inputs and collect (or edit) what named hook points / modules emit.

Names resolve in this order:
1. TransformerLens hook names (``model.hook_dict`` on TransformerBridge, HookedRootModule and univ's
   transformer wrappers, or on any submodule that has one, prefixed by its path). Aliases such as
   ``blocks.0.hook_resid_post`` / ``blocks.0.hook_out`` are one HookPoint and are captured once.
2. Dotted module paths of any ``nn.Module`` (``"fc1"``, ``"features.3"``), via forward hooks.

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

from ._checks import check_callable, check_choice, check_device, check_int, check_path, unknown_name_error
from .integrity import MANIFEST, read_entry, verify_entry, write_entry
from .models import check_model, eval_mode, model_device, model_input, run_model
from .utils import cache_dir, stable_hash, tensor_hash

REDUCTIONS = ("flatten", "mean", "last", "none")


class HookPoint(NamedTuple):
    """What a hook name resolves to: the module and whether its output is channels-last ((batch, pos, d),
    as TransformerLens HookPoints are) or channels-first ((batch, channels, *spatial), as convolutions)."""

    module: nn.Module
    channels_last: bool


def _hook_table(model: nn.Module) -> dict[str, HookPoint]:
    """name -> HookPoint for every capturable name (TransformerLens names first)."""
    table: dict[str, HookPoint] = {}
    root_hooks = getattr(model, "hook_dict", None)
    if isinstance(root_hooks, dict):
        sources = [("", root_hooks)]
    else:
        sources = [(path + ".", mod.hook_dict) for path, mod in model.named_modules()
                   if path and isinstance(getattr(mod, "hook_dict", None), dict)]
    tl_modules = set()
    for prefix, hook_dict in sources:
        for name, hp in hook_dict.items():
            table.setdefault(prefix + name, HookPoint(hp, True))
            tl_modules.add(id(hp))
    for path, mod in model.named_modules():
        if path:
            table.setdefault(path, HookPoint(mod, id(mod) in tl_modules))
    return table


def resolve(model: nn.Module, name: str, what: str = "hook name") -> HookPoint:
    """The HookPoint behind a hook name or module path, as :func:`capture` resolves it; unknown names
    raise ValueError ("unknown <what> ...") listing the closest valid ones."""
    check_model(model)
    if not isinstance(name, str):
        raise TypeError(f"{what}: expected a string, got {type(name).__name__} {name!r}")
    table = _hook_table(model)
    if name not in table:
        raise unknown_name_error(what, name, table)
    return table[name]


def hook_names(model: nn.Module) -> list[str]:
    """Every name :func:`capture` accepts for ``model`` (TransformerLens hook names first)."""
    return list(_hook_table(check_model(model)))


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

    def make(fn):
        def hook(_module, _inp, out):
            new = fn(first_tensor(out))
            if new is None:
                return None
            if isinstance(out, torch.Tensor):
                return new
            return type(out)([new, *out[1:]])
        return hook

    try:
        for name, fn in fns.items():
            handles.append(points[name].module.register_forward_hook(make(fn)))
        yield points
    finally:
        for h in handles:
            h.remove()


def reduce_acts(t: torch.Tensor, how: str, channels_last: bool) -> torch.Tensor:
    """(b, ...) -> (b, d) for flatten/mean/last; unchanged for none."""
    if how == "none" or t.ndim <= 2:
        return t if how == "none" or t.ndim == 2 else t.reshape(len(t), -1)
    if how == "flatten":
        return t.reshape(len(t), -1)
    # mean / last over every non-batch axis except the feature axis
    t = t.movedim(-1 if channels_last else 1, -1)  # (b, *positions, d)
    t = t.reshape(len(t), -1, t.shape[-1])
    return t.mean(dim=1) if how == "mean" else t[:, -1]


def layer_forward(model: nn.Module, x: torch.Tensor, layer: str, reduce: str | None = None):
    """One forward pass returning (output, acts) with the autograd graph kept to ``x``: acts (n, d) at
    ``layer``, reduced as :func:`capture` would (``model.reduce`` or "flatten" by default). The model's
    mode is left as it is (callers doing attacks or inversion hold :func:`univ.models.eval_mode`).
    x is cast as :func:`univ.models.as_model_input` says; a name whose hook does not fire raises ValueError."""
    reduce = reduce or getattr(check_model(model), "reduce", "flatten")
    check_choice(reduce, "reduce", REDUCTIONS)
    x = model_input(model, x, "x", detach=False)
    store = {}
    channels_last = resolve(model, layer).channels_last
    with hooks(model, {layer: lambda t: store.__setitem__("acts", reduce_acts(t, reduce, channels_last))}):
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


def _cache_key(model: nn.Module, inputs: torch.Tensor, names: Sequence[str], reduce: str, dtype) -> str:
    return stable_hash({
        "model": type(model).__name__,
        "params": tensor_hash(*[p for p in model.state_dict().values()]),
        "inputs": tensor_hash(inputs), "names": list(names), "reduce": reduce, "dtype": str(dtype),
    }, length=20)


ACTS_FILE = "acts.safetensors"


def cache_path(model: nn.Module, inputs, names: Sequence[str], reduce: str | None = None,
               folder: str | Path | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """The file :func:`capture` caches these activations in (``folder``: as given to ``cache=``). It lies in
    an integrity-checked entry folder (see :mod:`univ.integrity`) named by the key."""
    reduce = reduce or getattr(check_model(model), "reduce", "flatten")
    check_choice(reduce, "reduce", REDUCTIONS)
    _check_dtype(dtype)
    folder = cache_dir() / "acts" if folder is None else check_path(folder, "folder")
    key = _cache_key(model, model_input(model, inputs, "inputs"), list(_targets(model, _names(model, names))),
                     reduce, dtype)
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
) -> dict[str, torch.Tensor]:
    """Activations of ``model`` on ``inputs`` at hook points ``names``.

    model: any ``nn.Module`` (TransformerLens bridges and HookedRootModules included).
    inputs: (n, ...) tensor or array, fed to ``model`` in batches of ``batch_size``; floating inputs are
        cast to the model's parameter dtype, integer inputs (tokens) are passed as they are.
    names: hook names or module paths (see :func:`hook_names`); default ``model.layers``.
    reduce: "flatten" -> (n, prod(rest)); "mean"/"last" -> (n, d), averaging / taking the last entry
        over positions (sequence tokens or conv spatial positions); "none" -> (n, ...) unchanged.
        Default: ``model.reduce`` or "flatten".
    grad: keep the autograd graph (for gradients through activations); otherwise runs under no_grad.
    cache: True (univ's cache dir) or a folder: reuse activations saved for the same model weights,
        inputs, names (in order), reduce and dtype.
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
    device = check_device(device)
    if not isinstance(cache, bool):
        check_path(cache, "cache")
    x_all = model_input(model, inputs, "inputs", detach=not grad)
    targets = _targets(model, names)

    path = None
    if cache and not grad:
        path = cache_path(model, x_all, list(targets), reduce, None if isinstance(cache, bool) else cache, dtype)
        stored = read_entry(path.parent, lambda f: load_file(str(f / ACTS_FILE)), "activation cache entry")
        if stored is not None and all(n in stored for n in targets):
            return {n: stored[n] for n in targets}

    dev = device or model_device(model)
    collected: dict[str, list[torch.Tensor]] = {n: [] for n in targets}
    current: dict[str, torch.Tensor] = {}

    def observer(name: str, point: HookPoint):
        return lambda t: current.__setitem__(name, reduce_acts(t, reduce, point.channels_last))

    with eval_mode(model), hooks(model, {n: observer(n, p) for n, p in targets.items()}), \
            torch.set_grad_enabled(grad):
        for start in tqdm(range(0, len(x_all), batch_size), desc="capture", disable=not progress, leave=False):
            current.clear()
            run_model(model, x_all[start:start + batch_size].to(dev), "inputs")
            for n in targets:
                if n not in current:
                    raise ValueError(f"names: the hook {n!r} did not fire during the forward pass; is the module "
                                     "used by model.forward?")
                t = current[n]
                collected[n].append(t if grad else t.detach().to("cpu", dtype))
    acts = {n: torch.cat(ts) for n, ts in collected.items()}
    if path is not None:
        write_entry(path.parent, lambda f: save_file({n: a.contiguous() for n, a in acts.items()}, str(f / ACTS_FILE)),
                    meta={"names": list(acts), "reduce": reduce, "dtype": str(dtype)})
    return acts
