"""SourceModel: the one model contract every model spec loads into (hf:, tl:, py:, zoo:, torchvision:).

    model = univ.sources.load_model("hf:/path/to/gpt2")
    model(batch)              # batch: (b, T) token ids, (b, C, H, W) images, or {"input_ids", "attention_mask"}
    model.layers              # default capture names: the residual stream after each block
    model.tokenizer           # a HuggingFace tokenizer for text models, else None
    univ.capture(model, batch, reduce="tokens")   # every hooked output's feature axis is known
    univ.sources.untrained_twin(model, seed=0)    # same architecture, fresh seeded init: the baseline
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .._checks import check_seed
from ..activations import hook_table
from ..features import check_feature_axis
from ..models import ZooModel, build_model, check_model


class SourceModel(nn.Module):
    """An nn.Module wrapping a loaded network ``net`` with univ's model contract.

    ``forward(x)`` takes a tensor (passed as the net's main input: ``input_ids`` or ``pixel_values``) or a
    dict batch (``{"input_ids": (b, T), "attention_mask": (b, T)}``; also ``model(**batch)``) and returns
    the logits tensor ((b, T, vocab) for a causal or masked LM, (b, n_classes) for a classifier, the last
    hidden state (b, T, d) for a headless encoder).

    Attributes: ``net`` (the wrapped module), ``spec`` (the spec string it came from), ``layers`` (default
    capture names), ``tokenizer`` (None for non-text models), ``reduce`` (capture's default reduction),
    ``takes_tokens``, ``feature_axis`` (the default feature axis of hooked outputs, None where unknown) and
    ``feature_axes`` (per-name axes that override it; see :mod:`univ.features`). Hook names are the net's:
    HuggingFace module paths (``transformer.h.0``), TransformerLens hook names for ``tl:``, the zoo's names.
    """

    hook_dict_only = True
    """Capture names come from :attr:`hook_dict` only (not the wrapper's own ``net.``-prefixed paths)."""

    def __init__(self, net: nn.Module, *, spec: str, layers: Sequence[str], tokenizer=None,
                 input_name: str = "x", call: Callable | None = None, output: Callable | None = None,
                 feature_axis=None, feature_axes: Mapping | None = None, reduce: str = "flatten",
                 takes_tokens: bool = False, names: Callable[[], Mapping[str, nn.Module]] | None = None,
                 unavailable: Callable[[], dict] | None = None,
                 untrained: Callable[[int], SourceModel] | None = None, trunk: nn.Module | None = None):
        super().__init__()
        self.net = check_model(net, "net")
        self.spec = spec
        self.tokenizer = tokenizer
        self.input_name = input_name
        self.reduce = reduce
        self.takes_tokens = takes_tokens
        self.feature_axis = check_feature_axis(feature_axis)
        self.feature_axes = {k: check_feature_axis(v, f"feature_axes[{k!r}]") for k, v in (feature_axes or {}).items()}
        self._call = call or (lambda net, inputs: net(**inputs))
        self._output = output or logits_of
        self._names = names or (lambda: {n: p.module for n, p in hook_table(self.net).items()})
        self._unavailable = unavailable
        self._untrained = untrained
        self.layers = list(layers)
        # not registered as a submodule: it is a part of net, whose parameters are already ours
        object.__setattr__(self, "trunk", trunk)

    @property
    def hook_dict(self) -> dict[str, nn.Module]:
        """Capture name -> module: the net's names (its module paths and TransformerLens hooks, see
        :func:`univ.activations.hook_table`; a tl: bridge's hook names only), less those that cannot fire in
        its current mode (:meth:`unavailable_hooks`)."""
        gone = self.unavailable_hooks()
        return {n: m for n, m in self._names().items() if n not in gone}

    def unavailable_hooks(self) -> dict[str, str]:
        """Names the net lists that cannot fire in its current mode -> how to enable them."""
        return dict(self._unavailable()) if self._unavailable is not None else {}

    def forward(self, x=None, /, **inputs) -> torch.Tensor:
        return self._output(self._call(self.net, self._inputs(x, inputs)))

    def _inputs(self, x, inputs: dict) -> dict:
        if isinstance(x, Mapping):
            inputs = {**x, **inputs}
        elif x is not None:
            inputs = {self.input_name: x, **inputs}
        if not inputs:
            raise ValueError(f"x: {self.spec!r} needs an input: a tensor or a dict batch such as "
                             f"{{{self.input_name!r}: ...}}")
        return inputs

    def without_head(self, modules) -> Callable | None:
        """A forward that computes every module in ``modules`` but skips the output head (a language model's
        unembedding is most of a small model's work), for :func:`univ.capture`, which needs no logits; None
        when this model has no separate trunk or one of ``modules`` lies outside it. The hooked modules run
        exactly as in the full forward (the head model calls its trunk with the same arguments)."""
        if self.trunk is None:
            return None
        inside = {id(m) for m in self.trunk.modules()}
        if not all(id(m) in inside for m in modules):
            return None
        return lambda x=None, /, **inputs: self._call(self.trunk, self._inputs(x, inputs))

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, layers={len(self.layers)}"


def logits_of(out) -> torch.Tensor:
    """The logits of a forward output: the tensor itself, ``out.logits`` (HuggingFace heads), else
    ``out.last_hidden_state`` (headless encoders)."""
    if isinstance(out, torch.Tensor):
        return out
    for field in ("logits", "last_hidden_state"):
        value = getattr(out, field, None)
        if isinstance(value, torch.Tensor):
            return value
    raise ValueError(f"model: its forward returned {type(out).__name__}, with no logits tensor")


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with torch's RNG seeded by ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def untrained_twin(model: nn.Module, seed: int = 0) -> nn.Module:
    """The random-init baseline of ``model``: the same architecture (config, layers, tokenizer, hook names),
    freshly initialised from its config with torch's RNG seeded by ``seed`` (same seed, same weights).

    model: a :class:`SourceModel` (from :func:`univ.sources.load_model`) or a univ zoo model.
    """
    check_model(model)
    seed = check_seed(seed)
    if seed is None:
        raise ValueError("seed: expected an integer seed, got None")
    if isinstance(model, SourceModel):
        if model._untrained is None:
            raise ValueError(f"model: {model.spec!r} cannot be rebuilt untrained (its source does not know how)")
        twin = model._untrained(seed)
        twin.spec = f"{model.spec} (untrained, seed={seed})"
        return twin
    if isinstance(model, ZooModel):
        config = dict(model.config)
        config.pop("seed", None)  # build_model passes ``seed`` on to the models that take one
        return build_model(model.name, seed=seed, **config)
    raise ValueError(f"model: expected a univ.sources.SourceModel or a zoo model, got {type(model).__name__}; "
                     "load it with univ.sources.load_model")
