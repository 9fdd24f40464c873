"""Bad input to every public function of univ.adversarial raises exactly ValueError or TypeError naming the
argument (never a torch or numpy error); bool/int/float64 inputs to a float32 model and NumPy integers work."""

import re
import types

import numpy as np
import pytest
import torch
from named_errors import assert_named_error
from named_errors import with_inf as _inf
from named_errors import with_nan as _nan
from torch import nn

from univ import adversarial as adv
from univ import sae as S

BOX = (0.0, 1.0)
torch.manual_seed(0)
MODEL = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
XA = torch.rand(10, 16)
YA = MODEL(XA).argmax(1).detach()
rng = np.random.default_rng(0)
DELTA = rng.standard_normal((12, 6))
BASIS = adv.random_orthonormal(6)
SAE = S.TopKSAE(6, 12, k=3)
CLEAN = rng.standard_normal((12, 6))
CODES = np.abs(rng.standard_normal((12, 5)))
Y12 = np.arange(12) % 3


class Out(nn.Module):
    """MODEL with its logits wrapped as a dict, a tuple or a HuggingFace-style output object."""

    def __init__(self, wrap):
        super().__init__()
        self.net, self.wrap = MODEL, wrap

    def forward(self, x):
        return self.wrap(self.net(x))


ATTACKS = {  # name -> call(model, x, y)
    "pgd": lambda m, x, y: adv.pgd(m, x, y, steps=2, bounds=BOX),
    "fgsm": lambda m, x, y: adv.fgsm(m, x, y, bounds=BOX),
    "deepfool": lambda m, x, y: adv.deepfool(m, x, y, max_iter=2, bounds=BOX),
    "lbfgs": lambda m, x, y: adv.lbfgs(m, x, y, bounds=BOX, search_steps=1, maxiter=2),
    "lbfgs_search": lambda m, x, y: adv.lbfgs_search(m, x, y, bounds=BOX, search_steps=1, maxiter=2),
    "check_inputs": lambda m, x, y: adv.check_inputs(m, x, y, BOX),
    "robust_accuracy": lambda m, x, y: adv.robust_accuracy(m, x, y, adv.make_attack("fgsm", bounds=BOX)),
    "Attack": lambda m, x, y: adv.Attack("pgd", {"steps": 2, "bounds": BOX})(m, x, y),
}




