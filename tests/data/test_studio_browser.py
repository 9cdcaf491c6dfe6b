"""celora db studio end to end: the real command (uvicorn on a free port) and a real headless Chromium (Debian's
chromium + chromium-driver, driven by Selenium; nothing is downloaded). User -> wallet -> transactions, edit a
field, save, and the change is in PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psycopg
import pytest

from tests.support import REPO, TEST_PROJECT, settings_for

# Debian's chromium and chromium-driver (conftest.chromium_binaries: skipped where they are not installed, a
# failure under CI, where .ci/run installs them).
pytestmark = pytest.mark.usefixtures("chromium_binaries")


@pytest.fixture
def studio(migrated_db):
    """`celora db studio --port 0 --no-browser` on a seeded database; yields (URL with token, database URL)."""
    from celora_cli.data.seed.apply import seed

    seed(settings_for(migrated_db), REPO / "fixtures")
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY", "DIRECT_DATABASE_URL") and not key.startswith("CELORA_")}
    env.update(DATABASE_URL=migrated_db, CELORA_ENV="test", CELORA_PROJECT_ROOT=str(TEST_PROJECT), NO_COLOR="1",
               PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "studio", "--port", "0", "--no-browser"],
                               cwd=TEST_PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        url = _printed_url(process)
        yield url, migrated_db
    finally:
        process.terminate()
        process.wait(20)


def _printed_url(process: subprocess.Popen) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Open: "):
            return line.split("Open: ", 1)[1].strip()
    raise AssertionError(f"the studio printed no URL; stderr: {process.stderr.read() if process.stderr else ''}")


@pytest.fixture
def browser(chromium_binaries, tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch a driver or a browser
    options = webdriver.ChromeOptions()
    chromium, chromedriver = chromium_binaries
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(10)  # find_element waits for an element still being parsed
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


_SCROLLED_INTO_VIEW = """
const button = arguments[0];
button.scrollIntoView({block: 'center'});
const box = button.getBoundingClientRect();
const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
return hit !== null && button.contains(hit);
"""


def _arrive(browser, path: str) -> None:
    """Wait until the browser shows `path` and has finished loading it."""
    assert _wait_for(lambda: path in browser.current_url
                     and browser.execute_script("return document.readyState") == "complete"), browser.current_url


def _wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_user_to_wallet_to_transactions_then_edit_and_save(studio, browser):
    from selenium.webdriver.common.by import By

    url, database = studio
    with psycopg.connect(database) as conn:
        (user_id,), = conn.execute("SELECT id FROM users WHERE email = 'alice@celora.io'").fetchall()
        (wallet_id,), = conn.execute("SELECT id FROM wallets WHERE user_id = %s AND chain = 'ethereum'",
                                     (user_id,)).fetchall()

    browser.get(url)
    assert "token=" not in browser.current_url  # the token moved into an HttpOnly cookie
    browser.find_element(By.LINK_TEXT, "Users").click()
    _arrive(browser, "/studio/user/list")
    browser.find_element(By.CSS_SELECTOR, f'tr[data-sa-pk="{user_id}"] a[title="View"]').click()
    _arrive(browser, "/studio/user/detail")

    browser.find_element(By.LINK_TEXT, "wallets of this user").click()
    _arrive(browser, "/studio/wallet/list")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-sa-pk]")
    assert len(rows) == 2  # alice's two wallets, nobody else's
    browser.find_element(By.CSS_SELECTOR, f'tr[data-sa-pk="{wallet_id}"] a[title="View"]').click()
    _arrive(browser, "/studio/wallet/detail")

    browser.find_element(By.LINK_TEXT, "transactions of this wallet").click()
    _arrive(browser, "/studio/transaction/list")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr[data-sa-pk]")
    with psycopg.connect(database) as conn:
        expected = {str(r[0]) for r in conn.execute("SELECT id FROM transactions WHERE wallet_id = %s",
                                                    (wallet_id,))}
    assert {row.get_attribute("data-sa-pk") for row in rows} == expected
    transaction_id = rows[0].get_attribute("data-sa-pk")
    rows[0].find_element(By.CSS_SELECTOR, 'a[title="Edit"]').click()
    _arrive(browser, "/studio/transaction/edit")

    confirmations = browser.find_element(By.NAME, "confirmations")
    confirmations.clear()
    confirmations.send_keys("4242")
    save = browser.find_element(By.CSS_SELECTOR, "div.card-footer button[type=submit]:not([name])")
    # Scroll to it as a person would; the form's auto-growing text areas move it while the page settles.
    assert _wait_for(lambda: browser.execute_script(_SCROLLED_INTO_VIEW, save)), "Save never came into view"
    save.click()
    _wait_for(lambda: "/studio/transaction/edit" not in browser.current_url)
    assert "/studio/transaction/list" in browser.current_url, browser.page_source[-2000:]

    with psycopg.connect(database) as conn:
        saved = conn.execute("SELECT confirmations FROM transactions WHERE id = %s", (transaction_id,)).fetchone()
    assert saved == (4242,)
