"""Tokens/s of univ.capture into the activation store against a bare HuggingFace forward and TransformerLens's
run_with_cache, on a Pythia-70M-sized model, one run.

    python benchmarks/capture.py [--threads 1] [--batch 8] [--context 128] [--batches 4] [--rounds 3]

The model: GPTNeoXConfig with Pythia-70M's sizes (6 layers, d_model 512, 8 heads, d_mlp 2048, vocab 50304,
rotary_pct 0.25), random init (seed 0), saved once to a temporary folder with a small local tokenizer and
loaded by univ as ``hf:<folder>`` and ``tl:<folder>`` (the TransformerLens 4.x bridge over the same
HuggingFace model class and weights): nothing is downloaded. The inputs: ``--batches`` batches of
``--batch`` x ``--context`` random token ids with a full attention mask, the same for every side.

Sides (each sees the same batches; activations of the 6 residual-stream layers, one row per token):
- ``hf``: ``net(input_ids, attention_mask, output_hidden_states=True)`` under no_grad, outputs dropped: the
  floor, the forward pass alone;
- ``univ-store``: ``univ.store.capture_to_store(model, inputs, model.layers, reduce="tokens",
  shard_rows=1024)`` into a fresh folder each round: hooks, the masked token rows, the cache key (a hash
  of the weights and inputs), safetensors shards with SHA-256 manifests on disk;
- ``tl-filtered``: ``bridge.run_with_cache(ids, attention_mask=..., names_filter=<the 6 hook_resid_post>)``,
  the cache dropped; ``tl-all``: ``run_with_cache`` with its default of caching every hook.
Rounds interleave the sides (hf, univ, tl-filtered, tl-all, then again) so machine load hits all alike; each
round gives each side's tokens/s and univ's ratio to each other side; the report is the median ratio. The
store's one fixed cost per call (hashing the weights for its key) is timed on its own and stated.

Peak memory: each of univ-store and ``hf-keep`` (the bare forward keeping the token rows of every layer in
memory, what capturing without a store amounts to) runs in a subprocess of its own for two token counts; the
peak resident set during the run (VmHWM, reset after the model is loaded; model included) and its growth
between the counts are reported.

Torch threads are pinned (torch.set_num_threads and OMP/MKL env) and stated. Results are printed and written
to benchmarks/results/capture.json (ignored by git); benchmarks/capture.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's univ, not another installed one
PYTHIA_70M = dict(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                  intermediate_size=2048, max_position_embeddings=2048, rotary_pct=0.25, rotary_emb_base=10000,
                  use_parallel_residual=True, bos_token_id=0, eos_token_id=0)


def _pin(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def build(folder: Path) -> None:
    """The Pythia-70M-sized model (seed 0) and a small word-level tokenizer, saved to ``folder``."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**PYTHIA_70M)).save_pretrained(folder)
    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(100)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>", unk_token="<unk>").save_pretrained(folder)


def batches(n: int, batch: int, context: int):
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, PYTHIA_70M["vocab_size"], (n * batch, context), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def side_hf(net, inputs, batch: int, keep: bool = False):
    import torch

    kept = []
    with torch.no_grad():
        for i in range(0, len(inputs["input_ids"]), batch):
            hs = net(input_ids=inputs["input_ids"][i:i + batch], attention_mask=inputs["attention_mask"][i:i + batch],
                     output_hidden_states=True).hidden_states[1:]
            if keep:
                mask = inputs["attention_mask"][i:i + batch].bool()
                kept.append([h[mask] for h in hs])
    return kept


def side_univ(model, inputs, batch: int, root: Path):
    from univ.store import capture_to_store

    return capture_to_store(model, inputs, model.layers, reduce="tokens", shard_rows=1024, batch_size=batch,
                            root=root, progress=False)


