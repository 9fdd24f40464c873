"""Bring your own models and data: one spec string per model or dataset, resolved by one registry each.

    model = univ.sources.load_model("hf:gpt2")                  # or "hf:/path/to/folder", "tl:...", "py:pkg.mod:make"
    data = univ.sources.load_data("text:notes/*.txt", tokenizer=model.tokenizer, context=128)

Model specs (prefix -> loader in ``MODEL_SOURCES``): ``hf:`` (transformers Auto classes), ``tl:``
(TransformerLens 4.x bridge), ``torchvision:`` (optional extra, weights from a local file), ``py:module:factory``
(any nn.Module, weights from ``weights=``), ``zoo:`` (univ's own zoo). Data specs (prefix -> loader in
``DATA_SOURCES``): ``text:`` (file, folder or glob), ``images:`` (class sub-folders), ``npy:``,
``safetensors:``, and the built-ins (``digits``, ``mnist1d``, ``corpus`` — the embedded default text).
A new source is one function and one registry line.

Every model source returns a :class:`~univ.sources.wrapper.SourceModel` (tensor or dict batch in, logits
out; ``layers``, ``tokenizer``, ``spec`` and the feature axis of its hooked outputs known);
``untrained_twin(model, seed)`` is its random-init baseline.
"""

from __future__ import annotations

import importlib

from ..registry import Registry

MODEL_SOURCES = Registry("model source")
"""prefix (without the colon) -> ``loader(rest_of_spec: str, **options) -> nn.Module`` (the model contract)."""
DATA_SOURCES = Registry("data source")
"""prefix (without the colon) -> ``loader(rest_of_spec: str, **options)`` -> a dataset (see univ.sources.data)."""


def split_spec(spec: str, what: str, registry: Registry) -> tuple[str, str]:
    """("hf", "gpt2") from "hf:gpt2"; a spec without a known prefix raises ValueError listing the valid ones."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{what}: expected a spec string such as {next(iter(registry), 'hf')}:NAME, got {spec!r}")
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in registry:
        raise ValueError(f"{what}: unknown source {prefix + ':' if sep else spec!r} in {spec!r}; valid prefixes: "
                         f"{[p + ':' for p in registry]}")
    return prefix, rest


_LAZY = {"load_model": "models", "SourceModel": "wrapper", "untrained_twin": "wrapper"}
"""public name -> the submodule defining it (imported on first use: the submodules register their loaders)."""


def __getattr__(name: str):
    if name in _LAZY:
        if _LAZY[name] == "wrapper":
            importlib.import_module(".models", __name__)  # every model source registered
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from .data import corpus_path, load_data  # noqa: E402, F401 (the loaders register into DATA_SOURCES above)
from .text import TokenDataset, load_text, read_texts  # noqa: E402, F401
from .vocab import check_same_tokenizer, masked_mean, per_sequence_data  # noqa: E402, F401
