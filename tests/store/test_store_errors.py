"""Every public function of univ.store refuses bad input with ValueError/TypeError naming the argument."""


import numpy as np
import pytest
import torch
from named_errors import assert_named_error
from torch import nn

import univ
from univ.store import ActivationStore, capture_to_store, write_store

torch.manual_seed(0)
MODEL = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
X = torch.randn(40, 4)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return capture_to_store(MODEL, X, ["0", "2"], shard_rows=16, root=tmp_path_factory.mktemp("s"), progress=False)


def cap(**kw):
    args = dict(model=MODEL, inputs=X, names=["0"], shard_rows=16, root="/nonexistent-never-written", progress=False)
    args.update(kw)
    return lambda s: capture_to_store(**args)


def ws(batches=None, **kw):
    args = dict(key="k", n_rows=40, shard_rows=16)
    args.update(kw)
    good = [{"a": np.ones((16, 2))}, {"a": np.ones((16, 2))}, {"a": np.ones((8, 2))}]
    return lambda s, tmp: write_store(args.pop("path", tmp / "w"),
                                      batches_by_shard=good if batches is None else batches, **args)


CAPTURE = [  # (id, call, exception, message)
    ("model", cap(model="mlp"), TypeError, "model: expected a torch nn.Module"),
    ("inputs", cap(inputs=None), ValueError, "inputs: expected a numpy array or torch tensor"),
    ("inputs-empty", cap(inputs=X[:0]), ValueError, "inputs: need at least one sample"),
    ("names-unknown", cap(names=["0", "fc9"]), ValueError, r"unknown hook name 'fc9'.*\['0', '1', '2'\]"),
    ("names-empty", cap(names=[]), ValueError, "names: empty list"),
    ("names-none", cap(names=None), ValueError, "names: required for models without a `layers`"),
    ("reduce", cap(reduce="max"), ValueError, "reduce: unknown value 'max'"),
    ("shard_rows", cap(shard_rows=0), ValueError, "shard_rows: must be >= 1"),
    ("batch_size", cap(batch_size=2.5), TypeError, "batch_size: must be an integer"),
    ("dtype", cap(dtype=torch.int32), ValueError, "dtype: expected a floating torch dtype"),
    ("root", cap(root=5), TypeError, "root: expected a folder path"),
    ("device", cap(device="nowhere"), ValueError, "device: unknown device 'nowhere'"),
    ("progress", cap(progress="yes"), TypeError, "progress: expected True or False"),
]
WRITE = [
    ("path", ws(path=5), TypeError, "path: expected a folder path"),
    ("key", ws(key=""), ValueError, "key: expected a non-empty string"),
    ("batches-dict", ws(batches={"a": np.ones((40, 2))}), TypeError, "batches_by_shard: expected an iterable"),
    ("batches-short", ws(batches=[{"a": np.ones((16, 2))}]), ValueError, "batches_by_shard: yielded 1 shards; 3"),
    ("item-type", ws(batches=[np.ones((16, 2))] * 3), TypeError, r"batches_by_shard\[0\]: expected a non-empty dict"),
    ("item-rows", ws(batches=[{"a": np.ones((15, 2))}] * 3), ValueError,
     r"batches_by_shard\[0\]\['a'\]: expected shape \(16, d\)"),
    ("item-width", ws(batches=[{"a": np.ones((16, 2))}, {"a": np.ones((16, 3))}]), ValueError,
     r"batches_by_shard\[1\]\['a'\]: expected shape \(16, 2\)"),
    ("item-names", ws(batches=[{"a": np.ones((16, 2))}, {"b": np.ones((16, 2))}]), ValueError,
     r"batches_by_shard\[1\]: has layers \['b'\], but the store's are \['a'\]"),
    ("item-3d", ws(batches=[{"a": np.ones((16, 2, 2))}] * 3), ValueError,
     r"batches_by_shard\[0\]\['a'\]: expected a floating \(rows, d\) matrix.*reduce="),
    ("item-nan", ws(batches=[{"a": np.full((16, 2), np.nan)}] * 3), ValueError, r"\['a'\]: contains 32 NaN"),
    ("n_rows", ws(n_rows=0), ValueError, "n_rows: must be >= 1"),
    ("shard_rows", ws(shard_rows=True), TypeError, "shard_rows: must be an integer"),
    ("info-json", ws(info={"model": object()}), ValueError, "info: must be JSON-serialisable"),
    ("info", ws(info={"rows": 3}), ValueError, "info: expected a dict of extra fields without the reserved keys"),
]
STORE = [
    ("open-path", lambda s: ActivationStore(s.path.parent / "nothing"), ValueError, "path: no activation store"),
    ("open-type", lambda s: ActivationStore(None), TypeError, "path: expected a folder path"),
    ("open-max_bytes", lambda s: ActivationStore(s.path, max_bytes=0), ValueError, "max_bytes: must be >= 1"),
    ("batches-name", lambda s: s.batches("1"), ValueError, r"name: unknown layer '1'.*\['0', '2'\]"),
    ("batches-name-type", lambda s: s.batches(0), TypeError, "name: layer names are strings"),
    ("batches-size", lambda s: s.batches("0", 0), ValueError, "batch_size: must be >= 1"),
    ("batches-shuffle", lambda s: s.batches("0", shuffle="no"), TypeError, "shuffle: expected True or False"),
    ("batch_source-name", lambda s: s.batch_source("fc"), ValueError, "name: unknown layer 'fc'"),
    ("shard-index", lambda s: s.shard(3), ValueError, "i: must satisfy 0 <= i <= 2"),
    ("shard-names", lambda s: s.shard(0, ["x"]), ValueError, "names: unknown layer 'x'"),
    ("blocks-names", lambda s: s.blocks([]), ValueError, "names: give at least one layer name"),
    ("load-max_bytes", lambda s: s.load("0", max_bytes=100), ValueError,
     r"'0': loading it takes 1.2 KiB \(40 x 8 float32\), more than max_bytes = 100 bytes"),
    ("getitem", lambda s: s["out"], ValueError, "name: unknown layer 'out'"),
    ("compare_stores-store", lambda s: univ.similarity.compare_stores(s, {"0": X}), TypeError,
     "store_b: expected an ActivationStore"),
    ("compare_stores-names", lambda s: univ.similarity.compare_stores(s, s, names_a=["1"]), ValueError,
     "names_a: unknown layer '1'"),
    ("compare_stores-metrics", lambda s: univ.similarity.compare_stores(s, s, metrics=[]), ValueError,
     "metrics: give at least one metric name"),
    ("compare_stores-matching", lambda s: univ.similarity.compare_stores(s, s, names_a="0", names_b="2",
                                                                         pairs="matching"), ValueError,
     "pairs: 'matching' found no layer name in both"),
]


_check = assert_named_error


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in CAPTURE], ids=[c[0] for c in CAPTURE])
def test_capture_to_store_errors(store, call, exc, fragment):
    _check(lambda: call(store), exc, fragment)


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in WRITE], ids=[c[0] for c in WRITE])
def test_write_store_errors(store, tmp_path, call, exc, fragment):
    _check(lambda: call(store, tmp_path), exc, fragment)
    assert not (tmp_path / "w" / "complete.json").exists()


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in STORE], ids=[c[0] for c in STORE])
def test_store_errors(store, call, exc, fragment):
    _check(lambda: call(store), exc, fragment)


def test_a_folder_of_another_store_is_refused(tmp_path):
    write_store(tmp_path / "w", "k", [{"a": np.ones((4, 2))}], n_rows=4, shard_rows=4)
    _check(lambda: write_store(tmp_path / "w", "other", [{"a": np.ones((4, 2))}], n_rows=4, shard_rows=4),
           ValueError, "path: .* holds another activation store")
