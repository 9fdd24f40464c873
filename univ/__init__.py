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
    univ.compare_models(["hf:a", "hf:b"])       every layer of each model against the others (univ compare)

Submodules are imported on first use, so ``import univ`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "data", "models", "train", "activations", "registry", "similarity", "sae", "adversarial", "report", "utils",
    "cache", "repro", "store", "sources", "jobs",
}


def capture(*args, **kwargs):
    """Activations of ``model`` at hook points ``names``: see :func:`univ.activations.capture`."""
    from .activations import capture as _capture

    return _capture(*args, **kwargs)


def hook_names(model):
    """Every name :func:`capture` accepts for ``model``: see :func:`univ.activations.hook_names`."""
    from .activations import hook_names as _hook_names

    return _hook_names(model)


def compare_models(models, data: str = "corpus", **settings):
    """Every layer of every model against every layer of the others, with untrained twins as the baseline:
    the ``compare`` analysis (``univ compare``) as a function, returning its :class:`univ.report.Report`
    (``report.tables["similarity"]``: model_a, layer_a, model_b, layer_b, metric, value, baseline_mean,
    p_value, ci_low, ci_high, category; ``report.tables["summary"]``, ``report.tables["models"]``, the
    heatmaps in ``report.figures``; ``univ.report.write(report, folder)`` writes the run folder).

    models: model specs (``["hf:gpt2", "hf:EleutherAI/pythia-70m"]``; one spec is compared with itself).
    data: a data spec (``"corpus"``, ``"text:notes/*.txt"``, ...). settings: the other fields of
    ``analyses/compare.py``'s Config (layers, metrics, n_tokens, context, reduce, n_permutations, n_bootstrap,
    untrained, allow_different_tokenizers, max_memory_mb, batch_size, device, seed), and ``quick=True`` for its
    quick sizes. A bad setting raises :class:`univ.config.SettingError` (a ValueError) naming it, before any
    model loads.
    """
    from .cli import load_analysis

    if isinstance(models, str):
        models = [models]
    if not isinstance(models, (list, tuple)):
        raise TypeError(f"models: expected a list of model specs, got {type(models).__name__}")
    mod = load_analysis("compare")
    return mod.run(mod.Config.resolve(models=tuple(models), data=data, **settings))


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'univ' has no attribute {name!r}")


__all__ = ["capture", "hook_names", "compare_models", "__version__", *sorted(_SUBMODULES)]
