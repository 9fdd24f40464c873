"""The on-disk activation store: bounded memory, resumption after kills, damaged shards, streamed similarity and
SAE fitting from its batches."""

import os
import signal
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import univ
import univ.store as S
from univ.integrity import MANIFEST, CacheWarning
from univ.store import ActivationStore, capture_to_store, write_store

N, SHARD = 1000, 64
NAMES = ["0", "2"]  # widths 16 and 5


def make_model(out=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, out))


def make_inputs():
    return torch.randn(N, 24, generator=torch.Generator().manual_seed(1)) + 3.0


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def x():
    return make_inputs()


@pytest.fixture(scope="module")
def ref(model, x):
    return univ.capture(model, x, NAMES)


def store_of(model, x, root, **kw):
    return capture_to_store(model, x, NAMES, shard_rows=SHARD, batch_size=50, root=root, progress=False, **kw)


@pytest.fixture
def count_captures(monkeypatch):
    """Counts capture_shard calls (one per computed shard); ``die_at``: raise inside the call with that index."""
    calls = {"n": 0, "die_at": None}
    real = S.capture_shard

    def counted(*a, **kw):
        calls["n"] += 1
        if calls["n"] == calls["die_at"]:
            raise KeyboardInterrupt("killed inside the per-shard capture")
        return real(*a, **kw)

    monkeypatch.setattr(S, "capture_shard", counted)
    return calls


# --- memory bound --------------------------------------------------------------------------------------


