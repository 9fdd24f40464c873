"""Tiny HuggingFace models (d_model 32, 2 layers, random init) saved once per session to a temporary folder
with a word-level tokenizer trained here, so every source loads by path and nothing is downloaded."""

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SENTENCES = ["the cat sat on the mat", "a dog ate my homework today", "colourless green ideas sleep furiously",
             "every model learns the same features or not"]
SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[CLS]", "[SEP]", "[MASK]"]
TEXT = ("gpt2", "neox", "llama", "bert")
DECODERS = ("gpt2", "neox", "llama")


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[SEP]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def make_model(kind: str, vocab: int):
    import transformers as tf

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=4)
    if kind == "gpt2":
        config = tf.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=32, **ids)
        return tf.GPT2LMHeadModel(config)
    if kind == "neox":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(vocab_size=vocab, max_position_embeddings=32, **small, **ids))
    if kind == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=vocab, max_position_embeddings=32, num_key_value_heads=2,
                                                  **small, **ids))
    if kind == "bert":
        return tf.BertForMaskedLM(tf.BertConfig(vocab_size=vocab, max_position_embeddings=32, **small, pad_token_id=0))
    if kind == "vit":
        return tf.ViTForImageClassification(tf.ViTConfig(image_size=8, patch_size=4, num_channels=3, num_labels=3,
                                                         **small))
    raise ValueError(kind)


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory):
    """kind -> folder holding a saved tiny model (and the tokenizer, for text models)."""
    root = tmp_path_factory.mktemp("hf_models")
    tok = make_tokenizer()
    folders = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, kind in enumerate((*TEXT, "vit")):
            torch.manual_seed(100 + i)  # not seed 0/1: the untrained twins in the tests differ from these
            folder = root / kind
            make_model(kind, len(tok)).save_pretrained(folder)
            if kind != "vit":
                tok.save_pretrained(folder)
            folders[kind] = folder
    return folders


def _text_batch(padding: str = "right", n: int = 5, T: int = 7, seed: int = 0) -> dict:
    """{"input_ids", "attention_mask"} (n, T) with sequences of different lengths padded on one side
    (pad id 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 20, (n, T), generator=g)
    lengths = torch.tensor([T, 3, 1, T - 1, 5][:n])
    pos = torch.arange(T)
    mask = pos < lengths[:, None] if padding == "right" else pos >= (T - lengths)[:, None]
    return {"input_ids": torch.where(mask, ids, 0), "attention_mask": mask.long()}


@pytest.fixture(scope="session")
def text_batch():
    """The batch maker: text_batch(padding="right" | "left", n=5, T=7, seed=0)."""
    return _text_batch
