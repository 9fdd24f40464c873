"""``univ sae view`` on SAEs that ``univ sae train`` wrote for the tiny GPT-2 of tests/sources: a run folder whose
dashboard holds every latent with its top token contexts (the tokens of the data, in order, and the activations
the loaded SAE gives), the logits of the model's unembedding, and matches between the two SAEs; bad settings end
in one line, exit code 2."""

import json
import re

import numpy as np
import pytest
import torch

import univ
import univ.sae as S
from univ.cli import main
from univ.sources import load_data, load_model

SMALL = ["--context", "8", "--n-tokens", "160", "--eval-contexts", "2", "--expansion", "1", "--k", "4",
         "--steps", "20", "--batch-size", "64", "--capture-batch", "8"]


@pytest.fixture(scope="module")
def words(hf_folders, tmp_path_factory):
    from transformers import AutoTokenizer

    g = torch.Generator().manual_seed(1)
    vocab = sorted(w for w in AutoTokenizer.from_pretrained(str(hf_folders["gpt2"])).get_vocab() if "[" not in w)
    path = tmp_path_factory.mktemp("text") / "words.txt"
    path.write_text("\n".join(" ".join(vocab[i] for i in torch.randint(len(vocab), (9,), generator=g))
                              for _ in range(40)))
    return path


@pytest.fixture(scope="module")
def saes(hf_folders, words, tmp_path_factory):
    root = tmp_path_factory.mktemp("saes")
    for layer in ("0", "1"):
        assert main(["sae", "train", f"hf:{hf_folders['gpt2']}", "--layer", layer, "--data", f"text:{words}", *SMALL,
                     "--out", str(root / f"l{layer}")]) == 0
    return root / "l0", root / "l1"


def dashboard_data(folder):
    page = (folder / "features.html").read_text()
    return json.loads(re.search(r'<script type="application/json" id="dashboard">(.*?)</script>', page, re.S)[1])


def test_view_writes_a_run_with_the_dashboard(saes, hf_folders, words, tmp_path, capsys):
    a, b = saes
    assert main(["sae", "view", str(a), "--others", str(b), "--data", f"text:{words}", "--n-tokens", "64",
                 "--top-k", "3", "--out", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    assert f"univ view {run}" in capsys.readouterr().out
    assert {"report.html", "report.md", "features.html", "saes.csv", "config.json"} <= {p.name for p in run.iterdir()}
    data = dashboard_data(run)
    assert [m["name"] for m in data["models"]] == ["l0", "l1"]
    assert set(data["matches"]) == {"l0\u0000l1", "l1\u0000l0"}
    # known answer: the first SAE's codes on the same contexts, recomputed here
    model = load_model(f"hf:{hf_folders['gpt2']}")
    ctx = load_data(f"text:{words}", tokenizer=model.tokenizer, context=8, max_contexts=8)
    acts = univ.capture(model, ctx.inputs, "transformer.h.0", reduce="tokens")["transformer.h.0"]
    with torch.no_grad():
        codes = S.load(a).encode(acts).numpy()
    m = data["models"][0]
    assert m["kind"] == "tokens" and m["n"] == len(codes) and m["d"] == codes.shape[1]
    tokens = [[model.tokenizer.decode([int(t)]) for t in row[mask.bool()]]
              for row, mask in zip(ctx.input_ids, ctx.attention_mask)]
    flat = [t for c in tokens for t in c]
    for j, lat in enumerate(m["latents"]):
        assert lat["density"] == pytest.approx((codes[:, j] > 0).mean())
        if "top" not in lat:
            continue
        assert lat["top"][0][1] == pytest.approx(codes[:, j].max(), rel=1e-4)
        for (row, value), (c, lo, pos, vals) in zip(lat["top"], lat["ctx"]):
            assert m["contexts"][str(c)] == tokens[c] and m["contexts"][str(c)][pos] == flat[row]
            assert vals[pos - lo] == pytest.approx(value, abs=1e-4)
        # logits: the decoder direction times GPT-2's tied unembedding
        w = S.load(a).W_dec.detach()[j] @ model.net.get_output_embeddings().weight.detach().T
        assert lat["logits"][0][0][0] == model.tokenizer.decode([int(w.argmax())])
        assert lat["logits"][0][0][1] == pytest.approx(float(w.max()), rel=1e-4)
    assert np.isfinite([lat["max"] for lat in m["latents"]]).all()


def test_view_bad_settings_say_so(saes, tmp_path, capsys):
    a, _ = saes
    assert main(["sae", "view", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"univ: error: SAE: {str(tmp_path)!r} is not an SAE folder (no cfg.json)\n"
    assert main(["sae", "view", str(a), "--others", str(tmp_path)]) == 2
    assert "--others" in capsys.readouterr().err
    assert main(["sae", "view", str(a), "--top-k", "0"]) == 2
    assert capsys.readouterr().err.startswith("univ: error: --top-k: ")
    assert main(["sae", "view", str(a), "--data", "http://x"]) == 2
    assert capsys.readouterr().err.startswith("univ: error: --data: expected corpus or text:")
    assert list(tmp_path.iterdir()) == []
