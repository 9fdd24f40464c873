"""Tiny HuggingFace models for ``univ compare`` (d_model 32, 2 layers, random init, saved to a temporary
folder): built by tests/sources/conftest.py's ``make_model``, with word-level tokenizers trained here on the
embedded corpus, so the corpus tokenises into real words rather than unknowns and nothing is downloaded."""

import importlib.util
import os
import sys
import warnings
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_SOURCES = Path(__file__).parents[1] / "sources" / "conftest.py"  # make_model and the special tokens
_spec = importlib.util.spec_from_file_location("_sources_conftest", _SOURCES)
sources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sources)


def corpus_tokenizer(vocab_size: int):
    """A word-level tokenizer of the ``vocab_size`` commonest words of the embedded corpus (with BOS, PAD, EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    import univ

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    text = univ.sources.corpus_path().read_text()
    tok.train_from_iterator(text.splitlines(), trainers.WordLevelTrainer(vocab_size=vocab_size,
                                                                         special_tokens=sources.SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[SEP]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """name -> folder: "gpt2" and "neox" share a tokenizer (400 words); "other" is a GPT-2 with another
    tokenizer (300 words)."""
    root = tmp_path_factory.mktemp("compare_models")
    toks = {400: corpus_tokenizer(400), 300: corpus_tokenizer(300)}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (name, kind, vocab) in enumerate((("gpt2", "gpt2", 400), ("neox", "neox", 400),
                                                 ("other", "gpt2", 300))):
            torch.manual_seed(200 + i)
            folder = root / name
            sources.make_model(kind, len(toks[vocab])).save_pretrained(folder)
            toks[vocab].save_pretrained(folder)
            out[name] = folder
    return out


@pytest.fixture(autouse=True, scope="session")
def compare_entry_point(tmp_path_factory):
    """``compare`` registered in the ``univ.analyses`` group, as installing this checkout does (pyproject.toml):
    an environment installed before the analysis existed gets the entry point from a temporary dist-info."""
    if "compare" in {ep.name for ep in entry_points(group="univ.analyses")}:
        yield
        return
    site = tmp_path_factory.mktemp("site")
    info = site / "univ_compare_entry-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: univ-compare-entry\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[univ.analyses]\ncompare = analyses.compare\n")
    sys.path.insert(0, str(site))
    yield
    sys.path.remove(str(site))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test's activation cache in its own folder."""
    monkeypatch.setenv("UNIV_CACHE", str(tmp_path / "cache"))
