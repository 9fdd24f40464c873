"""On-disk cache of trained models and SAEs, keyed by a hash of everything that determines them.

``cache_dir()/models/<name>-<hash>/`` holds model.safetensors + config.json + key.json (open_lth's layout:
the folder name is the hash of the hyperparameters, the JSON holds them), so a rerun with the same config
loads instead of training, and every cached model is traceable to its config. Every entry goes through
:mod:`univ.integrity`: written atomically with a manifest, verified on read, and recomputed (with a warning
naming it) when missing, partial or corrupt. The metrics returned come from the same verified entry as the
weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ._checks import unknown_name_error
from .data import Dataset
from .integrity import read_entry, write_entry
from .models import ZooModel, build_model
from .train import TrainConfig, load_metrics, load_model, save_model, train
from .utils import cache_dir, stable_hash, tensor_hash, to_jsonable

if TYPE_CHECKING:
    from .adversarial.attacks import Attack


def model_key(name: str, model_cfg: dict, seed: int, data: Dataset, train_cfg: TrainConfig | None,
              extra: dict | None = None) -> dict:
    """Everything that determines a trained model: architecture, init seed, data, training, extras."""
    return {
        "model": name, "config": to_jsonable(model_cfg), "init_seed": seed,
        "data": {**data.describe(), "hash": tensor_hash(data.x_train, data.y_train)},
        "train": to_jsonable(train_cfg) if train_cfg is not None else None, "extra": extra or {},
    }


class CachedModel(NamedTuple):
    """What :func:`cached_model` returns (unpacks as ``model, metrics = cached_model(...)``)."""

    model: ZooModel
    metrics: dict
    """train_acc, test_acc, final_loss, steps, seconds of the training that made these weights."""


def cached_model(
    name: str,
    data: Dataset,
    seed: int = 0,
    train_cfg: TrainConfig | None = TrainConfig(),
    model_cfg: dict | None = None,
    attack: Attack | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    device=None,
) -> CachedModel:
    """Build (seeded) and train a zoo model, or load it if this exact configuration was trained before.

    ``train_cfg=None`` gives the untrained, randomly initialised model (the baseline). ``attack`` trains
    adversarially: an :class:`univ.adversarial.Attack` (``make_attack(name, **kw)``), whose ``spec``
    goes into the cache key. Set UNIV_NO_CACHE=1 to always retrain. Returns a :class:`CachedModel`.
    """
    attack_spec = None if attack is None else getattr(attack, "spec", None)
    if attack is not None and attack_spec is None:
        raise ValueError(f"attack: expected an Attack from univ.adversarial.make_attack (its spec keys the "
                         f"cache), got {type(attack).__name__}")
    model_cfg = dict(model_cfg or {})
    model_cfg.setdefault("input_shape", list(data.input_shape))
    model_cfg.setdefault("n_classes", data.n_classes)
    key = model_key(name, model_cfg, seed, data, train_cfg, {"attack": attack_spec} if attack_spec else None)
    folder = Path(root or cache_dir() / "models") / f"{name}-{stable_hash(key)}"
    if os.environ.get("UNIV_NO_CACHE") != "1":
        hit = read_entry(folder, lambda f: CachedModel(load_model(f, device), load_metrics(f)), "cached model")
        if hit is not None:
            return hit
    model = build_model(name, seed=seed, **model_cfg)
    if device is not None:
        model.to(device)
    if train_cfg is None:
        from .train import evaluate

        metrics = {"train_acc": evaluate(model, data.x_train, data.y_train),
                   "test_acc": evaluate(model, data.x_test, data.y_test), "steps": 0}
    else:
        model, metrics = train(model, data, train_cfg, attack=attack, progress=progress, device=device)
    metrics = {k: v for k, v in metrics.items() if k != "history"}

    def fill(f: Path) -> None:
        save_model(model, f, metrics)
        (f / "key.json").write_text(json.dumps(key, indent=2))

    write_entry(folder, fill, meta={"kind": "model", "name": name})
    return CachedModel(model, metrics)


class ZooEntry(NamedTuple):
    """One model of a zoo: ``id`` like "cnn-s1" (trained) or "cnn-s1-init" (its untrained copy)."""

    id: str
    arch: str
    seed: int
    trained: bool
    model: ZooModel
    metrics: dict


def zoo(
    archs: Sequence[str],
    seeds: Sequence[int],
    data: Dataset,
    train_cfg: TrainConfig,
    model_cfgs: dict[str, dict] | None = None,
    random_init: bool = True,
    progress: bool = True,
    device=None,
) -> list[ZooEntry]:
    """Train (or load from the cache) every architecture x seed; with ``random_init`` also each one's
    untrained initialisation (same seed, no training), the baseline that trained similarity must beat."""
    from .models import MODELS

    for a in archs:
        if a not in MODELS:
            raise unknown_name_error("architecture", a, MODELS)
    from .jobs import Job, Resources, run_jobs

    members = [(a, s, t) for a in archs for s in seeds for t in ((True, False) if random_init else (True,))]
    dev = None if device is None else str(device)
    jobs = []
    for arch, seed, trained in members:
        cfg = dict((model_cfgs or {}).get(arch) or {})
        kw = {"arch": arch, "seed": seed, "data": data, "train_cfg": train_cfg if trained else None,
              "model_cfg": cfg, "device": dev}
        full_cfg = {"input_shape": list(data.input_shape), "n_classes": data.n_classes, **cfg}
        jobs.append(Job("univ.cache:train_zoo_member", kw, name=f"{arch}-s{seed}" + ("" if trained else "-init"),
                        key=model_key(arch, full_cfg, seed, data, kw["train_cfg"]),
                        cost=1.0 if trained else 0.01,  # an untrained twin is only initialised
                        resources=Resources(gpus=1 if dev and dev.startswith("cuda") else 0)))
    out = []
    for (arch, seed, trained), job, res in zip(members, jobs, run_jobs(jobs, desc="zoo", progress=progress)):
        model = build_model(res["spec"]["name"], **res["spec"]["config"])
        model.load_state_dict(res["state"], strict=True)
        model.eval()
        if device is not None:
            model.to(device)
        out.append(ZooEntry(job.name, arch, seed, trained, model, res["metrics"]))
    return out


def train_zoo_member(arch: str, seed: int, data: Dataset, train_cfg: TrainConfig | None, model_cfg: dict,
                     device: str | None) -> dict:
    """One job of :func:`zoo`: :func:`cached_model` (trained, or loaded from the cache), returned as its
    spec, weights (on the CPU) and metrics, so that the driver rebuilds the very same model."""
    from .models import model_spec

    model, metrics = cached_model(arch, data, seed=seed, train_cfg=train_cfg, model_cfg=model_cfg, progress=False,
                                  device=device)
    return {"spec": model_spec(model), "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "metrics": metrics}


def cached_sae(kind: str, acts, key: dict | None = None, root: str | Path | None = None, **kwargs):
    """Fit an SAE of kind ``kind`` (any name in ``univ.sae.SAE_KINDS``) on ``acts`` (n, d_in), or load it if
    the same SAE config was fitted on the same activations before. ``kwargs`` go to the constructor (d_sae,
    k, seed, ...) and, prefixed ``fit_``, to ``fit`` (e.g. fit_max_steps=2000). ``key``: extra JSON
    describing where acts came from. An unknown kind raises ValueError listing the registered ones."""
    import torch

    from . import sae as sae_mod

    cls = sae_mod.SAE_KINDS[kind]
    ctor = {k: v for k, v in kwargs.items() if not k.startswith("fit_")}
    fit_kw = {k[4:]: v for k, v in kwargs.items() if k.startswith("fit_")}
    acts = torch.as_tensor(acts)
    full_key = {"kind": kind, "d_in": int(acts.shape[1]), "ctor": ctor, "fit": fit_kw,
                "acts": tensor_hash(acts), "extra": key or {}}
    folder = Path(root or cache_dir() / "saes") / f"{kind}-{stable_hash(full_key)}"
    if os.environ.get("UNIV_NO_CACHE") != "1":
        hit = read_entry(folder, lambda f: sae_mod.load(f, kind=kind), "cached SAE")
        if hit is not None:
            return hit
    sae = cls(int(acts.shape[1]), **ctor).fit(acts, **fit_kw)

    def fill(f: Path) -> None:
        sae_mod.save(sae, f)
        (f / "key.json").write_text(json.dumps(to_jsonable(full_key), indent=2))

    write_entry(folder, fill, meta={"kind": "sae", "sae_kind": kind})
    return sae