def test_a_store_larger_than_its_bound_is_written_and_read_one_shard_at_a_time(model, x, ref, tmp_path, monkeypatch):
    live = []  # weak references to every shard in memory, written or read

    def alive():
        return [r for r in live if r() is not None]

    real_capture, real_load = S.capture_shard, S._load_shard

    def capture_one(*a, **kw):
        assert alive() == []  # the previous shard was released before this one is produced
        out = real_capture(*a, **kw)
        live.extend(weakref.ref(t) for t in out.values())
        return out

    def load_one(*a, **kw):
        assert alive() == []
        out = real_load(*a, **kw)
        live.extend(weakref.ref(t) for t in out.values())
        return out

    monkeypatch.setattr(S, "capture_shard", capture_one)
    monkeypatch.setattr(S, "_load_shard", load_one)
    store = store_of(model, x, tmp_path)
    bound = SHARD * sum(store.dims.values()) * 4  # the documented bound, bytes
    assert store.n_shards == 16 == -(-N // SHARD) and len(store) == N
    assert store.nbytes("0") + store.nbytes("2") > 10 * bound
    assert sorted(p.name for p in store.path.iterdir()) == \
        ["complete.json", "meta.json"] + [f"shard-{i:05d}" for i in range(16)]
    live.clear()
    seen = 0
    for b in store.batches("0", 50):  # 50 does not divide 64: batches straddle shards
        assert b.untyped_storage().nbytes() == b.numel() * 4  # a copy: it does not pin its shard
        assert torch.equal(b, ref["0"][seen:seen + len(b)])
        seen += len(b)
    assert seen == N
    live.clear()
    i = 0
    for block in store.blocks():  # (not enumerate: its reused tuple would keep the last block alive)
        assert torch.equal(block["2"], ref["2"][i * SHARD:(i + 1) * SHARD])
        del block
        i += 1
    live.clear()
    assert torch.equal(store["0"], ref["0"]) and torch.equal(store["2"], ref["2"])
    with pytest.raises(ValueError, match=r"'0': loading it takes 62.5 KiB \(1000 x 16 float32\), more than "
                                         r"max_bytes = 5.2 KiB"):
        ActivationStore(store.path, max_bytes=bound)["0"]


def test_meta_and_marker(model, x, tmp_path):
    store = store_of(model, x, tmp_path)
    meta = store.meta
    assert {k: meta[k] for k in ("rows", "shard_rows", "n_shards", "dtype", "names", "widths")} == \
        {"rows": N, "shard_rows": SHARD, "n_shards": 16, "dtype": "float32", "names": NAMES,
         "widths": {"0": 16, "2": 5}}
    assert store.path.name == store.key == meta["key"] and meta["inputs"] == univ.utils.tensor_hash(x, length=20)
    assert store_of(model, x, tmp_path).path == store.path  # the same call finds the same store
    assert store_of(make_model(out=7), x, tmp_path).path != store.path  # other weights, other key
    assert capture_to_store(model, x, NAMES, shard_rows=100, root=tmp_path, progress=False).path != store.path


def test_shuffled_batches_visit_every_row_once_in_a_fixed_order(model, x, ref, tmp_path):
    store = store_of(model, x, tmp_path)
    a = torch.cat(list(store.batches("2", 30, shuffle=True, seed=4)))
    assert torch.equal(a, torch.cat(list(store.batches("2", 30, shuffle=True, seed=4))))
    assert not torch.equal(a, ref["2"])
    assert torch.equal(a[torch.argsort(a[:, 0])], ref["2"][torch.argsort(ref["2"][:, 0])])


# --- kills and damage ----------------------------------------------------------------------------------


def test_interrupt_inside_capture_then_rerun_recomputes_only_unfinished_shards(model, x, ref, tmp_path,
                                                                                count_captures):
    count_captures["die_at"] = 6  # shards 0-4 are written, the sixth capture is interrupted
    with pytest.raises(KeyboardInterrupt):
        store_of(model, x, tmp_path)
    (path,) = tmp_path.iterdir()
    assert sorted(p.name for p in path.glob("shard-*")) == [f"shard-{i:05d}" for i in range(5)]
    assert not (path / "complete.json").exists()
    with pytest.raises(ValueError, match=r"is incomplete \(5 of 16 shards written\); rerun capture_to_store"):
        ActivationStore(path)
    count_captures.update(n=0, die_at=None)
    store = store_of(model, x, tmp_path)
    assert count_captures["n"] == 11
    assert torch.equal(store["0"], ref["0"]) and torch.equal(store["2"], ref["2"])
    count_captures["n"] = 0
    store_of(model, x, tmp_path)  # complete: verified, nothing recomputed
    assert count_captures["n"] == 0


KILL_AT_SHARD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    import test_store as T
    import univ.store as S
    real_save, writes = S.save_file, []

    def save_then_die(tensors, filename):  # the fourth shard's file is written, its entry never finished
        real_save(tensors, filename)
        writes.append(filename)
        if len(writes) == 4:
            os.kill(os.getpid(), signal.SIGKILL)

    S.save_file = save_then_die
    T.store_of(T.make_model(), T.make_inputs(), sys.argv[1])
""")


def test_sigkill_mid_capture_then_rerun_recomputes_only_unfinished_shards(model, x, ref, tmp_path, count_captures):
    proc = subprocess.run([sys.executable, "-c", KILL_AT_SHARD, str(tmp_path), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (path,) = tmp_path.iterdir()
    assert sorted(p.name for p in path.glob("shard-*")) == [f"shard-{i:05d}" for i in range(3)]
    assert list(path.glob(".shard-00003.partial-*"))  # the killed writer's temporary folder
    store = store_of(model, x, tmp_path)
    assert count_captures["n"] == 13
    assert not list(path.glob(".*partial*"))
    assert torch.equal(store["0"], ref["0"]) and torch.equal(store["2"], ref["2"])


def _damage(folder, how):
    f = folder / S.SHARD_FILE
    if how == "truncate":
        f.write_bytes(f.read_bytes()[:100])
    elif how == "random_bytes":
        f.write_bytes(os.urandom(f.stat().st_size))
    elif how == "zero":
        save_file({k: 0 * v for k, v in load_file(str(f)).items()}, str(f))
    elif how == "remove":
        f.unlink()
    elif how == "remove_manifest":
        (folder / MANIFEST).unlink()


@pytest.mark.parametrize("how", ["truncate", "random_bytes", "zero", "remove", "remove_manifest"])
def test_damaged_shard_is_announced_and_recomputed(model, x, ref, tmp_path, count_captures, how):
    store = store_of(model, x, tmp_path)
    folder = store.path / "shard-00007"
    _damage(folder, how)
    count_captures["n"] = 0
    with pytest.warns(CacheWarning, match=str(folder)):
        store = store_of(model, x, tmp_path)
    assert count_captures["n"] == 1
    assert torch.equal(store["0"], ref["0"]) and torch.equal(store["2"], ref["2"])


def test_a_damaged_meta_file_is_announced_and_rewritten_without_recomputing(model, x, ref, tmp_path,
                                                                          count_captures):
    store = store_of(model, x, tmp_path)
    (store.path / "meta.json").write_text('{"key": ')
    with pytest.raises(ValueError, match="no activation store"):
        ActivationStore(store.path)
    count_captures["n"] = 0
    with pytest.warns(CacheWarning, match=str(store.path / "meta.json")):
        again = store_of(model, x, tmp_path)
    assert count_captures["n"] == 0 and again.meta == store.meta
    assert torch.equal(again["0"], ref["0"])


def test_a_reader_announces_a_damaged_shard_and_the_store_becomes_incomplete(model, x, ref, tmp_path,
                                                                               count_captures):
    store = store_of(model, x, tmp_path)
    folder = store.path / "shard-00002"
    _damage(folder, "zero")
    with pytest.warns(CacheWarning, match=str(folder)), \
            pytest.raises(ValueError, match=r"shard 2 .* rerun capture_to_store"):
        sum(float(b.sum()) for b in store.batches("2", 100))
    with pytest.raises(ValueError, match=r"incomplete \(15 of 16 shards written\)"):
        ActivationStore(store.path)
    count_captures["n"] = 0
    assert torch.equal(store_of(model, x, tmp_path)["2"], ref["2"])
    assert count_captures["n"] == 1


# --- consumers -----------------------------------------------------------------------------------------


STREAMED = ["linear_cka", "linear_cka_debiased", "cca", "cca_r2", "svcca", "procrustes"]


def test_streamed_similarity_equals_in_memory(model, x, tmp_path):
    a = store_of(model, x, tmp_path)
    other = make_model(out=9)
    b = capture_to_store(other, x, ["0", "1", "2"], shard_rows=100, batch_size=128, root=tmp_path, progress=False)
    streamed = univ.similarity.compare_stores(a, b, metrics=STREAMED)
    in_memory = univ.similarity.compare({n: a[n] for n in a.names}, {n: b[n] for n in b.names}, metrics=STREAMED)
    assert list(streamed.columns) == list(in_memory.columns) and len(streamed) == 2 * 3 * len(STREAMED)
    assert (streamed[["layer_a", "layer_b", "metric"]] == in_memory[["layer_a", "layer_b", "metric"]]).all().all()
    assert (streamed["value"] - in_memory["value"]).abs().max() <= 1e-10
    matching = univ.similarity.compare_stores(a, b, "cca", names_b=["2", "0"], pairs="matching")
    assert list(zip(matching.layer_a, matching.layer_b)) == [("0", "0"), ("2", "2")]


def test_compare_stores_refuses_what_it_cannot_stream_or_pair(model, x, tmp_path):
    a = store_of(model, x, tmp_path)
    with pytest.raises(ValueError, match=r"metrics: \['rbf_cka', 'pwcca'\] cannot be computed from streamed "
                                         r"statistics.*streamable metrics: \['linear_cka', 'linear_cka_debiased'"):
        univ.similarity.compare_stores(a, a, metrics=["linear_cka", "rbf_cka", "pwcca"])
    with pytest.raises(ValueError, match="unknown metric 'cka'"):
        univ.similarity.compare_stores(a, a, metrics=["cka"])
    b = store_of(model, x[:500], tmp_path)
    with pytest.raises(ValueError, match="same rows .* got 1000 and 500 rows"):
        univ.similarity.compare_stores(a, b)
    c = store_of(model, x.flip(0), tmp_path)
    with pytest.raises(ValueError, match="captured on different inputs"):
        univ.similarity.compare_stores(a, c)
    with pytest.raises(ValueError, match=r"names_b: unknown layer '1'.*\['0', '2'\]"):
        univ.similarity.compare_stores(a, a, names_b=["1"])
    with pytest.raises(ValueError, match="pairs: unknown value"):
        univ.similarity.compare_stores(a, a, pairs="diagonal")


def test_an_sae_fits_from_the_store_and_sees_every_row_once_per_pass(tmp_path):
    n, d = 300, 8
    ids = torch.arange(n, dtype=torch.float32)[:, None]
    data = torch.cat([ids, torch.randn(n, d - 1, generator=torch.Generator().manual_seed(0))], 1)
    store = write_store(tmp_path / "s", "synthetic", [{"a": data[i:i + 64]} for i in range(0, n, 64)],
                        n_rows=n, shard_rows=64)
    sae = univ.sae.TopKSAE(d, 16, k=2)
    seen = []
    real_step = sae.training_step

    def recording_step(xn, *a, **kw):
        seen.append(torch.round(xn[:, 0].detach() / sae.norm_scale).long())
        return real_step(xn, *a, **kw)

    sae.training_step = recording_step
    sae.fit(store.batch_source("a", batch_size=37), batch_size=50, max_steps=12, progress=False)
    assert len(seen) == 12
    for p in range(2):  # 300 rows / 50 = 6 steps per pass
        assert torch.equal(torch.sort(torch.cat(seen[6 * p:6 * p + 6])).values, torch.arange(n))
