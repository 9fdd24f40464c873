"""Adversarial attacks and the projection of adversarial activation changes onto feature bases.

    x_adv = univ.adversarial.pgd(model, x, y, eps=0.1, norm="inf", steps=20)
    attack = univ.adversarial.make_attack("pgd", eps=0.1, steps=7)   # attack(model, x, y) -> x_adv
"""

from .attacks import (
    ATTACKS,
    canonical_norm,
    eval_mode,
    fgsm,
    make_attack,
    margin,
    per_sample_norm,
    pgd,
    predict,
    random_other_class,
    robust_accuracy,
)

__all__ = [
    "ATTACKS", "canonical_norm", "eval_mode", "fgsm", "make_attack", "margin", "per_sample_norm", "pgd",
    "predict", "random_other_class", "robust_accuracy",
]
