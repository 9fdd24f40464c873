"""``univ sae train`` and ``univ sae match`` on the tiny GPT-2 of tests/sources (by hf: and by the tl:
TransformerLens route): the saved folder's SAELens metadata names a hook the model has, univ.sae.load reads it
back, metrics.json holds the spliced next-token metrics (recomputed from the loaded SAE), match writes its
table, and bad settings end with one line, exit code 2 and nothing written."""

import json

import pandas as pd
import pytest
import torch

import univ
import univ.sae as S
from univ.cli import main
from univ.sources import load_data, load_model

SMALL = ["--context", "8", "--n-tokens", "240", "--eval-contexts", "4", "--expansion", "2", "--k", "4",
         "--steps", "30", "--batch-size", "64", "--capture-batch", "8"]


@pytest.fixture(scope="module")
def text(hf_folders, tmp_path_factory):
    """A text file of random sentences in the tiny tokenizer's words (no unknown tokens)."""
    from transformers import AutoTokenizer

    g = torch.Generator().manual_seed(0)
    words = sorted(w for w in AutoTokenizer.from_pretrained(str(hf_folders["gpt2"])).get_vocab() if "[" not in w)
    lines = [" ".join(words[i] for i in torch.randint(len(words), (9,), generator=g)) for _ in range(60)]
    path = tmp_path_factory.mktemp("text") / "notes.txt"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="module")
def trained(hf_folders, text, tmp_path_factory):
    """spec -> (the SAE folder univ sae train wrote, the layer asked for)."""
    root = tmp_path_factory.mktemp("saes")
    out = {}
    for spec, layer in ((f"hf:{hf_folders['gpt2']}", "0"), (f"tl:{hf_folders['gpt2']}", "blocks.0.hook_resid_post")):
        folder = root / spec.partition(":")[0]
        assert main(["sae", "train", spec, "--layer", layer, "--data", f"text:{text}", *SMALL,
                     "--out", str(folder)]) == 0
        out[spec.partition(":")[0]] = folder
    return out


@pytest.mark.parametrize("source,hook", [("hf", "transformer.h.0"), ("tl", "blocks.0.hook_resid_post")])
def test_train_writes_an_sae_folder_saelens_can_attach(trained, hf_folders, text, source, hook):
    folder = trained[source]
    spec = f"{source}:{hf_folders['gpt2']}"
    cfg = json.loads((folder / "cfg.json").read_text())
    md = cfg["metadata"]
    assert md["hook_name"] == hook and md["model_name"] == spec
    assert md["context_size"] == 8 and md["prepend_bos"] is True and md["dataset_path"] == f"text:{text}"
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["k"]) == ("topk", 32, 64, 4)
    model = load_model(spec)
    assert hook in univ.hook_names(model)
    sae = S.load(folder)
    assert sae.kind == "topk" and sae.k == 4 and sae.metadata["hook_name"] == hook
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "manifest.json", "metrics.csv", "metrics.json",
                                                        "sae_weights.safetensors", "univ_state.safetensors"]
    record = json.loads((folder / "metrics.json").read_text())
    assert record["hook_name"] == hook and record["train"]["tokens"] > 200 and record["threads"] == 1
    # the held-out contexts again: the metrics come back from the loaded SAE
    data = load_data(f"text:{text}", tokenizer=model.tokenizer, context=8, max_contexts=34)
    held_out = {k: v[-4:] for k, v in data.inputs.items()}
    again = S.spliced_lm_metrics(model, held_out, hook, sae)
    assert record["eval"]["n_predictions"] == again.n_predictions
    for name in ("clean_loss", "spliced_loss", "zero_ablated_loss", "loss_recovered", "kl_divergence"):
        assert record["eval"][name] == pytest.approx(getattr(again, name), rel=1e-4, abs=1e-6), name
    table = pd.read_csv(folder / "metrics.csv")
    assert {"loss_recovered", "kl_divergence", "eval_fvu", "eval_l0"} <= set(table["metric"])
    assert univ.integrity.verify_entry(folder) is None


