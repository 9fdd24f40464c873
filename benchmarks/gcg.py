"""univ's GCG (``univ.adversarial.lm.gcg``) against nanoGCG (github:GraySwanAI/nanoGCG) on the same model, prompts
and targets: GCG steps per second and success after a fixed number of steps.

    OMP_NUM_THREADS=1 python benchmarks/gcg.py [--steps 50] [--prompts 6]

The model is univ's ``gpt2`` corpus LM (``univ.lm_zoo.cached_lm``), saved with ``save_pretrained`` together with its
tokenizer (a [BOS] post-processor and a plain chat template, so nanoGCG's template split yields exactly the prompt
followed by the optimised string). nanoGCG pins ``transformers<=4.47.1``, which would change univ's pins, so it runs
in its own venv (``benchmarks/.venv-nanogcg``, created here on first use: CPU torch 2.13.0 + nanogcg) as a
subprocess reading the saved folder. Both sides: one torch thread, the same suffix initialisation ("x x x ..."),
search width, top-k, one replacement per candidate, no early stop, and the same forbidden tokens (nanoGCG's
non-ASCII list plus the special tokens). Success: the target is the next-token argmax after the best suffix.
nanoGCG also uses a prefix KV cache and filters candidates that do not survive decode/encode (its defaults);
univ's GCG does neither (it works on ids; the table reports how many of its suffixes survive decode/encode).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-nanogcg"

WORKER = r"""
import json, sys, time, torch, transformers, nanogcg
from nanogcg import GCGConfig
torch.set_num_threads(1)
a = json.loads(sys.argv[1])
# built from tokenizer.json: the tokenizer_config.json that a newer transformers writes names a class 4.47 lacks
tok = transformers.PreTrainedTokenizerFast(tokenizer_file=a["folder"] + "/tokenizer.json", pad_token="[PAD]",
                                           unk_token="[UNK]", bos_token="[BOS]", eos_token="[BOS]")
tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
model = transformers.AutoModelForCausalLM.from_pretrained(a["folder"], torch_dtype=torch.float32).eval()
out = []
for prompt, target, tid in zip(a["prompts"], a["targets"], a["target_ids"]):
    cfg = GCGConfig(num_steps=a["steps"], optim_str_init=a["init"], search_width=a["width"], topk=a["topk"],
                    n_replace=1, early_stop=False, seed=0, verbosity="WARNING", filter_ids=a["filter_ids"])
    t0 = time.perf_counter()
    res = nanogcg.run(model, tok, prompt, target, cfg)
    dt = time.perf_counter() - t0
    ids = torch.cat([tok([prompt], return_tensors="pt")["input_ids"],
                     tok([res.best_string], add_special_tokens=False, return_tensors="pt")["input_ids"]], 1)
    with torch.no_grad():
        ok = int(model(ids).logits[0, -1].argmax()) == tid
    out.append({"seconds": dt, "success": ok, "best_loss": float(res.best_loss)})
print(json.dumps({"runs": out, "transformers": transformers.__version__, "torch": torch.__version__,
                  "nanogcg": __import__("importlib.metadata").metadata.version("nanogcg")}))
"""


def ensure_venv() -> Path | None:
    """The nanoGCG venv's python, created on first use; None (with the reason printed) when it cannot be built."""
    py = VENV / "bin" / "python"
    if py.exists():
        return py
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "nanogcg"], check=True)
    except subprocess.CalledProcessError as e:
        print(f"nanoGCG cannot be installed here ({e}); only univ's side is measured")
        return None
    return py


def save_subject(folder: Path, steps: int):
    """Train (or load) the gpt2 corpus LM and save it and its tokenizer for both sides."""
    from tokenizers import processors

    from univ.lm_zoo import cached_lm, corpus_tokenizer, corpus_tokens

    tok = corpus_tokenizer()
    data = corpus_tokens(tok, context=32)
    model, metrics = cached_lm("gpt2", data, seed=0, steps=steps, model_cfg={"d_model": 64, "n_layers": 2})
    model.net.save_pretrained(folder)
    tok = tok.__class__(tokenizer_object=tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str()),
                        pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[BOS]")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="[BOS] $A",
                                                                         special_tokens=[("[BOS]", 2)])
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tok.save_pretrained(folder)
    return data, metrics


