"""One training loop for every classifier in univ: standard, noise-augmented and adversarial.

Adversarial training (Madry et al.) passes an attack ``attack(model, x, y) -> x_adv``; each batch is
then replaced by its adversarial version (or mixed with it, ``adv_fraction`` < 1). Noise augmentation
(the base model of randomized smoothing) adds N(0, noise_sigma^2) to every input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_model as _load_weights
from safetensors.torch import save_model as _save_weights
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_choice, check_finite, to_tensor
from .data import Dataset
from .integrity import write_file
from .models import ZooModel, build_model, model_spec, predict

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class TrainResult(NamedTuple):
    """What :func:`train` returns (unpacks as ``model, metrics = train(...)``)."""

    model: nn.Module
    metrics: dict
    """train_acc, test_acc, final_loss, steps, seconds and a per-epoch ``history``."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train`."""

    epochs: int = 30
    """Passes over the training set."""
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    """SGD momentum (ignored by Adam)."""
    weight_decay: float = 0.0
    seed: int = 0
    """Seeds the batch order and noise (the initialisation is seeded by ``build_model``)."""
    noise_sigma: float = 0.0
    """Std of Gaussian input noise added to every training batch (0 = none)."""
    adv_fraction: float = 1.0
    """With an attack: the fraction of each batch replaced by adversarial inputs."""
    clip_to_bounds: bool = True
    """Clip noisy inputs to the dataset's bounds when it has them."""

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"TrainConfig: need epochs >= 0, batch_size >= 1, lr > 0; got {self}")
        check_choice(self.optimizer, "optimizer", ("adam", "sgd"))
        if self.noise_sigma < 0:
            raise ValueError(f"noise_sigma: must be >= 0, got {self.noise_sigma}")
        if not 0 <= self.adv_fraction <= 1:
            raise ValueError(f"adv_fraction: must be in [0, 1], got {self.adv_fraction}")


def evaluate(model: nn.Module, x, y, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on (x, y)."""
    y = to_tensor(y, "y")
    if len(y) != len(x):
        raise ValueError(f"x and y must have the same number of samples: got {len(x)} and {len(y)}")
    return float((predict(model, x, batch_size) == y.cpu()).float().mean())


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    attack: Attack | None = None,
    callback: Callable[[int, nn.Module], None] | None = None,
    progress: bool = True,
    device=None,
) -> TrainResult:
    """Train ``model`` on ``data`` with cross-entropy; returns a :class:`TrainResult` (model, metrics).

    attack: ``attack(model, x, y) -> x_adv`` for adversarial training; univ's attacks run the model in
        eval mode and restore its mode, and the loop puts it back in train mode for the update.
    callback: called as ``callback(step, model)`` after every optimizer step (pruning masks, snapshots).
    metrics: train_acc, test_acc, final_loss, steps, seconds and a per-epoch ``history``.
    """
    check_finite(data.x_train, "data.x_train")
    dev = torch.device(device) if device else next(model.parameters()).device
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    x_tr, y_tr = data.x_train, data.y_train
    n = len(x_tr)
    history, step, t0, loss = [], 0, time.perf_counter(), torch.tensor(float("nan"))
    bar = tqdm(range(cfg.epochs), desc=f"train {getattr(model, 'name', type(model).__name__)}",
               disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = x_tr[idx].to(dev), y_tr[idx].to(dev)
            if cfg.noise_sigma > 0:
                xb = xb + cfg.noise_sigma * torch.randn(xb.shape, generator=g).to(dev)
                if cfg.clip_to_bounds and data.bounds is not None:
                    xb = xb.clamp(*data.bounds)
            if attack is not None and cfg.adv_fraction > 0:
                k = max(1, int(round(cfg.adv_fraction * len(xb))))
                x_adv = attack(model, xb[:k], yb[:k]).detach()
                xb = torch.cat([x_adv, xb[k:]])
                model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += loss.item() * len(idx)
            if callback is not None:
                callback(step, model)
        history.append({"epoch": epoch + 1, "loss": total / n})
        bar.set_postfix(loss=f"{total / n:.3f}")
    metrics = {
        "train_acc": evaluate(model, data.x_train, data.y_train),
        "test_acc": evaluate(model, data.x_test, data.y_test),
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "steps": step, "seconds": time.perf_counter() - t0, "history": history,
    }
    model.eval()
    return TrainResult(model, metrics)


def save_model(model: ZooModel, path: str | Path, metrics: dict | None = None) -> Path:
    """Save a zoo model as ``path/model.safetensors`` + ``path/config.json`` (never pickle). Each file is
    written atomically, config.json last, so a folder with config.json holds the weights it describes."""
    path = Path(path)
    write_file(path / "model.safetensors", lambda f: _save_weights(model, str(f)))
    spec = json.dumps({**model_spec(model), "metrics": metrics or {}}, indent=2)
    write_file(path / "config.json", lambda f: f.write_text(spec))
    return path


def load_model(path: str | Path, device=None) -> ZooModel:
    """Rebuild a model saved by :func:`save_model` and load its weights exactly (strict)."""
    path = Path(path)
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise ValueError(f"path: {str(path)!r} holds no saved univ model (config.json + model.safetensors)")
    spec = _read_spec(path)
    try:
        model = build_model(spec["name"], **spec["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"path: {str(path / 'config.json')!r} describes no buildable zoo model: {e}") from None
    try:
        _load_weights(model, str(path / "model.safetensors"), strict=True, device=str(device or "cpu"))
    except Exception as e:  # safetensors' and torch's own errors: say which file
        raise ValueError(f"path: cannot load the weights in {str(path / 'model.safetensors')!r} into a "
                         f"{spec['name']!r} model: {type(e).__name__}: {e}") from None
    model.eval()
    return model


def _read_spec(path: Path) -> dict:
    try:
        spec = json.loads((path / "config.json").read_text())
        spec["name"], spec["config"]  # noqa: B018 (both must be there)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"path: {str(path / 'config.json')!r} is not a univ model config "
                         f"({type(e).__name__}: {e})") from None
    return spec


def load_metrics(path: str | Path) -> dict:
    """The metrics saved beside a model by :func:`save_model`."""
    return _read_spec(Path(path)).get("metrics", {})
