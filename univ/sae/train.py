"""Training loop for every SAE kind: ``fit(sae, acts, ...)``, also reachable as ``sae.fit(acts, ...)``.

It speaks to the SAE only through the base class's public interface (``training_step``, ``norm_scale``,
``W_dec``, ``b_dec``, ``has_sparsity_penalty``, ``hparams``), so it never imports the SAE module and works
for every registered kind unchanged.

The schedule needs no tuning: Adam with a linear learning-rate warm-up, a constant phase that lasts until
the (smoothed) loss stops improving by ``tol`` for ``patience`` evaluations or until 80% of ``max_steps``,
then a linear decay to zero: over a fifth of the steps taken so far after a plateau, over the remaining
steps (to exactly ``max_steps``) when the cap started it. Sparsity penalties (ReLU's L1,
JumpReLU's L0) warm up linearly from zero; early stopping only starts counting once they are at full size.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from .._checks import (
    as_matrix,
    check_callable,
    check_choice,
    check_device,
    check_int,
    check_path,
    check_positive,
    check_real,
    check_seed,
)
from . import checkpoint as ckpt_io
from .stream import Batches

_STATE_KEYS = ("step", "best", "bad", "ema", "decay_start", "decay_len", "history")


def geometric_median(x: Tensor, n_iter: int = 100, eps: float = 1e-8) -> Tensor:
    """The point minimising the summed Euclidean distance to the rows of x: (n, d) (Weiszfeld)."""
    x = as_matrix(x, "x", min_rows=1)
    n_iter = check_int(n_iter, "n_iter", low=1)
    check_positive(eps, "eps")
    y = x.mean(0)
    for _ in range(n_iter):
        w = 1 / (x - y).norm(dim=1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() <= 1e-7 * y.norm().clamp_min(eps):
            return y_new
        y = y_new
    return y


def _project_out_parallel_grad(W_dec: Tensor) -> None:
    """Remove from each decoder row's gradient its component along the (unit) row, so that Adam's step
    moves along the sphere and renormalising afterwards changes little."""
    if W_dec.grad is not None:
        g = W_dec.grad
        g -= (g * W_dec.data).sum(1, keepdim=True) * W_dec.data


def _normalise_rows(W_dec: Tensor) -> None:
    W_dec.data /= W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-12)


def fit(
    sae: nn.Module,
    acts,
    *,
    batch_size: int = 512,
    lr: float | None = None,
    max_steps: int = 30_000,
    patience: int | None = 3,
    tol: float = 5e-3,
    eval_every: int = 200,
    warmup_steps: int = 100,
    sparsity_warmup_steps: int = 1000,
    decay_fraction: float = 0.2,
    b_dec_init: str = "geometric_median",
    normalize: bool = True,
    dead_after: int = 20_000,
    init_samples: int = 10_000,
    seed: int | None = None,
    device=None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    callback: Callable[[int, nn.Module, dict], None] | None = None,
) -> nn.Module:
    """Train the SAE ``sae`` (a :class:`univ.sae.SAE`) on activations; returns it, with ``history_``,
    ``n_steps_``, ``converged_`` and ``dead_fraction_`` set.

    acts: (n, d_in) array/tensor (reshuffled each pass), or (n_i, d_in) batches as a list, a re-iterable
        loader, a zero-argument callable returning a fresh iterable, or a one-shot generator/iterator (one
        pass), so data that does not fit in memory streams from disk (e.g. the activation cache). Every
        row is trained on exactly once per pass (the rows read for the initial statistics included) and
        every batch read is validated.
    batch_size: rows per step. lr: Adam's learning rate (default 3e-3 * min(1, sqrt(1024 / d_sae))).
    max_steps: cap on optimizer steps. patience / tol: stop once the smoothed loss has not improved by a
        relative ``tol`` over ``patience`` evaluations (every ``eval_every`` steps); None trains to the cap.
    warmup_steps: linear lr warm-up. sparsity_warmup_steps: linear warm-up of the sparsity penalty of
        kinds that have one (``has_sparsity_penalty``: ReLU's L1, JumpReLU's L0).
    decay_fraction: after a plateau, the final linear lr decay lasts this fraction of the steps taken before
        it; without one it starts at (1 - decay_fraction) * max_steps and ends at max_steps.
    b_dec_init: "geometric_median", "mean" or "zeros". normalize: rescale inputs so the mean norm is
        sqrt(d_in) (the factor is stored in ``sae.norm_scale`` and undone on decode).
    dead_after: a latent that has not fired on this many training rows counts as dead (AuxK, metrics).
    checkpoint: a file path; the full training state is written there (a JSON manifest, the tensors in a
        safetensors file beside it; see ``univ.sae.checkpoint``) every ``checkpoint_every`` steps and at
        the end. resume: continue from that checkpoint when it exists (same SAE, data and arguments give
        the result of an uninterrupted run); a corrupt, partial or foreign file there (e.g. an old
        torch.save pickle, never unpickled) is announced with a warning and training starts afresh.
    callback: called as callback(step, sae, record) after each evaluation.
    Raises ValueError for NaN/Inf or complex activations (naming the batch), a d_in mismatch, bad
    arguments, or a checkpoint of another SAE.
    """
    if not isinstance(sae, nn.Module) or not callable(getattr(sae, "training_step", None)):
        raise ValueError(f"sae: expected a univ.sae.SAE, got {type(sae).__name__}")
    check_choice(b_dec_init, "b_dec_init", ["geometric_median", "mean", "zeros"])
    batch_size, max_steps, eval_every, checkpoint_every, dead_after = (
        check_int(v, name, low=1) for name, v in (
            ("batch_size", batch_size), ("max_steps", max_steps), ("eval_every", eval_every),
            ("checkpoint_every", checkpoint_every), ("dead_after", dead_after)))
    warmup_steps = check_int(warmup_steps, "warmup_steps", low=0)
    sparsity_warmup_steps = check_int(sparsity_warmup_steps, "sparsity_warmup_steps", low=0)
    init_samples = check_int(init_samples, "init_samples", low=2)
    if lr is not None:
        check_positive(lr, "lr")
    if patience is not None:
        patience = check_int(patience, "patience", low=1)
    tol = check_real(tol, "tol", low=0)
    decay_fraction = check_real(decay_fraction, "decay_fraction", 0.0, 1.0)
    if callback is not None:
        check_callable(callback, "callback")
    ckpt = check_path(checkpoint, "checkpoint") if checkpoint is not None else None
    if ckpt is not None and ckpt.is_dir():
        raise ValueError(f"checkpoint: {str(ckpt)!r} is a folder; give a file path")
    device = check_device(device) or sae.device
    sae.to(device)
    seed = sae.seed if seed is None else check_seed(seed)
    data = Batches(acts, batch_size, sae.d_in, sae.dtype, device, seed)
    lr = lr if lr is not None else 3e-3 * min(1.0, math.sqrt(1024 / sae.d_sae))
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), fused=sae.device.type == "cpu" or None)
    has_sparsity = sae.has_sparsity_penalty
    state = {"step": 0, "best": math.inf, "bad": 0, "ema": None, "decay_start": None, "decay_len": 0,
             "history": [], "parts": {}, "n_parts": 0}
    since_fired = torch.zeros(sae.d_sae, dtype=torch.long, device=device)
    identity = json.loads(json.dumps({"class": type(sae).__qualname__, "hparams": sae.hparams()}))

    restored = None
    if resume and ckpt is not None and ckpt.exists():
        try:
            restored = _restore(ckpt, identity, sae, opt, data, device)
        except ckpt_io.CheckpointError as e:
            warnings.warn(f"checkpoint: {str(ckpt)!r} {e}; training restarts from scratch", stacklevel=2)
    if restored is not None:
        state.update(restored[0])
        since_fired = restored[1]
    else:
        _init_from_data(sae, data.sample(init_samples), b_dec_init, normalize)

    def save_ckpt():
        if ckpt is not None:
            opt_tensors, opt_meta = ckpt_io.flatten_optimizer(opt.state_dict())
            tensors = {**{f"sae.{k}": v for k, v in sae.state_dict().items()}, **opt_tensors,
                       "since_fired": since_fired}
            ckpt_io.write(ckpt, tensors, {"sae": identity, "optimizer": opt_meta, "state": state,
                                          "data": data.position()})

    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=state["step"], disable=not progress, desc=f"fit {type(sae).__name__}",
               leave=False)
    sae.train()
    batches = iter(data)
    parts = state["parts"]  # loss sums since the last evaluation (kept in checkpoints)
    try:
        while not _finished(state, max_steps):
            x = next(batches, None)
            if x is None:
                break
            step = state["step"]
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(step, warmup_steps, state)
            sp = min(1.0, (step + 1) / sparsity_warmup_steps) if has_sparsity and sparsity_warmup_steps else 1.0
            dead = since_fired >= dead_after
            out = sae.training_step(x * sae.norm_scale, dead, sp, False)
            loss = sum(out.losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _project_out_parallel_grad(sae.W_dec)
            opt.step()
            with torch.no_grad():
                _normalise_rows(sae.W_dec)
                since_fired += len(x)
                since_fired[out.fired] = 0
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"fit: the loss became {lv} at step {step}; lower lr")
            state["ema"] = lv if state["ema"] is None else 0.95 * state["ema"] + 0.05 * lv
            for k, v in out.losses.items():
                parts["loss_" + k] = parts.get("loss_" + k, 0.0) + float(v.detach())
            parts["l0_active"] = parts.get("l0_active", 0.0) + float(out.l0)
            state["n_parts"] += 1
            state["step"] = step + 1
            bar.update(1)
            if state["step"] % eval_every == 0:
                rec = _evaluate(state, parts, state["n_parts"], since_fired, dead_after, opt, patience, tol,
                                warm=state["step"] >= (sparsity_warmup_steps if has_sparsity else 0)
                                + warmup_steps, max_steps=max_steps, decay_fraction=decay_fraction)
                parts.clear()
                state["n_parts"] = 0
                bar.set_postfix(loss=f"{rec['loss']:.4g}", l0=f"{rec['l0']:.3g}", dead=f"{rec['dead']:.2f}")
                if callback is not None:
                    callback(state["step"], sae, rec)
            if ckpt is not None and state["step"] % checkpoint_every == 0:
                save_ckpt()
    finally:
        bar.close()
    save_ckpt()
    sae.eval()
    sae.history_ = pd.DataFrame(state["history"])
    sae.n_steps_ = state["step"]
    sae.converged_ = state["decay_start"] is not None and state.get("plateau", False)
    sae.dead_fraction_ = float((since_fired >= dead_after).float().mean())
    return sae


def _restore(ckpt: Path, identity: dict, sae: nn.Module, opt, data: Batches, device) -> tuple[dict, Tensor]:
    """Load the checkpoint into sae, opt and data; returns (state, since_fired). Everything is checked before
    anything is changed: CheckpointError for a damaged file, ValueError for another SAE's checkpoint."""
    tensors, saved = ckpt_io.read(ckpt, device)
    try:
        found, opt_meta, state, pos = saved["sae"], saved["optimizer"], saved["state"], saved["data"]
        opt_sd = ckpt_io.unflatten_optimizer(tensors, opt_meta)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ckpt_io.CheckpointError("has a malformed manifest") from None
    if found != identity:
        raise ValueError(f"checkpoint: {str(ckpt)!r} holds the training state of another SAE ({found}), not "
                         f"of this one ({identity}); pass another path or resume=False")
    if not isinstance(state, dict) or not set(_STATE_KEYS) <= set(state):
        raise ckpt_io.CheckpointError("has a malformed training state")
    ckpt_io.same_shapes({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")}, sae.state_dict(), "SAE")
    params = [p for g in opt.param_groups for p in g["params"]]
    for idx, st in opt_sd["state"].items():
        if not 0 <= idx < len(params) or any(isinstance(v, Tensor) and v.ndim and v.shape != params[idx].shape
                                             for v in st.values()):
            raise ckpt_io.CheckpointError(f"holds optimizer state that does not fit parameter {idx}")
    if len(opt_sd["param_groups"]) != len(opt.param_groups):
        raise ckpt_io.CheckpointError("holds optimizer state for other parameter groups")
    since_fired = tensors.get("since_fired")
    if since_fired is None or since_fired.shape != (sae.d_sae,):
        raise ckpt_io.CheckpointError("lacks a since_fired tensor of the SAE's width")
    here = data.position()
    if not isinstance(pos, dict) or (pos.get("source") == here["source"] and (
            set(pos) != set(here) or not all(isinstance(pos[k], int) for k in here if k != "source"))):
        raise ckpt_io.CheckpointError("has a malformed data position")
    data.restore(pos)  # raises ValueError when the data's form changed
    sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
    for idx, st in opt_sd["state"].items():
        for k, v in st.items():  # the moments in their parameter's memory layout (W_enc is a transpose),
            if isinstance(v, Tensor) and v.ndim:  # which fused Adam relies on and safetensors does not keep
                st[k] = torch.empty_like(params[idx], dtype=v.dtype).copy_(v)
    opt.load_state_dict(opt_sd)
    return state, since_fired


@torch.no_grad()
def _init_from_data(sae: nn.Module, x: Tensor, b_dec_init: str, normalize: bool) -> None:
    x = x.to(sae.device, torch.float64)
    per_feature = getattr(sae, "input_scale", None)  # a crosscoder scales each model's block on its own
    if per_feature is not None:
        scale = per_feature(x) if normalize else torch.ones(x.shape[1], dtype=torch.float64, device=x.device)
        sae.norm_scale.copy_(scale)
    else:
        scale = math.sqrt(sae.d_in) / float(x.norm(dim=1).mean().clamp_min(1e-12)) if normalize else 1.0
        sae.norm_scale.fill_(scale)
    xn = x * scale
    if b_dec_init == "geometric_median":
        sae.b_dec.copy_(geometric_median(xn).to(sae.dtype))
    elif b_dec_init == "mean":
        sae.b_dec.copy_(xn.mean(0).to(sae.dtype))
    else:
        sae.b_dec.zero_()
    calibrate = getattr(sae, "calibrate_encoder", None)  # a kind that fits its initial code scale to the data
    if calibrate is not None:
        calibrate(xn.to(sae.dtype))


def _finished(state: dict, max_steps: int) -> bool:
    if state["step"] >= max_steps:
        return True
    return state["decay_start"] is not None and state["step"] >= state["decay_start"] + state["decay_len"]


def _lr_factor(step: int, warmup: int, state: dict) -> float:
    f = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if state["decay_start"] is not None:
        f *= max(0.0, 1 - (step - state["decay_start"]) / max(1, state["decay_len"]))
    return f


def _evaluate(state, parts, n, since_fired, dead_after, opt, patience, tol, warm, max_steps,
              decay_fraction) -> dict:
    rec = {"step": state["step"], "loss": state["ema"], "lr": opt.param_groups[0]["lr"],
           "dead": float((since_fired >= dead_after).float().mean())}
    for k, v in parts.items():
        if k != "l0_active":
            rec[k] = v / n
    rec["l0"] = parts.get("l0_active", 0.0) / n
    state["history"].append(rec)
    if state["decay_start"] is None:
        if warm and patience is not None:
            if state["ema"] < state["best"] * (1 - tol):
                state["best"], state["bad"] = state["ema"], 0
            else:
                state["bad"] += 1
            if state["bad"] >= patience:
                state["plateau"] = True
        if state.get("plateau"):
            state["decay_start"] = state["step"]
            state["decay_len"] = min(max(1, int(decay_fraction * state["step"])), max_steps - state["step"])
        elif state["step"] >= int((1 - decay_fraction) * max_steps):
            # the cap started the decay: it runs to max_steps, so a capped run takes exactly max_steps steps
            # (a fifth of the steps so far ended it at 96% of the cap, short of what the caller asked for)
            state["decay_start"] = state["step"]
            state["decay_len"] = max(1, max_steps - state["step"])
    return rec
