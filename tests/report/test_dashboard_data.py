"""The dashboard's data from planted codes: each latent's top examples are the rows it was planted on (largest
first), density and histogram count its non-zero rows, token windows hold the latent's own activations, matches
by correlation recover a known permutation, the logits are the decoder direction times the unembedding, and bad
input names the argument."""

import numpy as np
import pandas as pd
import pytest
import torch
from named_errors import assert_named_error
from report_pages import D_SAE, N, planted

from univ.report import dashboard as D


def test_top_examples_density_and_histogram_of_planted_codes():
    codes = planted()
    data = D.build({"m": D.ModelFeatures(codes)}, top_k=3, bins=4).data
    (m,) = data["models"]
    assert m["kind"] == "rows" and (m["n"], m["d"]) == (N, D_SAE)
    for j, lat in enumerate(m["latents"][:-1]):
        rows = np.arange(j, N, D_SAE)
        assert [r for r, _ in lat["top"]] == list(rows[::-1][:3])
        assert [v for _, v in lat["top"]] == pytest.approx(codes[rows[::-1][:3], j])
        assert lat["density"] == pytest.approx(len(rows) / N)
        assert lat["max"] == pytest.approx(codes[:, j].max())
        counts, hi = lat["hist"]
        assert sum(counts) == len(rows) and hi == pytest.approx(codes[:, j].max())
    dead = m["latents"][-1]
    assert dead["density"] == 0 and "top" not in dead and "hist" not in dead


def test_token_windows_hold_the_latents_activations():
    codes = planted()
    tokens = [[f"c{c}p{p}" for p in range(10)] for c in range(6)]
    (m,) = D.build({"t": D.ModelFeatures(codes, tokens=tokens)}, top_k=2, window=3).data["models"]
    assert m["kind"] == "tokens"
    for j, lat in enumerate(m["latents"][:-1]):
        for (row, value), (c, lo, pos, vals) in zip(lat["top"], lat["ctx"]):
            assert (c, pos) == divmod(row, 10)  # contexts of 10 tokens: row -> (context, position)
            assert lo == max(0, pos - 3) and vals[pos - lo] == pytest.approx(value, abs=1e-4)
            assert vals == pytest.approx(codes[c * 10 + lo:c * 10 + lo + len(vals), j], abs=1e-4)
            assert m["contexts"][str(c)] == tokens[c]


def test_images_round_trip_as_bytes():
    codes = planted()
    images = np.random.default_rng(0).random((N, 3, 4, 5))
    (m,) = D.build({"i": D.ModelFeatures(codes, images=images)}).data["models"]
    import base64

    raw = np.frombuffer(base64.b64decode(m["images"]["data"]), np.uint8).reshape(-1, 4, 5, 3)
    assert m["images"]["shape"] == [4, 5, 3] and len(raw) == len(m["images"]["rows"])
    used = images[m["images"]["rows"]].transpose(0, 2, 3, 1)
    scaled = (used - used.min()) / (used.max() - used.min()) * 255
    np.testing.assert_allclose(raw, scaled, atol=0.51)


def test_matches_by_correlation_find_a_permutation():
    codes = planted()
    perm = np.random.default_rng(1).permutation(D_SAE)
    partner, score = D.correlation_matches(codes, codes[:, perm])
    live = codes.max(0) > 0
    # latent j of A is column where perm == j in B
    np.testing.assert_array_equal(partner[live], np.argsort(perm)[live])
    assert score[live] == pytest.approx(1.0) and partner[~live].tolist() == [-1] and np.isnan(score[~live]).all()
    data = D.build({"a": D.ModelFeatures(codes), "b": D.ModelFeatures(codes[:, perm])}).data
    assert data["matches"]["a\u0000b"][0] == partner.tolist()


