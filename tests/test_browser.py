"""The leaderboard page in a real headless Chromium: sorting, self-containment, screenshot.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/install-browser.sh``)
and selenium. Skips only when no browser or driver can be found. Selenium
Manager is never asked to download anything: the driver path is given.
Set ``ITBENCH_SCREENSHOT=/path/shot.png`` to keep the screenshot.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
from helpers_records import FIXTURES, fixture_records

from itbench.page.leaderboard import render

pytestmark = pytest.mark.browser

TABLE1 = Path(__file__).resolve().parents[1] / "benchmark" / "table1.csv"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def _find(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


def _browser_paths() -> tuple[str, str]:
    browser = _find(("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"))
    driver = _find(("/usr/bin/chromedriver", "chromedriver"))
    if not browser or not driver:
        pytest.skip(
            "no headless Chromium and chromedriver found "
            f"(browser: {browser or 'missing'}, driver: {driver or 'missing'}); "
            "install them with .ci/install-browser.sh"
        )
    return browser, driver


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leaderboard")
    render(FIXTURES, out, None, TABLE1)
    return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory):
    browser, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}")
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    with pytest.MonkeyPatch.context() as mp:
        # The explicit driver path already bypasses Selenium Manager; SE_OFFLINE makes
        # sure it could not download a browser or driver even if it were reached.
        mp.setenv("SE_OFFLINE", "true")
        drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        drv.set_page_load_timeout(30)
        try:
            yield drv
        finally:
            drv.quit()


def _mean_r(rec: dict) -> float | None:
    value = (rec.get("scores") or {}).get("mean_r")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _row_ids(drv, table_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = drv.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    return [r.get_attribute("data-submission") for r in rows]


def test_sorting_by_mean_r_in_browser(page: Path, driver) -> None:
    from selenium.webdriver.common.by import By

    driver.get((page / "index.html").as_uri())
    assert driver.title.startswith("itbench leaderboard")
    recs = fixture_records("demo")
    status_order = {"ok": 0, "failed": 1, "skipped": 2}
    scored = [k for k, r in recs.items() if r["status"] == "ok" and _mean_r(r) is not None]
    unscored = sorted(
        (k for k in recs if k not in scored), key=lambda k: (status_order[recs[k]["status"]], k)
    )

    # The page opens in leaderboard order: best mean r first, missing scores after.
    initial = sorted(scored, key=lambda k: -_mean_r(recs[k])) + unscored
    assert _row_ids(driver, "table-demo-val") == initial

    header = driver.find_element(By.CSS_SELECTOR, '#table-demo-val th[data-col="mean_r"]')
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    ascending = sorted(scored, key=lambda k: _mean_r(recs[k]))
    assert _row_ids(driver, "table-demo-val") == ascending + unscored  # missing stay last

    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert _row_ids(driver, "table-demo-val") == ascending[::-1] + unscored

    # A text column sorts too, and only one header carries the sort state.
    name_header = driver.find_element(By.CSS_SELECTOR, '#table-demo-val th[data-col="submission"]')
    name_header.click()
    by_name = sorted(recs, key=lambda k: recs[k]["submission"]["name"].lower())
    assert _row_ids(driver, "table-demo-val") == by_name
    assert header.get_attribute("aria-sort") is None

    # Another table on the page is untouched by these clicks.
    nx = fixture_records("nx414")
    assert _row_ids(driver, "table-nx414-val") == sorted(nx, key=lambda k: -_mean_r(nx[k]))


def test_page_is_self_contained_and_error_free(page: Path, driver) -> None:
    from selenium.webdriver.common.by import By

    driver.get_log("performance")  # drop what earlier tests logged
    driver.get((page / "index.html").as_uri())
    shot = Path(os.environ.get("ITBENCH_SCREENSHOT") or page / "leaderboard.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 6000))
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe

    banner = driver.find_element(By.CSS_SELECTOR, "#bench-demo .banner")
    assert banner.is_displayed()
    assert "SYNTHETIC demo benchmark" in banner.text
    svgs = driver.find_elements(By.CSS_SELECTOR, "#bench-demo figure svg")
    assert svgs and svgs[0].size["width"] > 300  # the sweep figure is drawn, not collapsed

    # The detail page opens from the table and shows the per-neuroid figure.
    driver.find_element(
        By.CSS_SELECTOR, '#table-demo-val tr[data-submission="resnet50_best"] td.sub a'
    ).click()
    assert driver.current_url.endswith("/submissions/demo/resnet50_best.html")
    figure = driver.find_element(By.CSS_SELECTOR, "main figure svg")
    assert figure.size["width"] > 300 and figure.size["height"] > 80


# an absolute path of at least two components, not inside a URL or a relative path
ABS_PATH = re.compile(r"(?<![\w.~<>:/-])/[\w.-]+/")


def _cells(drv) -> list[tuple[str, str]]:
    """(text, title) of every table cell on the page, as the browser renders them."""
    return drv.execute_script(
        "return Array.from(document.querySelectorAll('td, th')).map("
        "c => [c.innerText, c.getAttribute('title') || '']);"
    )


def test_table1_section_ties_and_no_local_paths(page: Path, driver) -> None:
    from selenium.webdriver.common.by import By

    driver.set_window_size(1400, 1000)
    driver.get((page / "index.html").as_uri())
    section = driver.find_element(By.ID, "table1")
    assert section.is_displayed()
    rows = section.find_elements(By.CSS_SELECTOR, "#table1-compare tbody tr")
    with TABLE1.open() as handle:
        report = {int(r["row"]): r for r in csv.DictReader(handle)}
    assert [int(r.get_attribute("data-row")) for r in rows] == list(range(1, 13)) == sorted(report)
    for row in rows:
        ref = report[int(row.get_attribute("data-row"))]
        ev = row.find_element(By.CSS_SELECTOR, 'td[data-col="report_mean_ev"]')
        r = row.find_element(By.CSS_SELECTOR, 'td[data-col="report_mean_r"]')
        assert ev.text == f"{float(ref['mean_ev']):.3f}" and r.text == f"{float(ref['mean_corr']):.3f}"
        assert ev.is_displayed() and r.is_displayed()

    # the pair built to be indistinguishable shares a rank range; the pair built to differ does not
    def rank(sub_id: str) -> str:
        return driver.find_element(
            By.CSS_SELECTOR, f'#table-demo-val tr[data-submission="{sub_id}"] td[data-col="rank"]'
        ).text

    assert rank("resnet50_layer3") == rank("resnet50_layer3_rerun") == "2–3"
    assert rank("resnet50_best") == "1" and rank("pixels_ridge") == "4"
    tied = driver.find_element(
        By.CSS_SELECTOR, '#table-demo-val tr[data-submission="resnet50_layer3"] td[data-col="delta_next"]'
    )
    assert tied.get_attribute("data-tied") == "true" and "tied" in tied.text
    differ = driver.find_element(
        By.CSS_SELECTOR, '#table-demo-val tr[data-submission="resnet50_best"] td[data-col="delta_next"]'
    )
    assert differ.get_attribute("data-tied") == "false" and "real" in differ.text

    # no cell shows a local path or a user name (the fixture records contain both)
    pages = [page / "index.html", page / "submissions" / "demo" / "convnext_linear.html"]
    pages.append(page / "submissions" / "demo" / "shallow_cnn.html")
    for html in pages:
        driver.get(html.as_uri())
        cells = _cells(driver)
        assert cells
        for shown, title in cells:
            for value in (shown, re.sub(r"https?://\S+", "", title)):
                assert not ABS_PATH.search(value) and "alice" not in value, (html.name, value)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "alice" not in body and not ABS_PATH.search(re.sub(r"https?://\S+", "", body))
