"""Sparse autoencoders: train on any captured activations, evaluate, save/load, and match features across
models.

    sae = univ.sae.TopKSAE(d_in, d_sae, k=32).fit(acts)   # also ReluSAE, BatchTopKSAE, JumpReluSAE, GatedSAE
    z = sae.encode(acts); x_hat = sae.decode(z); out = sae(acts)   # out: SAEOutput(x_hat, codes, loss, losses)
    univ.sae.evaluate(sae, acts)                  # L0, MSE, FVU, explained variance, dead/dense fractions
    univ.sae.save(sae, folder, hook_name=..., model_name=...)   # a folder SAELens's SAE.load_from_disk reads
    univ.sae.load(folder)                          # univ's folders (bit-identical) and SAELens's
    univ.sae.match(sae_a, acts_a, sae_b, acts_b, method="correlation")   # -> MatchResult(table, summary)
    univ.sae.spliced_accuracy(model, x, y, layer, sae)   # -> SpliceResult(clean, spliced, zero_ablated, recovered)
    univ.sae.spliced_lm_metrics(lm, data.inputs, layer, sae)   # -> LMSpliceResult(CE losses, loss_recovered, KL)

Across N models at once (on the same inputs): ``univ.sae.Crosscoder(d_ins, d_sae, kind="batchtopk")``,
``univ.sae.UniversalSAE(d_ins, d_sae, k)``, ``univ.sae.latent_tags(cc, xs)`` (which subset of models each
latent lives in, with Latent Scaling, seed stability and bootstrap intervals); save/load as above.

A new kind is one SAE subclass and one registry line (``@univ.sae.SAE_KINDS.register("name")``); a new
matching method is one function and one line (``@univ.sae.MATCH_METHODS.register("name")``).
"""

from . import tags
from .crosscoder import CROSSCODER_KINDS, BatchTopKCrosscoder, Crosscoder, L1Crosscoder, TopKCrosscoder
from .io import load, save
from .kinds import BatchTopKSAE, GatedSAE, JumpReluSAE, ReluSAE, TopKSAE
from .match import MATCH_METHODS, MatchResult, match
from .metrics import (
    LMSpliceResult,
    SAEMetrics,
    SpliceResult,
    dead_fraction,
    dense_fraction,
    dictionary_recovery,
    evaluate,
    explained_variance,
    fvu,
    l0,
    mse,
    spliced_accuracy,
    spliced_lm_metrics,
)
from .model import SAE, SAE_KINDS, SAEOutput, StepOutput
from .tags import LatentTags, latent_tags, seed_stability, shuffle_pairing
from .train import fit, geometric_median
from .universal import UniversalSAE

__all__ = [
    "SAE", "SAE_KINDS", "SAEOutput", "StepOutput", "ReluSAE", "TopKSAE", "BatchTopKSAE", "JumpReluSAE", "GatedSAE",
    "fit", "geometric_median", "save", "load", "match", "MatchResult", "MATCH_METHODS", "evaluate", "SAEMetrics",
    "l0", "mse", "fvu", "explained_variance", "dead_fraction", "dense_fraction", "dictionary_recovery",
    "spliced_accuracy", "SpliceResult", "spliced_lm_metrics", "LMSpliceResult",
    "Crosscoder", "CROSSCODER_KINDS", "BatchTopKCrosscoder", "TopKCrosscoder", "L1Crosscoder", "UniversalSAE",
    "latent_tags", "LatentTags", "seed_stability", "shuffle_pairing", "tags",
]
