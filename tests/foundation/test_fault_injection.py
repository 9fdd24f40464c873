"""Fault injection: kills during training, capture, SAE fitting and report writing, and damage to every kind of
cache entry (models, SAEs, activations). After each, a rerun completes with output equal to an undisturbed
run, and every recomputation is announced with the path of the entry."""

import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import univ
from univ.cache import cached_model, cached_sae
from univ.integrity import MANIFEST, CacheWarning
from univ.train import TrainConfig

TC = TrainConfig(epochs=2, batch_size=64, seed=0)
MODEL_CFG = {"widths": [16]}


@pytest.fixture(scope="module")
def data():
    return univ.data.digits().subset(n_train=300, n_test=100)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An undisturbed run: the model's test logits and metrics, its SAE's codes and its captured activations."""
    root = tmp_path_factory.mktemp("reference")
    model, metrics = cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root / "models",
                                  progress=False)
    acts = univ.capture(model, data.x_test, ["act1", "out"], cache=root / "acts")
    sae = cached_sae("topk", acts["act1"], root=root / "saes", d_sae=32, k=4, fit_max_steps=60, fit_progress=False)
    return {"logits": univ.models.logits(model, data.x_test), "metrics": metrics, "acts": acts,
            "codes": sae.encode(acts["act1"])}


def _entry(root):
    (folder,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    return folder


def _damage(folder, file, how):
    f = folder / file
    if how == "truncate":
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    elif how == "random_bytes":
        f.write_bytes(os.urandom(f.stat().st_size))
    elif how in ("zero", "halve"):
        t = load_file(str(f))
        save_file({k: v * (0.0 if how == "zero" else 0.5) for k, v in t.items()}, str(f))
    elif how == "remove":
        f.unlink()
    elif how == "remove_manifest":
        (folder / MANIFEST).unlink()


DAMAGES = ["truncate", "random_bytes", "zero", "halve", "remove", "remove_manifest"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_model_entry_is_announced_and_retrained_to_the_same_model(data, reference, tmp_path, how):
    root = tmp_path / "models"
    cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root, progress=False)
    folder = _entry(root)
    _damage(folder, "model.safetensors", how)
    with pytest.warns(CacheWarning, match=str(folder)):
        model, metrics = cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root,
                                      progress=False)
    assert torch.equal(univ.models.logits(model, data.x_test), reference["logits"])
    assert {k: v for k, v in metrics.items() if k != "seconds"} == \
        {k: v for k, v in reference["metrics"].items() if k != "seconds"}
    model2, _ = cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root, progress=False)
    assert torch.equal(univ.models.logits(model2, data.x_test), reference["logits"])  # the rewritten entry loads


@pytest.mark.parametrize("file", ["config.json", "key.json"])
def test_model_entry_with_a_missing_or_truncated_json_is_recomputed(data, reference, tmp_path, file):
    root = tmp_path / "models"
    cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root, progress=False)
    folder = _entry(root)
    (folder / file).write_text((folder / file).read_text()[:20])
    with pytest.warns(CacheWarning, match=str(folder)):
        model, _ = cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root, progress=False)
    assert torch.equal(univ.models.logits(model, data.x_test), reference["logits"])


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_sae_entry_is_announced_and_refitted(reference, tmp_path, how):
    root = tmp_path / "saes"
    kw = dict(root=root, d_sae=32, k=4, fit_max_steps=60, fit_progress=False)
    cached_sae("topk", reference["acts"]["act1"], **kw)
    folder = _entry(root)
    _damage(folder, "sae_weights.safetensors", how)
    with pytest.warns(CacheWarning, match=str(folder)):
        sae = cached_sae("topk", reference["acts"]["act1"], **kw)
    assert torch.equal(sae.encode(reference["acts"]["act1"]), reference["codes"])


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_activation_entry_is_announced_and_recaptured(data, reference, tmp_path, how):
    model, _ = cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=tmp_path / "m",
                            progress=False)
    univ.capture(model, data.x_test, ["act1", "out"], cache=tmp_path / "acts")
    folder = _entry(tmp_path / "acts")
    _damage(folder, "acts.safetensors", how)
    with pytest.warns(CacheWarning, match=str(folder)):
        acts = univ.capture(model, data.x_test, ["act1", "out"], cache=tmp_path / "acts")
    assert list(acts) == ["act1", "out"]
    assert all(torch.equal(acts[k], reference["acts"][k]) for k in acts)


KILL_DURING_SAVE = textwrap.dedent("""
    import os, signal, sys
    import univ, univ.train
    from univ.cache import cached_model
    from univ.train import TrainConfig

    real = univ.train.save_model
    def save_then_die(model, path, metrics=None):  # the weights are on disk, config.json is not
        univ.train.write_file(path / "model.safetensors", lambda f: univ.train._save_weights(model, str(f)))
        os.kill(os.getpid(), signal.SIGKILL)
    univ.cache.save_model = save_then_die
    data = univ.data.digits().subset(n_train=300, n_test=100)
    cached_model("mlp", data, seed=0, train_cfg=TrainConfig(epochs=2, batch_size=64, seed=0),
                 model_cfg={"widths": [16]}, root=sys.argv[1], progress=False)
