"""``univ sae train``, ``univ sae match`` and ``univ sae view``: SAEs on your own language models from the
command line.

    univ sae train hf:EleutherAI/pythia-70m --layer 3 --kind topk --k 32 --expansion 8 --n-tokens 200000
    univ sae train tl:gpt2 --layer blocks.6.hook_resid_post --data text:notes/ --out saes/gpt2-l6
    univ sae match saes/gpt2-l6 saes/pythia-l3 --method correlation
    univ sae view saes/gpt2-l6 --with saes/pythia-l3 --data text:notes/    # then: univ view <the folder printed>

train: load the model by spec, cut the data (default: the embedded corpus) into contexts with the model's
tokenizer, capture the layer's output at every real token into the activation store (:mod:`univ.store`, cached
by content), fit the SAE from the store, measure it on held-out contexts (reconstruction, and the next-token
loss and KL with the SAE spliced in: :func:`univ.sae.spliced_lm_metrics`), and save a folder SAELens loads
(``cfg.json`` metadata: ``hook_name`` the layer, a TransformerLens hook name for ``tl:`` models;
``model_name`` the spec; ``context_size``; ``prepend_bos``) with ``metrics.json`` and ``metrics.csv`` beside,
all written atomically. match: load two saved SAEs, capture each one's model at its hook on the same contexts,
run :func:`univ.sae.match`, print the summary and write the table as a run folder. view: capture the SAE's
model (and those of the SAEs given with ``--with``) at its hook on the data and write a run folder whose
report.html links the feature dashboard (:mod:`univ.report.dashboard`): each latent's top token contexts, its
activation histogram, the logits its decoder direction promotes and suppresses, and its best-correlated latents
in the other SAEs.

The settings are frozen dataclasses (:class:`TrainConfig`, :class:`MatchConfig`); the CLI derives its flags
from them. They are checked before any work (this module imports no torch): a bad one ends the command with
one line naming the flag, exit code 2, and nothing written.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from .config import AnalysisConfig, SettingError, check_device, check_range


@dataclass(frozen=True)
class TrainConfig(AnalysisConfig):
    """Train an SAE on one layer of a language model and save it in SAELens's format (univ sae train)."""

    POSITIONAL: ClassVar[tuple[str, ...]] = ("model",)
    model: str
    """The model spec: hf:<hub id or folder> or tl:<hub id or folder> (a causal language model)."""
    layer: str
    """Where to train: an index into the model's layers (0 = the output of the first block) or a hook name
    (univ.hook_names(model); TransformerLens names for tl: models)."""
    data: str = "corpus"
    """Data spec: corpus (the embedded default text) or text:<file, folder or glob>."""
    context: int = 128
    """Tokens per context (BOS included)."""
    prepend_bos: bool = True
    """Put the tokenizer's BOS token first in every context."""
    n_tokens: int = 50_000
    """Training tokens (about: whole contexts); fewer when the data run out."""
    eval_contexts: int = 16
    """Held-out contexts (after the training ones) for the reconstruction and spliced-loss metrics."""
    kind: str = "topk"
    """SAE kind (univ.sae.SAE_KINDS: relu, topk, batchtopk, jumprelu, gated, ...)."""
    k: int | None = None
    """Active latents per token for kinds that have k (topk, batchtopk); default min(32, d_sae)."""
    expansion: float = 8.0
    """d_sae = round(expansion * d_in)."""
    steps: int = 2000
    """The most SAE training steps (training stops earlier once the loss stops improving)."""
    batch_size: int = 1024
    """Token rows per SAE training step."""
    capture_batch: int = 32
    """Contexts per forward pass when capturing and measuring."""
    seed: int = 0
    """Seed of the SAE's init and of the order the training rows are visited in."""
    device: str = "cpu"
    """Where the model and the SAE run (cpu, cuda, cuda:N, mps, auto)."""
    threads: int = 1
    """Torch threads (the CLI is the only place that sets them)."""
    out: str | None = None
    """The SAE folder to write (replaced atomically when it exists); default saes/<model>-<layer>-<kind>-<hash>."""

    def validate(self):
        _check_spec(self, "model")
        _check_data(self)
        for field, low in (("context", 2), ("n_tokens", 1), ("eval_contexts", 1), ("steps", 1), ("batch_size", 2),
                           ("capture_batch", 1), ("threads", 1), ("seed", 0)):
            check_range(self, field, low=low)
        check_range(self, "expansion", low=0, low_open=True)
        if self.k is not None:
            check_range(self, "k", low=1)
        if not self.layer:
            raise SettingError("layer", "give a layer index or a hook name")
        check_device(self)
        out = Path(self.out) if self.out is not None else None
        if out is not None and out.exists() and not (out / "cfg.json").is_file() and \
                (not out.is_dir() or any(out.iterdir())):  # only an SAE folder is replaced, never other files
            raise SettingError("out", f"{self.out!r} exists and is not an SAE folder; choose a new folder")


