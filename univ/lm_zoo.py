"""Small causal language models trained here on the embedded corpus: the subjects of the LM attacks.

    tok = corpus_tokenizer()                                   # BPE trained on the embedded corpus, offline
    data = corpus_tokens(tok, context=24)                      # a TokenDataset of the corpus
    model, metrics = cached_lm("tl", data, seed=0, steps=600)  # trained once, then loaded from the cache

Two architectures behind one class, :class:`CausalLM` (zoo name ``"causal_lm"``, registered in
:data:`univ.models.MODELS`, so ``save_model``/``load_model`` and ``untrained_twin`` work as for the zoo):
``arch="tl"`` is a TransformerLens 4.x native ``TransformerBridge`` (GPT-2 style: learned positions,
LayerNorm, GELU), ``arch="llama"`` a HuggingFace ``LlamaForCausalLM`` built from a tiny config (rotary
positions, RMSNorm, SwiGLU) and ``arch="gpt2"`` a HuggingFace ``GPT2LMHeadModel``. The attacks need the
token embeddings as a differentiable input, so every arch offers ``embedding_matrix``, ``embed`` and
``forward_embeds`` (logits and, on request, the residual stream after every block).

The cache is the zoo's: ``cache_dir()/models/causal_lm-<hash>/`` with model.safetensors + config.json +
key.json, written and verified through :mod:`univ.integrity`. The training loop is next-token cross
entropy over every position (the zoo's :func:`univ.train.train` fits one label per input, not a sequence).
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._checks import check_choice, check_int
from .models import MODELS, ZooModel
from .utils import cache_dir, stable_hash, to_jsonable

ARCHS = ("tl", "gpt2", "llama")
SPECIAL = ("[PAD]", "[UNK]", "[BOS]")


@lru_cache(maxsize=4)
def corpus_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer with ``vocab_size`` tokens trained on the embedded corpus (deterministic,
    offline); [PAD]=0, [UNK]=1, [BOS]=2. A small vocabulary keeps GCG's candidate sweeps cheap."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from .sources import corpus_path

    vocab_size = check_int(vocab_size, "vocab_size", low=len(SPECIAL) + 256,
                           why=" (the 256 bytes and the special tokens come first)")
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = corpus_path().read_text(encoding="utf-8")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.split("\n\n"), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[BOS]", name_or_path=f"univ-corpus-bpe-{vocab_size}")


def corpus_tokens(tokenizer=None, context: int = 24):
    """The embedded corpus as a :class:`~univ.sources.TokenDataset` of ``context``-token contexts ([BOS] first)."""
    from .sources import load_data

    return load_data("corpus", tokenizer=tokenizer or corpus_tokenizer(), context=context, prepend_bos=True,
                     drop_last=True)


class CausalLM(ZooModel):
    """A small decoder-only LM: token ids (b, T) -> next-token logits (b, T, d_vocab).

    arch: "tl" (TransformerLens native bridge), "gpt2" or "llama" (HuggingFace, built from a tiny config).
    """

    name = "causal_lm"
    takes_tokens = True
    reduce = "last"
    feature_axis = -1

    def __init__(self, arch: str = "tl", d_vocab: int = 320, n_ctx: int = 32, d_model: int = 64,
                 n_layers: int = 2, n_heads: int = 4, seed: int = 0):
        super().__init__((n_ctx,))
        check_choice(arch, "arch", ARCHS)
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.config = {"arch": arch, "d_vocab": int(d_vocab), "n_ctx": int(n_ctx), "d_model": int(d_model),
                       "n_layers": int(n_layers), "n_heads": int(n_heads), "seed": int(seed)}
        self.arch, self.n_layers, self.d_model = arch, int(n_layers), int(d_model)
        if arch == "tl":
            from transformer_lens import TransformerBridge, TransformerBridgeConfig

            cfg = TransformerBridgeConfig(
                d_model=d_model, d_head=d_model // n_heads, n_layers=n_layers, n_ctx=n_ctx, n_heads=n_heads,
                d_vocab=d_vocab, d_vocab_out=d_vocab, d_mlp=4 * d_model, act_fn="gelu", normalization_type="LN",
                attention_dir="causal", seed=seed)
            self.net = TransformerBridge.boot_native(cfg)
            self._blocks = [self.net.hook_dict[f"blocks.{i}.hook_resid_post"] for i in range(n_layers)]
        else:
            import transformers as tf

            if arch == "gpt2":
                self.net = tf.GPT2LMHeadModel(tf.GPT2Config(
                    vocab_size=d_vocab, n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx,
                    bos_token_id=2, eos_token_id=2, pad_token_id=0))
                self._blocks = list(self.net.transformer.h)
            else:
                self.net = tf.LlamaForCausalLM(tf.LlamaConfig(
                    vocab_size=d_vocab, hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
                    num_key_value_heads=n_heads, intermediate_size=2 * d_model, max_position_embeddings=n_ctx,
                    bos_token_id=2, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False))
                self._blocks = list(self.net.model.layers)
        self.layers = [f"resid_{i}" for i in range(n_layers)]

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """(d_vocab, d_model): the token embeddings the attacks perturb."""
        return self.net.W_E if self.arch == "tl" else self.net.get_input_embeddings().weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (b, T, d_model) of ``ids`` (b, T) (positions are added inside the forward)."""
        return self.embedding_matrix[ids]

    def forward_embeds(self, emb: torch.Tensor, resid: bool = False):
        """Logits (b, T, d_vocab) from token embeddings ``emb`` (b, T, d_model); with ``resid`` also the
        residual stream after every block, a list of n_layers tensors (b, T, d_model)."""
        outs: list[torch.Tensor] = []
        handles = [b.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
                   for b in self._blocks] if resid else []
        try:
            if self.arch == "tl":
                logits = self.net(emb + self.net.W_pos[:emb.shape[1]], start_at_layer=0)
            else:
                logits = self.net(inputs_embeds=emb, use_cache=False).logits
        finally:
            for h in handles:
                h.remove()
        return (logits, outs) if resid else logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.is_floating_point():
            raise ValueError(f"x: expected integer token ids of shape (n, T), got {tuple(x.shape)} {x.dtype}")
        if x.shape[1] > self.input_shape[0]:
            raise ValueError(f"x: at most n_ctx={self.input_shape[0]} tokens, got {x.shape[1]}")
        return self.forward_embeds(self.embed(x))

    @property
    def hook_dict(self) -> dict:
        """``resid_{i}`` -> the module whose output is the residual stream after block i."""
        return {f"resid_{i}": b for i, b in enumerate(self._blocks)}


