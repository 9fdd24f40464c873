"""Lottery tickets (Frankle & Carbin 2018): masks, iterative magnitude pruning, rewinding, controls.

A mask set is ``{param name: bool tensor}`` over the weight matrices of a model's Linear/Conv layers
(biases are never pruned, as in the paper). Pruning is layer-wise: each round removes ``rate`` of the
weights a layer still has, those of smallest trained magnitude (20% for hidden layers, 10% for the
output layer in the paper's LeNet-300-100 recipe). A ticket is the mask applied to the weights rewound
to initialisation (``rewind_step=0``) or to an early iteration of the dense run (late rewinding,
Frankle et al. 2019). Training always goes through :func:`univ.train.train`; masks are re-applied by
its per-step callback, so pruned weights stay exactly zero.

    rounds = iterative_magnitude_pruning(lambda: build_model("mlp", seed=0, ...), data, cfg, n_rounds=5)
    rounds[-1].masks, rounds[-1].state, rounds[-1].run.test_acc_at_best, rounds[-1].remaining
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..models import logits as model_logits
from ..train import TrainConfig, train

Masks = dict[str, torch.Tensor]
State = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------------------------
# masks


def prunable(model: nn.Module) -> list[str]:
    """Names of the prunable weights (``"fc1.weight"``, ..., ``"out.weight"``), input side first."""
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def full_masks(model: nn.Module) -> Masks:
    """All-True masks (nothing pruned) for every prunable weight."""
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable(model)}


def layer_rates(model: nn.Module, hidden: float = 0.2, output: float = 0.1) -> dict[str, float]:
    """Per-layer pruning rate per round: ``hidden`` for every layer but the last, ``output`` for it."""
    names = prunable(model)
    for v, what in ((hidden, "hidden"), (output, "output")):
        if not 0 <= v < 1:
            raise ValueError(f"{what}: a pruning rate must be in [0, 1), got {v}")
    return {n: (output if n == names[-1] else hidden) for n in names}


def _check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    for n, m in masks.items():
        if n not in params:
            raise ValueError(f"masks: {n!r} is not a parameter of the model (prunable: {prunable(model)})")
        if m.shape != params[n].shape:
            raise ValueError(f"masks: {n!r} has shape {tuple(m.shape)}, the weight {tuple(params[n].shape)}")
    return params


def prune_by_magnitude(model: nn.Module, masks: Mapping[str, torch.Tensor],
                       rates: Mapping[str, float]) -> Masks:
    """One pruning round: per layer, drop ``round(rate * n_kept)`` of the still-kept weights with the
    smallest |w| in ``model`` (ties broken by position). Returns new masks; ``masks`` is not modified.
    A layer keeps exactly ``n_kept - round(rate * n_kept)`` weights."""
    params = _check_masks(model, masks)
    out = {}
    for n, m in masks.items():
        m = m.bool()
        kept = int(m.sum())
        keep = kept - int(round(float(rates.get(n, 0.0)) * kept))
        score = params[n].detach().abs().flatten().masked_fill(~m.flatten().to(params[n].device), -torch.inf)
        # stable sort: equal magnitudes keep the earlier positions, so the result is deterministic
        idx = torch.sort(score, descending=True, stable=True).indices[:keep]
        new = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
        new[idx.to(m.device)] = True
        out[n] = new.reshape(m.shape)
    return out


def random_masks(masks: Mapping[str, torch.Tensor], seed: int = 0) -> Masks:
    """Masks with the same number of kept weights per layer as ``masks``, at uniformly random positions
    (the random-pruning control)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, m in masks.items():
        idx = torch.randperm(m.numel(), generator=g)[: int(m.sum())]
        new = torch.zeros(m.numel(), dtype=torch.bool)
        new[idx] = True
        out[n] = new.reshape(m.shape).to(m.device)
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Zero the pruned weights of ``model`` in place; returns the model."""
    params = _check_masks(model, masks)
    for n, m in masks.items():
        params[n].mul_(m.to(params[n].device, params[n].dtype))
    return model


def remaining(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the prunable weights still kept (all layers together)."""
    return sum(int(m.sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))


