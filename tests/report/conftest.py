"""A real headless Chromium (the system package, driven by selenium), offline: the pages must work opened from
disk with the network disabled. Skipped, saying why, where Chromium or its driver is missing (.ci/run installs
them)."""

import shutil

import pytest

PROBE = "https://cdn.jsdelivr.net/"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def _which(names):
    return next((p for p in map(shutil.which, names) if p), None)


@pytest.fixture(scope="session")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed (pip install univ[browser])")
    binary, driver = _which(CHROMIUM), _which(DRIVER)
    if binary is None or driver is None:
        pytest.skip("no system Chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    b = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    # the network is off for every page: anything that would fetch from a CDN fails (and logs an error)
    b.execute_cdp_cmd("Network.enable", {})
    b.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                           "downloadThroughput": 0, "uploadThroughput": 0})
    yield b
    b.quit()


class Page:
    """An opened page: its console errors, and scripts run in it."""

    def __init__(self, browser, path):
        self.b = browser
        browser.get_log("browser")  # drop what earlier pages logged
        browser.get(path.resolve().as_uri())

    def js(self, script, *args):
        return self.b.execute_script(script, *args)

    def console_errors(self):
        """The errors logged since the last call (the offline probe's own failed fetch left out)."""
        return [e for e in self.b.get_log("browser") if e["level"] in ("SEVERE", "ERROR")
                and not e["message"].startswith(PROBE)]

    def requests_offline(self):
        """Whether the page is open with the network disabled (a fetch of a remote address fails)."""
        return self.b.execute_async_script(
            f"const done = arguments[0]; fetch('{PROBE}').then(() => done(false), () => done(true));")


@pytest.fixture
def open_page(browser):
    def _open(path):
        return Page(browser, path)
    return _open
