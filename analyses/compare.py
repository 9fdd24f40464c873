"""Every layer of every model against every layer of the others, on your own models (``univ compare``).

``univ compare hf:gpt2 hf:EleutherAI/pythia-70m --data corpus`` (or ``univ run compare --models ...``, or
``univ.compare_models([...])``): each model loads from its spec (:func:`univ.sources.load_model`), the data
from a data spec (the embedded corpus by default), every layer is captured (in memory, or through the
on-disk activation store when the activations would not fit ``max_memory_mb``), and every layer pair of
every model pair is compared with the similarity suite. Baselines: each model's untrained twin (same
architecture, fresh seeded init) against the other's twin and against the model itself, and the
permutation baseline and bootstrap interval of :func:`univ.similarity.compare` on the model pairs.
Stages: ``analyses/_compare_stages.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from univ.config import AnalysisConfig, SettingError, check_choices, check_device, check_range

STREAMABLE = ("linear_cka", "linear_cka_debiased", "cca", "cca_r2", "svcca", "procrustes")
"""Metrics the on-disk path computes (univ.similarity.STREAMABLE; repeated so that validate needs no torch)."""


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of ``univ compare`` (every field is a command-line flag: --field value)."""

    QUICK: ClassVar[dict] = {"n_tokens": 512, "context": 32, "n_permutations": 3, "n_bootstrap": 3,
                             "n_inputs": 200}
    models: tuple[str, ...] = ()
    """Model specs (hf:, tl:, py:, zoo:, torchvision:; see univ.sources.load_model): two or more, or one,
    compared with itself. A spec given twice is loaded once and compared with itself."""
    data: str = "corpus"
    """Data spec (univ.sources.load_data): corpus (the embedded default text), text:<file|folder|glob>,
    images:<folder>, npy:<file>, safetensors:<file>, digits, mnist1d."""
    layers: tuple[str, ...] = ()
    """Layers compared, for every model: hook names, or integer positions in each model's default layers
    (0 the first block, -1 the last). Empty: each model's default layers (the residual stream after each
    block)."""
    metrics: tuple[str, ...] = ("linear_cka", "linear_cka_debiased", "svcca", "procrustes")
    """Similarity metrics (names of univ.similarity.METRICS; the on-disk path takes the streamable ones:
    linear_cka, linear_cka_debiased, cca, cca_r2, svcca, procrustes)."""
    n_tokens: int = 2048
    """Text: tokens of the data used (the packed stream's text tokens; BOS and padding not counted)."""
    context: int = 64
    """Text: tokens per context (sequence), BOS included."""
    n_inputs: int = 1000
    """Images and arrays: samples used (the test split first, then the training split)."""
    reduce: Literal["tokens", "mean", "last"] = "tokens"
    """What a row is. tokens: one row per real text token (the BOS left out), so layers are compared token by
    token; mean: one row per context, its text tokens averaged (sequence-level representations); last: one
    row per context, its last real token (what a causal LM predicts from). Images: tokens are spatial
    positions or patches, mean averages them, last takes the last."""
    n_permutations: int = 10
    """Row-shuffled permutations per similarity value of a model pair (the permutation baseline and p-value;
    0: none). Each costs one metric evaluation per layer pair."""
    n_bootstrap: int = 10
    """Bootstrap resamples per similarity value of a model pair (the 95% interval; 0: none)."""
    untrained: bool = True
    """Compare each model's untrained twin (same architecture, fresh init seeded by seed + its position) with
    the other models' twins and with the model itself: the random-init baseline."""
    allow_different_tokenizers: bool = False
    """Allow text models whose tokenizers differ: rows are then text segments that every tokenizer fits in one
    context, each model's activations averaged over the segment's tokens (univ.sources.per_sequence_data)."""
    max_memory_mb: int = 2048
    """Activations held in memory (rows x summed widths of every model and twin x 4 bytes) above which
    they go through the on-disk activation store and are compared in one streamed pass (no permutation
    baseline or bootstrap interval there)."""
    batch_size: int = 16
    """Inputs per forward pass."""
    device: str = "cpu"
    """Where the models run and the metrics compute: "cpu", "cuda", "cuda:N", "mps" or "auto"."""
    seed: int = 0
    """Seed of the untrained twins (model i's twin: seed + i), the permutations and the bootstrap."""

    def validate(self):
        if not self.models:
            raise SettingError("models", "give at least one model spec, e.g. univ compare hf:gpt2 "
                               "hf:EleutherAI/pythia-70m (or --models hf:gpt2,hf:EleutherAI/pythia-70m)")
        for i, spec in enumerate(self.models):
            prefix, sep, rest = spec.partition(":")
            if not (sep and prefix and rest.strip()):
                raise SettingError("models", f"{spec!r} (model {i + 1}) is not a spec PREFIX:NAME such as hf:gpt2 "
                                   "or hf:/path/to/folder")
        if not self.data:
            raise SettingError("data", "give a data spec such as corpus or text:notes/*.txt")
        for i, layer in enumerate(self.layers):
            if not layer.strip() or layer != layer.strip():
                raise SettingError("layers", f"entry {i + 1} {layer!r} is not a hook name or a layer position")
        if len(set(self.layers)) < len(self.layers):
            raise SettingError("layers", f"names a layer twice: {list(self.layers)}")
        if not self.metrics:
            raise SettingError("metrics", "give at least one metric name")
        check_range(self, "n_tokens", low=4)
        check_range(self, "context", low=2)
        check_range(self, "n_inputs", low=4)
        for name in ("n_permutations", "n_bootstrap"):
            check_range(self, name, low=0)
        for name in ("max_memory_mb", "batch_size"):
            check_range(self, name, low=1)
        check_range(self, "seed", low=0)
        check_device(self)
        # these import torch (the source registries, the metric registry): checked last, so the rest comes at once
        from . import _compare_stages as S

        S.check_specs(self)
        import univ.similarity

        check_choices(self, "metrics", univ.similarity.METRICS)


def run(cfg: Config):
    from . import _compare_stages as S

    loaded = S.load(cfg)
    captured = S.capture_all(cfg, loaded)
    sim = S.similarity(cfg, loaded, captured)
    return S.build_report(cfg, loaded, sim, captured)