ARRAY = "expected a numpy array or torch tensor"
BAD_X = [  # (id, bad x, exception, message)
    ("ndim1", XA[0], ValueError, r"x: expected a batch of inputs \(n, ...\)"),
    ("empty", XA[:0], ValueError, "x: is empty"),
    ("nan", _nan(XA), ValueError, r"x: contains 1 NaN/Inf value\(s\) \(first at index \(3, 1\)\)"),
    ("inf", _inf(XA), ValueError, r"x: contains 1 NaN/Inf value\(s\) \(first at index \(2, 0\)\)"),
    ("complex", XA.numpy() + 1j, TypeError, "x: complex values are not supported"),
    ("torch_complex", XA.to(torch.complex64), TypeError, "x: complex values are not supported"),
    ("strings", XA.numpy().astype(str), TypeError, "x: expected numbers"),
    ("object", XA.numpy().astype(object), ValueError, "x: could not convert to a numeric array"),
    ("str", "images", ValueError, f"x: {ARRAY}"),
    ("dict", {"x": XA}, ValueError, f"x: {ARRAY}"),
    ("none", None, ValueError, f"x: {ARRAY}"),
    ("shape", XA[:, :10], ValueError, r"x: the model's forward failed on an input of shape \(10, 10\)"),
    ("box", XA * 3, ValueError, "x: inputs lie outside the declared box"),
]
BAD_Y = [
    ("n", YA[:-1], ValueError, r"y: expected integer labels of shape \(10,\)"),
    ("ndim2", YA[:, None], ValueError, r"y: expected integer labels of shape \(10,\)"),
    ("float", YA + 0.5, ValueError, "y: expected integer class labels"),
    ("bool", YA > 0, ValueError, "y: expected integer class labels"),
    ("range", YA + 3, ValueError, r"y: labels must lie in \[0, 3\)"),
    ("negative", YA - 5, ValueError, r"y: labels must lie in \[0"),
    ("nan", _nan(YA.double(), 3), ValueError, "y: contains 1 NaN/Inf"),
    ("complex", YA.numpy() + 0j, TypeError, "y: complex values"),
    ("strings", YA.numpy().astype(str), TypeError, "y: expected numbers"),
    ("none", None, ValueError, f"y: {ARRAY}"),
]
LOGITS = "model: expected its forward to return a logits tensor, got"
BAD_MODEL = [
    ("not_module", "mlp", ValueError, "model: expected a torch.nn.Module, got str"),
    ("dict", Out(lambda t: {"logits": t}), ValueError, f"{LOGITS} dict"),
    ("tuple", Out(lambda t: (t,)), ValueError, f"{LOGITS} tuple"),
    ("hf", Out(lambda t: types.SimpleNamespace(logits=t)), ValueError, f"{LOGITS} SimpleNamespace"),
    ("one_class", nn.Sequential(nn.Flatten(), nn.Linear(16, 1)), ValueError, "model: an attack needs at least 2"),
]
CASES = []
for name, call in ATTACKS.items():
    CASES += [(f"{name}-x-{i}", lambda call=call, x=x: call(MODEL, x, YA), e, f) for i, x, e, f in BAD_X]
    CASES += [(f"{name}-y-{i}", lambda call=call, y=y: call(MODEL, XA, y), e, f) for i, y, e, f in BAD_Y]
    CASES += [(f"{name}-model-{i}", lambda call=call, m=m: call(m, XA, YA), e, f) for i, m, e, f in BAD_MODEL]

BAD_MATRICES = [  # (id, make bad from a good matrix, exception, message after "NAME: ")
    ("ndim1", lambda A: A[:, 0], ValueError, "expected a 2-D array"),
    ("ndim3", lambda A: A[None], ValueError, "expected a 2-D array"),
    ("empty", lambda A: A[:0], ValueError, "is empty"),
    ("nan", _nan, ValueError, r"contains 1 NaN/Inf value\(s\) \(first at index \(3, 1\)\)"),
    ("inf", _inf, ValueError, r"contains 1 NaN/Inf value\(s\) \(first at index \(2, 0\)\)"),
    ("strings", lambda A: np.asarray(A).astype(str), TypeError, "expected numbers"),
    ("object", lambda A: np.asarray(A).astype(object), ValueError, "could not convert to a numeric array"),
    ("complex", lambda A: np.asarray(A) + 1j, TypeError, "complex values are not supported"),
    ("str", lambda A: "abc", ValueError, ARRAY),
    ("dict", lambda A: {"a": A}, ValueError, ARRAY),
    ("none", lambda A: None, ValueError, ARRAY),
]
MATRIX_ARGS = {  # name -> (call with the bad matrix, argument name, good matrix)
    "project": (lambda A: adv.project(A, BASIS), "delta", DELTA),
    "project_basis": (lambda A: adv.project(DELTA, A), "basis", BASIS.numpy()),
    "project_clean": (lambda A: adv.project(DELTA, SAE, clean=A), "clean", CLEAN),
    "code_changes": (lambda A: adv.code_changes(SAE, A, CLEAN), "clean", CLEAN),
    "code_changes_perturbed": (lambda A: adv.code_changes(SAE, CLEAN, A), "perturbed", CLEAN),
    "most_changed_latents": (lambda A: adv.most_changed_latents(SAE, A, CLEAN, Y12), "clean", CLEAN),
    "directions": (adv.directions, "basis", BASIS.numpy()),
    "latent_class_association": (lambda A: adv.latent_class_association(A, Y12), "codes", CODES),
    "omp": (lambda A: adv.omp(A, BASIS, 2), "delta", DELTA),
    "omp_D": (lambda A: adv.omp(DELTA, A, 2), "D", BASIS.numpy()),
    "pca_basis": (adv.pca_basis, "acts", CLEAN),
}
for fname, (fn, arg, good) in MATRIX_ARGS.items():
    for bid, make, exc, frag in BAD_MATRICES:
        if (fname, bid) == ("project_clean", "none"):  # clean=None is the default: no code reading
            continue
        CASES.append((f"{fname}-{bid}", lambda fn=fn, make=make, good=good: fn(make(good)), exc,
                      f"{re.escape(arg)}: {frag}"))