@dataclass(frozen=True)
class MatchConfig(AnalysisConfig):
    """Match the latents of two saved SAEs on the same data (univ sae match)."""

    POSITIONAL: ClassVar[tuple[str, ...]] = ("sae_a", "sae_b")
    sae_a: str
    """The first SAE's folder (univ.sae.save's or SAELens's; its cfg.json metadata names the model and hook)."""
    sae_b: str
    """The second SAE's folder."""
    data: str = "corpus"
    """Data spec both models read: corpus or text:<file, folder or glob>."""
    n_tokens: int = 20_000
    """Tokens of data the latents are compared on (about: whole contexts)."""
    method: str = "correlation"
    """Matching method (univ.sae.MATCH_METHODS: correlation, hungarian, svcca)."""
    threshold: float = 0.7
    """The similarity at which a latent counts as shared (correlation, hungarian)."""
    n_permutations: int | None = None
    """Baseline repetitions (default: the method's)."""
    capture_batch: int = 32
    """Contexts per forward pass."""
    seed: int = 0
    """Seed of the shuffled baselines."""
    device: str = "cpu"
    """Where the models run."""
    threads: int = 1
    """Torch threads."""
    out: str = "runs"
    """Parent folder of the run folder (sae-match-<hash of the settings>)."""

    def validate(self):
        for field in ("sae_a", "sae_b"):
            if not Path(getattr(self, field), "cfg.json").is_file():
                raise SettingError(field, f"{getattr(self, field)!r} is not an SAE folder (no cfg.json)")
        _check_data(self)
        for field, low in (("n_tokens", 2), ("capture_batch", 1), ("threads", 1), ("seed", 0)):
            check_range(self, field, low=low)
        check_range(self, "threshold", low=-1, high=1)
        if self.n_permutations is not None:
            check_range(self, "n_permutations", low=0)
        check_device(self)


@dataclass(frozen=True)
class ViewConfig(AnalysisConfig):
    """Feature dashboards of saved SAEs on their models and your data (univ sae view)."""

    POSITIONAL: ClassVar[tuple[str, ...]] = ("sae",)
    sae: str
    """The SAE's folder (univ.sae.save's or SAELens's; its cfg.json metadata names the model and hook)."""
    others: tuple[str, ...] = ()
    """More SAE folders (--others A,B): their latents appear beside the first SAE's, matched by correlation on the
    same tokens (their models must share the first one's tokenizer)."""
    model: str | None = None
    """The model spec, when the SAE's metadata has no model_name or names one you keep elsewhere."""
    data: str = "corpus"
    """Data spec: corpus or text:<file, folder or glob>."""
    n_tokens: int = 20_000
    """Tokens the latents are shown on (about: whole contexts)."""
    top_k: int = 8
    """Top-activating examples per latent."""
    capture_batch: int = 32
    """Contexts per forward pass."""
    device: str = "cpu"
    """Where the models run."""
    threads: int = 1
    """Torch threads."""
    out: str = "runs"
    """Parent folder of the run folder (sae-view-<hash of the settings>)."""

    def validate(self):
        for field, path in [("sae", self.sae)] + [("others", p) for p in self.others]:
            if not Path(path, "cfg.json").is_file():
                raise SettingError(field, f"{path!r} is not an SAE folder (no cfg.json)")
        if self.model is not None:
            _check_spec(self, "model")
        _check_data(self)
        for field, low in (("n_tokens", 2), ("top_k", 1), ("capture_batch", 1), ("threads", 1)):
            check_range(self, field, low=low)
        check_device(self)


