"""Data sources: text/corpus token contexts, images, npy/safetensors arrays, built-ins, tokenizer checks."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from univ import sources
from univ.data import Dataset
from univ.sources import TokenDataset, check_same_tokenizer, load_data, masked_mean, per_sequence_data

WORDS = [f"w{i}" for i in range(40)]
UNK, BOS, EOS, PAD = 0, 1, 2, 3


def word_tokenizer(bos=True, eos=True, pad=True, offset=0):
    """WordLevel over WORDS split at whitespace: one token per word, ids 4 + offset + i; special ids 0-3."""
    vocab = {"<unk>": UNK, "<s>": BOS, "</s>": EOS, "<pad>": PAD}
    vocab.update({w: 4 + (i + offset) % len(WORDS) for i, w in enumerate(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>" if bos else None,
                                   eos_token="</s>" if eos else None, pad_token="<pad>" if pad else None)


def bpe_tokenizer():
    """A BPE trained on a few lines: words split into several sub-word tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    lines = [" ".join(WORDS[i:i + 7]) for i in range(0, 40, 3)] + ["the quick brown fox jumps"]
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def ids(words):
    return [4 + WORDS.index(w) for w in words]


@pytest.fixture
def tok():
    return word_tokenizer()


@pytest.fixture
def folder(tmp_path):
    """notes/a.txt (5 words), notes/b.txt (4), notes/sub/c.txt (2), plus files that must be skipped."""
    d = tmp_path / "notes"
    (d / "sub").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / "a.txt").write_text("w0 w1 w2\nw3 w4\n")
    (d / "b.txt").write_text("w5 w6  w7 w8")
    (d / "sub" / "c.txt").write_text("w9 w10")
    (d / ".hidden.txt").write_text("w39")
    (d / ".git" / "x.txt").write_text("w39")
    (d / "readme.md").write_text("w38")
    return d


def test_text_file_contexts_bos_padding_and_mask(folder, tok):
    data = load_data(f"text:{folder / 'a.txt'}", tokenizer=tok, context=3)
    assert isinstance(data, TokenDataset) and data.context == 3 and data.prepend_bos
    # 5 words, 2 per context after BOS: [BOS w0 w1] [BOS w2 w3] [BOS w4 PAD]
    assert data.input_ids.tolist() == [[BOS, *ids(["w0", "w1"])], [BOS, *ids(["w2", "w3"])], [BOS, ids(["w4"])[0], PAD]]
    assert data.attention_mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
    assert data.input_ids.dtype == data.attention_mask.dtype == torch.long
    assert data.pad_id == PAD and data.texts == ("w0 w1", "w2\nw3", "w4")
    assert data.spans[1] == ((str(folder / "a.txt"), 6, 11),)
    assert set(data.inputs) == {"input_ids", "attention_mask"} and data.inputs["input_ids"] is data.input_ids
    assert data.content_mask[:, 0].tolist() == [0, 0, 0] and data.content_mask[2].tolist() == [0, 1, 0]
    no_bos = load_data(f"text:{folder / 'a.txt'}", tokenizer=tok, context=3, prepend_bos=False)
    assert no_bos.input_ids.tolist() == [ids(["w0", "w1", "w2"]), [*ids(["w3", "w4"]), PAD]]


def test_text_folder_sorted_recursive_with_eos_between_files(folder, tok):
    data = load_data(f"text:{folder}", tokenizer=tok, context=7)
    stream = ids(["w0", "w1", "w2", "w3", "w4"]) + [EOS] + ids(["w5", "w6", "w7", "w8"]) + [EOS] + ids(["w9", "w10"])
    assert data.input_ids[:, 1:][data.attention_mask[:, 1:].bool()].tolist() == stream  # hidden files and .md left out
    assert data.input_ids.shape == (3, 7) and int(data.attention_mask.sum()) == 13 + 3
    assert [[Path(s.file).name for s in spans] for spans in data.spans] == [["a.txt"], ["b.txt", "c.txt"], ["c.txt"]]
    assert data.texts == ("w0 w1 w2\nw3 w4", "w5 w6  w7 w8\nw9", "w10")
    plain = load_data(f"text:{folder}", tokenizer=tok, context=7, eos_between_files=False, prepend_bos=False)
    assert plain.input_ids[plain.attention_mask.bool()].tolist() == [t for t in stream if t != EOS]
    md = load_data(f"text:{folder}", tokenizer=tok, pattern="*.md")
    assert md.input_ids[0, 1].item() == ids(["w38"])[0]


