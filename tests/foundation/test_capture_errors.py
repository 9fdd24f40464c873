"""Bad input to capture, hook_names, the hook helpers of univ.activations and the model contract (logits,
predict) raises exactly ValueError or TypeError naming the argument; bool/int/float64 inputs are converted
by the one rule (univ.models.as_model_input) and NumPy integers are integers."""

import re
import types

import numpy as np
import pytest
import torch
from named_errors import assert_named_error, with_inf
from named_errors import with_nan as _nan
from torch import nn

import univ
from univ.activations import cache_path, cached_batches, hooks, layer_forward, resolve
from univ.models import logits, predict


def _inf(a):
    return with_inf(a, sign=-1.0)

torch.manual_seed(0)
M = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
X = torch.randn(10, 4)
ROOT = {}


@pytest.fixture(autouse=True, scope="module")
def _root(tmp_path_factory):
    ROOT["path"] = tmp_path_factory.mktemp("capture_errors")


class Out(nn.Module):
    """M with its output wrapped as a dict, a tuple or a HuggingFace-style output object."""

    def __init__(self, wrap):
        super().__init__()
        self.net, self.wrap = M, wrap

    def forward(self, x):
        return self.wrap(self.net(x))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x):
        return self.used(x)




ARRAY = "expected a numpy array or torch tensor"
BAD_X = [  # (id, bad input, exception, message after "NAME: ")
    ("scalar", torch.tensor(1.0), ValueError, "is empty or a scalar"),
    ("empty", X[:0], ValueError, "is empty"),
    ("nan", _nan(X), ValueError, r"contains 1 NaN/Inf value\(s\) \(first at index \(3, 1\)\)"),
    ("inf", _inf(X), ValueError, r"contains 1 NaN/Inf value\(s\) \(first at index \(2, 0\)\)"),
    ("complex", X.numpy() + 1j, TypeError, "complex values are not supported"),
    ("torch_complex", X.to(torch.complex64), TypeError, "complex values are not supported"),
    ("strings", X.numpy().astype(str), TypeError, "expected numbers"),
    ("object", X.numpy().astype(object), ValueError, "could not convert to a numeric array"),
    ("str", "abc", ValueError, ARRAY),
    ("dict", {"x": X}, ValueError, ARRAY),
    ("none", None, ValueError, ARRAY),
    ("shape", X[:, :3], ValueError, r"the model's forward failed on an input of shape \(\d+, 3\)"),
]
INPUT_ARGS = {  # name -> (call with the bad input, argument name)
    "capture": (lambda x: univ.capture(M, x, ["1"]), "inputs"),
    "activations.capture": (lambda x: univ.activations.capture(M, x, "1", grad=True), "inputs"),
    "cache_path": (lambda x: cache_path(M, x, ["1"]), "inputs"),
    "layer_forward": (lambda x: layer_forward(M, x, "1"), "x"),
    "logits": (lambda x: logits(M, x), "x"),
    "predict": (lambda x: predict(M, x, batch_size=4), "x"),
}
CASES = []
for fname, (fn, arg) in INPUT_ARGS.items():
    for bid, bad, exc, frag in BAD_X:
        if fname == "cache_path" and bid in ("shape", "dict"):  # no forward pass: any shape has a key
            continue
        if bid == "dict" and fname not in ("logits", "predict"):  # a dict batch goes in as keyword arguments
            frag = r"the model's forward failed on a dict batch \{x: \(\d+, 4\) torch.float32\}"
        CASES.append((f"{fname}-{bid}", lambda fn=fn, bad=bad: fn(bad), exc, f"{re.escape(arg)}: {frag}"))

MODEL_CALLS = {
    "capture": lambda m: univ.capture(m, X, ["1"]),
    "hook_names": univ.hook_names,
    "resolve": lambda m: resolve(m, "1"),
    "layer_forward": lambda m: layer_forward(m, X, "1"),
    "cache_path": lambda m: cache_path(m, X, ["1"]),
    "hooks": lambda m: _enter(m, {"1": print}),
    "logits": lambda m: logits(m, X),
    "predict": lambda m: predict(m, X),
}
for fname, fn in MODEL_CALLS.items():
    for bid, m in (("str", "mlp"), ("none", None), ("function", lambda x: x)):
        CASES.append((f"{fname}-model-{bid}", lambda fn=fn, m=m: fn(m), ValueError,
                      "model: expected a torch.nn.Module"))
for fname in ("logits", "predict"):
    for bid, wrap in (("dict", lambda t: {"logits": t}), ("tuple", lambda t: (t, t)),
                      ("hf", lambda t: types.SimpleNamespace(logits=t))):
        CASES.append((f"{fname}-output-{bid}", lambda f=MODEL_CALLS[fname], wrap=wrap: f(Out(wrap)), ValueError,
                      "model: expected its forward to return a logits tensor, got "))