def test_given_match_tables_are_used():
    codes = planted()
    table = pd.DataFrame({"feature_a": np.arange(D_SAE), "feature_b": np.roll(np.arange(D_SAE), 1),
                          "correlation": np.linspace(0, 1, D_SAE)})
    data = D.build({"a": D.ModelFeatures(codes), "b": D.ModelFeatures(codes[:20])}, {("a", "b"): table}).data
    assert data["matches"]["a\u0000b"][0] == np.roll(np.arange(D_SAE), 1).tolist()
    assert "b\u0000a" not in data["matches"]  # different rows: no correlation to measure


def test_logits_are_decoder_times_unembedding():
    rng = np.random.default_rng(0)
    dec, u = rng.normal(size=(7, 4)), rng.normal(size=(4, 11))
    vocab = [f"v{i}" for i in range(11)]
    out = D.top_logits(dec, u, vocab, n=3, chunk=2)  # chunks smaller than d_sae
    w = dec @ u
    for j, (up, down) in enumerate(out):
        assert [t for t, _ in up] == [vocab[i] for i in np.argsort(-w[j])[:3]]
        assert [t for t, _ in down] == [vocab[i] for i in np.argsort(w[j])[:3]]
        assert [v for _, v in up] == pytest.approx(np.sort(w[j])[::-1][:3], rel=1e-5)
    assert D.top_logits(dec, u, lambda i: f"id{i}", n=1)[0][0][0][0] == f"id{np.argmax(w[0])}"


def test_features_encodes_with_the_dictionary():
    import univ.sae as S

    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    sae = S.TopKSAE(6, 10, k=2)
    u = torch.randn(6, 5)
    m = D.features(sae, x, unembed=u, vocab=list("abcde"), n_logits=2)
    with torch.no_grad():
        np.testing.assert_allclose(m.codes, sae.encode(x).numpy(), rtol=1e-5, atol=1e-6)
    assert len(m.logits) == 10 and [t for t, _ in m.logits[0][0]] == \
        [list("abcde")[i] for i in (sae.W_dec.detach()[0] @ u).argsort(descending=True)[:2]]


BAD = [
    ("models not a dict", lambda: D.build([]), ValueError, r"^models: expected a non-empty dict"),
    ("not ModelFeatures", lambda: D.build({"a": np.zeros((3, 2))}), TypeError, r"^models\['a'\]: expected ModelF"),
    ("codes 1-D", lambda: D.build({"a": D.ModelFeatures(np.zeros(3))}), ValueError,
     r"^models\['a'\].codes: expected 2-D array, got shape \(3,\)"),
    ("codes NaN", lambda: D.build({"a": D.ModelFeatures(np.full((3, 2), np.nan))}), ValueError,
     r"^models\['a'\].codes: contains NaN"),
    ("codes text", lambda: D.build({"a": D.ModelFeatures([["x"]])}), TypeError, r"^models\['a'\].codes: expected a"),
    ("images rows", lambda: D.build({"a": D.ModelFeatures(np.ones((3, 2)), images=np.ones((2, 4, 4)))}), ValueError,
     r"^models\['a'\].images: expected \(3, H, W\)"),
    ("tokens count", lambda: D.build({"a": D.ModelFeatures(np.ones((3, 2)), tokens=[["a", "b"]])}), ValueError,
     r"^models\['a'\].tokens: the contexts hold 2 tokens but codes has 3 rows"),
    ("two views", lambda: D.build({"a": D.ModelFeatures(np.ones((2, 2)), tokens=[["a", "b"]],
                                                        signals=np.ones((2, 3)))}), ValueError, r"give one of"),
    ("tags", lambda: D.build({"a": D.ModelFeatures(np.ones((3, 2)), tags=["x"])}), ValueError,
     r"^models\['a'\].tags: expected 2 entries, got 1"),
    ("top_k", lambda: D.build({"a": D.ModelFeatures(np.ones((3, 2)))}, top_k=0), ValueError,
     r"^top_k: expected an integer >= 1, got 0"),
    ("match key", lambda: D.build({"a": D.ModelFeatures(np.ones((3, 2)))}, {("a", "z"): None}), ValueError,
     r"^matches: keys must be \(model_a, model_b\) pairs of \['a'\]"),
    ("match table", lambda: D.build({"a": D.ModelFeatures(np.ones((3, 2))), "b": D.ModelFeatures(np.ones((3, 2)))},
                                    {("a", "b"): pd.DataFrame({"x": [1]})}), ValueError,
     r"^matches\[\('a', 'b'\)\]: expected a table with feature_a"),
    ("match partner", lambda: D.build({"a": D.ModelFeatures(np.ones((3, 2))), "b": D.ModelFeatures(np.ones((3, 2)))},
                                      {("a", "b"): ([0, 5], [1.0, 1.0])}), ValueError,
     r"^matches\[\('a', 'b'\)\]: expected a partner in 0..1"),
    ("vocab", lambda: D.top_logits(np.ones((2, 3)), np.ones((3, 4)), ["a"]), ValueError,
     r"^vocab: expected the 4 token strings"),
    ("unembed", lambda: D.top_logits(np.ones((2, 3)), np.ones((5, 4)), list("abcd")), ValueError,
     r"^unembed: expected \(3, vocab\)"),
    ("dictionary", lambda: D.features(object(), np.ones((3, 2))), TypeError, r"^dictionary: expected an object with"),
    ("render", lambda: D.render({}), TypeError, r"^dashboard: expected a Dashboard"),
]