def test_text_glob_is_sorted_and_recursive_with_double_star(folder, tok):
    top = load_data(f"text:{folder}/*.txt", tokenizer=tok, context=20, prepend_bos=False)
    assert top.input_ids[top.attention_mask.bool()].tolist() == ids(["w0", "w1", "w2", "w3", "w4"]) + [EOS] + \
        ids(["w5", "w6", "w7", "w8"])
    deep = load_data(f"text:{folder}/**/*.txt", tokenizer=tok, context=20, prepend_bos=False)
    assert int(deep.attention_mask.sum()) == 13


def test_text_caps_drop_last_and_determinism(folder, tok):
    spec = f"text:{folder}"
    assert load_data(spec, tokenizer=tok, context=3, max_contexts=2).input_ids.shape == (2, 3)
    capped = load_data(spec, tokenizer=tok, context=3, n_tokens=3)
    assert capped.input_ids.tolist() == [[BOS, *ids(["w0", "w1"])], [BOS, ids(["w2"])[0], PAD]]
    full = load_data(spec, tokenizer=tok, context=5)
    dropped = load_data(spec, tokenizer=tok, context=5, drop_last=True)
    assert len(full) == 4 and len(dropped) == 3 and bool(dropped.attention_mask.all())
    again = load_data(spec, tokenizer=tok, context=5)
    assert again.content_hash == full.content_hash != dropped.content_hash
    desc = full.describe()
    assert json.loads(json.dumps(desc)) == desc and desc["n"] == 4 and desc["context"] == 5
    assert desc["vocab_size"] == len(tok) == 44 and desc["prepend_bos"] is True
    assert full.subset(2).input_ids.shape == (2, 5) and len(full.subset(2).texts) == 2


def test_text_bos_and_pad_rules(folder):
    no_bos = word_tokenizer(bos=False)
    with pytest.raises(ValueError, match="prepend_bos: .*has no BOS token"):
        load_data(f"text:{folder}", tokenizer=no_bos)
    assert not load_data(f"text:{folder}", tokenizer=no_bos, prepend_bos=False).prepend_bos
    pad_from_eos = load_data(f"text:{folder}", tokenizer=word_tokenizer(pad=False), context=4)
    assert pad_from_eos.pad_id == EOS and pad_from_eos.input_ids[-1, -1] == EOS
    bare = word_tokenizer(pad=False, eos=False)
    with pytest.raises(ValueError, match="pad_id: .*neither a PAD nor an EOS"):
        load_data(f"text:{folder}", tokenizer=bare, context=4)
    assert load_data(f"text:{folder}", tokenizer=bare, context=4, pad_id=0).input_ids[-1, -1] == 0
    assert bool(load_data(f"text:{folder}", tokenizer=bare, context=4, drop_last=True).attention_mask.all())


class SlowTokenizer:
    """A tokenizer without character offsets (like transformers' slow tokenizers): one id per character."""

    is_fast, bos_token_id, eos_token_id, pad_token_id, unk_token_id, name_or_path = False, 0, None, 1, None, "chars"

    def __call__(self, text, add_special_tokens=True, verbose=True):
        return {"input_ids": [ord(c) for c in text]}

    def get_vocab(self):
        return {chr(i): i for i in range(256)}

    def decode(self, ids):
        return "".join(map(chr, ids))

    def __len__(self):
        return 256


def test_text_without_offsets_decodes_each_context(folder):
    data = load_data(f"text:{folder / 'b.txt'}", tokenizer=SlowTokenizer(), context=6)
    assert data.spans is None and data.texts == ("w5 w6", "  w7 ", "w8") and data.tokenizer_name == "chars"
    assert data.input_ids[-1].tolist() == [0, ord("w"), ord("8"), 1, 1, 1]


