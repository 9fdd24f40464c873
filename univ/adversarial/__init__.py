"""Adversarial attacks and the projection of adversarial activation changes onto feature bases.

    x_adv = univ.adversarial.pgd(model, x, y, eps=0.1, norm="inf", steps=20)
    attack = univ.adversarial.make_attack("pgd", eps=0.1, steps=7)   # attack(model, x, y) -> x_adv
    univ.adversarial.project(delta, basis)       # per-sample concentration of activation changes
"""

from .attacks import (
    ATTACKS,
    canonical_norm,
    fgsm,
    make_attack,
    margin,
    per_sample_norm,
    pgd,
    random_other_class,
    robust_accuracy,
)
from .controls import gaussian_noise, layer_acts, matched_random
from .deepfool import deepfool
from .lbfgs import lbfgs
from .project import (
    code_changes,
    directions,
    latent_class_association,
    most_changed_latents,
    neuron_basis,
    omp,
    pca_basis,
    project,
    random_dictionary,
    random_orthonormal,
)

__all__ = [
    "ATTACKS", "canonical_norm", "fgsm", "make_attack", "margin", "per_sample_norm", "pgd",
    "random_other_class", "robust_accuracy", "lbfgs", "deepfool", "project", "code_changes", "directions",
    "latent_class_association", "most_changed_latents", "neuron_basis", "omp", "pca_basis",
    "random_dictionary", "random_orthonormal", "matched_random", "gaussian_noise", "layer_acts",
]
