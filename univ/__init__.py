"""univ: do different networks learn the same features, and what do adversarial perturbations do to them?

The public API (see README):

    univ.data, univ.models, univ.train          datasets, the model zoo, one training loop
    univ.capture(model, inputs, names, ...)     activations at named hook points -> {name: (n, d)}
    univ.hook_names(model)                      the names capture accepts
    univ.similarity                             CKA, CCA/SVCCA/PWCCA, Procrustes, RSA, mutual kNN, compare
    univ.store                                  on-disk activation store (capture_to_store, ActivationStore)
    univ.sae                                    sparse autoencoders, metrics, cross-model matching
    univ.adversarial                            attacks, projection of activation changes onto bases
    univ.repro                                  code that serves one paper each (Lipschitz bounds, lottery, ...)
    univ.sources                                your own models and data: load_model("hf:gpt2"), ...

Submodules are imported on first use, so ``import univ`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "data", "models", "train", "activations", "registry", "similarity", "sae", "adversarial", "report", "utils",
    "cache", "repro", "store", "sources",
}


def capture(*args, **kwargs):
    """Activations of ``model`` at hook points ``names``: see :func:`univ.activations.capture`."""
    from .activations import capture as _capture

    return _capture(*args, **kwargs)


def hook_names(model):
    """Every name :func:`capture` accepts for ``model``: see :func:`univ.activations.hook_names`."""
    from .activations import hook_names as _hook_names

    return _hook_names(model)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'univ' has no attribute {name!r}")


__all__ = ["capture", "hook_names", "__version__", *sorted(_SUBMODULES)]
