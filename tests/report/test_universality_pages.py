"""The main job's pages: ``univ run universality --quick``, then its report.html and feature dashboard opened in
headless Chromium with the network off (slow: the run takes minutes)."""

import pandas as pd
import pytest
from report_pages import NON_BLANK
from selenium.webdriver.common.by import By

from univ.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "universality", "--quick", "--out", str(out)]) == 0
    (folder,) = list(out.iterdir())
    return folder


def test_report_and_dashboard(open_page, run):
    page = open_page(run / "report.html")
    assert page.console_errors() == [] and page.requests_offline()
    b = page.b
    for img in b.find_elements(By.CSS_SELECTOR, "img.figure"):
        assert img.size["width"] > 100 and page.js(NON_BLANK, img)
    assert len(b.find_elements(By.CSS_SELECTOR, "img.figure")) == len(list(run.glob("*.png")))
    md = (run / "report.md").read_text()
    sections = [h.text for h in b.find_elements(By.CSS_SELECTOR, "main h2")]
    assert sections == [line[3:] for line in md.splitlines() if line.startswith("## ")]  # report.md's order
    if "## Findings\n" in md:
        assert sections[0] == "Findings"
    for csv in run.glob("*.csv"):
        name = csv.stem
        if f"## {name}\n" not in md:
            continue
        table = b.find_element(By.CSS_SELECTOR, f'table[data-name="{name}"]')
        info = table.find_element(By.XPATH, "../preceding-sibling::div[1]/span").text
        assert f"of {len(pd.read_csv(csv))}" in info, name
    assert b.find_elements(By.CSS_SELECTOR, ".hm .cell")  # the similarity table's heatmap
    b.find_element(By.CSS_SELECTOR, ".dashboard-link a").click()
    assert b.current_url.endswith("feature_dashboard.html")
    quality = pd.read_csv(run / "sae_quality.csv")
    trained = quality[~quality.model.str.endswith("-init")]
    assert len(b.find_elements(By.CSS_SELECTOR, "#index tr.pick")) == min(100, int(trained.d_sae.sum()))
    live = next(r for r in b.find_elements(By.CSS_SELECTOR, "#index tr.pick")
                if float(r.find_elements(By.TAG_NAME, "td")[2].text) > 0)
    live.click()
    card = b.find_element(By.ID, "card")
    assert card.find_element(By.TAG_NAME, "h2").text == live.get_attribute("data-key").replace("/", " · latent ")
    canvases = card.find_elements(By.CSS_SELECTOR, ".top-examples canvas")
    assert canvases
    for cv in canvases:
        assert page.js(NON_BLANK, cv)
    assert len(card.find_elements(By.CSS_SELECTOR, ".match")) == len(trained) - 1
    assert page.console_errors() == []
