"""report.html: the run's report as one self-contained page (inline CSS, JavaScript, data and images).

The page is generated from the same :class:`univ.report.Report` as report.md, so every table and figure of
report.md is in it: a section titled "Findings" first, then the other sections in order. Tables are data
(JSON in the page) that a small script renders sortable, filterable and paged, numbers formatted and p/q-values
below 0.05 marked; a tidy layer x layer table (``layer_a``, ``layer_b``, ``value``) also gets a heatmap with
the value, its baseline and its p-value on hover. Figures are the PNGs report.md links to, inlined. Nothing is
fetched from the network: the page works opened from disk.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

FINDINGS = "findings"
ROWS_INLINE = 20_000  # a table longer than this is cut (its CSV has every row), so a page stays loadable


def asset(name: str) -> str:
    """The text of a file in univ/report/static (the page's CSS and scripts)."""
    return files("univ.report").joinpath("static", name).read_text()


def script_json(obj) -> str:
    """``obj`` as JSON safe to place inside a <script> element (no "</" that would close it)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _cell(v):
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else (None if math.isnan(v) else str(v))
    return str(v)


def table_data(df: pd.DataFrame, limit: int = ROWS_INLINE) -> dict:
    """A DataFrame as the page's table data: columns, kinds ("num", "bool", "text"), rows (NaN -> null)."""
    kinds = ["bool" if pd.api.types.is_bool_dtype(t) else "num" if pd.api.types.is_numeric_dtype(t) else "text"
             for t in df.dtypes]
    cut = df.iloc[:limit]
    rows = [[_cell(v) for v in row] for row in cut.itertuples(index=False, name=None)]
    return {"columns": [str(c) for c in df.columns], "kinds": kinds, "rows": rows, "total": len(df)}


LATENT_COLUMNS = (("model", "latent"), ("model", "feature"), ("model_a", "feature_a"), ("source", "latent"))
"""(model column, latent column) pairs whose cells link to the latent's card in a dashboard of the report."""


def latent_links(df: pd.DataFrame, pages: dict[str, set[str]]) -> dict:
    """{latent column index: [model column index, {model: dashboard page}]} for the columns of ``df`` that name a
    latent of a model shown in one of the report's dashboards (``pages``: page -> its model names)."""
    out = {}
    for model_col, latent_col in LATENT_COLUMNS:
        if model_col in df.columns and latent_col in df.columns and pd.api.types.is_integer_dtype(df[latent_col]):
            where = {str(m): page for page, names in pages.items() for m in df[model_col].unique() if str(m) in names}
            if where:
                out[str(list(df.columns).index(latent_col))] = [list(df.columns).index(model_col), where]
    return out


def is_layer_grid(df: pd.DataFrame) -> bool:
    """A tidy layer x layer table the page can draw as a heatmap."""
    return {"layer_a", "layer_b", "value"} <= set(df.columns) and pd.api.types.is_numeric_dtype(df["value"])


_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
           (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>')]


def markdown_text(text: str) -> str:
    """The small Markdown the analyses write (paragraphs, `code`, **bold**, [links](x), "- " lists) as HTML."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        items = [html.escape(line.strip()[2:]) for line in lines if line.strip().startswith(("- ", "* "))]
        body = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items and len(items) == len(lines) \
            else f"<p>{html.escape(block)}</p>"
        for pat, rep in _INLINE:
            body = pat.sub(rep, body)
        out.append(body)
    return "\n".join(out)


def slug(name: str) -> str:
    """An HTML id from a section title."""
    return "s-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "section")


def ordered_sections(sections: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The report's sections in reading order, those titled "Findings" (any case) first."""
    first = [s for s in sections if s[0].strip().lower() == FINDINGS]
    return first + [s for s in sections if s[0].strip().lower() != FINDINGS]


def run_page(folder) -> Path:
    """The report.html of the run folder ``folder``; ValueError naming RUN_DIR when it is not a run folder (one
    holding config.json with the analysis that wrote it, and report.md) or has no report.html."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"RUN_DIR: {str(folder)!r} is not a folder" + (" (it is a file)" if folder.exists() else ""))
    try:
        meta = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or "analysis" not in meta or not (folder / "report.md").is_file():
        raise ValueError(f"RUN_DIR: {str(folder)!r} is not a run folder (one holds config.json and report.md, as "
                         "univ run, univ compare and univ sae match|view write them)")
    page = folder / "report.html"
    if not page.is_file():
        raise ValueError(f"RUN_DIR: {str(folder)!r} was written before runs had a report.html; rerun it (its "
                         "report.md is there)")
    return page


def render(report, config=None, images: dict[str, bytes] | None = None) -> str:
    """The report.html page of ``report``.

    config: the settings shown in a folded block; images: figure name -> PNG bytes (what report.md links to).
    Each dashboard (``report.dashboards``, written as NAME.html beside it) is linked from its section, and a
    table cell naming a latent of a model it shows (columns model + latent, ...) links to that latent's card.
    """
    images = images or {}
    links = {name: f"{name}.html" for name in report.dashboards}
    pages = {f"{name}.html": {m["name"] for m in d.data["models"]} for name, d in report.dashboards.items()}
    tables, parts, toc, used = {}, [], [], set()
    for title, text in ordered_sections(report.sections):
        sid = slug(title)
        while sid in used:
            sid += "-"
        used.add(sid)
        toc.append(f'<li><a href="#{sid}">{html.escape(title)}</a></li>')
        body = [f'<section id="{sid}"><h2>{html.escape(title)}</h2>', markdown_text(text) if text else ""]
        if title in report.tables:
            df = report.tables[title]
            tables[sid] = table_data(df) | {"name": title, "grid": is_layer_grid(df), "links": latent_links(df, pages)}
            note = "" if len(df) <= ROWS_INLINE else (
                f'<p class="note">The first {ROWS_INLINE} of {len(df)} rows; <a href="{html.escape(title)}.csv">'
                f"{title}.csv</a> has all.</p>")
            body.append(f'<div class="table" data-table="{sid}"></div>{note}'
                        f'<p class="files"><a href="{html.escape(title)}.csv">CSV</a></p>')
        if title in images:
            b64 = base64.b64encode(images[title]).decode()
            body.append(f'<figure><img class="figure" alt="{html.escape(title)}" src="data:image/png;base64,{b64}">'
                        f"<figcaption>{html.escape(title)}</figcaption></figure>")
        if title in links:
            body.append(f'<p class="dashboard-link"><a href="{html.escape(links[title])}">Open the feature dashboard '
                        f"({html.escape(links[title])})</a></p>")
        parts.append("\n".join(body) + "</section>")
    cfg = "" if config is None else (
        "<details class=config><summary>Settings this run used</summary><pre>"
        + html.escape(json.dumps(config, indent=1, default=str)) + "</pre></details>")
    return PAGE.format(title=html.escape(report.name), css=asset("report.css"), toc="".join(toc), config=cfg,
                       body="\n".join(parts), data=script_json(tables), js=asset("report.js"))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}: univ report</title><link rel="icon" href="data:,"><style>{css}</style></head>
<body><nav class="toc"><strong>{title}</strong><ol>{toc}</ol></nav>
<main><h1>{title}</h1>{config}
{body}
</main>
<script type="application/json" id="tables">{data}</script>
<script>{js}</script>
</body></html>
"""


__all__ = ["render", "run_page", "table_data", "markdown_text", "ordered_sections", "is_layer_grid", "latent_links",
           "script_json", "asset"]
