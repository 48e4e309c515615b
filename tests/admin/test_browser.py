"""A real browser (Debian's headless chromium, driven by selenium through chromedriver) logs into the
admin console, opens a trade and finds its timeline; the screenshot is kept as a test artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.admin.conftest import STAFF_PASSWORD

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SCREENSHOT = ARTIFACTS / "admin-trade-timeline.png"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium, "run `python scripts/services.py browser` (make test does)"
    assert driver, "run `python scripts/services.py browser` (make test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    # An explicit driver path: selenium-manager never tries to download one.
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    session.set_page_load_timeout(30)
    yield session
    session.quit()


def test_staff_logs_in_and_sees_a_trades_timeline(browser, live_server, staff, pending_trade):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(staff.username)
    browser.find_element(By.NAME, "password").send_keys(STAFF_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # A click returns before the next page has loaded: under a loaded machine (the full suite on
    # two cores) the title and URL were read from the page before.
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: "/admin/login/" not in d.current_url and "Site administration" in d.title)

    browser.get(f"{live_server.url}/admin/trades/trade/")
    browser.find_element(By.LINK_TEXT, str(pending_trade.pk)).click()
    wait.until(lambda d: f"/admin/trades/trade/{pending_trade.pk}/change/" in d.current_url)
    wait.until(lambda d: d.find_elements(By.ID, "events-group"))
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "TIMELINE" in page.upper()
    assert "submitted" in page
    assert "PENDING" in page

    timeline = browser.find_element(By.ID, "events-group")
    assert "submitted" in timeline.text
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", timeline)
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
