"""Static heatmaps people read: labelled colorbar, readable ticks, the baseline drawn on the colorbar and the
non-significant cells hatched; grid_figure takes them from a tidy comparison table."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from named_errors import assert_named_error  # noqa: E402

from univ.report import grid_figure, heatmap  # noqa: E402


def hatched(ax):
    return [p for p in ax.patches if p.get_hatch()]


def test_heatmap_labels_baseline_and_significance():
    m = pd.DataFrame(np.arange(6).reshape(2, 3) / 6, index=["a0", "a1"], columns=["block_one", "block_two", "b3"])
    ns = np.array([[True, False, False], [False, False, True]])
    fig = heatmap(m, title="t", cbar_label="linear CKA", baseline=0.25, not_significant=ns)
    ax, cax = fig.axes
    assert cax.get_ylabel() == "linear CKA (blue line: baseline 0.25)"
    (line,) = cax.lines
    assert line.get_ydata()[0] == pytest.approx(0.25)
    assert sorted((int(p.get_y()), int(p.get_x())) for p in hatched(ax)) == [(0, 0), (1, 2)]
    assert "not significant" in ax.get_title()
    assert all(t.get_fontsize() >= 8 for t in ax.get_xticklabels() + ax.get_yticklabels())
    assert ax.get_xticklabels()[0].get_rotation() == pytest.approx(40)  # long names tilt instead of overlapping
    plt.close(fig)
    fig = heatmap(m)  # defaults: a labelled colorbar, nothing hatched, no baseline
    assert fig.axes[1].get_ylabel() == "value" and not hatched(fig.axes[0]) and not fig.axes[1].lines
    plt.close(fig)
    assert_named_error(lambda: heatmap(m, not_significant=np.zeros((3, 2), bool)), ValueError,
                       r"^not_significant: expected shape \(2, 3\) like the matrix, got \(3, 2\)")


def test_grid_figure_reads_baseline_and_p_values_from_the_table():
    rows = [{"layer_a": la, "layer_b": lb, "metric": "cka", "value": 0.5, "baseline_mean": b, "p_value": p}
            for (la, lb, b, p) in [("x", "u", 0.1, 0.01), ("x", "v", 0.3, 0.5), ("y", "u", 0.2, 0.2),
                                   ("y", "v", 0.2, 0.001)]]
    fig = grid_figure(pd.DataFrame(rows), "cka")
    ax, cax = fig.axes
    assert cax.get_ylabel() == "cka (blue line: baseline 0.2)" and cax.lines[0].get_ydata()[0] == pytest.approx(0.2)
    assert sorted((int(p.get_y()), int(p.get_x())) for p in hatched(ax)) == [(0, 1), (1, 0)]
    plt.close(fig)