""")


def test_sigkill_while_a_model_entry_is_written_leaves_nothing_that_looks_finished(data, reference, tmp_path):
    root = tmp_path / "models"
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(root)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert all(p.name.startswith(".") for p in root.iterdir())  # only the unfinished temporary folder
    model, _ = cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root, progress=False)
    assert torch.equal(univ.models.logits(model, data.x_test), reference["logits"])


def test_kill_during_training_leaves_no_entry_and_the_rerun_matches(data, reference, tmp_path, monkeypatch):
    root = tmp_path / "models"
    real_train = univ.cache.train

    def train_then_die(model, data, cfg, **kw):
        def die(step, m):
            if step == 3:
                raise KeyboardInterrupt
        return real_train(model, data, cfg, callback=die, **kw)

    monkeypatch.setattr(univ.cache, "train", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root, progress=False)
    monkeypatch.setattr(univ.cache, "train", real_train)
    assert not root.exists() or not list(root.iterdir())
    model, _ = cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=root, progress=False)
    assert torch.equal(univ.models.logits(model, data.x_test), reference["logits"])


def test_kill_while_capture_writes_leaves_no_entry(data, reference, tmp_path, monkeypatch):
    import univ.activations as A

    model, _ = cached_model("mlp", data, seed=0, train_cfg=TC, model_cfg=MODEL_CFG, root=tmp_path / "m",
                            progress=False)

    def half_then_die(tensors, path):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(A, "save_file", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        univ.capture(model, data.x_test, ["act1", "out"], cache=tmp_path / "acts")
    monkeypatch.undo()
    assert not list((tmp_path / "acts").iterdir())
    acts = univ.capture(model, data.x_test, ["act1", "out"], cache=tmp_path / "acts")
    assert all(torch.equal(acts[k], reference["acts"][k]) for k in acts)


def test_kill_during_sae_fit_resumes_from_its_checkpoint_to_the_same_sae(reference, tmp_path):
    x = reference["acts"]["act1"]
    kw = dict(max_steps=60, eval_every=10, progress=False, patience=None, batch_size=32, checkpoint_every=10)
    whole = univ.sae.TopKSAE(x.shape[1], 32, k=4).fit(x, **kw)

    def die(step, sae, rec):
        if step == 30:
            raise KeyboardInterrupt

    ckpt = tmp_path / "fit.ckpt"
    with pytest.raises(KeyboardInterrupt):
        univ.sae.TopKSAE(x.shape[1], 32, k=4).fit(x, checkpoint=ckpt, callback=die, **kw)
    resumed = univ.sae.TopKSAE(x.shape[1], 32, k=4).fit(x, checkpoint=ckpt, resume=True, **kw)
    assert resumed.n_steps_ == whole.n_steps_ == 60
    assert torch.equal(resumed.encode(x), whole.encode(x))


def test_kill_while_the_report_is_written_keeps_the_previous_run_folder(tmp_path, monkeypatch):
    r = univ.report.Report("toy")
    r.add_table("t", pd.DataFrame({"a": [1, 2]}))
    folder = univ.report.write(r, tmp_path / "toy-1", config={"k": 1})
    r2 = univ.report.Report("toy")
    r2.add_table("t", pd.DataFrame({"a": [3]}))
    r2.add_table("u", pd.DataFrame({"b": [4]}))
    real = pd.DataFrame.to_csv

    def die_on_second_table(self, path, *a, **k):
        if str(path).endswith("u.csv"):
            raise KeyboardInterrupt
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_csv", die_on_second_table)
    with pytest.raises(KeyboardInterrupt):
        univ.report.write(r2, folder, config={"k": 1})
    monkeypatch.undo()
    assert pd.read_csv(folder / "t.csv")["a"].tolist() == [1, 2] and not (folder / "u.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["toy-1"]
    univ.report.write(r2, folder, config={"k": 1})
    assert pd.read_csv(folder / "t.csv")["a"].tolist() == [3] and (folder / "u.csv").exists()


def test_unwritable_output_at_the_end_keeps_every_table_in_a_named_fallback(tmp_path, monkeypatch):
    import re

    r = univ.report.Report("toy")
    r.add_table("t", pd.DataFrame({"a": [1, 2]}))
    real = pd.DataFrame.to_csv
    out = tmp_path / "runs"

    def disk_full_in_out(self, path, *a, **k):
        if str(path).startswith(str(out)):
            raise OSError(28, "No space left on device")
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full_in_out)
    with pytest.raises(ValueError, match="out: cannot write to .*No space left on device.*written to") as e:
        univ.report.write(r, out / "toy-1", config={"k": 1})
    fallback = re.search(r"written to '([^']+)' instead", str(e.value)).group(1)
    monkeypatch.undo()
    assert pd.read_csv(f"{fallback}/t.csv")["a"].tolist() == [1, 2]
    assert not list(out.iterdir())  # no partial folder in the output
