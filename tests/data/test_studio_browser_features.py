"""The studio's round-two features in a real headless Chromium against the real `celora db studio`: an edit that
meets another session's change (shown, nothing overwritten), a row's history, copying rows as CSV, and the SQL
console (a SELECT answered, an UPDATE refused when the studio is read-only)."""

from __future__ import annotations

import csv
import io

import psycopg
import pytest

from tests.support import REPO, settings_for
from tests.support.studio_browser import arrive, click_when_clear, start_studio, wait_for

pytestmark = pytest.mark.usefixtures("chromium_binaries")


@pytest.fixture
def seeded(migrated_db):
    from celora_cli.data.seed.apply import seed

    seed(settings_for(migrated_db), REPO / "fixtures")
    return migrated_db


def test_conflicting_edit_then_history_then_copy_as_csv(seeded, browser):
    from selenium.webdriver.common.by import By

    database = seeded
    with psycopg.connect(database) as conn:
        (wallet_id,), = conn.execute("SELECT id FROM wallets WHERE chain = 'solana'").fetchall()
    with start_studio(database) as url:
        browser.get(url)
        browser.get(url.split("?")[0] + f"wallet/edit?pk={wallet_id}")
        arrive(browser, "/studio/wallet/edit")
        label = browser.find_element(By.NAME, "label")
        label.clear()
        label.send_keys("mine")
        with psycopg.connect(database) as other:  # another session saves while the page is open
            other.execute("UPDATE wallets SET label = 'theirs' WHERE id = %s", (wallet_id,))
        click_when_clear(browser, browser.find_element(By.CSS_SELECTOR,
                                                       "div.card-footer button[type=submit]:not([name])"))
        conflict = browser.find_element(By.CSS_SELECTOR, '.celora-conflict tr[data-field="label"]')
        assert conflict.find_element(By.CSS_SELECTOR, ".celora-theirs").text == "theirs"
        assert conflict.find_element(By.CSS_SELECTOR, ".celora-yours").text == "mine"
        assert browser.find_element(By.NAME, "label").get_attribute("value") == "mine"  # the form keeps yours
        with psycopg.connect(database) as conn:
            assert conn.execute("SELECT label FROM wallets WHERE id = %s", (wallet_id,)).fetchall() == [("theirs",)]

        # The row's history: the other session's change, newest first.
        browser.find_element(By.CSS_SELECTOR, "a.celora-history").click()
        arrive(browser, "/studio/-/history/wallet")
        newest = browser.find_elements(By.CSS_SELECTOR, ".celora-history-entry")[0]
        assert newest.get_attribute("data-operation") == "UPDATE"
        change = newest.find_element(By.CSS_SELECTOR, 'tr.celora-change[data-column="label"]')
        assert change.find_element(By.CSS_SELECTOR, ".celora-new").text == "theirs"
        assert browser.find_elements(By.CSS_SELECTOR, ".celora-history-entry")[-1].get_attribute(
            "data-operation") == "INSERT"

        # Copy two transactions as CSV: the clipboard when the browser allows it, the text shown either way.
        browser.get(url.split("?")[0] + "transaction/list")
        arrive(browser, "/studio/transaction/list")
        boxes = browser.find_elements(By.CSS_SELECTOR, "input.row-checkbox")[:2]
        for box in boxes:
            click_when_clear(browser, box)
        chosen = [box.get_attribute("value") for box in boxes]
        click_when_clear(browser, browser.find_element(By.CSS_SELECTOR, 'button.celora-copy[data-format="csv"]'))
        text = wait_for(lambda: browser.execute_script(
            "const a = document.getElementById('celora-copy-text'); return a && a.value"))
        assert text, browser.find_element(By.ID, "celora-copy-status").text
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [row["id"] for row in rows] == chosen
        assert "row(s) as CSV" in browser.find_element(By.ID, "celora-copy-status").text


def test_console_answers_a_select_and_refuses_an_update_when_read_only(seeded, browser):
    from selenium.webdriver.common.by import By

    database = seeded
    with psycopg.connect(database) as conn:
        before = conn.execute("SELECT id, label FROM wallets ORDER BY id").fetchall()
    with start_studio(database, "--read-only") as url:
        browser.get(url)
        browser.find_element(By.LINK_TEXT, "SQL console").click()
        arrive(browser, "/studio/-/console")
        editor = browser.find_element(By.NAME, "sql")
        editor.send_keys("SELECT email FROM users ORDER BY email")
        browser.find_element(By.ID, "celora-console-run").click()
        cells = browser.find_elements(By.CSS_SELECTOR, "table.celora-console-result tbody td")
        assert [cell.text for cell in cells] == ["alice@celora.io", "bob@celora.io"]

        editor = browser.find_element(By.NAME, "sql")
        editor.clear()
        editor.send_keys("UPDATE wallets SET label = 'from the console'")
        browser.find_element(By.ID, "celora-console-run").click()
        error = browser.find_element(By.CSS_SELECTOR, ".celora-console-error")
        assert "UPDATE refused" in error.text and "read-only" in error.text
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT id, label FROM wallets ORDER BY id").fetchall() == before