DEVICES = r"devices here: \['cpu'"
X2 = XA + 0.01
PARAMETERS = [  # (id, call, exception, message fragment)
    ("pgd-eps", lambda: adv.pgd(MODEL, XA, YA, eps=-0.1, bounds=BOX), ValueError, "eps: must be >= 0"),
    ("pgd-eps-nan", lambda: adv.pgd(MODEL, XA, YA, eps=np.nan, bounds=BOX), ValueError, "eps: must be >= 0"),
    ("pgd-eps-str", lambda: adv.pgd(MODEL, XA, YA, eps="0.1", bounds=BOX), TypeError, "eps: must be a real number"),
    ("pgd-norm", lambda: adv.pgd(MODEL, XA, YA, norm="l3", bounds=BOX), ValueError, "norm: unknown norm 'l3'"),
    ("pgd-norm-none", lambda: adv.pgd(MODEL, XA, YA, norm=None, bounds=BOX), ValueError, "norm: unknown norm None"),
    ("pgd-steps", lambda: adv.pgd(MODEL, XA, YA, steps=0, bounds=BOX), ValueError, "steps: must be >= 1"),
    ("pgd-steps-float", lambda: adv.pgd(MODEL, XA, YA, steps=2.5, bounds=BOX), TypeError, "steps: must be an int"),
    ("pgd-steps-str", lambda: adv.pgd(MODEL, XA, YA, steps="3", bounds=BOX), TypeError, "steps: must be an int"),
    ("pgd-restarts", lambda: adv.pgd(MODEL, XA, YA, restarts=0, bounds=BOX), ValueError, "restarts: must be >= 1"),
    ("pgd-loss", lambda: adv.pgd(MODEL, XA, YA, loss="hinge", bounds=BOX), ValueError, "loss: unknown value"),
    ("pgd-step_size", lambda: adv.pgd(MODEL, XA, YA, step_size=-1.0, bounds=BOX), ValueError, "step_size: must be"),
    ("pgd-seed", lambda: adv.pgd(MODEL, XA, YA, seed="0", bounds=BOX), TypeError, "seed: must be an integer"),
    ("pgd-target-shape", lambda: adv.pgd(MODEL, XA, YA, targeted=True, target=YA[:3], bounds=BOX), ValueError,
     r"target: expected integer labels of shape \(10,\)"),
    ("pgd-target-range", lambda: adv.pgd(MODEL, XA, YA, targeted=True, target=YA + 7, bounds=BOX), ValueError,
     r"target: labels must lie in \[0, 3\)"),
    ("pgd-target-float", lambda: adv.pgd(MODEL, XA, YA, targeted=True, target=YA * 1.0, bounds=BOX), ValueError,
     "target: expected integer labels"),
    ("pgd-bounds", lambda: adv.pgd(MODEL, XA, YA, bounds=(1, 0)), ValueError, "bounds: need finite low < high"),
    ("pgd-bounds-str", lambda: adv.pgd(MODEL, XA, YA, bounds="ab"), ValueError, "bounds: expected None or a"),
    ("pgd-bounds-missing", lambda: adv.pgd(MODEL, XA, YA), TypeError, "bounds"),
    ("fgsm-eps", lambda: adv.fgsm(MODEL, XA, YA, eps=-1, bounds=BOX), ValueError, "eps: must be >= 0"),
    ("fgsm-norm", lambda: adv.fgsm(MODEL, XA, YA, norm=1, bounds=BOX), ValueError, "norm: unknown norm 1"),
    ("fgsm-seed", lambda: adv.fgsm(MODEL, XA, YA, random_start=True, seed=0.5, bounds=BOX), TypeError,
     "seed: must be an integer"),
    ("deepfool-max_iter", lambda: adv.deepfool(MODEL, XA, YA, max_iter=0, bounds=BOX), ValueError,
     "max_iter: must be >= 1"),
    ("deepfool-max_iter-str", lambda: adv.deepfool(MODEL, XA, YA, max_iter="5", bounds=BOX), TypeError,
     "max_iter: must be an integer"),
    ("deepfool-overshoot", lambda: adv.deepfool(MODEL, XA, YA, overshoot=-1, bounds=BOX), ValueError, "overshoot"),
    ("deepfool-eps", lambda: adv.deepfool(MODEL, XA, YA, eps=-1, bounds=BOX), ValueError, "eps: must be >= 0"),
    ("lbfgs_search-steps", lambda: adv.lbfgs_search(MODEL, XA, YA, bounds=BOX, search_steps=0), ValueError,
     "search_steps: must be >= 1"),
    ("lbfgs_search-maxiter", lambda: adv.lbfgs_search(MODEL, XA, YA, bounds=BOX, maxiter="9"), TypeError,
     "maxiter: must be an integer"),
    ("lbfgs_search-c_init", lambda: adv.lbfgs_search(MODEL, XA, YA, bounds=BOX, c_init=0), ValueError,
     "c_init: must be > 0"),
    ("lbfgs_search-c_range", lambda: adv.lbfgs_search(MODEL, XA, YA, bounds=BOX, c_range=(1, 0)), ValueError,
     "c_range: need finite 0 < low < high"),
    ("lbfgs_search-c_range-str", lambda: adv.lbfgs_search(MODEL, XA, YA, bounds=BOX, c_range="ab"), ValueError,
     "c_range: expected a"),
    ("lbfgs_search-seed", lambda: adv.lbfgs_search(MODEL, XA, YA, bounds=BOX, seed=2.5), TypeError,
     "seed: must be an integer"),
    ("make_attack-name", lambda: adv.make_attack("pgdd", bounds=BOX), ValueError, "unknown attack 'pgdd'"),
    ("make_attack-name-type", lambda: adv.make_attack(3, bounds=BOX), TypeError, "name: expected an attack name"),
    ("make_attack-kwargs", lambda: adv.make_attack("pgd", epz=0.1, bounds=BOX), ValueError,
     r"kwargs: attack 'pgd' takes no argument\(s\) \['epz'\]"),
    ("make_attack-bounds", lambda: adv.make_attack("pgd"), ValueError, "bounds: required by attack 'pgd'"),
    ("make_attack-bounds-bad", lambda: adv.make_attack("pgd", bounds=(0, np.inf)), ValueError, "bounds: need finite"),
    ("Attack-name", lambda: adv.Attack("pgdd", {"bounds": BOX})(MODEL, XA, YA), ValueError, "unknown attack 'pgdd'"),
    ("Attack-eps", lambda: adv.Attack("fgsm", {"bounds": BOX, "eps": -1})(MODEL, XA, YA), ValueError, "eps: must be"),
    ("register_attack-name", lambda: adv.register_attack("", lambda m, x, y, *, bounds: x), ValueError,
     "name: a attack needs a non-empty string name"),
    ("register_attack-taken", lambda: adv.register_attack("pgd", lambda m, x, y, *, bounds: x), ValueError,
     "name: a attack named 'pgd' is already registered"),
    ("robust_accuracy-attack", lambda: adv.robust_accuracy(MODEL, XA, YA, "fgsm"), TypeError,
     "attack: expected a callable"),
    ("resolve_target-logits", lambda: adv.resolve_target(None, np.zeros(10), YA), ValueError,
     r"logits: expected a float \(n, n_classes\)"),
    ("resolve_target-y", lambda: adv.resolve_target(None, MODEL(XA), YA[:4]), ValueError,
     r"y: expected integer labels of shape \(10,\)"),
    ("resolve_target-target", lambda: adv.resolve_target(YA[:2], MODEL(XA), YA), ValueError,
     "target: expected integer labels"),
    ("resolve_target-fn", lambda: adv.resolve_target(lambda lg, y: y + 5, MODEL(XA), YA), ValueError,
     r"target: labels must lie in \[0, 3\)"),
    ("margin-labels", lambda: adv.margin(MODEL(XA), YA + 3), ValueError, r"labels: labels must lie in \[0, 3\)"),
    ("margin-n", lambda: adv.margin(MODEL(XA), YA[:3]), ValueError, r"labels: expected integer labels of shape"),
    ("margin-logits", lambda: adv.margin(MODEL(XA)[:, :1], YA * 0), ValueError, "logits: expected a float"),
    ("margin-logits-str", lambda: adv.margin("logits", YA), ValueError, f"logits: {ARRAY}"),
    ("random_other_class", lambda: adv.random_other_class(5), TypeError, "generator: expected a torch.Generator"),
    ("canonical_norm", lambda: adv.canonical_norm("l1"), ValueError, "norm: unknown norm 'l1'"),
    ("canonical_norm-list", lambda: adv.canonical_norm([2]), ValueError, r"norm: unknown norm \[2\]"),
    ("canonical_norm-float", lambda: adv.canonical_norm(1.5), ValueError, "norm: unknown norm 1.5"),
    ("canonical_norm-neg-inf", lambda: adv.canonical_norm(-np.inf), ValueError, "norm: unknown norm -inf"),
    ("check_bounds", lambda: adv.check_bounds((np.nan, 1)), ValueError, "bounds: need finite low < high"),
    ("check_bounds-one", lambda: adv.check_bounds((0,)), ValueError, "bounds: expected None or a"),
    ("check_bounds-scalar", lambda: adv.check_bounds(5), ValueError, "bounds: expected None or a"),
    ("clip_to_box-bounds", lambda: adv.clip_to_box(XA, (1, 0)), ValueError, "bounds: need finite low < high"),
    ("clip_to_box-x", lambda: adv.clip_to_box("x", BOX), ValueError, f"x: {ARRAY}"),
    ("make_generator-seed", lambda: adv.make_generator("0", "cpu"), TypeError, "seed: must be an integer"),
    ("make_generator-cuda", lambda: adv.make_generator(0, "cuda"), ValueError, f"device: 'cuda' .*{DEVICES}"),
    ("make_generator-device", lambda: adv.make_generator(0, "tpu"), ValueError, f"device: .*{DEVICES}"),
    ("per_sample", lambda: adv.per_sample(torch.ones(3), XA), ValueError, r"v: expected one value per sample \(10\)"),
    ("per_sample-like", lambda: adv.per_sample(torch.ones(3), None), ValueError, f"like: {ARRAY}"),
    ("per_sample_norm", lambda: adv.per_sample_norm(XA, "l1"), ValueError, "norm: unknown norm 'l1'"),
    ("per_sample_norm-scalar", lambda: adv.per_sample_norm(torch.tensor(1.0), "2"), ValueError, "d: expected a batch"),
    ("per_sample_norm-str", lambda: adv.per_sample_norm("d", "2"), ValueError, f"d: {ARRAY}"),
    ("project_ball-eps", lambda: adv.project_ball(XA, -0.1, "inf"), ValueError, "eps: must be >= 0"),
    ("project_ball-eps-str", lambda: adv.project_ball(XA, "0.1", "inf"), TypeError, "eps: must be a real number"),
    ("project_ball-norm", lambda: adv.project_ball(XA, 0.1, "1"), ValueError, "norm: unknown norm '1'"),
    ("steepest_step", lambda: adv.steepest_step(XA, -1.0, "2"), ValueError, "step_size: must be >= 0"),
    ("steepest_step-norm", lambda: adv.steepest_step(XA, 0.1, "max"), ValueError, "norm: unknown norm"),
    ("random_in_ball-eps", lambda: adv.random_in_ball((4, 3), -1.0, "2", None, "cpu", torch.float32), ValueError,
     "eps: must be >= 0"),
    ("random_in_ball-shape", lambda: adv.random_in_ball((0, 3), 0.1, "2", None, "cpu", torch.float32), ValueError,
     "shape: expected a non-empty tuple of positive integers"),
    ("random_in_ball-shape-str", lambda: adv.random_in_ball("4x3", 0.1, "2", None, "cpu", torch.float32),
     ValueError, "shape: expected a tuple"),
    ("random_in_ball-gen", lambda: adv.random_in_ball((4, 3), 0.1, "2", 0, "cpu", torch.float32), TypeError,
     "generator: expected a torch.Generator"),
    ("random_in_ball-cuda", lambda: adv.random_in_ball((4, 3), 0.1, "2", None, "cuda", torch.float32), ValueError,
     f"device: 'cuda' .*{DEVICES}"),
    ("random_in_ball-dtype", lambda: adv.random_in_ball((4, 3), 0.1, "2", None, "cpu", torch.int64), TypeError,
     "dtype: expected a floating"),
    ("project-width", lambda: adv.project(DELTA[:, :5], BASIS), ValueError, "basis: directions have dimension 6"),
    ("project-n", lambda: adv.project(DELTA, SAE, clean=CLEAN[:5]), ValueError,
     "delta and clean must have the same number of samples"),
    ("project-k", lambda: adv.project(DELTA, BASIS, k=0), ValueError, "k: must be >= 1"),
    ("project-k-float", lambda: adv.project(DELTA, BASIS, k=2.5), TypeError, "k: must be an integer"),
    ("project-k-str", lambda: adv.project(DELTA, BASIS, k="3"), TypeError, "k: must be an integer"),
    ("project-k-empty", lambda: adv.project(DELTA, BASIS, k=[]), ValueError, "k: expected at least one"),
    ("project-method", lambda: adv.project(DELTA, BASIS, method="pca"), ValueError, "method: unknown value 'pca'"),
    ("project-codes", lambda: adv.project(DELTA, BASIS, method="codes"), ValueError, "need an SAE basis"),
    ("project-support", lambda: adv.project(DELTA, BASIS, support=np.ones((3, 6), bool)), ValueError,
     r"support: expected a bool mask of shape \(12, 6\)"),
    ("project-support-dtype", lambda: adv.project(DELTA, BASIS, support=np.ones((12, 6))), TypeError,
     "support: expected a bool mask"),
    ("project-support-name", lambda: adv.project(DELTA, SAE, clean=CLEAN, support="all"), ValueError,
     "support: unknown value 'all'"),
    ("code_changes-sae", lambda: adv.code_changes("sae", CLEAN, CLEAN), ValueError, "sae: expected an SAE"),
    ("code_changes-n", lambda: adv.code_changes(SAE, CLEAN, CLEAN[:4]), ValueError,
     "clean and perturbed must have the same number of samples"),
    ("code_changes-width", lambda: adv.code_changes(SAE, CLEAN[:, :4], CLEAN[:, :4]), ValueError,
     "x: expected 6 features"),
    ("code_changes-tol", lambda: adv.code_changes(SAE, CLEAN, CLEAN, tol=-1), ValueError, "tol: must be >= 0"),
    ("directions-d", lambda: adv.directions(BASIS, d="6"), TypeError, "d: must be an integer"),
    ("latent_class_association-n", lambda: adv.latent_class_association(CODES, Y12[:5]), ValueError,
     r"y: expected integer labels of shape \(12,\)"),
    ("latent_class_association-neg", lambda: adv.latent_class_association(CODES, Y12 - 1), ValueError,
     r"y: labels must lie in \[0"),
    ("latent_class_association-float", lambda: adv.latent_class_association(CODES, Y12 + 0.5), ValueError,
     "y: expected integer class labels"),
    ("latent_class_association-range", lambda: adv.latent_class_association(CODES, Y12, n_classes=2), ValueError,
     r"y: labels must lie in \[0, 2\)"),
    ("latent_class_association-n_classes", lambda: adv.latent_class_association(CODES, Y12, n_classes=0),
     ValueError, "n_classes: must be >= 1"),
    ("latent_class_association-str", lambda: adv.latent_class_association(CODES, "abc"), ValueError, f"y: {ARRAY}"),
    ("most_changed_latents-y", lambda: adv.most_changed_latents(SAE, CLEAN, CLEAN, Y12[:3]), ValueError,
     r"y: expected integer labels of shape \(12,\)"),
    ("most_changed_latents-y_adv", lambda: adv.most_changed_latents(SAE, CLEAN, CLEAN, Y12, y_adv=Y12 + 0.5),
     ValueError, "y_adv: expected integer class labels"),
    ("most_changed_latents-top", lambda: adv.most_changed_latents(SAE, CLEAN, CLEAN, Y12, top=0), ValueError,
     "top: must be >= 1"),
    ("most_changed_latents-assoc", lambda: adv.most_changed_latents(SAE, CLEAN, CLEAN, Y12, assoc="table"),
     ValueError, "assoc: expected latent_class_association's table"),
    ("neuron_basis", lambda: adv.neuron_basis(0), ValueError, "d: must be >= 1"),
    ("neuron_basis-str", lambda: adv.neuron_basis("3"), TypeError, "d: must be an integer"),
    ("omp-k", lambda: adv.omp(DELTA, BASIS, 0), ValueError, "k: must be >= 1"),
    ("omp-width", lambda: adv.omp(DELTA[:, :5], BASIS, 2), ValueError, "D: atoms have dimension 6"),
    ("pca_basis-one-row", lambda: adv.pca_basis(CLEAN[:1]), ValueError, "acts: needs at least 2 samples"),
    ("random_dictionary", lambda: adv.random_dictionary(0, 4), ValueError, "m: must be >= 1"),
    ("random_dictionary-d", lambda: adv.random_dictionary(4, 2.0), TypeError, "d: must be an integer"),
    ("random_dictionary-seed", lambda: adv.random_dictionary(4, 2, seed="1"), TypeError, "seed: must be an integer"),
    ("random_orthonormal", lambda: adv.random_orthonormal(-2), ValueError, "d: must be >= 1"),
    ("random_orthonormal-seed", lambda: adv.random_orthonormal(3, seed=0.5), TypeError, "seed: must be an integer"),
    ("matched_random-shape", lambda: adv.matched_random(XA, X2[:, :8], bounds=BOX), ValueError,
     r"x_adv: expected the shape of x \(10, 16\)"),
    ("matched_random-nan", lambda: adv.matched_random(_nan(XA), X2, bounds=BOX), ValueError, "x: contains 1 NaN"),
    ("matched_random-complex", lambda: adv.matched_random(XA, X2 + 0j, bounds=BOX), TypeError, "x_adv: complex"),
    ("matched_random-none", lambda: adv.matched_random(XA, None, bounds=BOX), ValueError, f"x_adv: {ARRAY}"),
    ("matched_random-ndim1", lambda: adv.matched_random(XA[0], X2[0], bounds=BOX), ValueError, "x: expected a batch"),
    ("matched_random-seed", lambda: adv.matched_random(XA, X2, bounds=BOX, seed="1"), TypeError, "seed: must be"),
    ("matched_random-iters", lambda: adv.matched_random(XA, X2, bounds=BOX, iters=-1), ValueError, "iters: must be"),
    ("matched_random-bounds", lambda: adv.matched_random(XA, X2, bounds=(1, 0)), ValueError, "bounds: need finite"),
    ("gaussian_noise-shape", lambda: adv.gaussian_noise(XA, X2[:3], bounds=BOX), ValueError, "x_adv: expected the"),
    ("gaussian_noise-inf", lambda: adv.gaussian_noise(XA, _inf(X2), bounds=BOX), ValueError, "x_adv: contains 1"),
    ("gaussian_noise-str", lambda: adv.gaussian_noise("x", X2, bounds=BOX), ValueError, f"x: {ARRAY}"),
    ("gaussian_noise-seed", lambda: adv.gaussian_noise(XA, X2, bounds=BOX, seed=None), TypeError, "seed: must be"),
]
CASES += PARAMETERS


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_named_error(call, exc, fragment):
    assert_named_error(call, exc, fragment)


