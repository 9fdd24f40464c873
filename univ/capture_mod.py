"""Activation capture: run a model over inputs and collect what named hook points / modules emit.

Names resolve in this order:
1. TransformerLens hook names (``model.hook_dict`` on TransformerBridge, HookedRootModule and univ's
   transformer wrappers, or on any submodule that has one, prefixed by its path). Aliases such as
   ``blocks.0.hook_resid_post`` / ``blocks.0.hook_out`` are one HookPoint and are captured once.
2. Dotted module paths of any ``nn.Module`` (``"fc1"``, ``"features.3"``), via forward hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_choice, check_finite, to_tensor, unknown_name_error
from .utils import cache_dir, stable_hash, tensor_hash

REDUCTIONS = ("flatten", "mean", "last", "none")


def _hook_table(model: nn.Module) -> tuple[dict[str, nn.Module], set[int]]:
    """name -> module for every capturable name; plus ids of modules whose outputs are channels-last
    (TransformerLens HookPoints: (batch, pos, d))."""
    table: dict[str, nn.Module] = {}
    channels_last: set[int] = set()
    root_hooks = getattr(model, "hook_dict", None)
    if isinstance(root_hooks, dict):
        sources = [("", root_hooks)]
    else:
        sources = [(path + ".", mod.hook_dict) for path, mod in model.named_modules()
                   if path and isinstance(getattr(mod, "hook_dict", None), dict)]
    for prefix, hooks in sources:
        for name, hp in hooks.items():
            table.setdefault(prefix + name, hp)
            channels_last.add(id(hp))
    for path, mod in model.named_modules():
        if path:
            table.setdefault(path, mod)
    return table, channels_last


def resolve(model: nn.Module, name: str, what: str = "hook name") -> tuple[nn.Module, bool]:
    """(module, channels_last) behind a hook name or module path, as :func:`capture` resolves it;
    unknown names raise ValueError ("unknown <what> ...") listing the closest valid ones."""
    table, channels_last = _hook_table(model)
    if name not in table:
        raise unknown_name_error(what, name, table)
    return table[name], id(table[name]) in channels_last


def layer_forward(model: nn.Module, x: torch.Tensor, layer: str, reduce: str | None = None):
    """One forward pass returning (output, acts) with the autograd graph kept to ``x``: acts (n, d) at
    ``layer``, reduced as :func:`capture` would (``model.reduce`` or "flatten" by default). The model's
    mode is left as it is (callers doing attacks or inversion set eval mode themselves)."""
    mod, channels_last = resolve(model, layer)
    reduce = reduce or getattr(model, "reduce", "flatten")
    check_choice(reduce, "reduce", REDUCTIONS)
    store = {}

    def hook(_m, _i, out):
        store["acts"] = _reduce(_first_tensor(out), reduce, channels_last)

    handle = mod.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        handle.remove()
    if "acts" not in store:
        raise RuntimeError(f"hook {layer!r} did not fire during the forward pass")
    return out, store["acts"]


def hook_names(model: nn.Module) -> list[str]:
    """Every name :func:`capture` accepts for ``model`` (TransformerLens hook names first)."""
    return list(_hook_table(model)[0])


def _reduce(t: torch.Tensor, how: str, channels_last: bool) -> torch.Tensor:
    """(b, ...) -> (b, d) for flatten/mean/last; unchanged for none."""
    if how == "none" or t.ndim <= 2:
        return t if how == "none" or t.ndim == 2 else t.reshape(len(t), -1)
    if how == "flatten":
        return t.reshape(len(t), -1)
    # mean / last over every non-batch axis except the feature axis
    t = t.movedim(-1 if channels_last else 1, -1)  # (b, *positions, d)
    t = t.reshape(len(t), -1, t.shape[-1])
    return t.mean(dim=1) if how == "mean" else t[:, -1]


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"hooked module returned {type(out).__name__}, not a tensor")


def cached_batches(path: str | Path, name: str, batch_size: int = 4096):
    """A zero-argument callable yielding (batch, d) float tensors of activation ``name`` read lazily from a
    capture cache file (``capture(..., cache=...)``; see :func:`cache_path`), so an SAE can be fit on
    more activations than fit in memory: ``sae.fit(cached_batches(path, "act2"))``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no activation cache file at {str(path)!r}")
    with safe_open(str(path), framework="pt") as f:
        if name not in f.keys():
            raise unknown_name_error("cached activation", name, list(f.keys()))
        n = f.get_slice(name).get_shape()[0]

    def batches():
        with safe_open(str(path), framework="pt") as f:
            sl = f.get_slice(name)
            for i in range(0, n, batch_size):
                yield sl[i:i + batch_size]

    return batches