def _check_data(cfg) -> None:
    if cfg.data != "corpus" and not (cfg.data.startswith("text:") and len(cfg.data) > 5):
        raise SettingError("data", f"expected corpus or text:<file, folder or glob>, got {cfg.data!r}")


def _check_spec(cfg, field: str) -> None:
    spec = getattr(cfg, field)
    if ":" not in spec or not spec.partition(":")[2]:
        raise SettingError(field, f"expected a model spec such as hf:gpt2 or tl:EleutherAI/pythia-70m, got {spec!r}")


def check_registries(cfg) -> None:
    """The settings that name registry entries (SAE kind and k, model source, matching method), checked
    against the registries, which load torch: still before any work."""
    from .registry import unknown_name_error

    if isinstance(cfg, TrainConfig):
        from .sae import SAE_KINDS
        from .sources import MODEL_SOURCES, models  # noqa: F401 (importing models registers every source)

        prefix = cfg.model.partition(":")[0]
        if prefix not in MODEL_SOURCES:
            raise SettingError("model", f"unknown source {prefix + ':'!r}; valid prefixes: "
                               f"{[p + ':' for p in MODEL_SOURCES]}")
        if cfg.kind not in SAE_KINDS:
            raise SettingError("kind", str(unknown_name_error("SAE kind", cfg.kind, list(SAE_KINDS))))
        if cfg.k is not None and "k" not in SAE_KINDS[cfg.kind].hparam_names():
            raise SettingError("k", f"the {cfg.kind!r} kind has no k (kinds with k: "
                               f"{[n for n, c in SAE_KINDS.items() if 'k' in c.hparam_names()]})")
    else:
        from .sae import MATCH_METHODS

        if cfg.method not in MATCH_METHODS:
            raise SettingError("method", str(unknown_name_error("matching method", cfg.method, list(MATCH_METHODS))))


def default_out(cfg: TrainConfig) -> Path:
    """saes/<model>-<layer>-<kind>-<hash of the settings>: reruns of the same settings land in one folder."""
    from .utils import stable_hash

    slug = "-".join(Path(cfg.model.partition(":")[2]).name.split()) or "model"
    return Path("saes") / f"{slug}-{cfg.layer.replace('/', '_')}-{cfg.kind}-{stable_hash(asdict(cfg))}"


def resolve_layer(model, layer: str) -> str:
    """The hook name ``layer`` means: an index into ``model.layers`` or one of ``univ.hook_names(model)``,
    whose output must be (batch, pos, d) features (channels-last) for per-token SAEs."""
    from .activations import hook_names, resolve

    if layer.lstrip("-").isdigit():
        i, n = int(layer), len(model.layers)
        if not -n <= i < n:
            raise SettingError("layer", f"index {i} is out of range: {model.spec} has {n} layers (0..{n - 1}): "
                               f"{model.layers}")
        layer = model.layers[i]
    elif layer not in hook_names(model):
        from .registry import unknown_name_error

        raise SettingError("layer", str(unknown_name_error("hook name", layer, hook_names(model))))
    if not resolve(model, layer).channels_last:
        raise SettingError("layer", f"{layer!r} does not emit (batch, pos, features); choose a residual-stream "
                           f"layer such as {model.layers[0]!r}")
    return layer


def load_lm(spec: str, device: str, what: str):
    """A ``univ.sources`` model with a tokenizer (a language model), on ``device``."""
    from .sources import load_model
    from .utils import resolve_device

    try:
        model = load_model(spec, device=resolve_device(device))
    except ValueError as e:
        raise SettingError(what, str(e).removeprefix("spec: ")) from None
    if model.tokenizer is None:
        raise SettingError(what, f"{spec} has no tokenizer: univ sae works on language models")
    return model