def test_text_bad_inputs_name_the_problem(tmp_path, folder, tok):
    with pytest.raises(ValueError, match="nope.txt' does not exist"):
        load_data(f"text:{tmp_path / 'nope.txt'}", tokenizer=tok)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no files matching"):
        load_data(f"text:{tmp_path / 'empty'}", tokenizer=tok)
    with pytest.raises(ValueError, match="matches no files"):
        load_data(f"text:{tmp_path}/*.nothing", tokenizer=tok)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 w1".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt' is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        load_data(f"text:{tmp_path / 'latin1.txt'}", tokenizer=tok)
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(ValueError, match="holds no text"):
        load_data(f"text:{tmp_path / 'blank.txt'}", tokenizer=tok)
    with pytest.raises(ValueError, match="tokenizer: text data needs a tokenizer"):
        load_data(f"text:{folder}")
    with pytest.raises(TypeError, match="tokenizer: expected a HuggingFace tokenizer"):
        load_data(f"text:{folder}", tokenizer="gpt2")
    with pytest.raises(ValueError, match="context: must be >= 2"):
        load_data(f"text:{folder}", tokenizer=tok, context=1)
    with pytest.raises(TypeError, match=r"text: unknown option\(s\) \['contxt'\]; valid options: .*'context'"):
        load_data(f"text:{folder}", tokenizer=tok, contxt=4)
    with pytest.raises(ValueError, match="text: needs a file, folder or glob"):
        load_data("text:", tokenizer=tok)


def test_unknown_prefix_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown source 'txt:'.*'text:'.*'images:'.*'npy:'.*'safetensors:'"):
        load_data("txt:notes/")
    with pytest.raises(ValueError, match="valid prefixes"):
        load_data("cifar10")
    with pytest.raises(ValueError, match="digits: is a built-in and takes no argument"):
        load_data("digits:extra")


def test_corpus_loads_offline_and_is_reproducible(tok):
    path = sources.corpus_path()
    assert path.is_file() and 200_000 < path.stat().st_size <= 300_000
    assert (path.parent / "corpus-LICENSE.txt").read_text().count("PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2") == 1
    data = load_data("corpus", tokenizer=tok, context=64)
    assert data.name == "corpus" and len(data) > 500 and data.input_ids.shape[1] == 64
    assert data.texts[0].startswith('The "assert" statement')
    assert int(data.attention_mask[:-1].sum()) == 64 * (len(data) - 1)
    assert load_data("corpus:", tokenizer=tok, context=64).content_hash == data.content_hash


@pytest.mark.skipif(platform.python_version() != "3.11.7", reason="the corpus was written under CPython 3.11.7")
def test_make_corpus_rewrites_the_shipped_file(tmp_path):
    script = Path(__file__).resolve().parents[2] / "data" / "make_corpus.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "c.txt")], check=True, capture_output=True)
    assert (tmp_path / "c.txt").read_bytes() == sources.corpus_path().read_bytes()


def write_png(path, size, color, mode="RGB"):
    from PIL import Image
    Image.new(mode, size, color).save(path)


def test_images_classes_resize_split_and_range(tmp_path):
    root = tmp_path / "pets"
    for cls, color in (("dog", (0, 0, 255)), ("cat", (255, 0, 0))):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            write_png(root / cls / f"{i}.png", (6 + i, 5), color)
    (root / "cat" / "notes.txt").write_text("ignored")
    with pytest.raises(ValueError, match=r"size: the images differ in size .*pass size="):
        load_data(f"images:{root}")
    data = load_data(f"images:{root}", size=(3, 4), test_fraction=0.25, seed=0)
    assert isinstance(data, Dataset) and data.bounds == (0.0, 1.0) and data.n_classes == 2
    assert data.x_train.shape == (6, 3, 3, 4) and data.x_test.shape == (2, 3, 3, 4) and data.input_shape == (3, 3, 4)
    assert data.x_train.dtype == torch.float32 and data.extra["classes"] == ["cat", "dog"]
    x, y = torch.cat([data.x_train, data.x_test]), torch.cat([data.y_train, data.y_test])
    torch.testing.assert_close(x[y == 0][:, 0], torch.ones(4, 3, 4))  # cat = red
    torch.testing.assert_close(x[y == 1][:, 2], torch.ones(4, 3, 4))  # dog = blue
    assert float(x[y == 0][:, 1:].abs().max()) == 0.0
    assert all("/cat/" in f for f, label in zip(data.extra["files_train"], data.y_train) if label == 0)
    again = load_data(f"images:{root}", size=(3, 4), test_fraction=0.25, seed=0)
    assert torch.equal(again.y_test, data.y_test)

    grey = tmp_path / "grey"
    for cls in ("a", "b"):
        (grey / cls).mkdir(parents=True)
        write_png(grey / cls / "x.png", (2, 2), 51, mode="L")
    g = load_data(f"images:{grey}", test_fraction=0.0)
    assert g.x_train.shape == (2, 1, 2, 2) and torch.allclose(g.x_train, torch.full_like(g.x_train, 0.2))
    assert load_data(f"images:{grey}", mode="RGB", test_fraction=0.0).x_train.shape == (2, 3, 2, 2)