def cache_path(model: nn.Module, inputs, names: Sequence[str], reduce: str | None = None,
               folder: str | Path | None = None) -> Path:
    """The file :func:`capture` caches these activations in (``folder``: as given to ``cache=``)."""
    reduce = reduce or getattr(model, "reduce", "flatten")
    table, _ = _hook_table(model)
    kept, seen = [], set()
    for n in names:
        if n in table and id(table[n]) not in seen:
            seen.add(id(table[n]))
            kept.append(n)
    path = _cache_path(model, to_tensor(inputs, "inputs"), kept, reduce)
    return Path(folder) / path.name if folder is not None else path


def _cache_path(model: nn.Module, inputs: torch.Tensor, names: Sequence[str], reduce: str) -> Path:
    key = stable_hash({
        "model": type(model).__name__,
        "params": tensor_hash(*[p for p in model.state_dict().values()]),
        "inputs": tensor_hash(inputs), "names": list(names), "reduce": reduce,
    }, length=20)
    return cache_dir() / "acts" / f"{key}.safetensors"


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
    inputs: (n, ...) tensor or array, fed to ``model`` in batches of ``batch_size``.
    names: hook names or module paths (see :func:`hook_names`); default ``model.layers``.
    reduce: "flatten" -> (n, prod(rest)); "mean"/"last" -> (n, d), averaging / taking the last entry
        over positions (sequence tokens or conv spatial positions); "none" -> (n, ...) unchanged.
        Default: ``model.reduce`` or "flatten".
    grad: keep the autograd graph (for gradients through activations); otherwise runs under no_grad.
    cache: True (univ's cache dir) or a folder: reuse activations saved for the same model weights,
        inputs, names and reduce.
    Returns {name: Tensor(n, d)} in the order of ``names``; alias names of one hook point give one entry
    (the first name asked for). The model's train/eval mode is restored afterwards and every hook is
    removed, even when the forward raises.
    """
    if names is None:
        names = getattr(model, "layers", None)
        if names is None:
            raise ValueError("names: required for models without a `layers` attribute")
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ValueError("names: empty list of hook names")
    reduce = reduce or getattr(model, "reduce", "flatten")
    check_choice(reduce, "reduce", REDUCTIONS)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
    x_all = to_tensor(inputs, "inputs", detach=not grad)
    if x_all.ndim == 0 or len(x_all) == 0:
        raise ValueError(f"inputs: need at least one sample, got shape {tuple(x_all.shape)}")
    if x_all.is_floating_point():
        check_finite(x_all.detach(), "inputs")

    table, channels_last = _hook_table(model)
    targets: dict[str, nn.Module] = {}
    seen: dict[int, str] = {}
    for name in names:
        if name not in table:
            raise unknown_name_error("hook name", name, table)
        mod = table[name]
        if id(mod) in seen:  # an alias of a name already asked for
            continue
        seen[id(mod)] = name
        targets[name] = mod

    path = None
    if cache and not grad:
        folder = Path(cache) if not isinstance(cache, bool) else None
        path = _cache_path(model, x_all, list(targets), reduce)
        if folder is not None:
            path = folder / path.name
        if path.exists():
            return dict(load_file(str(path)))

    dev = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    collected: dict[str, list[torch.Tensor]] = {n: [] for n in targets}
    current: dict[str, torch.Tensor] = {}

    def make_hook(name: str, mod: nn.Module):
        def hook(_module, _inp, out):
            current[name] = _reduce(_first_tensor(out), reduce, id(mod) in channels_last)
        return hook

    handles = [mod.register_forward_hook(make_hook(n, mod)) for n, mod in targets.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(grad):
            batches = range(0, len(x_all), batch_size)
            for start in tqdm(batches, desc="capture", disable=not progress, leave=False):
                current.clear()
                model(x_all[start:start + batch_size].to(dev))
                for n in targets:
                    if n not in current:
                        raise RuntimeError(f"hook {n!r} did not fire during the forward pass; is the module "
                                           "used by model.forward?")
                    t = current[n]
                    collected[n].append(t if grad else t.detach().to("cpu", dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    acts = {n: torch.cat(ts) for n, ts in collected.items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({n: a.contiguous() for n, a in acts.items()}, str(path))
    return acts
