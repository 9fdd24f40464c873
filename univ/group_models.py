"""Chughtai, Chan & Nanda (2023)'s networks for group composition, their training recipe and their cache.

- :class:`GroupMLP` (registry name ``group_mlp``): left and right embeddings of the two input elements,
  concatenated, one ReLU hidden layer, an unembedding to |G| logits; no biases (as in the paper).
- the one-layer transformer is univ's ``token_transformer`` (TransformerLens) on the two tokens (a, b),
  read out at b's position.
- :func:`train_group_model`: full-batch AdamW with weight decay until the test accuracy stops changing (or a
  step cap), keeping checkpoints along the way (the learning order is read from them).
- :func:`cached_group_model`: the trained model and its checkpoints, keyed by everything that made them and
  kept through :mod:`univ.integrity` (safetensors + JSON).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .cache import model_key
from .data import Dataset
from .integrity import read_entry, write_entry
from .models import MODELS, ZooModel, build_model
from .train import evaluate, load_metrics, load_model, save_model
from .utils import cache_dir, stable_hash


class GroupMLP(ZooModel):
    """One-hidden-layer MLP on element pairs: x (n, 2) ids -> [W_left[a], W_right[b]] -> ReLU -> logits.

    Hookable modules: ``embed`` ((n, 2 d_embed), both embeddings), ``hidden`` (post-ReLU), ``out`` (logits).
    """

    name = "group_mlp"
    takes_tokens = True

    def __init__(self, n_elements: int = 120, d_embed: int = 32, d_hidden: int = 64,
                 input_shape=(2,), n_classes: int | None = None):
        super().__init__(input_shape)
        if tuple(self.input_shape) != (2,):
            raise ValueError(f"input_shape: GroupMLP takes pairs (a, b), i.e. (2,); got {self.input_shape}")
        n_classes = n_elements if n_classes is None else n_classes
        for k, v in {"n_elements": n_elements, "d_embed": d_embed, "d_hidden": d_hidden,
                     "n_classes": n_classes}.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k}: must be a positive integer, got {v!r}")
        self.config = {"n_elements": n_elements, "d_embed": d_embed, "d_hidden": d_hidden,
                       "input_shape": [2], "n_classes": n_classes}
        self.W_left = nn.Parameter(torch.randn(n_elements, d_embed) / d_embed ** 0.5)
        self.W_right = nn.Parameter(torch.randn(n_elements, d_embed) / d_embed ** 0.5)
        self.embed = nn.Identity()
        self.fc = nn.Linear(2 * d_embed, d_hidden, bias=False)
        self.hidden = nn.ReLU()
        self.out = nn.Linear(d_hidden, n_classes, bias=False)
        self.layers = ["embed", "hidden", "out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.config["n_elements"]
        if x.ndim != 2 or x.shape[1] != 2 or x.is_floating_point() or (len(x) and (x.min() < 0 or x.max() >= n)):
            raise ValueError(f"x: expected element ids in [0, {n}) of shape (n, 2), got {tuple(x.shape)} {x.dtype}")
        e = self.embed(torch.cat([self.W_left[x[:, 0]], self.W_right[x[:, 1]]], dim=1))
        return self.out(self.hidden(self.fc(e)))


MODELS.register("group_mlp", GroupMLP)


def group_model_cfg(arch: str, n_elements: int, width: int) -> dict:
    """Constructor arguments of ``arch`` ("mlp" or "transformer") for a group of ``n_elements``."""
    if arch == "mlp":
        return {"n_elements": n_elements, "d_embed": width // 2, "d_hidden": width}
    if arch == "transformer":
        return {"n_ctx": 2, "d_vocab": n_elements, "n_classes": n_elements, "d_model": width, "n_layers": 1,
                "n_heads": 4}
    raise ValueError(f"arch: unknown group model {arch!r}; choose from ['mlp', 'transformer']")


ARCH_NAMES = {"mlp": "group_mlp", "transformer": "token_transformer"}


@dataclass(frozen=True)
class GroupTrainConfig:
    """The paper's recipe: full-batch AdamW, betas (0.9, 0.98), weight decay; stop when test accuracy settles."""

    max_steps: int = 4000
    """Cap on optimizer steps (full-batch: one step = one epoch)."""
    lr: float = 1e-2
    weight_decay: float = 1.0
    """AdamW's decoupled weight decay (the paper: 1)."""
    checkpoint_every: int = 100
    """Steps between checkpoints (and test-accuracy checks)."""
    patience: int = 5
    """Stop once the test accuracy changed by < 0.001 over this many consecutive checkpoints (and is > 0.99)."""

    def __post_init__(self):
        if self.max_steps < 1 or self.lr <= 0 or self.weight_decay < 0 or self.checkpoint_every < 1 \
                or self.patience < 1:
            raise ValueError(f"GroupTrainConfig: need max_steps, checkpoint_every, patience >= 1, lr > 0, "
                             f"weight_decay >= 0; got {self}")


