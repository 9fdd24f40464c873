"""report.html and a dashboard page opened in a real headless Chromium with the network disabled: no console
errors, every figure and image drawn (non-zero size, not one colour), every table of report.md rendered with all
its rows reachable, sorting, filtering and the heatmap's hover values working, and a latent card opened from the
index showing its examples, histogram, logits and its matches, whose links open the matched latent's card."""

import re

import pandas as pd
import pytest
from report_pages import NON_BLANK, write_demo
from selenium.webdriver.common.by import By

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_demo(tmp_path_factory.mktemp("runs") / "demo")


def md_table_names(run):
    md = (run / "report.md").read_text()
    names, title = [], None
    for line in md.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif title and (line.startswith("|") or (line.startswith("(") and f"{title}.csv" in line)):
            names.append(title)
            title = None
    return names


def test_report_page(open_page, run):
    page = open_page(run / "report.html")
    assert page.console_errors() == []
    assert page.requests_offline()
    b = page.b
    assert [h.text for h in b.find_elements(By.CSS_SELECTOR, "main h2")][0] == "Findings"
    imgs = b.find_elements(By.CSS_SELECTOR, "img")
    assert len(imgs) == 1
    for img in imgs:
        assert img.size["width"] > 50 and img.size["height"] > 50
        assert page.js("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        assert page.js(NON_BLANK, img)
    names = md_table_names(run)
    assert names == ["similarity", "summary"]
    for name in names:
        df = pd.read_csv(run / f"{name}.csv")
        table = b.find_element(By.CSS_SELECTOR, f'table[data-name="{name}"]')
        assert [th.text.strip(" ▲▼") for th in table.find_elements(By.TAG_NAME, "th")] == list(df.columns)
        info = table.find_element(By.XPATH, "../preceding-sibling::div[1]/span").text
        assert f"of {len(df)}" in info, info
    # sorting a numeric column puts its smallest value first; filtering narrows the rows
    sim = pd.read_csv(run / "similarity.csv")
    table = b.find_element(By.CSS_SELECTOR, 'table[data-name="similarity"]')
    col = list(sim.columns).index("value")
    table.find_elements(By.TAG_NAME, "th")[col].click()
    first = table.find_element(By.CSS_SELECTOR, "tbody tr").find_elements(By.TAG_NAME, "td")[col].text
    assert float(first) == pytest.approx(sim["value"].min(), rel=1e-3)
    search = table.find_element(By.XPATH, "../preceding-sibling::div[1]/input")
    search.send_keys("svcca")
    info = table.find_element(By.XPATH, "../preceding-sibling::div[1]/span").text
    assert f"of {(sim.metric == 'svcca').sum()} (filtered from {len(sim)})" in info
    # significance marks: exactly the p-values below 0.05 on the page
    marked = page.js("return [...document.querySelectorAll('table[data-name=similarity] td.sig')].length")
    assert marked == ((sim.metric == "svcca") & (sim.p_value < 0.05)).head(50).sum()
    # the heatmap: one cell per layer pair of the chosen combination, hover shows value, baseline and p
    cells = b.find_elements(By.CSS_SELECTOR, ".hm .cell")
    assert len(cells) == 16
    b.execute_script("arguments[0].dispatchEvent(new MouseEvent('mousemove', {clientX: 5, clientY: 5}))", cells[0])
    tip = b.find_element(By.CSS_SELECTOR, ".hover").get_attribute("textContent")
    row = sim.iloc[0]
    assert f"{row.layer_a} x {row.layer_b}" in tip and "baseline 0.2" in tip and "p_value" in tip
    assert float(re.search(r"value ([\d.]+)", tip).group(1)) == pytest.approx(row.value, rel=1e-3)
    hatched = len(b.find_elements(By.CSS_SELECTOR, ".hm .cell.ns"))
    first_combo = sim[(sim.metric == "linear_cka")]
    assert hatched == (first_combo.p_value >= 0.05).sum()
    # a latent of the summary table links to its card
    link = b.find_element(By.CSS_SELECTOR, 'table[data-name="summary"] a')
    assert link.get_attribute("href").endswith("features.html#m_img/3")
    assert page.console_errors() == []


def test_dashboard_card_opens_from_the_index(open_page, run):
    page = open_page(run / "features.html")
    assert page.console_errors() == []
    b = page.b
    rows = b.find_elements(By.CSS_SELECTOR, "#index tr.pick")
    assert len(rows) == 24  # 2 models x 12 latents
    rows[3].click()  # m_img latent 3
    card = b.find_element(By.ID, "card")
    assert card.find_element(By.TAG_NAME, "h2").text == "m_img · latent 3"
    canvases = card.find_elements(By.CSS_SELECTOR, ".top-examples canvas")
    assert len(canvases) == 5  # latent 3 fires on rows 3, 15, 27, 39, 51
    assert [c.get_attribute("data-row") for c in canvases] == ["51", "39", "27", "15", "3"]
    for cv in canvases:
        assert cv.size["width"] > 0 and page.js(NON_BLANK, cv)
    assert len(card.find_elements(By.CSS_SELECTOR, "svg.hist rect")) == 24
    # its match: m_txt latent 8 (the codes reversed), score 1, shown with its own token contexts
    match = card.find_element(By.CSS_SELECTOR, ".match")
    assert "m_txt · latent 8" in match.text and "score 1 (matched)" in match.text
    assert len(match.find_elements(By.CSS_SELECTOR, ".ctx")) == 5
    match.find_element(By.TAG_NAME, "a").click()
    assert card.find_element(By.TAG_NAME, "h2").text == "m_txt · latent 8"
    # a text latent: highlighted token contexts (the top token outlined) and the logits it promotes
    ctx = card.find_elements(By.CSS_SELECTOR, ".top-examples .ctx")
    assert len(ctx) == 5 and ctx[0].find_element(By.CSS_SELECTOR, "span.peak").text == "w5_1"  # row 51 = 5 * 10 + 1
    assert len(card.find_elements(By.CSS_SELECTOR, "table.logits tr")) == 4
    assert page.console_errors() == []


def test_dashboard_filters_and_direct_links(open_page, run):
    page = open_page(run / "features.html")
    b = page.b
    from selenium.webdriver.support.ui import Select

    Select(b.find_element(By.CSS_SELECTOR, "select[aria-label=tag]")).select_by_value("exclusive")
    assert len(b.find_elements(By.CSS_SELECTOR, "#index tr.pick")) == 6
    Select(b.find_element(By.CSS_SELECTOR, "select[aria-label=tag]")).select_by_value("")
    Select(b.find_element(By.CSS_SELECTOR, "select[aria-label=matched]")).select_by_value("no")
    dead = [r.get_attribute("data-key") for r in b.find_elements(By.CSS_SELECTOR, "#index tr.pick")]
    assert dead == ["m_img/11", "m_txt/0"]  # the dead latents have no match
    b.find_element(By.CSS_SELECTOR, "input[aria-label='min density']").send_keys("0.1")
    assert b.find_elements(By.CSS_SELECTOR, "#index tr.pick") == []
    page2 = open_page(run / "features.html")
    b.get((run / "features.html").resolve().as_uri() + "#m_img/11")
    b.refresh()
    assert "never active" in b.find_element(By.ID, "card").text
    assert page2.console_errors() == []


def test_signal_examples_are_drawn(open_page, tmp_path):
    import numpy as np
    from report_pages import planted

    from univ.report import dashboard as D

    codes = planted()
    signals = np.sin(np.linspace(0, 6, 30))[None, :] * np.arange(1, len(codes) + 1)[:, None]
    (tmp_path / "s.html").write_text(D.render(D.build({"sig": D.ModelFeatures(codes, signals=signals)})))
    page = open_page(tmp_path / "s.html")
    page.b.find_element(By.CSS_SELECTOR, "#index tr.pick").click()
    canvases = page.b.find_elements(By.CSS_SELECTOR, ".top-examples canvas")
    assert len(canvases) == 5 and all(page.js(NON_BLANK, c) for c in canvases)
    assert page.console_errors() == []


def test_served_pages_load_without_errors(browser, run):
    """univ view --serve: the same pages over http://127.0.0.1 (the one request the network emulation lets
    through here is to that local server)."""
    import threading

    from univ.cli import serve

    server = serve(run, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    off = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, **off})
    try:
        browser.get_log("browser")
        for name in ("report.html", "features.html"):
            browser.get(f"http://127.0.0.1:{server.server_address[1]}/{name}")
            assert browser.find_elements(By.CSS_SELECTOR, "table")
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, **off})
        server.shutdown()
        server.server_close()


def test_dashboard_index_sorts(open_page, run):
    page = open_page(run / "features.html")
    b = page.b
    density = [th for th in b.find_elements(By.CSS_SELECTOR, "#index th") if th.text.startswith("density")][0]
    density.click()  # largest first
    values = [float(r.find_elements(By.TAG_NAME, "td")[2].text) for r in b.find_elements(By.CSS_SELECTOR,
                                                                                          "#index tr.pick")]
    assert values == sorted(values, reverse=True) and values[-1] == 0
    assert page.console_errors() == []
