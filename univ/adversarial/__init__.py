"""Adversarial attacks and the projection of adversarial activation changes onto feature bases.

    x_adv = univ.adversarial.pgd(model, x, y, eps=0.1, norm="inf", steps=20, bounds=data.bounds)
    attack = univ.adversarial.make_attack("pgd", eps=0.1, steps=7, bounds=data.bounds)
    attack(model, x, y); attack.spec             # -> x_adv; {"name": "pgd", "kwargs": {...}} (JSON)
    univ.adversarial.project(delta, basis)       # per-sample concentration of activation changes

Modules: ``ball`` (norm balls and input boxes), ``attacks`` (FGSM, PGD, checks, the registry),
``deepfool``, ``lbfgs``, ``project`` (bases and decompositions), ``controls`` (matched random
perturbations), ``aligned`` (feature attacks, steering, transfer). Every attack takes the input box
``bounds`` as a required keyword: the data knows its box (``data.bounds``; None for unbounded inputs).
"""

from .attacks import (
    ATTACKS,
    Attack,
    check_inputs,
    fgsm,
    make_attack,
    margin,
    pgd,
    random_other_class,
    register_attack,
    resolve_target,
    robust_accuracy,
)
from .ball import (
    canonical_norm,
    check_bounds,
    clip_to_box,
    make_generator,
    per_sample,
    per_sample_norm,
    project_ball,
    random_in_ball,
    steepest_step,
)
from .controls import gaussian_noise, matched_random
from .deepfool import deepfool
from .lbfgs import LBFGSResult, lbfgs, lbfgs_search
from .project import (
    CodeChanges,
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
    "ATTACKS", "Attack", "register_attack", "make_attack", "check_inputs", "resolve_target", "fgsm", "pgd",
    "margin", "random_other_class", "robust_accuracy", "lbfgs", "lbfgs_search", "LBFGSResult", "deepfool",
    "canonical_norm", "check_bounds", "clip_to_box", "make_generator", "per_sample", "per_sample_norm",
    "project_ball", "random_in_ball", "steepest_step",
    "project", "CodeChanges", "code_changes", "directions", "latent_class_association", "most_changed_latents",
    "neuron_basis", "omp", "pca_basis", "random_dictionary", "random_orthonormal",
    "matched_random", "gaussian_noise",
]
