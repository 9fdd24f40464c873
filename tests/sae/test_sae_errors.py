"""Bad input to every public function of univ.sae raises exactly ValueError or TypeError naming the argument
(never a torch, safetensors, json or numpy error); bool/int/float64 input and NumPy integers work."""

import json
import re
import types

import numpy as np
import pytest
import torch
from named_errors import BAD_MATRICES as COMMON_BAD_MATRICES
from named_errors import assert_named_error, with_inf
from named_errors import with_nan as _nan
from torch import nn

from univ import sae as S


def _inf(a):
    return with_inf(a, sign=-1.0)

D_IN, D_SAE = 6, 12
rng = np.random.default_rng(0)
X = rng.standard_normal((40, D_IN)).astype(np.float32)
SAE = S.TopKSAE(D_IN, D_SAE, k=3)
Z = SAE.encode(X).detach().numpy()
M = rng.standard_normal((D_IN, 5))  # a dictionary: atoms as columns
FIT = dict(max_steps=2, eval_every=1, batch_size=8, init_samples=16, progress=False)
torch.manual_seed(0)
MODEL = nn.Sequential(nn.Linear(4, D_IN), nn.ReLU(), nn.Linear(D_IN, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
XM, YM = torch.randn(20, 4), torch.randint(0, 3, (20,))
ROOT = {}


@pytest.fixture(autouse=True, scope="module")
def _root(tmp_path_factory):
    ROOT["path"] = tmp_path_factory.mktemp("sae_errors")


def _folder(name, edit=None):
    """SAE saved to a fresh folder, then ``edit(folder)`` applied."""
    folder = ROOT["path"] / name
    S.save(SAE, folder)
    if edit is not None:
        edit(folder)
    return folder


def _write(file, data):
    return lambda folder: (folder / file).write_bytes(data if isinstance(data, bytes) else data.encode())


def _truncate(file):
    return lambda folder: (folder / file).write_bytes((folder / file).read_bytes()[:100])


def _cfg(change):
    def edit(folder):
        cfg = json.loads((folder / "cfg.json").read_text())
        change(cfg)
        (folder / "cfg.json").write_text(json.dumps(cfg))
    return edit


def _set(d, **kw):
    d.update(kw)




ARRAY = r"expected (a numpy array or torch tensor|an array, an iterable of batches)"
BAD_MATRICES = COMMON_BAD_MATRICES + [  # and this package's own
    ("str", lambda A: "abc", ValueError, ARRAY),
    ("dict", lambda A: {"a": A}, ValueError, ARRAY),
    ("none", lambda A: None, ValueError, ARRAY),
]
MATRIX_ARGS = {  # name -> (call with the bad matrix, argument name, good matrix, message for a wrong width)
    "encode": (SAE.encode, "x", X, "expected 6 features"),
    "forward": (SAE, "x", X, "expected 6 features"),
    "decode": (SAE.decode, "codes", Z, "expected 12 latents"),
    "fit": (lambda A: S.fit(S.TopKSAE(D_IN, D_SAE, k=3), A, **FIT), "acts", X, "expected 6 features"),
    "TopKSAE.fit": (lambda A: S.TopKSAE(D_IN, D_SAE, k=3).fit(A, **FIT), "acts", X, "expected 6 features"),
    "geometric_median": (S.geometric_median, "x", X, None),
    "evaluate": (lambda A: S.evaluate(SAE, A), "acts", X, "expected 6 features"),
    "l0": (S.l0, "codes", Z, None),
    "dead_fraction": (S.dead_fraction, "codes", Z, None),
    "dense_fraction": (S.dense_fraction, "codes", Z, None),
    "mse": (lambda A: S.mse(A, X), "x", X, None),
    "mse_hat": (lambda A: S.mse(X, A), "x_hat", X, "has 5 features"),
    "fvu": (lambda A: S.fvu(A, X), "x", X, None),
    "explained_variance": (lambda A: S.explained_variance(X, A), "x_hat", X, "has 5 features"),
    "dictionary_recovery": (lambda A: S.dictionary_recovery(A, M), "sae_or_decoder", Z.T[:, :D_IN], None),
    "dictionary_recovery_M": (lambda A: S.dictionary_recovery(SAE, A), "dictionary", M, None),
    "match": (lambda A: S.match(SAE, A, SAE, X), "acts_a", X, "expected 6 features"),
    "match_b": (lambda A: S.match(SAE, X, SAE, A), "acts_b", X, "expected 6 features"),
}
CASES = []
for fname, (fn, arg, good, width) in MATRIX_ARGS.items():
    for bid, make, exc, frag in BAD_MATRICES:
        CASES.append((f"{fname}-{bid}", lambda fn=fn, make=make, good=good: fn(make(good)), exc,
                      f"{re.escape(arg)}: {frag}"))
    if width:
        CASES.append((f"{fname}-width", lambda fn=fn, good=good: fn(good[:, :-1]), ValueError,
                      f"{re.escape(arg)}: {width}"))


class DictOut(nn.Module):
    def __init__(self, wrap):
        super().__init__()
        self.net, self.wrap = MODEL, wrap

    def forward(self, x):
        return self.wrap(self.net(x))


def _gen(*batches):
    yield from batches


def splice(**kw):
    args = dict(model=MODEL, x=XM, y=YM, layer="3", sae=S.TopKSAE(5, 8, k=2))
    args.update(kw)
    return S.spliced_accuracy(**args)


DEVICES = r"devices here: \['cpu'"
PARAMETERS = [  # (id, call, exception, message fragment)
    ("SAE-abstract", lambda: S.SAE(D_IN, D_SAE), TypeError, "abstract"),
    ("TopKSAE-d_in0", lambda: S.TopKSAE(0, D_SAE), ValueError, "d_in: must be >= 1, got 0"),
    ("TopKSAE-d_in-str", lambda: S.TopKSAE("6", D_SAE), TypeError, "d_in: must be an integer"),
    ("TopKSAE-d_sae-float", lambda: S.TopKSAE(D_IN, 12.0), TypeError, "d_sae: must be an integer"),
    ("TopKSAE-k0", lambda: S.TopKSAE(D_IN, D_SAE, k=0), ValueError, "k: must satisfy 1 <= k <= 12"),
    ("TopKSAE-k-big", lambda: S.TopKSAE(D_IN, D_SAE, k=13), ValueError, "k: must satisfy 1 <= k <= 12"),
    ("TopKSAE-k-float", lambda: S.TopKSAE(D_IN, D_SAE, k=2.5), TypeError, "k: must be an integer"),
    ("TopKSAE-k-bool", lambda: S.TopKSAE(D_IN, D_SAE, k=True), TypeError, "k: must be an integer"),
    ("TopKSAE-aux_k", lambda: S.TopKSAE(D_IN, D_SAE, k=3, aux_k=0), ValueError, "aux_k: must be >= 1"),
    ("TopKSAE-aux_coef", lambda: S.TopKSAE(D_IN, D_SAE, k=3, aux_coefficient=-1.0), ValueError,
     "aux_coefficient: must be >= 0"),
    ("TopKSAE-dtype", lambda: S.TopKSAE(D_IN, D_SAE, k=3, dtype=torch.int64), TypeError, "dtype: expected a floating"),
    ("TopKSAE-seed", lambda: S.TopKSAE(D_IN, D_SAE, k=3, seed="0"), TypeError, "seed: must be an integer"),
    ("BatchTopKSAE-k", lambda: S.BatchTopKSAE(D_IN, D_SAE, k=0), ValueError, "k: must satisfy"),
    ("BatchTopKSAE-aux_coef", lambda: S.BatchTopKSAE(D_IN, D_SAE, k=3, aux_coefficient="x"), TypeError,
     "aux_coefficient: must be a real number"),
    ("BatchTopKSAE-beta", lambda: S.BatchTopKSAE(D_IN, D_SAE, k=3, threshold_beta=1.5), ValueError,
     r"threshold_beta: must be a finite number in \[0.0, 1.0\]"),
    ("ReluSAE-l1", lambda: S.ReluSAE(D_IN, D_SAE, l1_coefficient=-0.1), ValueError, "l1_coefficient: must be >= 0"),
    ("ReluSAE-l1-str", lambda: S.ReluSAE(D_IN, D_SAE, l1_coefficient="0.1"), TypeError,
     "l1_coefficient: must be a real number"),
    ("ReluSAE-d_sae", lambda: S.ReluSAE(D_IN, -3), ValueError, "d_sae: must be >= 1"),
    ("JumpReluSAE-bandwidth", lambda: S.JumpReluSAE(D_IN, D_SAE, bandwidth=0), ValueError, "bandwidth: must be > 0"),
    ("JumpReluSAE-threshold", lambda: S.JumpReluSAE(D_IN, D_SAE, threshold_init=np.nan), ValueError,
     "threshold_init: must be > 0"),
    ("GatedSAE-l1", lambda: S.GatedSAE(D_IN, D_SAE, l1_coefficient=-1.0), ValueError, "l1_coefficient: must be >= 0"),
    ("GatedSAE-d_in", lambda: S.GatedSAE(0, D_SAE), ValueError, "d_in: must be >= 1"),
    ("save-metadata", lambda: S.save(SAE, ROOT["path"] / "s3", metadata={"a": {1, 2}}), TypeError,
     "metadata: values must be JSON"),
    ("save-context_size", lambda: S.save(SAE, ROOT["path"] / "s4", context_size=-1), ValueError,
     "metadata: context_size: must be >= 1"),
    ("forward-dead", lambda: SAE(X, dead=torch.zeros(3, dtype=torch.bool)), ValueError, r"dead: expected None or a"),
    ("forward-sparsity_scale", lambda: SAE(X, sparsity_scale="1"), TypeError, "sparsity_scale: must be a real"),
    ("fit-sae", lambda: S.fit("sae", X, **FIT), ValueError, "sae: expected a univ.sae.SAE"),
    ("fit-batch_size0", lambda: S.fit(S.TopKSAE(D_IN, D_SAE, k=3), X, **{**FIT, "batch_size": 0}), ValueError,
     "batch_size: must be >= 1, got 0"),
    ("fit-batch_size-float", lambda: SAE.fit(X, **{**FIT, "batch_size": 8.0}), TypeError,
     "batch_size: must be an integer"),
    ("fit-max_steps", lambda: SAE.fit(X, **{**FIT, "max_steps": 0}), ValueError, "max_steps: must be >= 1"),
    ("fit-eval_every", lambda: SAE.fit(X, **{**FIT, "eval_every": -1}), ValueError, "eval_every: must be >= 1"),
    ("fit-checkpoint_every", lambda: SAE.fit(X, checkpoint_every=0, progress=False), ValueError,
     "checkpoint_every: must be >= 1"),
    ("fit-patience", lambda: SAE.fit(X, patience=0, progress=False), ValueError, "patience: must be >= 1"),
    ("fit-patience-str", lambda: SAE.fit(X, patience="3", progress=False), TypeError, "patience: must be an integer"),
    ("fit-lr", lambda: SAE.fit(X, lr=-1e-3, progress=False), ValueError, "lr: must be > 0"),
    ("fit-lr-str", lambda: SAE.fit(X, lr="fast", progress=False), TypeError, "lr: must be a real number"),
    ("fit-tol", lambda: SAE.fit(X, tol=-1, progress=False), ValueError, "tol: must be a finite number >= 0"),
    ("fit-decay", lambda: SAE.fit(X, decay_fraction=2, progress=False), ValueError, "decay_fraction: must be"),
    ("fit-warmup", lambda: SAE.fit(X, warmup_steps=-1, progress=False), ValueError, "warmup_steps: must be >= 0"),
    ("fit-dead_after", lambda: SAE.fit(X, dead_after=0, progress=False), ValueError, "dead_after: must be >= 1"),
    ("fit-init_samples", lambda: SAE.fit(X, init_samples=1, progress=False), ValueError, "init_samples: must be >= 2"),
    ("fit-b_dec_init", lambda: SAE.fit(X, b_dec_init="median", progress=False), ValueError,
     "b_dec_init: unknown value 'median'"),
    ("fit-cuda", lambda: SAE.fit(X, device="cuda", progress=False), ValueError, f"device: 'cuda' .*{DEVICES}"),
    ("fit-device", lambda: SAE.fit(X, device="gpu0", progress=False), ValueError, f"device: unknown device.*{DEVICES}"),
    ("fit-checkpoint-type", lambda: SAE.fit(X, checkpoint=123, progress=False), TypeError,
     "checkpoint: expected a str or os.PathLike"),
    ("fit-checkpoint-folder", lambda: SAE.fit(X, checkpoint=ROOT["path"], progress=False), ValueError,
     "checkpoint: .* is a folder"),
    ("fit-callback", lambda: SAE.fit(X, callback=5, progress=False), TypeError, "callback: expected a callable"),
    ("fit-seed", lambda: SAE.fit(X, seed="0", progress=False), TypeError, "seed: must be an integer"),
    ("fit-one-row", lambda: SAE.fit(X[:1], **FIT), ValueError, "acts: needs at least 2 samples"),
    ("fit-stream-nan", lambda: S.TopKSAE(D_IN, D_SAE, k=3).fit(_gen(X[:5], _nan(X[5:])), **FIT), ValueError,
     r"acts batch 1: contains 1 NaN/Inf"),
    ("fit-stream-width", lambda: S.TopKSAE(D_IN, D_SAE, k=3).fit([X[:5], X[5:, :4]], **FIT), ValueError,
     "acts batch 1: expected 6 features"),
    ("fit-stream-complex", lambda: S.TopKSAE(D_IN, D_SAE, k=3).fit([X + 1j], **FIT), TypeError,
     "acts batch 0: complex values are not supported"),
    ("fit-stream-empty", lambda: S.TopKSAE(D_IN, D_SAE, k=3).fit([], **FIT), ValueError,
     "acts: the iterable yielded 0"),
    ("geometric_median-n_iter", lambda: S.geometric_median(X, n_iter=0), ValueError, "n_iter: must be >= 1"),
    ("geometric_median-eps", lambda: S.geometric_median(X, eps=-1.0), ValueError, "eps: must be > 0"),
    ("save-sae", lambda: S.save("sae", ROOT["path"] / "s1"), ValueError, "sae: expected a univ.sae.SAE"),
    ("save-path", lambda: S.save(SAE, None), TypeError, "path: expected a str or os.PathLike"),
    ("save-file", lambda: S.save(SAE, _folder("s2") / "cfg.json"), ValueError, "path: .*cfg.json' is a file"),
    ("load-missing", lambda: S.load(ROOT["path"] / "nothing"), ValueError, "path: .*nothing' does not hold cfg.json"),
    ("load-path", lambda: S.load(None), TypeError, "path: expected a str or os.PathLike"),
    ("load-cfg-truncated", lambda: S.load(_folder("l1", _write("cfg.json", '{"architecture": "topk", "d_'))),
     ValueError, r"path: .*l1/cfg.json' is not valid JSON"),
    ("load-cfg-text", lambda: S.load(_folder("l2", _write("cfg.json", "hello"))), ValueError,
     r"path: .*l2/cfg.json' is not valid JSON"),
    ("load-cfg-binary", lambda: S.load(_folder("l3", _write("cfg.json", b"\xff\xfe\x00"))), ValueError,
     r"path: .*l3/cfg.json' is not valid JSON"),
    ("load-cfg-list", lambda: S.load(_folder("l4", _write("cfg.json", "[1, 2]"))), ValueError,
     r"path: .*l4' is not a univ or SAELens SAE"),
    ("load-cfg-no-d_in", lambda: S.load(_folder("l5", _cfg(lambda c: c.pop("d_in")))), ValueError,
     r"path: .*l5/cfg.json' has d_in=None"),
    ("load-cfg-hparams", lambda: S.load(_folder("l6", _cfg(lambda c: c["univ"]["hparams"].update(width=3)))),
     ValueError, r"path: .*l6/cfg.json' holds hyperparameters a 'topk' SAE does not take"),
    ("load-cfg-bad-k", lambda: S.load(_folder("l7", _cfg(lambda c: c["univ"]["hparams"].update(k=99)))),
     ValueError, r"path: .*l7/cfg.json' holds hyperparameters .*k: must satisfy"),
    ("load-cfg-shape", lambda: S.load(_folder("l8", _cfg(lambda c: (_set(c, d_in=7), c["univ"]["hparams"].update(
        d_in=7))))), ValueError, r"path: tensor 'W_enc' has shape \(6, 12\) in '.*l8/sae_weights.safetensors'"),
    ("load-cfg-inconsistent", lambda: S.load(_folder("l9", _cfg(lambda c: _set(c, d_sae=24)))), ValueError,
     r"path: .*l9/cfg.json' says d_in=6, d_sae=24 but its hyperparameters say"),
    ("load-cfg-kind", lambda: S.load(_folder("l10", _cfg(lambda c: c["univ"].update(kind="relu")))), ValueError,
     r"path: .*l10/cfg.json' holds hyperparameters a 'relu' SAE does not take"),
    ("load-weights-truncated", lambda: S.load(_folder("l11", _truncate("sae_weights.safetensors"))), ValueError,
     r"path: .*l11/sae_weights.safetensors' is not a readable safetensors file"),
    ("load-weights-random", lambda: S.load(_folder("l12", _write("sae_weights.safetensors", rng.bytes(300)))),
     ValueError, r"path: .*l12/sae_weights.safetensors' is not a readable safetensors file"),
    ("load-weights-empty", lambda: S.load(_folder("l13", _write("sae_weights.safetensors", b""))), ValueError,
     r"path: .*l13/sae_weights.safetensors' is not a readable safetensors file"),
    ("load-kind", lambda: S.load(_folder("l14"), kind="relu"), ValueError,
     r"kind: expected a 'relu' SAE but '.*l14' holds a 'topk' SAE"),
    ("load-kind-unknown", lambda: S.load(_folder("l15"), kind="topkk"), ValueError, "unknown SAE kind 'topkk'"),
    ("load-kind-type", lambda: S.load(_folder("l16"), kind=3), TypeError, "kind: expected an SAE kind name"),
    ("load-d_in", lambda: S.load(_folder("l17"), d_in=7), ValueError, r"d_in: expected 7 but '.*l17' holds"),
    ("load-d_sae-type", lambda: S.load(_folder("l18"), d_sae="12"), TypeError, "d_sae: must be an integer"),
    ("load-cuda", lambda: S.load(_folder("l19"), device="cuda"), ValueError, f"device: 'cuda' .*{DEVICES}"),
    ("match-method", lambda: S.match(SAE, X, SAE, X, method="cosine"), ValueError,
     "unknown matching method 'cosine'"),
    ("match-method-type", lambda: S.match(SAE, X, SAE, X, method=["svcca"]), TypeError,
     "method: expected a matching method name"),
    ("match-sae", lambda: S.match(X, X, SAE, X), ValueError, "sae_a: expected a univ.sae.SAE"),
    ("match-n", lambda: S.match(SAE, X, SAE, X[:-1]), ValueError, "same number of samples"),
    ("match-threshold", lambda: S.match(SAE, X, SAE, X, threshold=2), ValueError,
     r"threshold: must be a finite number in \[-1.0, 1.0\]"),
    ("match-threshold-nan", lambda: S.match(SAE, X, SAE, X, threshold=np.nan), ValueError, "threshold: must be"),
    ("match-threshold-str", lambda: S.match(SAE, X, SAE, X, threshold="0.7"), TypeError, "threshold: must be a real"),
    ("match-min_corr", lambda: S.match(SAE, X, SAE, X, method="svcca", min_correlation=5), ValueError,
     "min_correlation: must be"),
    ("match-n_permutations", lambda: S.match(SAE, X, SAE, X, n_permutations=-1), ValueError,
     "n_permutations: must be >= 0"),
    ("match-n_permutations-float", lambda: S.match(SAE, X, SAE, X, n_permutations=2.5), TypeError,
     "n_permutations: must be an integer"),
    ("match-seed", lambda: S.match(SAE, X, SAE, X, seed=None), TypeError, "seed: must be an integer"),
    ("match-hungarian", lambda: S.match(SAE, None, S.TopKSAE(4, 8, k=2), None, method="hungarian"), ValueError,
     "sae_b: method 'hungarian' compares directions in one input space"),
    ("evaluate-sae", lambda: S.evaluate(Z, X), ValueError, "sae: expected a univ.sae.SAE"),
    ("evaluate-batch_size", lambda: S.evaluate(SAE, X, batch_size=0), ValueError, "batch_size: must be >= 1"),
    ("evaluate-dense", lambda: S.evaluate(SAE, X, dense_threshold=1.5), ValueError, "dense_threshold: must be"),
    ("evaluate-one-row", lambda: S.evaluate(SAE, X[:1]), ValueError, "acts: needs at least 2 samples"),
    ("dense_fraction-threshold", lambda: S.dense_fraction(Z, threshold=-0.1), ValueError, "threshold: must be"),
    ("mse-n", lambda: S.mse(X, X[:-1]), ValueError, "x and x_hat must have the same number of samples"),
    ("fvu-constant", lambda: S.fvu(np.ones((5, 3)), np.zeros((5, 3))), ValueError, "x: has zero variance"),
    ("dictionary_recovery-rows", lambda: S.dictionary_recovery(SAE, M[:-1]), ValueError,
     "dictionary: has 5 rows"),
    ("dictionary_recovery-threshold", lambda: S.dictionary_recovery(SAE, M, threshold=1.5), ValueError,
     "threshold: must be"),
    ("spliced_accuracy-x-ndim1", lambda: splice(x=XM[:, 0]), ValueError, "x: the model's forward failed"),
    ("spliced_accuracy-x-shape", lambda: splice(x=XM[:, :3]), ValueError, r"x: the model's forward failed .*\(20, 3\)"),
    ("spliced_accuracy-x-nan", lambda: splice(x=_nan(XM)), ValueError, "x: contains 1 NaN/Inf"),
    ("spliced_accuracy-x-complex", lambda: splice(x=XM.numpy() + 1j), TypeError, "x: complex values"),
    ("spliced_accuracy-x-none", lambda: splice(x=None), ValueError, "x: expected a numpy array or torch tensor"),
    ("spliced_accuracy-x-str", lambda: splice(x="images"), ValueError, "x: expected a numpy array or torch tensor"),
    ("spliced_accuracy-x-empty", lambda: splice(x=XM[:0]), ValueError, "x: is empty"),
    ("spliced_accuracy-n", lambda: splice(y=YM[:-1]), ValueError, "x and y must have the same number of samples"),
    ("spliced_accuracy-y-float", lambda: splice(y=YM + 0.5), ValueError, "y: expected integer class labels"),
    ("spliced_accuracy-y-range", lambda: splice(y=YM + 3), ValueError, r"y: labels must lie in \[0, 3\)"),
    ("spliced_accuracy-y-neg", lambda: splice(y=YM - 3), ValueError, r"y: labels must lie in \[0"),
    ("spliced_accuracy-y-str", lambda: splice(y=np.array(["a"] * 20)), TypeError, "y: expected numbers"),
    ("spliced_accuracy-layer-int", lambda: splice(layer=3), TypeError, "layer: expected a string"),
    ("spliced_accuracy-layer", lambda: splice(layer="fc9"), ValueError, "unknown layer 'fc9'"),
    ("spliced_accuracy-width", lambda: splice(sae=SAE), ValueError, "layer '3': output has 5 features"),
    ("spliced_accuracy-sae", lambda: splice(sae="sae"), ValueError, "sae: expected a univ.sae.SAE"),
    ("spliced_accuracy-batch_size", lambda: splice(batch_size=0), ValueError, "batch_size: must be >= 1"),
    ("spliced_accuracy-model", lambda: splice(model="mlp"), ValueError, "model: expected a torch.nn.Module"),
    ("spliced_accuracy-dict", lambda: splice(model=DictOut(lambda t: {"logits": t}), layer="net.3"), ValueError,
     "model: expected its forward to return a logits tensor, got dict"),
    ("spliced_accuracy-tuple", lambda: splice(model=DictOut(lambda t: (t,)), layer="net.3"), ValueError,
     "model: expected its forward to return a logits tensor, got tuple"),
    ("spliced_accuracy-hf", lambda: splice(model=DictOut(lambda t: types.SimpleNamespace(logits=t)), layer="net.3"),
     ValueError,
     "model: expected its forward to return a logits tensor, got SimpleNamespace"),
]
CASES += PARAMETERS

# --- multi-model dictionaries: a bad matrix in one model's activations is named by its model index ----------
X1 = X[:, :4]
CC = S.Crosscoder([D_IN, 4], D_SAE, kind="topk", k=3)
MULTI = {  # name -> call with model 1's bad matrix, and the argument name the message starts with
    "Crosscoder": (lambda A: CC.encode([X, A]), "xs[1] (model 1)"),
    "TopKCrosscoder": (lambda A: S.TopKCrosscoder([D_IN, 4], D_SAE, k=3).fit([X, A], **FIT), "xs[1] (model 1)"),
    "BatchTopKCrosscoder": (lambda A: S.BatchTopKCrosscoder([D_IN, 4], D_SAE, k=3)([X, A]), "xs[1] (model 1)"),
    "L1Crosscoder": (lambda A: S.L1Crosscoder([D_IN, 4], D_SAE).reconstruct([X, A]), "xs[1] (model 1)"),
    "UniversalSAE": (lambda A: S.UniversalSAE([D_IN, 4], D_SAE, k=3).encode(A, model=1), "x (model 1)"),
    "latent_tags": (lambda A: S.latent_tags(CC, [X, A]), "xs[1] (model 1)"),
    "shuffle_pairing": (lambda A: S.shuffle_pairing([X, A]), "xs[1] (model 1)"),
}
for fname, (fn, arg) in MULTI.items():
    for bid, make, exc, frag in BAD_MATRICES:
        CASES.append((f"{fname}-{bid}", lambda fn=fn, make=make: fn(make(X1)), exc, f"{re.escape(arg)}: {frag}"))
CASES += [
    ("Crosscoder-k", lambda: S.Crosscoder([D_IN, 4], D_SAE, k=D_SAE + 1), ValueError, r"k: must satisfy .*\(d_sae\)"),
    ("Crosscoder-n-models", lambda: CC.encode([X]), ValueError, r"xs: expected 2 arrays .* got 1"),
    ("Crosscoder-rows", lambda: CC.encode([X, X1[:5]]), ValueError, r"xs\[1\] \(model 1\): has 5 rows"),
    ("seed_stability-models", lambda: S.seed_stability(CC, S.Crosscoder([D_IN, 5], D_SAE, k=3)), ValueError,
     r"model_b: expected dictionaries over the same models"),
]

LM = nn.Sequential(nn.Embedding(10, D_IN), nn.Linear(D_IN, 10)).eval()  # ids (b, T) -> logits (b, T, 10)
IDS = torch.randint(0, 10, (4, 5), generator=torch.Generator().manual_seed(0))


def lm_splice(**kw):
    args = {"model": LM, "inputs": IDS, "layer": "0", "sae": S.TopKSAE(D_IN, D_SAE, k=3)}
    args.update(kw)
    return S.spliced_lm_metrics(**args)


CASES += [
    ("spliced_lm_metrics-model", lambda: lm_splice(model="lm"), ValueError, "model: expected a torch.nn.Module"),
    ("spliced_lm_metrics-sae", lambda: lm_splice(sae="sae"), ValueError, "sae: expected a univ.sae.SAE"),
    ("spliced_lm_metrics-batch_size", lambda: lm_splice(batch_size=0), ValueError, "batch_size: must be >= 1"),
    ("spliced_lm_metrics-float", lambda: lm_splice(inputs=IDS.float()), ValueError, "inputs: expected token ids"),
    ("spliced_lm_metrics-1d", lambda: lm_splice(inputs=IDS[0]), ValueError, r"inputs: expected token ids .*\(5,\)"),
    ("spliced_lm_metrics-no-ids", lambda: lm_splice(inputs={"attention_mask": torch.ones_like(IDS)}), ValueError,
     r"with input_ids .*got \['attention_mask'\]"),
    ("spliced_lm_metrics-one-token", lambda: lm_splice(inputs=IDS[:, :1]), ValueError, "have no next token"),
    ("spliced_lm_metrics-nan-mask", lambda: lm_splice(inputs={"input_ids": IDS, "attention_mask": IDS * 0.5}),
     ValueError, "attention_mask"),
    ("spliced_lm_metrics-layer", lambda: lm_splice(layer="9"), ValueError, "unknown layer '9'"),
    ("spliced_lm_metrics-layer-int", lambda: lm_splice(layer=0), TypeError, "layer: expected a string"),
    ("spliced_lm_metrics-width", lambda: lm_splice(layer="1"), ValueError, r"layer: '1' emits shape \(4, 5, 10\)"),
]


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_named_error(call, exc, fragment):
    assert_named_error(call, exc, fragment)


RESULT_TYPES = {"SAEOutput", "StepOutput", "MatchResult", "SAEMetrics", "SpliceResult", "LMSpliceResult",
                "LatentTags"}


def test_every_public_function_is_in_the_table():
    covered = {c[0].split("-")[0] for c in CASES} | {k.split("_")[0] for k in MATRIX_ARGS}
    public = {n for n in S.__all__ if callable(getattr(S, n))} - RESULT_TYPES
    assert public - covered == set()
    methods = {"encode", "decode", "forward", "TopKSAE.fit"}
    assert methods <= set(MATRIX_ARGS)


# --- what must work: bool/int/float64 input converts to the SAE's dtype; NumPy integers are integers -------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bool_int_float64_inputs_convert_to_the_sae_dtype(dtype):
    sae = S.TopKSAE(D_IN, D_SAE, k=3, dtype=dtype)
    Xi = np.round(X * 3).astype(np.int64)
    for A in (Xi, X > 0, X.astype(np.float64), torch.from_numpy(Xi).to(torch.int16), X.astype(np.float16)):
        z = sae.encode(A)
        assert z.dtype == dtype and torch.isfinite(z).all()
        assert sae.decode(z > 0).dtype == dtype
        assert sae(A).x_hat.dtype == dtype
        assert np.isfinite(S.evaluate(sae, A).mse)
    assert torch.equal(sae.encode(Xi), sae.encode(Xi.astype(np.float64)))
    sae.fit(Xi, **FIT)
    assert sae.n_steps_ == 2


def test_numpy_integers_accepted_for_int_parameters(tmp_path):
    sae = S.TopKSAE(np.int64(D_IN), np.int32(D_SAE), k=np.int64(3), aux_k=np.int16(2), seed=np.int64(1))
    assert (sae.d_in, sae.d_sae, sae.k) == (D_IN, D_SAE, 3) and type(sae.k) is int
    sae.fit(X, max_steps=np.int64(2), eval_every=np.int32(1), batch_size=np.int64(8), init_samples=np.int64(16),
            patience=np.int64(2), progress=False)
    loaded = S.load(S.save(sae, tmp_path / "np"), d_in=np.int64(D_IN), d_sae=np.int32(D_SAE))
    assert torch.equal(loaded.encode(X), sae.encode(X))
    r = S.match(sae, X, loaded, X, n_permutations=np.int64(2), seed=np.int64(3), threshold=np.float32(0.5))
    assert r.summary["shared_fraction"] == 1.0
    assert S.evaluate(sae, X, batch_size=np.int64(7)) == S.evaluate(sae, X)
    assert torch.allclose(S.geometric_median(X, n_iter=np.int64(5)), S.geometric_median(X, n_iter=5))
    assert S.ReluSAE(D_IN, D_SAE, l1_coefficient=np.float32(0.1)).l1_coefficient == pytest.approx(0.1)


def test_spliced_accuracy_converts_inputs():
    sae = S.TopKSAE(5, 8, k=2)

    def same(a, b):
        np.testing.assert_equal(tuple(a), tuple(b))  # NaN recovered == NaN recovered

    ref = S.spliced_accuracy(MODEL, XM, YM, "3", sae)
    same(S.spliced_accuracy(MODEL, XM.double().numpy(), YM.numpy(), "3", sae), ref)
    same(S.spliced_accuracy(MODEL, XM, YM.double(), "3", sae, batch_size=np.int64(7)), ref)
    xi = XM.round().long()
    same(S.spliced_accuracy(MODEL, xi, YM, "3", sae), S.spliced_accuracy(MODEL, xi.float(), YM, "3", sae))
    same(S.spliced_accuracy(MODEL, XM > 0, YM, "3", sae), S.spliced_accuracy(MODEL, (XM > 0).float(), YM, "3", sae))