def side_tl(bridge, inputs, batch: int, names):
    import torch

    with torch.no_grad():
        for i in range(0, len(inputs["input_ids"]), batch):
            ids, mask = inputs["input_ids"][i:i + batch], inputs["attention_mask"][i:i + batch]
            bridge.run_with_cache(ids, attention_mask=mask, names_filter=names)


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker_memory(folder: str, side: str, n_batches: int, batch: int, context: int, threads: int) -> None:
    """One side in this process; prints JSON (MiB): the resident set once the model and inputs are loaded,
    and the peak resident set during the side's run (Linux: the high-water mark is reset after loading by
    writing 5 to /proc/self/clear_refs, so loading's own peak does not hide the run's)."""
    _pin(threads)
    import gc

    from univ.sources import load_model

    model = load_model(f"hf:{folder}")
    inputs = batches(n_batches, batch, context)
    gc.collect()
    loaded = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    root = Path(tempfile.mkdtemp(prefix="univ-bench-store-"))
    try:
        if side == "univ-store":
            side_univ(model, inputs, batch, root)
        else:
            side_hf(model.net, inputs, batch, keep=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"loaded_mib": loaded, "peak_mib": _status_mib("VmHWM"),
                      "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure_memory(folder: Path, args, n_batches: int, side: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, __file__, "--worker-memory", side, "--folder", str(folder), "--batches", str(n_batches),
           "--batch", str(args.batch), "--context", str(args.context), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{side} memory worker failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8, help="contexts per forward pass")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="batches per side per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--memory-batches", default="2,8", help="the two batch counts of the memory runs")
    p.add_argument("--worker-memory", choices=["univ-store", "hf-keep"])
    p.add_argument("--folder")
    args = p.parse_args()
    if args.worker_memory:
        worker_memory(args.folder, args.worker_memory, args.batches, args.batch, args.context, args.threads)
        return
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1",
                      TRANSFORMERS_OFFLINE="1")
    _pin(args.threads)
    import torch

    import univ
    from univ.sources import load_model

    work = Path(tempfile.mkdtemp(prefix="univ-bench-capture-"))
    try:
        folder = work / "pythia-70m-sized"
        build(folder)
        model, bridge = load_model(f"hf:{folder}"), load_model(f"tl:{folder}")
        inputs = batches(args.batches, args.batch, args.context)
        n_tokens = int(inputs["attention_mask"].sum())
        names = [f"blocks.{i}.hook_resid_post" for i in range(6)]
        # the sides compute the same thing: univ's rows equal the hidden states and the bridge's cache
        check = {k: v[:2] for k, v in inputs.items()}
        ours = univ.capture(model, check, model.layers, reduce="tokens")
        with torch.no_grad():
            hs = model.net(**check, output_hidden_states=True).hidden_states[1:]
            _, cache = bridge.net.run_with_cache(check["input_ids"], attention_mask=check["attention_mask"],
                                                 names_filter=names)
        diff_hf = max(float((ours[n] - h.flatten(0, 1)).abs().max()) for n, h in zip(model.layers[:5], hs))
        diff_tl = max(float((ours[a] - cache[b].flatten(0, 1)).abs().max()) for a, b in zip(model.layers[:5], names))
        sides = {
            "hf": lambda: side_hf(model.net, inputs, args.batch),
            "univ-store": lambda: side_univ(model, inputs, args.batch, Path(tempfile.mkdtemp(dir=work))),
            "tl-filtered": lambda: side_tl(bridge.net, inputs, args.batch, names),
            "tl-all": lambda: side_tl(bridge.net, inputs, args.batch, None),
        }
        side_hf(model.net, {k: v[:args.batch] for k, v in inputs.items()}, args.batch)  # warm-up
        rates: dict[str, list[float]] = {s: [] for s in sides}
        for r in range(args.rounds):
            for name, fn in sides.items():
                t0 = time.perf_counter()
                fn()
                rates[name].append(n_tokens / (time.perf_counter() - t0))
            print(f"round {r + 1}: " + "  ".join(f"{s} {v[-1]:7.0f} tok/s" for s, v in rates.items()), flush=True)
        t0 = time.perf_counter()  # the store's one fixed cost per call: its key hashes the weights
        univ.utils.tensor_hash(*model.state_dict().values())
        key_hash_s = time.perf_counter() - t0
        ratios = {s: statistics.median(u / o for u, o in zip(rates["univ-store"], rates[s]))
                  for s in sides if s != "univ-store"}
        counts = [int(c) for c in args.memory_batches.split(",")]
        memory = {side: {n * args.batch * args.context: measure_memory(folder, args, n, side) for n in counts}
                  for side in ("univ-store", "hf-keep")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("torch", "transformers", "transformer-lens")}
    result = {"config": {**vars(args), "model": "GPTNeoX " + json.dumps(PYTHIA_70M), "tokens_per_round": n_tokens},
              "versions": versions, "max_abs_diff": {"univ_vs_hidden_states": diff_hf, "univ_vs_run_with_cache":
                                                      diff_tl},
              "tokens_per_s": rates, "median_tokens_per_s": {s: statistics.median(v) for s, v in rates.items()},
              "median_ratio_univ_over": ratios, "weights_hash_s": key_hash_s, "memory_mib": memory}
    out = HERE / "results" / "capture.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nPythia-70M-sized GPTNeoX (random init), {args.batch} x {args.context} tokens per batch, "
          f"{n_tokens} tokens per side per round, {args.rounds} interleaved rounds, torch threads {args.threads}; "
          f"{versions}")
    print(f"same activations: max |univ - hidden_states| {diff_hf:.2e}, max |univ - run_with_cache| {diff_tl:.2e}")
    for s, v in result["median_tokens_per_s"].items():
        ratio = f"univ-store / {s} = {ratios[s]:.3f} (median of rounds)" if s in ratios else ""
        print(f"  {s:12s} {v:8.0f} tok/s   {ratio}")
    print(f"  (univ-store's fixed cost per call, hashing the weights for the store's key: {key_hash_s:.2f} s, "
          f"{key_hash_s * result['median_tokens_per_s']['univ-store'] / n_tokens:.0%} of a round)")
    for side, by_n in memory.items():
        (n1, a), (n2, b) = by_n.items()
        print(f"  peak RSS {side:10s} {n1} tokens {a['peak_mib']:6.0f} MiB, {n2} tokens {b['peak_mib']:6.0f} MiB "
              f"(growth {b['peak_mib'] - a['peak_mib']:+.0f} MiB; {a['loaded_mib']:.0f} and {b['loaded_mib']:.0f} MiB "
              f"once loaded)")


if __name__ == "__main__":
    main()