@pytest.mark.parametrize("method", ["correlation", "hungarian"])
def test_match_writes_the_table(trained, text, tmp_path, capsys, method):
    assert main(["sae", "match", str(trained["hf"]), str(trained["tl"]), "--data", f"text:{text}", "--n-tokens", "80",
                 "--method", method, "--n-permutations", "2", "--out", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    table = pd.read_csv(run / "match.csv")
    assert len(table) == 64 and "shared" in table
    summary = dict(pd.read_csv(run / "summary.csv").values)
    assert summary["hook_a"] == "transformer.h.0" and summary["hook_b"] == "blocks.0.hook_resid_post"
    assert "shared_fraction" in summary and "shared_fraction" in capsys.readouterr().out


def test_match_of_an_sae_with_itself_shares_every_live_latent(trained, text, tmp_path):
    assert main(["sae", "match", str(trained["tl"]), str(trained["tl"]), "--data", f"text:{text}", "--n-tokens", "80",
                 "--n-permutations", "1", "--out", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    table = pd.read_csv(run / "match.csv")
    live = table[table["live"]]
    assert len(live) > 32 and live["shared"].all() and (live["correlation"] > 1 - 1e-6).all()


BAD = [  # (arguments after the model spec, the start of the one-line error)
    (["--layer", "7"], "--layer: index 7 is out of range"),
    (["--layer", "transformer.h.9"], "--layer: unknown hook name 'transformer.h.9'"),
    (["--layer", "1", "--k", "0"], "--k: must be >= 1, got 0"),
    (["--layer", "1", "--kind", "nope"], "--kind: unknown SAE kind 'nope'"),
    (["--layer", "1", "--kind", "relu", "--k", "3"], "--k: the 'relu' kind has no k"),
    (["--layer", "1", "--expansion", "0"], "--expansion: must be > 0"),
    (["--layer", "1", "--prepend-bos", "maybe"], "argument --prepend-bos: cannot read 'maybe' as bool"),
    (["--layer", "1", "--data", "digits"], "--data: expected corpus or text:"),
    (["--layer", "1", "--data", "text:/nowhere/at/all.txt"], "--data: text: '/nowhere/at/all.txt' does not exist"),
    (["--layer", "1", "--eval-contexts", "500"], "--eval-contexts: "),
    (["--layer", "1", "--device", "cuda:7"], "--device: "),
    (["--steps", "5"], "the following arguments are required: --layer"),
    (["--layer", "1", "--stpes", "5"], "unrecognized arguments: --stpes 5"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1].split(":")[0] + f"-{i}" for i, b in enumerate(BAD)])
def test_bad_settings_exit_2_with_one_line_and_write_nothing(hf_folders, text, tmp_path, capsys, args, message):
    args = [a.replace("{text}", str(text)) for a in args]
    if "--data" not in args:
        args += ["--data", f"text:{text}"]
    out = tmp_path / "sae"
    assert main(["sae", "train", f"hf:{hf_folders['gpt2']}", *args, "--context", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err  # (transformers' own progress bars may come before the error)
    assert err.splitlines()[-1].startswith(f"univ: error: {message}") and err.count("univ: error") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_bad_spec_and_folders(tmp_path, capsys):
    assert main(["sae", "train", "gpt2", "--layer", "0"]) == 2
    assert "MODEL: expected a model spec such as hf:gpt2" in capsys.readouterr().err
    assert main(["sae", "train", "nope:gpt2", "--layer", "0"]) == 2
    assert "MODEL: unknown source 'nope:'" in capsys.readouterr().err
    assert main(["sae", "match", str(tmp_path), str(tmp_path)]) == 2
    assert "SAE_A: " in capsys.readouterr().err and "no cfg.json" in capsys.readouterr().err + "no cfg.json"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["sae", "train", "hf:x", "--layer", "0", "--out", str(tmp_path / "mine")]) == 2
    assert "--out: " in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "mine" / "notes.txt").unlink()
    (tmp_path / "mine").rmdir()
    assert main(["sae", "fit"]) == 2
    assert "sae: choose one of ['train', 'match', 'view']" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_flag_errors_come_before_torch_is_imported():
    import subprocess
    import sys

    code = ("import sys; from univ.cli import main; "
            "codes = [main(['sae', 'train', 'hf:x', '--layer', '1', '--steps', '0']), "
            "main(['sae', 'train', 'hf:x', '--layer', '1', '--data', 'npy:x.npy']), main(['sae', 'match', 'a', 'b'])]; "
            "print(codes, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[2, 2, 2] False", done.stderr
    assert done.stderr.splitlines() == ["univ: error: --steps: must be >= 1, got 0",
                                        "univ: error: --data: expected corpus or text:<file, folder or glob>, got "
                                        "'npy:x.npy'", "univ: error: SAE_A: 'a' is not an SAE folder (no cfg.json)"]