def test_images_bad_layouts_say_what_is_expected(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    write_png(flat / "x.png", (2, 2), (0, 0, 0))
    with pytest.raises(ValueError, match=r"has no class sub-folders; expected the layout flat/<class name>/<image>"):
        load_data(f"images:{flat}")
    (flat / "cls").mkdir()
    with pytest.raises(ValueError, match="class folder .*cls' has no PNG or JPEG images"):
        load_data(f"images:{flat}")
    (flat / "cls" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read .*bad.png' as an image"):
        load_data(f"images:{flat}")
    with pytest.raises(ValueError, match="images: .*missing' does not exist"):
        load_data(f"images:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="is not a folder"):
        load_data(f"images:{flat / 'x.png'}")
    with pytest.raises(ValueError, match="mode: must be"):
        load_data(f"images:{flat}", mode="CMYK")


def _rows(data):
    return torch.cat([data.x_train, data.x_test]), torch.cat([data.y_train, data.y_test])


def test_npy_round_trip_with_labels_and_npz(tmp_path):
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.arange(20) % 3
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    data = load_data(f"npy:{tmp_path / 'x.npy'}", y=str(tmp_path / "y.npy"), test_fraction=0.25)
    assert data.x_train.shape == (15, 2) and data.x_train.dtype == torch.float32 and data.n_classes == 3
    xs, ys = _rows(data)
    assert torch.equal(ys, torch.from_numpy(y)[(xs[:, 0] / 2).long()])  # rows keep their labels
    assert sorted(xs[:, 0].tolist()) == x[:, 0].tolist()
    unlabeled = load_data(f"npy:{tmp_path / 'x.npy'}", bounds=(0, 40))
    assert unlabeled.n_classes == 1 and unlabeled.bounds == (0.0, 40.0) and not _rows(unlabeled)[1].any()
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    assert torch.equal(_rows(load_data(f"npy:{tmp_path / 'xy.npz'}"))[1], ys)
    np.save(tmp_path / "targets.npy", np.linspace(0, 1, 20))
    reg = load_data(f"npy:{tmp_path / 'x.npy'}", y=str(tmp_path / "targets.npy"))
    assert reg.y_train.dtype == torch.float32 and reg.n_classes == 0


def test_npy_bad_inputs(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="npy: cannot read .*obj.npy' without pickle"):
        load_data(f"npy:{tmp_path / 'obj.npy'}")
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"x: expected an array \(n, ...\).*reshape 1-D"):
        load_data(f"npy:{tmp_path / 'flat.npy'}")
    np.save(tmp_path / "x.npy", np.zeros((5, 2)))
    np.save(tmp_path / "y.npy", np.zeros(4))
    with pytest.raises(ValueError, match=r"y: expected real labels of shape \(5,\)"):
        load_data(f"npy:{tmp_path / 'x.npy'}", y=str(tmp_path / "y.npy"))
    with pytest.raises(ValueError, match="y: .*nope.npy' does not exist"):
        load_data(f"npy:{tmp_path / 'x.npy'}", y=str(tmp_path / "nope.npy"))
    np.save(tmp_path / "nan.npy", np.array([[0.0], [np.nan]]))
    with pytest.raises(ValueError, match="x: contains 1 NaN"):
        load_data(f"npy:{tmp_path / 'nan.npy'}")
    with pytest.raises(ValueError, match="test_fraction: .*leaves no training samples"):
        load_data(f"npy:{tmp_path / 'x.npy'}", test_fraction=1.0)


def test_safetensors_round_trip_and_names(tmp_path):
    x = np.random.default_rng(0).normal(size=(12, 2, 3)).astype(np.float32)
    save_file({"x": x, "y": np.arange(12, dtype=np.int64)}, str(tmp_path / "d.safetensors"))
    data = load_data(f"safetensors:{tmp_path / 'd.safetensors'}", test_fraction=0.5, seed=3)
    xs, ys = _rows(data)
    assert data.input_shape == (2, 3) and data.n_classes == 12
    assert torch.equal(xs, torch.from_numpy(x)[ys])
    save_file({"acts": x, "labels": np.arange(12) % 2}, str(tmp_path / "named.safetensors"))
    named = load_data(f"safetensors:{tmp_path / 'named.safetensors'}", x="acts", y="labels")
    assert named.n_classes == 2
    with pytest.raises(ValueError, match=r"x: .*has no tensor named 'x'; it has \['acts', 'labels'\]"):
        load_data(f"safetensors:{tmp_path / 'named.safetensors'}")
    with pytest.raises(ValueError, match="y: .*has no tensor named 'z'; it has \\['x', 'y'\\]"):
        load_data(f"safetensors:{tmp_path / 'd.safetensors'}", y="z")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="safetensors: cannot read .*junk.safetensors'"):
        load_data(f"safetensors:{tmp_path / 'junk.safetensors'}")


def test_builtins_through_specs():
    digits = load_data("digits", seed=1)
    assert digits.name == "digits" and digits.x_train.shape[1:] == (1, 8, 8)
    assert load_data("mnist1d", num_samples=200).x_train.shape == (160, 1, 40)
    with pytest.raises(TypeError, match=r"digits: unknown option\(s\) \['size'\]"):
        load_data("digits", size=4)


def test_check_same_tokenizer():
    assert check_same_tokenizer([word_tokenizer(), word_tokenizer()])
    assert check_same_tokenizer({"only": word_tokenizer()})
    with pytest.raises(ValueError, match=r"tokenizers: the models' tokenizers differ.*b vs a: vocabularies differ "
                                         r"\(44 vs 44 tokens, 0 not in both, 40 with different ids"):
        check_same_tokenizer({"a": word_tokenizer(), "b": word_tokenizer(offset=1)})
    with pytest.raises(ValueError, match="special-token ids differ"):
        check_same_tokenizer([word_tokenizer(), word_tokenizer(pad=False)])
    assert check_same_tokenizer({"a": word_tokenizer(), "b": bpe_tokenizer()}, allow_different=True) is False
    with pytest.raises(TypeError, match="tokenizers: expected a list or a dict"):
        check_same_tokenizer(word_tokenizer())


def test_per_sequence_data_same_text_per_row_each_tokenizer_its_own_ids():
    toks = {"word": word_tokenizer(), "bpe": bpe_tokenizer()}
    text = " ".join(WORDS[:30])
    out = per_sequence_data({"doc": text}, toks, context=6, max_chars=30)
    a, b = out["word"], out["bpe"]
    assert a.texts == b.texts and a.spans == b.spans and len(a) == len(b) >= 3
    assert " ".join(a.texts) == text  # the segments cover the text in order, cut at spaces
    for name, data in out.items():
        tok = toks[name]
        assert data.input_ids.shape == (len(a), 6) and bool((data.input_ids[:, 0] == BOS).all())
        for row, seg, mask in zip(data.input_ids, data.texts, data.attention_mask):
            expect = tok(seg, add_special_tokens=False)["input_ids"]
            assert row[1:1 + len(expect)].tolist() == expect and int(mask.sum()) == 1 + len(expect)
    assert len(a) >= 6  # 30 words, at most 5 per row: the 30-character segments were halved to fit


def test_masked_mean_leaves_out_bos_and_padding():
    data = per_sequence_data(["w0 w1 w2", "w3"], [word_tokenizer()], context=4)
    (only,) = data.values()
    acts = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1).repeat(1, 1, 3)  # value = flat position
    means = masked_mean(acts, only.content_mask)
    torch.testing.assert_close(means, torch.tensor([[2.0] * 3, [5.0] * 3]))  # (1+2+3)/3 and position 5
    with pytest.raises(ValueError, match="mask: rows \\[0\\] have no position"):
        masked_mean(acts, torch.zeros(2, 4).index_fill_(0, torch.tensor([1]), 1))
    with pytest.raises(ValueError, match="acts, mask: expected acts"):
        masked_mean(acts, torch.ones(2, 3))
