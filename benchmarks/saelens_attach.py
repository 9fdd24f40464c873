"""An SAE trained with ``univ sae train`` on a TransformerLens model attaches in SAELens by its hook_name.

    python benchmarks/saelens_attach.py [--peer-python PATH]

1. univ side: a tiny GPT-2 built from its config (random init) and a word-level tokenizer, saved to a folder;
   ``univ sae train tl:<folder> --layer blocks.0.hook_resid_post`` trains a TopK SAE and saves it.
2. SAELens side (its own venv, as benchmarks/saelens_interop.py makes it): ``SAE.load_from_disk``, a
   ``HookedSAETransformer`` of the same shape, ``add_sae(sae)`` (which places the SAE by
   ``sae.cfg.metadata.hook_name``) and ``run_with_cache``: the SAE's hooks must appear at that hook point, and
   SAELens's codes must equal univ's on the same activations.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAYER = "blocks.0.hook_resid_post"


def univ_side(work: Path) -> dict:
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from univ.cli import main
    from univ.sources import corpus_path

    text = Path(corpus_path()).read_text()[:20000].split("\n")
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(text, trainers.WordLevelTrainer(vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[BOS]"]))
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                      eos_token="[BOS]")
    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=len(fast), n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0,
                        bos_token_id=2, eos_token_id=2)
    model_dir = work / "gpt2"
    tf.GPT2LMHeadModel(cfg).save_pretrained(model_dir)
    fast.save_pretrained(model_dir)
    rc = main(["sae", "train", f"tl:{model_dir}", "--layer", LAYER, "--n-tokens", "2048", "--context", "32",
               "--steps", "200", "--k", "4", "--out", str(work / "sae")])
    assert rc == 0, rc
    from safetensors.torch import save_file

    import univ

    folder = work / "sae"
    sae = univ.sae.load(folder)
    x = torch.randn(64, 32)

    save_file({"x": x, "codes": sae.encode(x).detach()}, str(work / "probe.safetensors"))
    return {"folder": str(folder), "vocab": len(fast)}


PEER = r'''
import json, sys, torch
from safetensors.torch import load_file
from sae_lens import SAE, HookedSAETransformer, __version__
from transformer_lens import HookedTransformerConfig
folder, vocab, layer, probe = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sae = SAE.load_from_disk(folder)
cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_vocab=vocab, act_fn="gelu_new",
                              normalization_type="LN")
model = HookedSAETransformer(cfg)
model.add_sae(sae)
_, cache = model.run_with_cache(torch.randint(3, vocab, (2, 16)))
p = load_file(probe)
print(json.dumps({"sae_lens": __version__, "hook_name": sae.cfg.metadata.hook_name,
                  "sae_hooks": sorted(k for k in cache if k.startswith(layer + ".")),
                  "codes_max_diff": float((sae.encode(p["x"]) - p["codes"]).abs().max())}))
'''


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-python", help="python of a venv with sae-lens (default: benchmarks/.venv-saelens)")
    args = p.parse_args()
    if args.peer_python:
        peer_py = args.peer_python
    else:
        sys.path.insert(0, str(HERE))
        from saelens_interop import _ensure_peer_venv

        peer_py = str(_ensure_peer_venv())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        info = univ_side(work)
        out = subprocess.run([peer_py, "-c", PEER, info["folder"], str(info["vocab"]), LAYER,
                              str(work / "probe.safetensors")], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(res, indent=1))
    ok = res["hook_name"] == LAYER and any(k.endswith("hook_sae_acts_post") for k in res["sae_hooks"])
    print(f"attached by hook_name {res['hook_name']!r} in sae-lens {res['sae_lens']}: {ok}; "
          f"codes max |diff| on the same activations {res['codes_max_diff']:.2e}")


if __name__ == "__main__":
    main()
