"""The dashboard page in a real headless Chromium (Debian's chromium + chromium-driver): it loads
with no network, logs no console errors and draws every plot. The screenshot is kept in
test-artifacts/ (a run's artefact, not committed).

Chromium is a Debian package, not a PyPI one: `.ci/run` installs it and sets
SWITCHYARD_REQUIRE_BROWSER=1, so in CI a missing browser fails this test instead of skipping it."""
from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from infra.clickhouse import apply_analytics, apply_schema, connect
from switchyard.bench_analytics import fill_synthetic
from switchyard.dashboard import gather, render
from switchyard.warehouse import Warehouse

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PLOTS = ("quality-vs-cost", "tier-mix", "cluster-tier-quality", "latency", "spend-per-tenant", "dead-letters")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    client = connect(f"chdb://{tmp_path_factory.mktemp('ch')}")
    apply_schema(client)
    fill_synthetic(client, 3000)
    apply_analytics(client, 3600, {"large": ("m", 3.0, 15.0)})
    wh = Warehouse(client=client)  # the operator, every tenant
    data = gather(wh.ask)
    data.as_of = wh.refresh_analytics()
    path = tmp_path_factory.mktemp("dash") / "report.html"
    path.write_text(render(data))
    client.close()
    return path


class _ExternalRefs(HTMLParser):
    """The page's tags that would fetch something: scripts, styles, images, frames with a source."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("#", "data:")):
                self.refs.append((tag, value))


def test_the_page_is_self_contained(page):
    text = page.read_text()
    parser = _ExternalRefs()
    parser.feed(text)
    assert parser.refs == [], "plotly.js and everything else must be inlined"
    assert "Plotly.newPlot" in text
    assert all(f'id="plot-{name}"' in text for name in PLOTS)


def test_every_figure_has_data_from_the_synthetic_traffic(page):
    text = page.read_text()
    assert "no data yet" not in text  # every plot had rows to draw


def test_the_page_renders_every_plot_in_headless_chromium(page):
    if not (CHROMIUM and DRIVER):
        if os.environ.get("SWITCHYARD_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,2200"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(page.as_uri())
        names = PLOTS
        WebDriverWait(driver, 30).until(
            lambda d: all(d.find_elements(By.CSS_SELECTOR, f"#plot-{n} .main-svg") for n in names))
        drawn = {n: len(driver.find_elements(By.CSS_SELECTOR, f"#plot-{n} .trace, #plot-{n} .hm")) for n in names}
        assert all(count > 0 for count in drawn.values()), drawn
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