def _enter(model, fns, what="hook name"):
    with hooks(model, fns, what):
        model(X)


def _file(name, data):
    path = ROOT["path"] / name
    path.write_bytes(data)
    return path


def _acts_file():
    return cache_path(M, X, ["1"], folder=ROOT["path"] / "acts")


def _cached():
    univ.capture(M, X, ["1"], cache=ROOT["path"] / "acts")
    return _acts_file()


DEVICES = r"devices here: \['cpu'"
PARAMETERS = [  # (id, call, exception, message fragment)
    ("capture-names-int", lambda: univ.capture(M, X, [3]), TypeError,
     r"names\[0\]: expected a hook name \(a string\), got int 3"),
    ("capture-names-mixed", lambda: univ.capture(M, X, ["1", None]), TypeError, r"names\[1\]: expected a hook name"),
    ("capture-names-type", lambda: univ.capture(M, X, 3), TypeError, "names: expected a hook name or a list"),
    ("capture-names-unknown", lambda: univ.capture(M, X, ["fc1"]), ValueError, "unknown hook name 'fc1'"),
    ("capture-names-empty", lambda: univ.capture(M, X, []), ValueError, "names: empty list of hook names"),
    ("capture-names-default", lambda: univ.capture(M, X), ValueError, "names: required for models without"),
    ("capture-names-unused", lambda: univ.capture(Unused(), X, ["unused"]), ValueError,
     "names: the hook 'unused' did not fire during the forward pass"),
    ("capture-batch_size", lambda: univ.capture(M, X, ["1"], batch_size=0), ValueError, "batch_size: must be >= 1"),
    ("capture-batch_size-float", lambda: univ.capture(M, X, ["1"], batch_size=2.5), TypeError,
     "batch_size: must be an integer"),
    ("capture-batch_size-str", lambda: univ.capture(M, X, ["1"], batch_size="8"), TypeError,
     "batch_size: must be an integer"),
    ("capture-reduce", lambda: univ.capture(M, X, ["1"], reduce="max"), ValueError, "reduce: unknown value 'max'"),
    ("capture-dtype", lambda: univ.capture(M, X, ["1"], dtype=torch.int32), ValueError,
     "dtype: expected a floating torch dtype"),
    ("capture-cuda", lambda: univ.capture(M, X, ["1"], device="cuda"), ValueError, f"device: 'cuda' .*{DEVICES}"),
    ("capture-cuda1", lambda: univ.capture(M, X, ["1"], device="cuda:1"), ValueError, f"device: .*{DEVICES}"),
    ("capture-device", lambda: univ.capture(M, X, ["1"], device="gpu"), ValueError,
     f"device: unknown device 'gpu'; {DEVICES}"),
    ("capture-cache", lambda: univ.capture(M, X, ["1"], cache=5), TypeError, "cache: expected a str or os.PathLike"),
    ("hook_names-model", lambda: univ.hook_names({"fc": M}), ValueError, "model: expected a torch.nn.Module"),
    ("resolve-name", lambda: resolve(M, 3), TypeError, "hook name: expected a string, got int 3"),
    ("resolve-unknown", lambda: resolve(M, "blocks.0"), ValueError, "unknown hook name 'blocks.0'"),
    ("resolve-what", lambda: resolve(M, "fc9", what="layer"), ValueError, "unknown layer 'fc9'"),
    ("hooks-fns", lambda: _enter(M, ["1"]), ValueError, "fns: expected a mapping"),
    ("hooks-fn", lambda: _enter(M, {"1": 5}), TypeError, r"fns\['1'\]: expected a callable"),
    ("hooks-name", lambda: _enter(M, {"9": print}), ValueError, "unknown hook name '9'"),
    ("hooks-name-type", lambda: _enter(M, {1: print}), TypeError, "hook name: expected a string"),
    ("layer_forward-layer", lambda: layer_forward(M, X, 1), TypeError, "hook name: expected a string"),
    ("layer_forward-unknown", lambda: layer_forward(M, X, "fc1"), ValueError, "unknown hook name 'fc1'"),
    ("layer_forward-reduce", lambda: layer_forward(M, X, "1", reduce="sum"), ValueError, "reduce: unknown value"),
    ("layer_forward-unused", lambda: layer_forward(Unused(), X, "unused"), ValueError,
     "layer: the hook 'unused' did not fire"),
    ("cache_path-reduce", lambda: cache_path(M, X, ["1"], reduce="max"), ValueError, "reduce: unknown value"),
    ("cache_path-folder", lambda: cache_path(M, X, ["1"], folder=3), TypeError, "folder: expected a str"),
    ("cache_path-names", lambda: cache_path(M, X, [0]), TypeError, r"names\[0\]: expected a hook name"),
    ("cache_path-dtype", lambda: cache_path(M, X, ["1"], dtype="float32"), ValueError, "dtype: expected a floating"),
    ("cached_batches-path", lambda: cached_batches(None, "1"), TypeError, "path: expected a str or os.PathLike"),
    ("cached_batches-missing", lambda: cached_batches(ROOT["path"] / "none.safetensors", "1"), ValueError,
     "path: no activation cache file at"),
    ("cached_batches-random", lambda: cached_batches(_file("r.safetensors", bytes(range(256)) * 3), "1"), ValueError,
     r"path: '.*r.safetensors' is not a readable safetensors file"),
    ("cached_batches-truncated", lambda: cached_batches(_file("t.safetensors", _cached().read_bytes()[:60]), "1"),
     ValueError, r"path: '.*t.safetensors' is not a readable safetensors file"),
    ("cached_batches-empty", lambda: cached_batches(_file("e.safetensors", b""), "1"), ValueError,
     "is not a readable safetensors file"),
    ("cached_batches-name", lambda: cached_batches(_cached(), "2"), ValueError, "unknown cached activation '2'"),
    ("cached_batches-name-type", lambda: cached_batches(_cached(), 1), TypeError, "name: expected a string"),
    ("cached_batches-batch_size", lambda: cached_batches(_cached(), "1", batch_size=0), ValueError,
     "batch_size: must be >= 1"),
    ("logits-batch_size", lambda: logits(M, X, batch_size=0), ValueError, "batch_size: must be >= 1"),
    ("predict-batch_size", lambda: predict(M, X, batch_size=1.5), TypeError, "batch_size: must be an integer"),
]
CASES += PARAMETERS


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_named_error(call, exc, fragment):
    assert_named_error(call, exc, fragment)


