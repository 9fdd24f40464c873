"""The run folder: config.json, tables (CSV + Markdown), figures (PNG), report.md and report.html (with a
dashboard page per feature dashboard), written atomically.

A run folder is ``<out>/<analysis>-<hash of the config>``. Everything is first written to a hidden temporary
folder beside it and renamed into place at the end, so a run killed while writing leaves no half-written
folder that looks finished, and a rerun of the same config replaces the old folder in one step. If the
output folder cannot be written at the end, the report goes to a fallback folder named in the error, so no
computed table is lost.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..utils import stable_hash, to_jsonable


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


def check_parent_writable(folder: str | Path) -> Path:
    """Fail early (ValueError naming ``out``) unless ``folder`` could be created and written, creating nothing:
    the nearest existing ancestor must be a writable folder."""
    folder = Path(folder)
    probe = folder.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"out: {str(probe)!r} is not a folder, so {str(folder)!r} cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"out: cannot write to {str(probe)!r} (permission denied)")
    return folder


def format_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A DataFrame as a GitHub Markdown table."""
    return df.to_markdown(index=False, floatfmt=floatfmt)


def _render(report, config) -> str:
    lines = [f"# {report.name}", ""]
    if config is not None:
        lines += ["Config (the settings this run used): `" + json.dumps(to_jsonable(config), default=str) + "`", ""]
    not_inline = report.meta.get("not_inline", [])
    for title, text in report.sections:
        lines += [f"## {title}", ""]
        if text:
            lines += [text, ""]
        if title in report.tables and title in not_inline:
            lines += [f"({len(report.tables[title])} rows: [{title}.csv]({title}.csv), [{title}.md]({title}.md))", ""]
        elif title in report.tables:
            lines += [format_table(report.tables[title]), ""]
        if title in report.figures:
            lines += [f"![{title}]({title}.png)", ""]
        if title in report.dashboards:
            lines += [f"Feature dashboard: [{title}.html]({title}.html)", ""]
    return "\n".join(lines)


def _write_into(report, folder: Path, config, elapsed_s, extra: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, df in report.tables.items():
        df.to_csv(folder / f"{name}.csv", index=False)
        (folder / f"{name}.md").write_text(format_table(df) + "\n")
    for name, fig in report.figures.items():
        fig.savefig(folder / f"{name}.png", dpi=120, bbox_inches="tight")
    (folder / "report.md").write_text(_render(report, config))
    from . import dashboard, html

    for name, dash in report.dashboards.items():
        (folder / f"{name}.html").write_text(dashboard.render(dash, title=f"{report.name}: {name}"))
    images = {name: (folder / f"{name}.png").read_bytes() for name in report.figures}
    (folder / "report.html").write_text(html.render(report, to_jsonable(config), images))
    meta = {"analysis": report.name, "config": to_jsonable(config), **(extra or {}), "versions": library_versions(),
            "written": time.strftime("%Y-%m-%d %H:%M:%S"), "elapsed_s": elapsed_s,
            **{k: v for k, v in report.meta.items() if k != "not_inline"}}
    # config.json last: a folder holding it holds everything else
    (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    for fig in report.figures.values():
        plt.close(fig)


def write(report, folder: str | Path, config=None, elapsed_s: float | None = None, extra: dict | None = None) -> Path:
    """Write config.json, tables, figures and report.md into ``folder`` atomically; returns the folder.

    extra: more fields for config.json (e.g. the CLI's quick flag and thread count). When ``folder`` cannot
    be written, everything goes to a fallback temporary folder and ValueError names both.
    """
    folder = Path(folder)
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        _write_into(report, tmp, config, elapsed_s, extra or {})
    except OSError as e:  # the output folder failed (full, read-only, gone): keep the results elsewhere
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        fallback = Path(tempfile.mkdtemp(prefix=f"univ-{folder.name}-"))
        _write_into(report, fallback, config, elapsed_s, extra or {})
        raise ValueError(f"out: cannot write to {str(folder.parent)!r} ({e.strerror or e}); the report was "
                         f"written to {str(fallback)!r} instead") from None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.chmod(tmp, 0o755)
        old = None
        if folder.exists():  # a rerun: swap the old folder out, the new one in, then drop the old one
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


__all__ = ["write", "run_dir", "check_parent_writable", "format_table", "library_versions", "stable_hash"]
