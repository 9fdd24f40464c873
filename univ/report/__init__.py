"""Reports: what an analysis returns (:class:`Report`), the run-folder writer and the figures.

The library layers (similarity, sae, adversarial) return tables; this layer draws and writes them. It is one
of the few places that touch the file system (with the caches and the CLI).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from .figures import grid_figure, heatmap, panels
from .writer import check_parent_writable, format_table, library_versions, run_dir, write


@dataclass
class Report:
    """What an analysis returns.

    tables: name -> tidy DataFrame (written as CSV + Markdown).
    figures: name -> matplotlib Figure (written as PNG).
    sections: the report.md body in reading order: (title, text) pairs; a section whose title equals a
        table's name gets that table rendered below its text, and a figure's name its image.
    summary: the table printed to the terminal at the end of ``univ run`` (a key of ``tables``).
    dashboards: name -> :class:`univ.report.dashboard.Dashboard` (written as ``name``.html, linked from the
        report).
    """

    name: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    sections: list[tuple[str, str]] = field(default_factory=list)
    summary: str | None = None
    meta: dict = field(default_factory=dict)
    dashboards: dict = field(default_factory=dict)

    def add_table(self, name: str, df: pd.DataFrame, text: str = "", inline: bool = True) -> None:
        """Add a table; ``inline=False`` keeps a long table out of report.md (CSV + Markdown files only)."""
        if name in self.tables:
            raise ValueError(f"name: the report already has a table {name!r}")
        self.tables[name] = df
        if not inline:
            self.meta.setdefault("not_inline", []).append(name)
        self.sections.append((name, text))

    def add_figure(self, name: str, fig, text: str = "") -> None:
        """Add a matplotlib Figure (written as ``name``.png) with the text shown above it."""
        if name in self.figures:
            raise ValueError(f"name: the report already has a figure {name!r}")
        self.figures[name] = fig
        self.sections.append((name, text))

    def add_dashboard(self, name: str, dashboard, text: str = "") -> None:
        """Add a feature dashboard (:func:`univ.report.dashboard.build`'s), written as ``name``.html."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name == "report":
            raise ValueError(f"name: a dashboard's name is its file name: letters, digits, _ . - (not 'report'), "
                             f"got {name!r}")
        if name in self.dashboards:
            raise ValueError(f"name: the report already has a dashboard {name!r}")
        self.dashboards[name] = dashboard
        self.sections.append((name, text))

    def add_text(self, title: str, text: str) -> None:
        """A section of prose."""
        self.sections.append((title, text))

    def add_findings(self, text: str, table: pd.DataFrame | None = None) -> None:
        """The "Findings" section, placed first in the report whenever it is added (an analysis writes it last,
        from its other tables); ``table`` (the tests behind it) becomes the table "findings" right after it."""
        if any(title == "Findings" for title, _ in self.sections):
            raise ValueError("the report already has a Findings section")
        self.sections.insert(0, ("Findings", text))
        if table is not None:
            if "findings" in self.tables:
                raise ValueError("name: the report already has a table 'findings'")
            self.tables["findings"] = table
            self.sections.insert(1, ("findings", "The tests behind the Findings (one BH family): `effect` with its "
                                                 "95% bootstrap interval, permutation `p_value`, `q_value`."))


__all__ = ["Report", "write", "run_dir", "check_parent_writable", "format_table", "library_versions", "heatmap",
           "grid_figure", "panels"]
