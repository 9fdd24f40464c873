"""The reproduction wing: code that serves one paper each, kept apart from the general toolkit.

    lipschitz          Lipschitz bounds of ReLU networks (Szegedy et al. 2013, Section 4.3 / Table 5)
    szegedy            Szegedy et al. 2013's Table 1 (minimal L-BFGS distortions) beside univ's models
    lottery            lottery tickets: masks, iterative magnitude pruning, rewinding (Frankle & Carbin 2018)
    purity             neuron purity against a known dictionary (Allen-Zhu & Li 2020, feature purification)
    robust_datasets    robust and non-robust datasets (Ilyas et al. 2019)
    smoothing          gradients of Gaussian-smoothed classifiers (Cohen et al. 2019; Kaur et al. 2019)

The general pieces they use (attacks, capture, training) live in the rest of univ; nothing outside
``univ.repro`` and ``analyses/`` imports from here. Submodules are imported on first use.
"""

from __future__ import annotations

import importlib

_SUBMODULES = {"lipschitz", "szegedy", "lottery", "purity", "robust_datasets", "smoothing"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'univ.repro' has no attribute {name!r}")


__all__ = sorted(_SUBMODULES)