def layer_remaining(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Fraction kept per layer."""
    return {n: float(m.float().mean()) for n, m in masks.items()}


def mask_jaccard(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Jaccard overlap |A & B| / |A | B| of the kept weights, per layer and ``"all"`` layers together.
    Two independent random masks keeping fractions p and q overlap by pq / (p + q - pq) in expectation."""
    if set(a) != set(b):
        raise ValueError(f"masks: the two mask sets cover different weights: {sorted(a)} vs {sorted(b)}")
    out, inter, union = {}, 0, 0
    for n in a:
        i, u = int((a[n] & b[n]).sum()), int((a[n] | b[n]).sum())
        out[n] = i / u if u else 1.0
        inter, union = inter + i, union + u
    out["all"] = inter / union if union else 1.0
    return out


# --------------------------------------------------------------------------------------------------
# snapshots and rewinding


def snapshot(model: nn.Module) -> State:
    """A detached copy of the model's state dict (the weights to rewind to)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rewind(model: nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None
           ) -> nn.Module:
    """Load ``state`` into ``model`` exactly, then zero the pruned weights; returns the model."""
    model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
    return apply_masks(model, masks) if masks is not None else model


# --------------------------------------------------------------------------------------------------
# training with masks


class MaskedRun(NamedTuple):
    """One training run of a (possibly pruned) network.

    history: one dict per evaluation {step, val_loss, val_acc, test_acc}; best_step: the early-stopping
    iteration (minimum validation loss, as in Frankle & Carbin); test_acc_at_best: test accuracy there.
    snapshot: the weights after step ``snapshot_at`` (None if not asked or not reached).
    """

    model: nn.Module
    metrics: dict
    history: list[dict]
    best_step: int
    best_val_loss: float
    test_acc_at_best: float
    snapshot: State | None


def split_validation(data: Dataset, n_val: int, seed: int = 0) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]:
    """Hold ``n_val`` random training samples out for early stopping: (train data, (x_val, y_val))."""
    if not 0 < n_val < len(data.x_train):
        raise ValueError(f"n_val: must be in (0, {len(data.x_train)}), got {n_val}")
    perm = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
    va, tr = perm[:n_val], perm[n_val:]
    kept = Dataset(data.name, data.x_train[tr], data.y_train[tr], data.x_test, data.y_test, data.input_shape,
                   data.n_classes, data.bounds, dict(data.extra))
    return kept, (data.x_train[va], data.y_train[va])


@torch.no_grad()
def _eval(model, x, y) -> tuple[float, float]:
    logits = model_logits(model, x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def train_masked(model: nn.Module, data: Dataset, cfg: TrainConfig, masks: Mapping[str, torch.Tensor] | None = None,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None, eval_every: int = 50,
                 snapshot_at: int | None = None, progress: bool = False) -> MaskedRun:
    """Train ``model`` with :func:`univ.train.train`, keeping ``masks`` applied after every optimizer step.

    val: (x_val, y_val) for the early-stopping iteration (evaluated every ``eval_every`` steps and at the
    end); without it the test set stands in. snapshot_at: copy the weights after that step (late rewinding).
    """
    if masks is not None:
        apply_masks(model, masks)
    x_val, y_val = val if val is not None else (data.x_test, data.y_test)
    history: list[dict] = []
    snap: dict = {}

    def record(step):
        vl, va = _eval(model, x_val, y_val)
        _, ta = _eval(model, data.x_test, data.y_test)
        history.append({"step": step, "val_loss": vl, "val_acc": va, "test_acc": ta})

    record(0)

    def callback(step: int, m: nn.Module) -> None:
        if masks is not None:
            apply_masks(m, masks)
        if snapshot_at is not None and step == snapshot_at:
            snap["state"] = snapshot(m)
        if step % eval_every == 0:
            record(step)

    model, metrics = train(model, data, cfg, callback=callback, progress=progress)
    if history[-1]["step"] != metrics["steps"]:
        record(metrics["steps"])
    best = min(history, key=lambda h: h["val_loss"])
    return MaskedRun(model, metrics, history, best["step"], best["val_loss"], best["test_acc"], snap.get("state"))


# --------------------------------------------------------------------------------------------------
# iterative magnitude pruning


class PruneRound(NamedTuple):
    """Round ``round`` of IMP (0 = the dense network): its masks, the trained weights, the run."""

    round: int
    masks: Masks
    state: State
    run: MaskedRun
    remaining: float


def iterative_magnitude_pruning(
    make_model: Callable[[], nn.Module],
    data: Dataset,
    cfg: TrainConfig,
    n_rounds: int,
    rewind_step: int = 0,
    rates: Mapping[str, float] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    eval_every: int = 50,
    dense: PruneRound | None = None,
    rewind_state: State | None = None,
    progress: bool = False,
) -> tuple[list[PruneRound], State]:
    """Frankle & Carbin's IMP: train dense; then ``n_rounds`` times prune by trained magnitude
    (``rates``, default :func:`layer_rates`), rewind the survivors to the weights of step
    ``rewind_step`` of the dense run (0 = initialisation) and retrain.

    dense / rewind_state: reuse a dense round and its rewind weights from an earlier call (e.g. the
    same dense run for several rewind points). Returns (rounds, rewind_state); rounds[0] is the dense net.
    """
    model = make_model()
    rates = dict(rates) if rates is not None else layer_rates(model)
    if dense is None:
        init = snapshot(model)
        run = train_masked(model, data, cfg, None, val, eval_every, rewind_step or None, progress)
        if rewind_step and run.snapshot is None:
            raise ValueError(f"rewind_step: {rewind_step} is past the dense run's {run.metrics['steps']} steps")
        rewind_state = run.snapshot if rewind_step else init
        dense = PruneRound(0, full_masks(model), snapshot(run.model), run, 1.0)
    elif rewind_state is None:
        raise ValueError("rewind_state: required when a dense round is passed in")
    rounds = [dense]
    masks = dense.masks
    for r in range(1, n_rounds + 1):
        model.load_state_dict(rounds[-1].state)
        masks = prune_by_magnitude(model, masks, rates)
        rewind(model, rewind_state, masks)
        run = train_masked(model, data, cfg, masks, val, eval_every, None, progress)
        rounds.append(PruneRound(r, masks, snapshot(run.model), run, remaining(masks)))
    return rounds, rewind_state
