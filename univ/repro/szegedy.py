"""Szegedy et al. (2013), "Intriguing properties of neural networks": Table 1, the average minimal
distortion of the L-BFGS attack, and the same table for any models (:func:`minimal_distortion_table`).

Table 1 reports the "average minimal distortion" sqrt(sum_i (x'_i - x_i)^2 / n), i.e. the RMS of the
perturbation per input dimension, averaged over attacked examples: :func:`rms_distortion`. The attack
itself is general and lives in :func:`univ.adversarial.lbfgs`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..adversarial.attacks import ATTACKS, check_inputs
from ..adversarial.lbfgs import lbfgs_search
from ..models import predict

#: Szegedy et al. 2013, Table 1 (MNIST, 28x28 inputs in [0, 1]): average minimal distortion of the
#: L-BFGS attack per model. FC10(lambda) is softmax regression with weight decay lambda; AE400-10 a
#: softmax on a sparse autoencoder's 400 features.
SZEGEDY_TABLE1 = pd.DataFrame({
    "model": ["FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10"],
    "train_err": [0.067, 0.10, 0.212, 0.0, 0.0, 0.0057],
    "test_err": [0.074, 0.094, 0.20, 0.0164, 0.0154, 0.019],
    "av_min_distortion": [0.062, 0.1, 0.14, 0.058, 0.065, 0.086],
})


def rms_distortion(x, x_adv) -> torch.Tensor:
    """Szegedy's distortion per sample (n,): sqrt(mean over input dims of (x_adv - x)^2)."""
    d = (torch.as_tensor(x_adv) - torch.as_tensor(x)).reshape(len(x), -1).double()
    return d.pow(2).mean(dim=1).sqrt()


def minimal_distortion_table(models: dict, x, y, attack: str = "lbfgs", *, bounds: tuple[float, float] | None,
                             **attack_kw) -> pd.DataFrame:
    """Table 1 of Szegedy et al. for your models, beside the paper's values.

    models: {name: model}; x, y: the examples to attack (only those each model classifies correctly
    are attacked, as a minimal distortion of a misclassified input is 0). attack: "lbfgs" or
    "deepfool"; bounds: the data's box (required; None for unbounded inputs); attack_kw go to the
    attack. Returns one row per model: clean accuracy, n attacked, attack success rate, mean and
    median RMS distortion over successful examples; the paper's Table 1 rows are appended with
    ``source="Szegedy et al. 2013 (MNIST)"``.
    """
    rows = []
    for name, model in models.items():
        xt, yt, _, _ = check_inputs(model, x, y, bounds)
        correct = predict(model, xt) == yt
        xs, ys = xt[correct], yt[correct]
        if attack == "lbfgs":  # success means reaching the (random) target, as in the paper
            x_adv, info = lbfgs_search(model, xs, ys, bounds=bounds, **attack_kw)
            ok = torch.tensor(info["success"].to_numpy())
        else:
            x_adv = ATTACKS[attack](model, xs, ys, bounds=bounds, **attack_kw)
            ok = (predict(model, x_adv) != ys).cpu()
        d = rms_distortion(xs, x_adv).cpu()[ok]
        rows.append({"model": name, "source": "univ", "attack": attack,
                     "clean_acc": float(correct.float().mean()), "n_attacked": int(len(xs)),
                     "success_rate": float(ok.float().mean()),
                     "av_min_distortion": float(d.mean()) if len(d) else np.nan,
                     "median_distortion": float(d.median()) if len(d) else np.nan})
    paper = SZEGEDY_TABLE1.assign(source="Szegedy et al. 2013 (MNIST)", attack="lbfgs")
    return pd.concat([pd.DataFrame(rows), paper], ignore_index=True)
