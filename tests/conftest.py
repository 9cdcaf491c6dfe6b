"""Shared fixtures: one throwaway PostgreSQL cluster per test run (celora's own LocalServer), a real PgBouncer
in transaction-pooling mode in front of it, and a fresh database per test (copied from a migrated template).

Tests never see the developer's environment: DATABASE_URL, DIRECT_DATABASE_URL and CELORA_* are removed at
start-up, every Settings object is built from an explicit mapping, and both Settings and CLI subprocesses use
TEST_PROJECT as their project root: a throwaway folder holding only the repo's migrations (a symlink), so a
developer's `.env` (or `.celora/` cluster) in the checkout is never read or started.

The helpers the tests call (run_celora, settings_for, free_port, ...) live in tests/support/; this file keeps the
fixtures, the hooks and what must happen once at start-up.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.support import (
    MISSING_REASON,
    NOT_INSTALLED,
    PROGRAMS,
    STRICT_PROGRAMS,
    TEST_PG_BIN,
    drop_database,
    program,
    programs,
    run_pgbouncer,
    settings_for,
    shared_tmpdir,
)

# tests.compat marks the compatibility subset (make test-compat); studio_browser gives the `browser` fixture.
pytest_plugins = ["tests.compat", "tests.support.studio_browser"]

# The developer's environment never reaches a test. CELORA_TEST_* configure the suite, not celora (which never
# reads them, and run_celora drops every CELORA_* variable from a child's environment): they stay.
for _name in list(os.environ):
    if _name in ("DATABASE_URL", "DIRECT_DATABASE_URL", "NO_COLOR") or (
            _name.startswith("CELORA_") and not _name.startswith("CELORA_TEST_")):
        del os.environ[_name]

_db_counter = itertools.count()

# A test that asks for one of these (itself or through another fixture) needs the session's PostgreSQL: it is
# marked `db`, so that `pytest -m "not db"` (make test-unit) runs the rest without starting a server.
DATABASE_FIXTURES = frozenset({"pg_server", "migrated_template", "empty_db", "migrated_db", "pgbouncer",
                               "pgbouncer_dropping_options"})

# A shell starts a background job (`make test &`, or `bash .ci/run &` in a script) with SIGINT ignored, and every
# process the job starts inherits that: a test that stops celora with SIGINT, as Ctrl-C would, then waits for a
# process that never hears it. An ignored signal stays ignored across exec, but a handled one is reset to the
# default there: with Python's own handler back in the runner, every process a test starts begins with SIGINT
# at its default, as it would from a terminal (and the runner answers Ctrl-C again).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Skips for a missing program are reported from one place, so `-ra` folds them into one line each."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and NOT_INSTALLED in str(report.longrepr[2]):
        report.longrepr = (programs.__code__.co_filename, programs.__code__.co_firstlineno, report.longrepr[2])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The one line that says how many tests did not run for a missing program, and what to install."""
    stopped, wanted = 0, set()
    for kind in ("skipped", "error", "failed"):
        for report in terminalreporter.stats.get(kind, []):
            found = MISSING_REASON.search(str(getattr(report, "longrepr", "")))
            if found:
                stopped += 1
                wanted.update(found.group(1).split())
    if not stopped:
        return
    names = [name for name, (package, _) in PROGRAMS.items() if package in wanted]
    packages = " ".join(PROGRAMS[name][0] for name in names)
    outcome = "failed (CI or CELORA_TEST_STRICT is set)" if STRICT_PROGRAMS else "skipped"
    terminalreporter.write_line(
        f"celora: {stopped} test(s) {outcome}: {', '.join(names)} not installed; to run them: apt-get install "
        f"{packages}", yellow=not STRICT_PROGRAMS, red=STRICT_PROGRAMS, bold=True)


@pytest.fixture(scope="session")
def pgbouncer_binary() -> str:
    return program("pgbouncer")


@pytest.fixture(scope="session")
def chromium_binaries() -> tuple[str, str]:
    """(chromium, chromedriver): Debian's, driven by Selenium; nothing is downloaded."""
    chromium, chromedriver = programs("chromium", "chromedriver")
    return chromium, chromedriver


@pytest.fixture(scope="session")
def pg_server():
    from celora_cli.local.server import LocalServer

    base = shared_tmpdir("celora-test-pg-")
    server = LocalServer(base / "cluster", fast=True, database="postgres",
                         bin_dir=Path(TEST_PG_BIN) if TEST_PG_BIN else None)
    server.ensure_running()
    yield server
    server.destroy()
    shutil.rmtree(base, ignore_errors=True)


def pytest_report_header(config) -> str:
    from celora_cli.local.binaries import find_pg_binaries

    try:
        found = find_pg_binaries(Path(TEST_PG_BIN) if TEST_PG_BIN else None)
    except Exception as exc:  # noqa: BLE001 - a header line only; pg_server reports the real error
        return f"PostgreSQL under test: none usable ({exc})"
    return f"PostgreSQL under test: {found.version} ({found.describe()}: {found.bin_dir})"


@pytest.fixture(scope="session")
def migrated_template(pg_server):
    """A database at head, copied by CREATE DATABASE ... TEMPLATE for each test that wants one."""
    from celora_cli.migrate.deploy import deploy

    name = "celora_template"
    pg_server.create_database(name)
    deploy(settings_for(pg_server.url(name)))
    return name


@pytest.fixture
def empty_db(pg_server) -> str:
    """URL of a new, empty database."""
    name = f"t_empty_{next(_db_counter)}_{os.getpid()}"
    url = pg_server.create_database(name)
    yield url
    drop_database(pg_server, name)


@pytest.fixture
def migrated_db(pg_server, migrated_template) -> str:
    """URL of a new database at the head revision."""
    name = f"t_head_{next(_db_counter)}_{os.getpid()}"
    url = pg_server.create_database(name, template=migrated_template)
    yield url
    drop_database(pg_server, name)


# pgbouncer_binary comes first: a machine without PgBouncer skips before the cluster is started for nothing.
@pytest.fixture(scope="session")
def pgbouncer(pgbouncer_binary, pg_server):
    """PgBouncer exactly as the repo configures it: it rejects the `options` startup parameter."""
    yield from run_pgbouncer(pg_server, "celora-test-pgbouncer-")


@pytest.fixture(scope="session")
def pgbouncer_dropping_options(pgbouncer_binary, pg_server):
    """PgBouncer with `options` in ignore_startup_parameters, as some deployments configure it: it accepts
    celora's startup options and silently drops them (so the startup marker never arrives)."""
    yield from run_pgbouncer(pg_server, "celora-test-pgbouncer-dropping-",
                             ignore_startup_parameters="extra_float_digits,options")
