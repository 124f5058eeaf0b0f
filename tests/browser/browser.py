"""Debian's chromium, headless, driven by selenium with explicit paths (nothing downloaded), and what a person sees.

`Browser` wraps one WebDriver for the whole session: `open` loads a URL from scratch (so a deep link is a first
visit, not an in-page hash change), the `wait_*` helpers wait for what the page renders, `shot` saves a screenshot.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.tools import require_tool

ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
)
WAIT_SECONDS = 15
T = TypeVar("T")

PLACEHOLDERS_ON_SCREEN = """
return Array.from(document.querySelectorAll('#view td, #view span')).some(function (element) {
  var box = element.getBoundingClientRect();
  return element.textContent === '…' && box.bottom > 0 && box.top < window.innerHeight;
});
"""
HEADING = """
var h1 = document.querySelector('h1');
return Array.from(h1.childNodes).filter(function (n) { return !(n.classList && n.classList.contains('kind')); })
  .map(function (n) { return n.textContent; }).join('');
"""
OVERFLOW = """
var width = document.documentElement.clientWidth;
var out = [];
document.querySelectorAll('body *').forEach(function (element) {
  var parent = element.parentElement.getBoundingClientRect();
  if (element.getBoundingClientRect().right > width + 1 && parent.right <= width + 1) {
    out.push(element.tagName.toLowerCase() + '.' + element.className + ' in ' + element.parentElement.className);
  }
});
return [document.documentElement.scrollWidth - width, out];
"""
TABLE_ROWS = """
var caption = arguments[0];
var table = Array.from(document.querySelectorAll('table')).find(function (t) {
  return t.caption && t.caption.textContent === caption;
});
if (!table) return null;
var text = function (cell) { return cell.innerText.trim(); };
return [Array.from(table.tHead.rows[0].cells).map(text),
        Array.from(table.tBodies[0].rows).map(function (row) { return Array.from(row.cells).map(text); })];
"""


def start_chromium(profile: Path) -> WebDriver:
    """Chromium and its driver from Debian (`chromium`, `chromium-driver`); a missing one fails under CI=true."""
    options = webdriver.ChromeOptions()
    options.binary_location = require_tool("chromium")
    for argument in (*ARGUMENTS, f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(require_tool("chromedriver")))


class Browser:
    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver
        self.shots: Path | None = None

    def open(self, url: str) -> None:
        """Load `url` as a first visit: leave the page first, so a new hash is not just an in-page navigation."""
        self.driver.get("about:blank")
        self.driver.get(url)
        self.wait_idle()

    def wait(self, condition: Callable[[WebDriver], T], message: str = "") -> T:
        def tolerant(driver: WebDriver) -> T | bool:
            try:
                return condition(driver)
            except StaleElementReferenceException:  # the page re-rendered under us: ask again
                return False

        return WebDriverWait(self.driver, WAIT_SECONDS).until(tolerant, message)  # type: ignore[arg-type]

    def wait_idle(self) -> None:
        """The view rendered (`aria-busy` false) and no row on screen still shows the placeholder of its details."""
        self.wait(lambda d: d.find_element(By.ID, "view").get_attribute("aria-busy") == "false", "view still busy")
        self.wait(lambda d: not self.script(PLACEHOLDERS_ON_SCREEN), "rows on screen still loading")

    def one(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def texts(self, css: str) -> list[str]:
        return [element.text for element in self.all(css)]

    def text(self) -> str:
        return self.one("body").text

    def heading(self) -> str:
        """The view's title, without the kind above it ("Repository", "Tag", "Manifest")."""
        return self.script(HEADING)

    def kind(self) -> str:
        return self.script("var k = document.querySelector('h1 .kind'); return k ? k.textContent : '';")

    def table(self, caption: str) -> list[dict[str, str]]:
        """The rows of the table with that caption, as {column header: cell text as shown}."""
        found = self.script(TABLE_ROWS, caption)
        assert found is not None, f"no table {caption!r} on {self.driver.current_url}"
        headers, rows = found
        return [dict(zip(headers, row, strict=True)) for row in rows]

    def sideways_overflow(self) -> tuple[int, list[str]]:
        """How many pixels the page is wider than the window, and the outermost elements that stick out."""
        return self.script(OVERFLOW)

    def commands(self) -> list[str]:
        return self.texts(".command-text")

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def errors(self) -> list[str]:
        """Console errors since the last call (script errors, CSP refusals, failed requests) but for 404s.

        The page reads documents that may be absent (a subject's referrers index, a tags list) and shows that; the
        browser logs each such 404 as an error.
        """
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries if e["level"] == "SEVERE" and "status of 404" not in e["message"]]

    def shot(self, name: str) -> Path:
        assert self.shots is not None, "the browser fixture sets the screenshot directory per test"
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path