MODELS.register("causal_lm", CausalLM, replace=True)


def lm_loss(model: CausalLM, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy of ``model`` on ids (b, T), over positions whose next token is real."""
    logits = model(ids)[:, :-1]
    keep = mask[:, 1:].bool()
    return F.cross_entropy(logits[keep], ids[:, 1:][keep])


def train_lm(model: CausalLM, data, steps: int = 600, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
             test_fraction: float = 0.1, progress: bool = True) -> dict:
    """Next-token training with AdamW and a cosine schedule on a TokenDataset; the last ``test_fraction`` of
    contexts is held out. Returns metrics: train_loss (last 20 steps), test_loss, steps, seconds."""
    steps, batch_size = check_int(steps, "steps", low=1), check_int(batch_size, "batch_size", low=1)
    n_test = max(1, int(len(data) * test_fraction))
    ids, mask = data.input_ids, data.attention_mask
    tr_ids, tr_mask = ids[:-n_test], mask[:-n_test]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    t0, recent = time.perf_counter(), []
    for _ in tqdm(range(steps), desc=f"train {model.arch}", disable=not progress, leave=False):
        idx = torch.randint(len(tr_ids), (batch_size,), generator=g)
        loss = lm_loss(model, tr_ids[idx], tr_mask[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-20:]
    model.eval()
    with torch.no_grad():
        test = float(lm_loss(model, ids[-n_test:], mask[-n_test:]))
    return {"train_loss": sum(recent) / len(recent), "test_loss": test, "steps": steps,
            "seconds": time.perf_counter() - t0}


def cached_lm(arch: str, data, seed: int = 0, steps: int = 600, batch_size: int = 32, lr: float = 3e-3,
              model_cfg: dict | None = None, root: str | Path | None = None, progress: bool = True):
    """Build (seeded) and train a :class:`CausalLM` on ``data`` (a TokenDataset), or load it if this exact
    configuration was trained before. Returns :class:`univ.cache.CachedModel` (model, metrics)."""
    from .cache import CachedModel
    from .integrity import read_entry, write_entry
    from .models import build_model
    from .train import load_metrics, load_model, save_model

    check_choice(arch, "arch", ARCHS)
    cfg = {"arch": arch, "d_vocab": int(data.vocab_size), "n_ctx": int(data.context), **(model_cfg or {})}
    train_cfg = {"steps": steps, "batch_size": batch_size, "lr": lr}
    key = {"model": "causal_lm", "config": to_jsonable(cfg), "init_seed": seed, "data": data.describe(),
           "train": train_cfg}
    folder = Path(root or cache_dir() / "models") / f"causal_lm-{stable_hash(key)}"
    if os.environ.get("UNIV_NO_CACHE") != "1":
        hit = read_entry(folder, lambda f: CachedModel(load_model(f), load_metrics(f)), "cached model")
        if hit is not None:
            return hit
    model = build_model("causal_lm", seed=seed, **cfg)
    metrics = train_lm(model, data, seed=seed, progress=progress, **train_cfg)

    def fill(f: Path) -> None:
        save_model(model, f, metrics)
        (f / "key.json").write_text(json.dumps(key, indent=2))

    write_entry(folder, fill, meta={"kind": "model", "name": "causal_lm"})
    return CachedModel(model, metrics)
