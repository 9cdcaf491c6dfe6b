"""The studio end to end for browser tests: the real `celora db studio` (uvicorn on a free port) and a real headless
Chromium (Debian's chromium + chromium-driver, driven by Selenium; nothing is downloaded), with the waits a page
needs. The `browser` fixture is a plugin of tests/conftest.py; import the helpers:
`from tests.support.studio_browser import start_studio`."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support import REPO, TEST_PROJECT


@contextlib.contextmanager
def start_studio(database: str, *flags: str) -> Iterator[str]:
    """`celora db studio --port 0 --no-browser FLAGS` on `database`; yields the printed URL (with the token)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY", "DIRECT_DATABASE_URL") and not key.startswith("CELORA_")}
    env.update(DATABASE_URL=database, CELORA_ENV="test", CELORA_PROJECT_ROOT=str(TEST_PROJECT), NO_COLOR="1",
               PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "studio", "--port", "0", "--no-browser",
                                *flags], cwd=TEST_PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield printed_url(process)
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture
def studio(migrated_db):
    """`celora db studio --port 0 --no-browser` on a seeded database; yields (URL with token, database URL)."""
    from celora_cli.data.seed.apply import seed
    from tests.support import settings_for

    seed(settings_for(migrated_db), REPO / "fixtures")
    with start_studio(migrated_db) as url:
        yield url, migrated_db


def printed_url(process: subprocess.Popen) -> str:
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


SCROLLED_INTO_VIEW = """
const button = arguments[0];
button.scrollIntoView({block: 'center'});
const box = button.getBoundingClientRect();
const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
return hit !== null && button.contains(hit);
"""


def arrive(browser, path: str) -> None:
    """Wait until the browser shows `path` and has finished loading it."""
    assert wait_for(lambda: path in browser.current_url
                    and browser.execute_script("return document.readyState") == "complete"), browser.current_url


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def click_when_clear(browser, element) -> None:
    """Scroll to it as a person would (auto-growing text areas move a form while the page settles), then click."""
    assert wait_for(lambda: browser.execute_script(SCROLLED_INTO_VIEW, element)), "never came into view"
    element.click()