def test_every_public_function_is_in_the_table():
    public = {"capture", "hook_names", "layer_forward", "cache_path", "cached_batches", "hooks", "resolve",
              "logits", "predict"}
    covered = {c[0].split("-")[0] for c in CASES}
    assert public - covered == set()
    assert all(callable(getattr(univ.activations, n, None) or getattr(univ.models, n)) for n in public)


# --- what must work --------------------------------------------------------------------------------------


def test_bool_int_float64_inputs_are_cast_for_a_float_model():
    xi = X.round().long()
    for x, ref in ((xi, xi.float()), (xi.numpy().astype(np.int16), xi.float()), (X > 0, (X > 0).float()),
                   (X.double().numpy(), X), (X.to(torch.uint8), X.to(torch.uint8).float())):
        assert torch.equal(univ.capture(M, x, ["1"])["1"], univ.capture(M, ref, ["1"])["1"])
        assert torch.equal(logits(M, x), logits(M, ref))
        assert torch.equal(predict(M, x), predict(M, ref))
        assert torch.equal(layer_forward(M, x, "1")[1], layer_forward(M, ref, "1")[1])
        assert cache_path(M, x, ["1"]) == cache_path(M, ref, ["1"])


def test_integer_tokens_stay_integers_for_a_model_with_an_embedding():
    torch.manual_seed(0)
    emb = nn.Sequential(nn.Embedding(5, 4), nn.Flatten(), nn.Linear(8, 2))
    tokens = torch.randint(0, 5, (6, 2))
    assert logits(emb, tokens).shape == (6, 2)
    assert univ.capture(emb, tokens.numpy(), ["0"], reduce="flatten")["0"].shape == (6, 8)
    assert univ.models.as_model_input(emb, tokens).dtype == torch.long
    assert univ.models.as_model_input(M, tokens).dtype == torch.float32
    assert univ.models.as_model_input(nn.ReLU(), X.double()).dtype == torch.float64  # no parameters: kept


def test_numpy_integers_and_models_returning_dicts():
    ref = univ.capture(M, X, ["1"])["1"]
    assert torch.equal(univ.capture(M, X, ["1"], batch_size=np.int64(4))["1"], univ.capture(M, X, ["1"], 4)["1"])
    assert torch.equal(logits(M, X, batch_size=np.int32(3)), logits(M, X, batch_size=3))
    assert torch.equal(univ.capture(Out(lambda t: {"logits": t}), X, ["net.1"])["net.1"], ref)
    path = cache_path(M, X, ["1"], folder=ROOT["path"] / "np")
    univ.capture(M, X, ["1"], cache=ROOT["path"] / "np")
    assert torch.equal(torch.cat(list(cached_batches(path, "1", batch_size=np.int64(3))())), ref)


def test_out_of_memory_is_not_called_bad_input():
    class Oom(nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        logits(Oom(), X)


def test_missing_cuda_is_one_line_naming_the_devices():
    with pytest.raises(ValueError) as info:
        univ.capture(M, X, ["1"], device="cuda")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("device: 'cuda'") and str(univ.utils.available_devices()) in msg
