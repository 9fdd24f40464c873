"""Reports: tables and figures of an analysis, written to a run folder named by a config hash.

This is one of the few modules that touches the file system (with ``analyses/`` and ``cli.py``).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .utils import stable_hash, to_jsonable  # noqa: F401 (stable_hash re-exported)


@dataclass
class Report:
    """What an analysis returns.

    tables: name -> tidy DataFrame (written as CSV + Markdown).
    figures: name -> matplotlib Figure (written as PNG).
    sections: the report.md body in reading order: (title, text) pairs; a section whose title equals a
        table's name gets that table rendered below its text, and a figure's name its image.
    summary: the table printed to the terminal at the end of ``univ run`` (a key of ``tables``).
    """

    name: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    sections: list[tuple[str, str]] = field(default_factory=list)
    summary: str | None = None
    meta: dict = field(default_factory=dict)

    def add_table(self, name: str, df: pd.DataFrame, text: str = "", inline: bool = True) -> None:
        """Add a table; ``inline=False`` keeps a long table out of report.md (CSV + Markdown files only)."""
        self.tables[name] = df
        if not inline:
            self.meta.setdefault("not_inline", []).append(name)
        self.sections.append((name, text))

    def add_figure(self, name: str, fig, text: str = "") -> None:
        self.figures[name] = fig
        self.sections.append((name, text))

    def add_text(self, title: str, text: str) -> None:
        self.sections.append((title, text))


def library_versions() -> dict:
    """Versions of python and the libraries that shape the numbers."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("univ", "torch", "transformer-lens", "numpy", "pandas", "scikit-learn", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def run_dir(out: str | Path, name: str, config) -> Path:
    """``out/<name>-<hash of config>``: reruns of the same config land in the same folder."""
    return Path(out) / f"{name}-{stable_hash(config)}"


def check_writable(path: str | Path) -> Path:
    """Create ``path`` and prove it is writable, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".univ-write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"out: cannot write to output folder {str(path)!r}: {e.strerror or e}") from e
    return path


def format_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A DataFrame as a GitHub Markdown table."""
    return df.to_markdown(index=False, floatfmt=floatfmt)


def write(report: Report, folder: str | Path, config=None, elapsed_s: float | None = None) -> Path:
    """Write config.json, tables (CSV + Markdown), figures (PNG) and report.md into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = check_writable(folder)
    meta = {"analysis": report.name, "config": to_jsonable(config), "versions": library_versions(),
            "written": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": elapsed_s, **report.meta}
    (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    for name, df in report.tables.items():
        df.to_csv(folder / f"{name}.csv", index=False)
        (folder / f"{name}.md").write_text(format_table(df) + "\n")
    for name, fig in report.figures.items():
        fig.savefig(folder / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
    lines = [f"# {report.name}", ""]
    if config is not None:
        lines += ["Config: `" + json.dumps(to_jsonable(config), default=str) + "`", ""]
    for title, text in report.sections:
        lines += [f"## {title}", ""]
        if text:
            lines += [text, ""]
        if title in report.tables and title in report.meta.get("not_inline", []):
            lines += [f"({len(report.tables[title])} rows: [{title}.csv]({title}.csv), [{title}.md]({title}.md))", ""]
        elif title in report.tables:
            lines += [format_table(report.tables[title]), ""]
        if title in report.figures:
            lines += [f"![{title}]({title}.png)", ""]
    (folder / "report.md").write_text("\n".join(lines))
    return folder


def heatmap(matrix: pd.DataFrame | np.ndarray, title: str = "", ax=None, vmin=0.0, vmax=1.0,
            cmap: str = "magma", annot: bool | None = None, xlabel: str = "", ylabel: str = ""):
    """A labelled heatmap of a (rows x cols) matrix; returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        n_r, n_c = np.shape(matrix)
        fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n_c, 1.0 + 0.45 * n_r))
    else:
        fig = ax.figure
    if annot is None:
        annot = max(np.shape(matrix)) <= 12
    sns.heatmap(matrix, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, annot=annot, fmt=".2f", square=False,
                cbar_kws={"shrink": 0.8}, annot_kws={"size": 7})
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig
