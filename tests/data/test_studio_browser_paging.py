"""celora db studio's pager in a real headless Chromium against the real command: open the transactions, go to the
last page, step back one page; each page shows exactly the rows SQL's ORDER BY puts there."""

from __future__ import annotations

import psycopg
import pytest

# The studio and the browser are fixtures of tests/support/studio_browser.py, a conftest plugin (Debian's chromium
# and chromium-driver; skipped where they are not installed, a failure under CI).
from tests.support.studio_browser import arrive, click_when_clear

pytestmark = pytest.mark.usefixtures("chromium_binaries")

EXTRA = 60  # with the fixtures' 8: 68 rows, so the last page of 25 holds 18


def test_last_page_of_transactions_then_one_back(studio, browser):
    from selenium.webdriver.common.by import By

    url, database = studio
    with psycopg.connect(database) as conn:
        conn.execute(
            "INSERT INTO transactions (wallet_id, chain, tx_hash, direction, amount, asset, decimals) "
            "SELECT w.id, w.chain, '0x' || lpad(to_hex(1000 + i), 64, '0'), 'incoming', i, 'ETH', 18 "
            "FROM generate_series(1, %s) AS i, (SELECT id, chain FROM wallets ORDER BY address LIMIT 1) AS w",
            (EXTRA,))
        expected = [str(row[0]) for row in conn.execute("SELECT id FROM transactions ORDER BY id")]
    assert len(expected) == 68

    browser.get(url)
    browser.find_element(By.LINK_TEXT, "Transactions").click()
    arrive(browser, "/studio/transaction/list")
    click_when_clear(browser, browser.find_element(By.CSS_SELECTOR, 'a[data-celora-page="last"]'))
    arrive(browser, "last=1")
    rows = [row.get_attribute("data-sa-pk") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-sa-pk]")]
    assert rows == expected[50:]
    assert "Rows 51 to 68 of 68" in browser.find_element(By.CSS_SELECTOR, "[data-celora-range]").text
    assert browser.find_element(By.CSS_SELECTOR, 'a[data-celora-page="next"]').get_attribute("aria-disabled")

    click_when_clear(browser, browser.find_element(By.CSS_SELECTOR, 'a[data-celora-page="prev"]'))
    arrive(browser, "before=")
    rows = [row.get_attribute("data-sa-pk") for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-sa-pk]")]
    assert rows == expected[25:50]
    assert "Rows 26 to 50 of 68" in browser.find_element(By.CSS_SELECTOR, "[data-celora-range]").text