class GroupTrainResult(NamedTuple):
    model: nn.Module
    metrics: dict
    """train_acc, test_acc, final_loss, steps, seconds, and ``history`` (step, loss, test_acc per checkpoint)."""
    checkpoints: dict[int, dict[str, torch.Tensor]]
    """step -> state dict (step 0 = the initialisation)."""


def train_group_model(model: nn.Module, data: Dataset, cfg: GroupTrainConfig = GroupTrainConfig(),
                      progress: bool = True) -> GroupTrainResult:
    """Full-batch AdamW on ``data`` (cross-entropy) with checkpoints every ``cfg.checkpoint_every`` steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    x, y = data.x_train, data.y_train

    def snapshot():
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    checkpoints, history, t0 = {0: snapshot()}, [], time.perf_counter()
    bar = tqdm(range(1, cfg.max_steps + 1), desc=f"train {getattr(model, 'name', 'model')}", disable=not progress,
               leave=False)
    loss = torch.tensor(float("nan"))
    step = 0
    for step in bar:
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            acc = evaluate(model, data.x_test, data.y_test, batch_size=len(data.x_test))
            history.append({"step": step, "loss": loss.item(), "test_acc": acc})
            checkpoints[step] = snapshot()
            bar.set_postfix(loss=f"{loss.item():.2e}", test_acc=f"{acc:.3f}")
            last = [h["test_acc"] for h in history[-cfg.patience - 1:]]
            if len(last) > cfg.patience and acc > 0.99 and max(last) - min(last) < 1e-3:
                break
    model.eval()
    metrics = {"train_acc": evaluate(model, x, y), "test_acc": evaluate(model, data.x_test, data.y_test),
               "final_loss": loss.item(), "steps": step, "seconds": time.perf_counter() - t0, "history": history}
    return GroupTrainResult(model, metrics, checkpoints)


def _save_checkpoints(checkpoints: dict, path: Path) -> None:
    flat = {f"{step:08d}/{k}": v.contiguous() for step, sd in checkpoints.items() for k, v in sd.items()}
    save_file(flat, str(path))


def _load_checkpoints(path: Path) -> dict[int, dict[str, torch.Tensor]]:
    out: dict[int, dict] = {}
    for key, v in load_file(str(path)).items():
        step, name = key.split("/", 1)
        out.setdefault(int(step), {})[name] = v
    return dict(sorted(out.items()))


def cached_group_model(arch: str, data: Dataset, seed: int, train_cfg: GroupTrainConfig, width: int = 64,
                       root: str | Path | None = None, progress: bool = False) -> GroupTrainResult:
    """Build (seeded) and train ``arch`` ("mlp" or "transformer") on a group-composition dataset, or load it
    with its checkpoints when this exact configuration was trained before (UNIV_NO_CACHE=1 retrains)."""
    name = ARCH_NAMES.get(arch)
    if name is None:
        raise ValueError(f"arch: unknown group model {arch!r}; choose from {sorted(ARCH_NAMES)}")
    model_cfg = group_model_cfg(arch, data.n_classes, width)
    key = model_key(name, model_cfg, seed, data, train_cfg, {"recipe": "full-batch AdamW (Chughtai et al. 2023)"})
    folder = Path(root or cache_dir() / "models") / f"{name}-{stable_hash(key)}"

    def load(f: Path) -> GroupTrainResult:
        metrics = load_metrics(f)
        metrics["history"] = json.loads((f / "history.json").read_text())
        return GroupTrainResult(load_model(f), metrics, _load_checkpoints(f / "checkpoints.safetensors"))

    if os.environ.get("UNIV_NO_CACHE") != "1":
        hit = read_entry(folder, load, "cached group model")
        if hit is not None:
            return hit
    model: ZooModel = build_model(name, seed=seed, **model_cfg)
    result = train_group_model(model, data, train_cfg, progress=progress)
    history = result.metrics["history"]

    def fill(f: Path) -> None:
        save_model(model, f, {k: v for k, v in result.metrics.items() if k != "history"})
        (f / "history.json").write_text(json.dumps(history))
        _save_checkpoints(result.checkpoints, f / "checkpoints.safetensors")
        (f / "key.json").write_text(json.dumps(key, indent=2))

    write_entry(folder, fill, meta={"kind": "model", "name": name})
    return result