@pytest.mark.parametrize("call,exc,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_the_argument(call, exc, fragment):
    assert_named_error(call, exc, fragment)


@pytest.mark.parametrize("k", [1, 3, 50])
def test_top_rows_in_chunks_equal_a_full_sort(k):
    c = np.random.default_rng(0).random((50, 7)).astype(np.float32)
    np.testing.assert_array_equal(D.top_rows(c, k, chunk=3), np.argsort(-c, axis=0)[:k].T)


def test_signals_travel_for_the_rows_shown():
    codes = planted()
    sig = np.random.default_rng(0).normal(size=(N, 5))
    (m,) = D.build({"s": D.ModelFeatures(codes, signals=sig)}, top_k=2).data["models"]
    assert m["kind"] == "signals"
    shown = {r for lat in m["latents"] for r, _ in lat.get("top", [])}
    assert set(map(int, m["signals"])) == shown
    for r in shown:
        assert m["signals"][str(r)] == pytest.approx(sig[r], abs=1e-4)


def test_tags_follow_the_matches():
    codes = planted()
    perm = np.random.default_rng(1).permutation(D_SAE)
    noise = np.maximum(np.random.default_rng(2).normal(size=codes.shape), 0)
    models = {"a": D.ModelFeatures(codes), "b": D.ModelFeatures(codes[:, perm]),
              "c": D.ModelFeatures(noise, tags=["mine"] * D_SAE)}
    data = D.build(models, threshold=0.9).data
    tags = {m["name"]: [lat["tag"] for lat in m["latents"]] for m in data["models"]}
    # a's live latents match b's exactly (correlation 1) and nothing in c: partly shared; the dead one is dead
    assert tags["a"] == ["partly shared"] * (D_SAE - 1) + ["dead"]
    assert tags["c"] == ["mine"] * D_SAE  # given tags are kept
    two = D.build({"a": D.ModelFeatures(codes), "b": D.ModelFeatures(codes[:, perm])}, threshold=0.9).data
    assert [lat["tag"] for lat in two["models"][0]["latents"]] == ["universal"] * (D_SAE - 1) + ["dead"]
    alone = D.build({"a": D.ModelFeatures(codes)}).data
    assert {lat["tag"] for lat in alone["models"][0]["latents"]} == {None}
    assert D.match_tags(codes, np.zeros(D_SAE), 2)[:2] == ["exclusive", "exclusive"]