def pick(data, tok, model, n: int, seed: int = 0):
    """n held-out prompts (text) and single-token ASCII targets that the model does not already predict."""
    import torch

    g = torch.Generator().manual_seed(seed)
    held = data.input_ids[-max(1, len(data) // 10):]
    counts = torch.bincount(data.input_ids.reshape(-1), minlength=data.vocab_size)
    counts[:3] = 0
    frequent = [int(t) for t in counts.argsort(descending=True)[:80]
                if tok.decode([int(t)]).isascii() and tok.decode([int(t)]).isprintable()
                and tok([tok.decode([int(t)])], add_special_tokens=False)["input_ids"][0] == [int(t)]]
    prompts, targets = [], []
    for i in torch.randperm(len(held), generator=g).tolist():
        text = tok.decode(held[i, 1:16])
        ids = tok([text], return_tensors="pt")["input_ids"]
        if not text.isascii() or ids.shape[1] != 16:
            continue
        with torch.no_grad():
            pred = int(model(inputs_embeds=model.get_input_embeddings()(ids)).logits[0, -1].argmax())
        choices = [t for t in frequent if t != pred]
        prompts.append(text)
        targets.append(choices[int(torch.randint(len(choices), (1,), generator=g))])
        if len(prompts) == n:
            break
    return prompts, targets


def run_univ(folder: Path, prompts, targets, args):
    import torch
    import transformers

    from univ.adversarial import lm as alm

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    net = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    V = net.get_input_embeddings().weight.shape[0]
    forbidden = [i for i in range(V) if not (tok.decode([i]).isascii() and tok.decode([i]).isprintable())]
    forbidden += [0, 1, 2]
    out = []
    for prompt, target in zip(prompts, targets):
        before = tok([prompt], return_tensors="pt")["input_ids"][0]
        init = tok([args.init], add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        ids = torch.cat([before, init])
        pos = torch.arange(len(before), len(ids))
        t0 = time.perf_counter()
        res = alm.gcg(net, ids, alm.TargetToken(target), pos, steps=args.steps, search_width=args.width,
                      topk=args.topk, forbidden=forbidden, early_stop=False, seed=0)
        dt = time.perf_counter() - t0
        s = tok.decode(res.ids[pos])
        survives = tok([s], add_special_tokens=False)["input_ids"][0] == res.ids[pos].tolist()
        out.append({"seconds": dt, "success": res.success, "best_loss": res.loss, "round_trip": survives})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--topk", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=1500)
    p.add_argument("--init", default="x x x x x x x x")
    p.add_argument("--no-filter", action="store_true",
                   help="run nanoGCG with filter_ids=False (no decode/encode check of candidates)")
    p.add_argument("--out", default=str(HERE / "results" / "gcg.json"))
    args = p.parse_args()
    import torch
    import transformers

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "subject"
        data, metrics = save_subject(folder, args.train_steps)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        net = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
        prompts, targets = pick(data, tok, net, args.prompts)
        ours = run_univ(folder, prompts, targets, args)
        py = ensure_venv()
        theirs, versions = None, {}
        if py is not None:
            job = {"folder": str(folder), "prompts": prompts, "targets": [tok.decode([t]) for t in targets],
                   "target_ids": targets, "steps": args.steps, "width": args.width, "topk": args.topk,
                   "init": args.init, "filter_ids": not args.no_filter}
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
            r = subprocess.run([str(py), "-c", WORKER, json.dumps(job)], capture_output=True, text=True, env=env)
            if r.returncode:
                print(r.stderr[-3000:])
            else:
                got = json.loads(r.stdout.strip().splitlines()[-1])
                theirs, versions = got["runs"], {k: v for k, v in got.items() if k != "runs"}
    summary = {"model": "univ gpt2 corpus LM (d_model 64, 2 layers, vocab 320)", "test_loss": metrics["test_loss"],
               "steps": args.steps, "search_width": args.width, "topk": args.topk, "suffix_init": args.init,
               "n_prompts": len(prompts), "threads": 1, "nanogcg_filter_ids": not args.no_filter,
               "torch": torch.__version__,
               "univ_transformers": transformers.__version__, "nanogcg_side": versions}
    for name, runs in (("univ", ours), ("nanogcg", theirs)):
        if runs is None:
            continue
        secs = sum(r["seconds"] for r in runs)
        summary[name] = {"steps_per_s": args.steps * len(runs) / secs, "success": sum(r["success"] for r in runs),
                         "mean_best_loss": sum(r["best_loss"] for r in runs) / len(runs), "runs": runs}
    if theirs is not None:
        ratio = summary["univ"]["steps_per_s"] / summary["nanogcg"]["steps_per_s"]
        summary["throughput_ratio_univ_over_nanogcg"] = ratio
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: (v if not isinstance(v, dict) or "runs" not in v else {kk: vv for kk, vv in v.items()
                                                                               if kk != "runs"})
                      for k, v in summary.items()}, indent=2))


if __name__ == "__main__":
    main()
