"""report.html from a Report: Findings first, every table of report.md in the page's data with all its rows,
values kept (NaN -> null), text escaped, figures inlined, dashboards linked; run_page refuses what is not a run."""

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from named_errors import assert_named_error
from report_pages import demo_report, write_demo

from univ.report import html


def page_tables(text):
    return json.loads(re.search(r'<script type="application/json" id="tables">(.*?)</script>', text, re.S).group(1))


def md_tables(md):
    """The section titles of report.md that hold a table (inline, or a link to its CSV)."""
    out, title = [], None
    for line in md.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif title and (line.startswith("|") or line.startswith("(") and f"{title}.csv" in line):
            out.append(title)
            title = None
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_demo(tmp_path_factory.mktemp("runs") / "demo")


def test_findings_first_then_the_sections_in_order():
    sections = [("Setup", ""), ("t", ""), ("FINDINGS", "x"), ("fig", "")]
    assert [t for t, _ in html.ordered_sections(sections)] == ["FINDINGS", "Setup", "t", "fig"]
    assert html.ordered_sections([("a", ""), ("b", "")]) == [("a", ""), ("b", "")]


def test_every_report_md_table_is_in_the_page_with_all_rows(run):
    page = (run / "report.html").read_text()
    md = (run / "report.md").read_text()
    tables = {t["name"]: t for t in page_tables(page).values()}
    names = md_tables(md)
    assert sorted(names) == ["similarity", "summary"]  # the check reads report.md, not a list written here
    for name in names:
        df = pd.read_csv(run / f"{name}.csv")
        assert tables[name]["columns"] == list(df.columns)
        assert len(tables[name]["rows"]) == tables[name]["total"] == len(df)
    sim = pd.read_csv(run / "similarity.csv")
    got = pd.DataFrame(tables["similarity"]["rows"], columns=tables["similarity"]["columns"])
    np.testing.assert_array_equal(got["value"].to_numpy(), sim["value"].to_numpy())  # exact, not rounded
    assert tables["similarity"]["grid"] and not tables["summary"]["grid"]
    assert tables["summary"]["rows"][1][2] is None  # NaN travels as null
    assert tables["summary"]["kinds"] == ["text", "num", "num", "bool"]
    # the latent column links to the dashboard page for the models it shows
    assert tables["summary"]["links"] == {"1": [0, {"m_img": "features.html", "m_txt": "features.html"}]}


def test_sections_figures_and_dashboards_in_the_page(run):
    page = (run / "report.html").read_text()
    titles = re.findall(r"<h2>(.*?)</h2>", page)
    assert titles == ["Findings", "Setup", "similarity", "summary", "curve", "features"]
    (src,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(src) == (run / "curve.png").read_bytes()
    assert 'href="features.html"' in page and (run / "features.html").is_file()
    assert "Feature dashboard: [features.html](features.html)" in (run / "report.md").read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from the network


def test_long_tables_are_cut_with_a_link_to_the_csv():
    df = pd.DataFrame({"x": np.arange(30)})
    data = html.table_data(df, limit=10)
    assert len(data["rows"]) == 10 and data["total"] == 30 and data["rows"][-1] == [9]


def test_markdown_and_json_are_safe():
    assert html.markdown_text("a <b> & `c<d>`") == "<p>a &lt;b&gt; &amp; <code>c&lt;d&gt;</code></p>"
    assert html.markdown_text("- one\n- two") == "<ul><li>one</li><li>two</li></ul>"
    assert "</script>" not in html.script_json({"x": "</script><script>"})
    assert html.table_data(pd.DataFrame({"x": [np.inf, -np.inf]}))["rows"] == [["inf"], ["-inf"]]


def test_dashboard_names_are_file_names_used_once():
    r = demo_report()
    board = r.dashboards["features"]
    assert_named_error(lambda: r.add_dashboard("features", board), ValueError,
                       r"^name: the report already has a dashboard 'features'")
    for bad in ("report", "../x", "a b", ""):
        assert_named_error(lambda bad=bad: r.add_dashboard(bad, board), ValueError,
                           r"^name: a dashboard's name is its file name: .*got " + repr(bad).replace(".", r"\."))


def test_run_page_says_what_is_not_a_run(run, tmp_path):
    assert html.run_page(run) == run / "report.html"
    assert_named_error(lambda: html.run_page(tmp_path), ValueError,
                       r"^RUN_DIR: '.*' is not a run folder \(one holds config.json and report.md")
    assert_named_error(lambda: html.run_page(tmp_path / "nope"), ValueError, r"^RUN_DIR: '.*nope' is not a folder$")
    (tmp_path / "f").write_text("x")
    assert_named_error(lambda: html.run_page(tmp_path / "f"), ValueError, r"is not a folder \(it is a file\)")
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "report.md").write_text("# x")
    assert_named_error(lambda: html.run_page(tmp_path), ValueError, r"is not a run folder")
    (tmp_path / "config.json").write_text(json.dumps({"analysis": "demo"}))
    assert_named_error(lambda: html.run_page(tmp_path), ValueError, r"was written before runs had a report.html")
