"""Every multi-model method scored on univ.data.shared_features (known subsets), one run.

    python benchmarks/crosscoder_ground_truth.py [--n 20000] [--steps 3000]

Data: shared_features defaults (n=20000, d_ins=(48, 64, 96), every non-empty subset of the 3 models x 16
features = 112 features, p_active=0.04, noise 0.01), and the same with gain_spread=4 (shared features weaker in
some models). Methods, each with d_sae=128 latents (per model for the SAEs), k=5 (per-model SAEs: k=3), at most
``steps`` steps: the BatchTopK, TopK and L1 crosscoders, the universal SAE (tags from its decoder norms), and
one TopK SAE per model matched pairwise (correlation >= 0.7). Scores: precision/recall of subset tags and MMCS
per model (``univ.sae.tags.score_subsets``), false exclusives (tagged in fewer models than their feature) and
how many Latent Scaling flags; the shuffled-pairing null's shared count. Written to
benchmarks/results/crosscoder_ground_truth.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--steps", type=int, default=3000)
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    import univ.data
    import univ.sae as S
    from univ.sae import tags as T

    torch.set_num_threads(1)
    fit = {"max_steps": a.steps, "progress": False}
    rows = []
    for spread in (1.0, 4.0):
        gt = univ.data.shared_features(n=a.n, gain_spread=spread)
        d_ins = [x.shape[1] for x in gt.xs]
        true = gt.subsets()
        for name in ("batchtopk", "topk", "l1", "universal"):
            m = (S.UniversalSAE(d_ins, 128, k=5) if name == "universal" else
                 S.Crosscoder(d_ins, 128, kind=name, k=5)).fit(gt.xs, **fit)
            tags = S.latent_tags(m, gt.xs, n_bootstrap=200)
            codes = T.joint_codes(m, gt.xs)
            r = T.score_subsets(gt, codes, tags.subsets(), [m.folded(i)["W_dec"] for i in range(3)])
            corr, feat = T._corr(gt.coefficients, codes).max(0)
            tab, tagged = tags.table, tags.subsets()
            tracked = [i for i in range(m.d_sae) if tab["live"][i] and corr[i] >= 0.5]
            fe = [i for i in tracked if set(tagged[i]) < set(true[int(feat[i])])]
            r.update({"method": name, "gain_spread": spread, "false_exclusives": len(fe),
                      "false_exclusives_flagged": int(tab["ls_flag"][fe].sum()),
                      "flagged_total": int(tab["ls_flag"][tab["live"]].sum())})
            if name == "batchtopk":
                xs = S.shuffle_pairing(gt.xs, seed=1)
                null = S.latent_tags(S.Crosscoder(d_ins, 128, kind=name, k=5).fit(xs, **fit), xs, n_bootstrap=200)
                c = null.counts.set_index("subset").loc["shared (size>=2)"]
                real = tags.counts.set_index("subset").loc["shared (size>=2)"]
                r.update({"shared": int(real["count"]), "shared_ci": [real["count_low"], real["count_high"]],
                          "null_shared": int(c["count"]), "null_shared_ci": [c["count_low"], c["count_high"]]})
            print(r, flush=True)
            rows.append(r)
        saes = [S.TopKSAE(d, 128, k=3).fit(x, **fit) for d, x in zip(d_ins, gt.xs)]
        codes, subsets, decs = T.pairwise_subsets(saes, gt.xs)
        r = T.score_subsets(gt, codes, subsets, decs)
        r.update({"method": "pairwise SAEs", "gain_spread": spread})
        print(r, flush=True)
        rows.append(r)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "crosscoder_ground_truth.json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