def contexts(data: str, tokenizer, context: int, prepend_bos: bool, n: int):
    """At most ``n`` contexts of the data spec ``data`` (a TokenDataset)."""
    from .sources import load_data

    try:
        return load_data(data, tokenizer=tokenizer, context=context, prepend_bos=prepend_bos, max_contexts=n)
    except (TypeError, ValueError) as e:
        raise SettingError("data", str(e)) from None


def _is_causal_lm(model) -> bool:
    if model.spec.startswith("tl:"):
        return True
    from .sources.hf import choose_task

    config = getattr(model.net, "config", None)
    return config is not None and choose_task(config) == "causal-lm"


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Run ``univ sae train`` (see the module docstring); returns the SAE folder written."""
    import pandas as pd
    import torch

    from . import sae as S
    from .activations import capture
    from .integrity import write_entry
    from .report import check_parent_writable, library_versions
    from .store import capture_to_store

    check_registries(cfg)
    folder = check_parent_writable(Path(cfg.out) if cfg.out is not None else default_out(cfg))
    t0 = time.perf_counter()
    model = load_lm(cfg.model, cfg.device, "model")
    layer = resolve_layer(model, cfg.layer)
    n_train = math.ceil(cfg.n_tokens / cfg.context)
    data = contexts(cfg.data, model.tokenizer, cfg.context, cfg.prepend_bos, n_train + cfg.eval_contexts)
    if len(data) <= cfg.eval_contexts:
        raise SettingError("eval_contexts", f"{cfg.data!r} gives {len(data)} contexts of {cfg.context} tokens; "
                           f"more than --eval-contexts {cfg.eval_contexts} are needed (some to train on)")
    train_in = {k: v[:-cfg.eval_contexts] for k, v in data.inputs.items()}
    eval_in = {k: v[-cfg.eval_contexts:] for k, v in data.inputs.items()}

    store = capture_to_store(model, train_in, [layer], reduce="tokens", batch_size=cfg.capture_batch,
                             device=cfg.device, progress=progress)
    d_in = store.dims[layer]
    d_sae = max(1, round(cfg.expansion * d_in))
    kind = S.SAE_KINDS[cfg.kind]
    options = {"k": cfg.k or min(32, d_sae)} if "k" in kind.hparam_names() else {}
    try:
        sae = kind(d_in, d_sae, seed=cfg.seed, **options)
    except (TypeError, ValueError) as e:
        raise SettingError("k" if options else "kind", str(e)) from None
    sae.fit(store.batch_source(layer, cfg.batch_size, shuffle=True, seed=cfg.seed), batch_size=cfg.batch_size,
            max_steps=cfg.steps, device=cfg.device, progress=progress, init_samples=min(10_000, len(store)))

    acts = capture(model, eval_in, layer, batch_size=cfg.capture_batch, reduce="tokens")[layer]
    recon = S.evaluate(sae, acts)
    metrics = {f"eval_{k}": v for k, v in recon._asdict().items()}
    if _is_causal_lm(model):  # next-token loss means nothing for a masked LM
        metrics.update(S.spliced_lm_metrics(model, eval_in, layer, sae, batch_size=cfg.capture_batch)._asdict())
    record = {"model": cfg.model, "hook_name": layer, "data": data.describe(), "settings": asdict(cfg),
              "sae": {"kind": sae.kind, "d_in": d_in, "d_sae": d_sae, **options},
              "train": {"tokens": len(store), "contexts": len(train_in["input_ids"]), "steps": sae.n_steps_,
                        "converged": sae.converged_, "dead_fraction": sae.dead_fraction_, "store": str(store.path)},
              "eval": {"contexts": cfg.eval_contexts, "tokens": len(acts), **metrics},
              "versions": library_versions(), "threads": torch.get_num_threads(),
              "elapsed_s": time.perf_counter() - t0}

    def fill(tmp: Path) -> None:
        S.save(sae.cpu(), tmp, hook_name=layer, model_name=cfg.model, context_size=cfg.context,
               prepend_bos=cfg.prepend_bos, metadata={"dataset_path": cfg.data})
        pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())}).to_csv(tmp / "metrics.csv",
                                                                                       index=False)
        (tmp / "metrics.json").write_text(json.dumps(record, indent=1, default=str))

    try:
        write_entry(folder, fill, meta={"command": "univ sae train"})
    except OSError as e:
        raise SettingError("out", f"cannot write {str(folder)!r} ({e.strerror or e})") from None
    print("\n".join(f"{k:24s} {v:.6g}" if isinstance(v, float) else f"{k:24s} {v}" for k, v in
                    {"hook_name": layer, "d_in x d_sae": f"{d_in} x {d_sae}", "train tokens": len(store),
                     "steps": sae.n_steps_, **metrics}.items()))
    print(f"\nSAE written to {folder}")
    return folder


def match(cfg: MatchConfig, progress: bool = True) -> Path:
    """Run ``univ sae match`` (see the module docstring); returns the run folder written."""
    import pandas as pd

    from . import sae as S
    from .activations import capture
    from .report import Report, check_parent_writable, format_table, run_dir, write
    from .sources import check_same_tokenizer

    check_registries(cfg)
    folder = check_parent_writable(run_dir(cfg.out, "sae-match", asdict(cfg)))
    t0 = time.perf_counter()
    saes, models = {}, {}
    for field in ("sae_a", "sae_b"):
        try:
            saes[field] = S.load(getattr(cfg, field), device=cfg.device)
        except ValueError as e:
            raise SettingError(field, str(e)) from None
        md = saes[field].metadata
        for key in ("model_name", "hook_name"):
            if not md.get(key):
                raise SettingError(field, f"its cfg.json metadata has no {key}; save it with univ.sae.save(..., "
                                   f"{key}=...) or train it with univ sae train")
        if md["model_name"] not in models:
            models[md["model_name"]] = load_lm(md["model_name"], cfg.device, field)
    a, b = saes["sae_a"], saes["sae_b"]
    model_a, model_b = models[a.metadata["model_name"]], models[b.metadata["model_name"]]
    if model_a is not model_b:
        check_same_tokenizer({"sae_a": model_a.tokenizer, "sae_b": model_b.tokenizer})
    context = a.metadata.get("context_size") or 128
    prepend_bos = a.metadata.get("prepend_bos")
    data = contexts(cfg.data, model_a.tokenizer, context, True if prepend_bos is None else prepend_bos,
                    math.ceil(cfg.n_tokens / context))
    acts = {}
    if cfg.method != "hungarian":  # hungarian compares the SAEs' directions; it needs no activations
        for field, sae, model in (("sae_a", a, model_a), ("sae_b", b, model_b)):
            try:
                hook = resolve_layer(model, sae.metadata["hook_name"])
            except SettingError as e:
                raise SettingError(field, f"its hook_name: {e.message}") from None
            acts[field] = capture(model, data.inputs, hook, batch_size=cfg.capture_batch, reduce="tokens",
                                  progress=progress)[hook]
    result = S.match(a, acts.get("sae_a"), b, acts.get("sae_b"), cfg.method, threshold=cfg.threshold,
                     n_permutations=cfg.n_permutations, seed=cfg.seed)
    summary = {"sae_a": cfg.sae_a, "model_a": a.metadata["model_name"], "hook_a": a.metadata["hook_name"],
               "sae_b": cfg.sae_b, "model_b": b.metadata["model_name"], "hook_b": b.metadata["hook_name"],
               "method": cfg.method, "tokens": len(acts["sae_a"]) if acts else 0, **result.summary}
    report = Report("sae-match", summary="summary")
    report.add_table("summary", pd.DataFrame({"name": list(summary), "value": [str(v) for v in summary.values()]}),
                     f"univ sae match, method {cfg.method}: the headline numbers with their shuffled baselines.")
    report.add_table("match", result.table, f"One row per {'metric' if cfg.method == 'svcca' else 'latent of A'}.",
                     inline=False)
    folder = write(report, folder, asdict(cfg), time.perf_counter() - t0, extra={"threads": cfg.threads})
    print(format_table(report.tables["summary"]))
    print(f"\n{len(result.table)} rows in {folder / 'match.csv'}")
    return folder


def unembedding(model):
    """(d_model, vocab): the model's unembedding (its output embedding; a final norm before it is left out), or
    None when it has none that univ can find."""
    net = model.net
    get = getattr(net, "get_output_embeddings", None)
    out = get() if callable(get) else None
    if out is not None and getattr(out, "weight", None) is not None:
        return out.weight.detach().T
    w = getattr(net, "W_U", None)
    return None if w is None else w.detach()


def view(cfg: ViewConfig, progress: bool = True) -> Path:
    """Run ``univ sae view`` (see the module docstring); returns the run folder written."""
    import pandas as pd

    from . import sae as S
    from .activations import capture
    from .report import Report, check_parent_writable, run_dir, write
    from .report import dashboard as dash
    from .sources import check_same_tokenizer

    folder = check_parent_writable(run_dir(cfg.out, "sae-view", asdict(cfg)))
    t0 = time.perf_counter()
    views, rows, models, data = {}, [], {}, None
    for i, path in enumerate((cfg.sae, *cfg.others)):
        field = "sae" if i == 0 else "others"
        try:
            sae = S.load(path, device=cfg.device)
        except ValueError as e:
            raise SettingError(field, str(e)) from None
        spec = (cfg.model if i == 0 else None) or sae.metadata.get("model_name")
        if not spec or not sae.metadata.get("hook_name"):
            raise SettingError(field, f"{path!r}: its cfg.json metadata needs model_name (or give --model) and "
                               "hook_name; save it with univ.sae.save(..., model_name=..., hook_name=...)")
        if spec not in models:
            models[spec] = load_lm(spec, cfg.device, field if i or cfg.model is None else "model")
        model = models[spec]
        if data is None:
            context = sae.metadata.get("context_size") or 128
            bos = sae.metadata.get("prepend_bos")
            data = contexts(cfg.data, model.tokenizer, context, True if bos is None else bos,
                            math.ceil(cfg.n_tokens / context))
            first = model
        elif model is not first:
            check_same_tokenizer({"sae": first.tokenizer, "others": model.tokenizer})
        try:
            hook = resolve_layer(model, sae.metadata["hook_name"])
        except SettingError as e:
            raise SettingError(field, f"{path!r}: its hook_name: {e.message}") from None
        acts = capture(model, data.inputs, hook, batch_size=cfg.capture_batch, reduce="tokens",
                       progress=progress)[hook]
        if acts.shape[1] != sae.d_in:
            raise SettingError(field, f"{path!r} reads {sae.d_in} features but {spec} at {hook} has {acts.shape[1]}")
        ids, mask = data.input_ids, data.attention_mask.bool()
        tokens = [[model.tokenizer.decode([int(t)]) for t in row[m]] for row, m in zip(ids, mask)]
        u = unembedding(model)
        name = Path(path).name if Path(path).name not in views else f"{Path(path).name}-{i}"
        views[name] = dash.features(sae.cpu(), acts, unembed=None if u is None else u.cpu(),
                                    vocab=lambda t, tok=model.tokenizer: tok.decode([t]), tokens=tokens)
        codes = views[name].codes
        rows.append({"sae": name, "folder": path, "model": spec, "hook_name": hook, "d_sae": sae.d_sae,
                     "tokens": len(codes), "dead_fraction": float((codes.max(0) <= 0).mean()),
                     "mean_l0": float((codes > 0).sum(1).mean()), "logits": u is not None})
    board = dash.build(views, top_k=cfg.top_k)
    report = Report("sae-view", summary="saes")
    report.add_table("saes", pd.DataFrame(rows), f"The SAEs shown, on {len(data)} contexts of {data.name}.")
    report.add_dashboard("features", board, "Every latent of every SAE: search the index, open a latent's card "
                         "for its top token contexts (highlighted by activation), its activation histogram, the "
                         "logits its decoder direction promotes and suppresses, and its best-correlated latents in "
                         "the other SAEs.")
    folder = write(report, folder, asdict(cfg), time.perf_counter() - t0, extra={"threads": cfg.threads})
    print(f"dashboard: {folder / 'features.html'}\nopen it with: univ view {folder}")
    return folder


COMMANDS = {"train": (TrainConfig, train), "match": (MatchConfig, match), "view": (ViewConfig, view)}
"""``univ sae <name>`` -> (its settings, the function that runs it)."""
