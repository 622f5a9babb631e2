"""Root test setup shared by every test directory.

The suite's plugin (``conformance/harness/plugin.py``, installed as a pytest plugin) is loaded here too, so that a
checkout runs without installing. It registers the Hypothesis profiles: "deterministic" is the default so
that CI and every developer see the same examples; "dev" explores new ones. Choose with the Hypothesis
plugin's standard option: ``pytest --hypothesis-profile dev``.

``browser``: a headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by Selenium) for the
tests that check what users open: the conformance report and the benchmark dashboard. Where Chromium is
missing those tests skip naming it, unless ``BN_REQUIRE_BROWSER=1`` (set by CI), which makes it a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["conformance.harness.plugin"]


@dataclass
class Page:
    """A page as Chromium rendered it: its DOM text, the browser console and a screenshot."""

    text: str
    console: list[dict]
    screenshot: Path
    driver: object  # the live selenium WebDriver, for element queries

    def console_errors(self) -> list[dict]:
        return [entry for entry in self.console if entry.get("level") == "SEVERE"]


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="session")
def _chromium() -> Iterator[object]:
    if reason := _missing_browser():
        if os.environ.get("BN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"BN_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def browser(_chromium, tmp_path: Path):
    """``browser(url, wait_for=css_selector)`` -> :class:`Page` once ``wait_for`` is present."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    def open_page(url: str, wait_for: str = "body", timeout_s: float = 30.0) -> Page:
        _chromium.get_log("browser")  # drop what earlier pages logged
        _chromium.get(url)
        WebDriverWait(_chromium, timeout_s).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, wait_for))
        )
        shot = tmp_path / "screenshot.png"
        _chromium.save_screenshot(str(shot))
        text = _chromium.find_element(By.TAG_NAME, "body").text
        return Page(text, _chromium.get_log("browser"), shot, _chromium)

    return open_page