def test_every_public_function_is_in_the_table():
    covered = {c[0].split("-")[0] for c in CASES} | {k.split("_")[0] for k in MATRIX_ARGS} | set(MATRIX_ARGS)
    public = {n for n in adv.__all__ if callable(getattr(adv, n))} - {"LBFGSResult", "CodeChanges"}
    assert public - covered == set()


# --- what must work --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pgd", "fgsm", "deepfool", "lbfgs"])
def test_bool_int_float64_inputs_work_with_a_float32_model(name):
    call = ATTACKS[name]
    ref = call(MODEL, XA.round(), YA)
    for x in (XA.round().double().numpy(), XA.round().long(), XA.round() > 0, XA.round().to(torch.uint8)):
        x_adv = call(MODEL, x, YA.numpy())
        assert x_adv.dtype == torch.float32 and x_adv.shape == XA.shape
        assert torch.equal(x_adv, ref)
    assert adv.robust_accuracy(MODEL, XA.double(), YA.double(), adv.make_attack(name, bounds=BOX)) >= 0


def test_numpy_integers_accepted_for_int_parameters():
    i = np.int64
    assert torch.equal(adv.pgd(MODEL, XA, YA, steps=i(2), restarts=np.int32(2), seed=i(1), bounds=BOX),
                       adv.pgd(MODEL, XA, YA, steps=2, restarts=2, seed=1, bounds=BOX))
    assert torch.equal(adv.deepfool(MODEL, XA, YA, max_iter=i(2), bounds=BOX),
                       adv.deepfool(MODEL, XA, YA, max_iter=2, bounds=BOX))
    adv.lbfgs_search(MODEL, XA[:2], YA[:2], bounds=BOX, search_steps=i(1), maxiter=i(2), seed=i(0))
    assert adv.canonical_norm(i(2)) == "2" and adv.canonical_norm(np.float64(np.inf)) == "inf"
    assert torch.equal(adv.neuron_basis(i(3)), torch.eye(3, dtype=torch.float64))
    assert torch.equal(adv.random_dictionary(i(5), np.int32(4), seed=i(1)), adv.random_dictionary(5, 4, seed=1))
    assert torch.equal(adv.random_orthonormal(np.uint8(3), seed=i(2)), adv.random_orthonormal(3, seed=2))
    t = adv.project(DELTA, BASIS, k=np.array([1, 2]))
    assert list(t.columns[:4]) == ["sample", "norm", "frac_top1", "frac_top2"]
    assert adv.omp(torch.as_tensor(DELTA), BASIS, i(2))[0].shape == (12, 2)
    assoc = adv.latent_class_association(CODES, Y12.astype(np.int32), n_classes=i(3))
    assert len(adv.most_changed_latents(SAE, CLEAN, CLEAN + 0.1, Y12, assoc=None, top=i(2))) == 4
    assert len(assoc) == 5
    assert adv.make_generator(i(3), "cpu").initial_seed() == 3
    out = adv.matched_random(XA, X2, bounds=BOX, seed=i(1), iters=i(2))
    assert out.dtype == torch.float32
    assert adv.gaussian_noise(XA.numpy(), X2.double(), bounds=BOX, seed=i(0)).dtype == torch.float32


def test_validating_helpers_keep_the_autograd_graph():
    x = XA.clone().requires_grad_(True)
    y = adv.clip_to_box(adv.project_ball(adv.steepest_step(x, 0.1, "2"), 0.05, "l2"), BOX)
    y.sum().backward()
    assert x.grad is not None
