"""A small report with what the pages must handle (Findings given last, a long tidy layer x layer table kept out
of report.md, NaN and booleans, a figure, an image dashboard and a text dashboard) written as a run folder."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from univ.report import Report, write  # noqa: E402
from univ.report import dashboard as D  # noqa: E402

N, D_SAE = 60, 12


def planted(seed=0):
    """Codes where latent j fires on rows j, j + D_SAE, ... with activation rising along the rows, so its top
    rows are known: the largest rows of the form j + D_SAE * i."""
    rng = np.random.default_rng(seed)
    codes = np.zeros((N, D_SAE))
    for j in range(D_SAE - 1):  # the last latent never fires (dead)
        rows = np.arange(j, N, D_SAE)
        codes[rows, j] = 1.0 + rows / N + 0.01 * rng.random(len(rows))
    return codes


def demo_report(seed=0) -> Report:
    rng = np.random.default_rng(seed)
    r = Report("demo")
    r.add_text("Setup", "Two toy models; `code`, **bold** and a [link](similarity.csv). <script>alert(1)</script>")
    layers = [f"layer{i}" for i in range(4)]
    rows = [{"model_a": "a", "layer_a": la, "model_b": "b", "layer_b": lb, "metric": m, "value": rng.random(),
             "baseline_mean": 0.2, "p_value": rng.choice([0.001, 0.3])}
            for m in ("linear_cka", "svcca") for la in layers for lb in layers]
    r.add_table("similarity", pd.DataFrame(rows), "Every layer pair (tidy).", inline=False)
    r.add_table("summary", pd.DataFrame({"model": ["m_img", "m_img", "m_txt"], "latent": [3, 5, 2],
                                         "score": [0.5, np.nan, 2.5e-7], "shared": [True, False, True]}),
                "A short table whose latents link to their cards.")
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [2, 0, 1])
    r.add_figure("curve", fig, "A line.")
    codes = planted(seed)
    images = np.zeros((N, 1, 6, 6))
    images[np.arange(N), 0, np.arange(N) % 6, np.arange(N) // 10] = 1.0  # every image differs
    tokens = [[f"w{c}_{p}" for p in range(10)] for c in range(6)]
    vocab = [f"tok{i}" for i in range(9)]
    dec, unembed = rng.normal(size=(D_SAE, 5)), rng.normal(size=(5, len(vocab)))
    board = D.build({"m_img": D.ModelFeatures(codes, images=images, labels=[str(i % 10) for i in range(N)],
                                              tags=["shared"] * 6 + ["exclusive"] * 6),
                     "m_txt": D.ModelFeatures(codes[:, ::-1].copy(), tokens=tokens,
                                              logits=D.top_logits(dec, unembed, vocab, n=3))})
    r.add_dashboard("features", board, "The toy dashboard.")
    r.add_text("Findings", "The finding comes first.")
    return r


def write_demo(folder, seed=0):
    return write(demo_report(seed), folder, config={"seed": seed})


# a canvas is blank when every pixel is the same colour
NON_BLANK = """
const [img] = arguments;
const c = document.createElement('canvas');
c.width = img.naturalWidth || img.width; c.height = img.naturalHeight || img.height;
if (!c.width || !c.height) return false;
const ctx = c.getContext('2d');
ctx.drawImage(img, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data;
for (let i = 4; i < d.length; i += 4)
  if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
return false;
"""
