"""Shared fixtures: one throwaway PostgreSQL cluster per test run (celora's own LocalServer), a real PgBouncer
in transaction-pooling mode in front of it, and a fresh database per test (copied from a migrated template).

Tests never see the developer's environment: DATABASE_URL, DIRECT_DATABASE_URL and CELORA_* are removed at
start-up, every Settings object is built from an explicit mapping, and both Settings and CLI subprocesses use
TEST_PROJECT as their project root: a throwaway folder holding only the repo's migrations (a symlink), so a
developer's `.env` (or `.celora/` cluster) in the checkout is never read or started.
"""

from __future__ import annotations

import atexit
import configparser
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.compat"]  # marks the compatibility subset (make test-compat)

# The server binaries the session's cluster runs on (make test-compat); read before CELORA_* is cleared below.
TEST_PG_BIN = os.environ.get("CELORA_TEST_PG_BIN") or None


def _set(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


# CELORA_TEST_* configure the suite, not celora (which never reads them, and run_celora drops every CELORA_*
# variable from a child's environment): they stay, so that a second import of this module (as tests.conftest,
# by the test modules that import its helpers) reads the same values.
for _name in list(os.environ):
    if _name in ("DATABASE_URL", "DIRECT_DATABASE_URL", "NO_COLOR") or (
            _name.startswith("CELORA_") and not _name.startswith("CELORA_TEST_")):
        del os.environ[_name]

STRICT_PROGRAMS = _set(os.environ.get("CI")) or _set(os.environ.get("CELORA_TEST_STRICT"))
_HIDDEN_PROGRAMS = {name.strip() for name in os.environ.get("CELORA_TEST_HIDE_PROGRAMS", "").split(",") if name.strip()}

_db_counter = itertools.count()

# A shell starts a background job (`make test &`, or `bash .ci/run &` in a script) with SIGINT ignored, and every
# process the job starts inherits that: a test that stops celora with SIGINT, as Ctrl-C would, then waits for a
# process that never hears it. An ignored signal stays ignored across exec, but a handled one is reset to the
# default there: with Python's own handler back in the runner, every process a test starts begins with SIGINT
# at its default, as it would from a terminal (and the runner answers Ctrl-C again).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _make_test_project() -> Path:
    project = Path(tempfile.mkdtemp(prefix="celora-test-project-"))
    project.chmod(0o755)  # the unprivileged server user may need to reach it when we run as root
    (project / "migrations").symlink_to(REPO / "migrations")
    atexit.register(shutil.rmtree, project, True)
    return project


TEST_PROJECT = _make_test_project()


# -- Programs the suite needs besides Python ---------------------------------------------------------------
# A machine with Python and make runs the suite: a test that needs a program that is not installed is skipped,
# and one line at the end says what to install. Where everything must run (CI, or CELORA_TEST_STRICT set), a
# missing program fails the test instead. CELORA_TEST_HIDE_PROGRAMS=pgbouncer,chromium makes the suite treat
# those as not installed, to see what a bare machine gets.
PROGRAMS = {  # name: (the Debian package, folders searched besides PATH)
    "pgbouncer": ("pgbouncer", ("/usr/sbin", "/usr/local/sbin", "/sbin")),  # Debian's is off a user's PATH
    "chromium": ("chromium", ()),
    "chromedriver": ("chromium-driver", ()),
}
# In every skip or failure programs() makes; the summary reads the reports for it (not this module's state:
# pytest imports this file as `conftest`, and the test modules that import its helpers as `tests.conftest`).
_NOT_INSTALLED = "not installed (apt-get install "
_MISSING_REASON = re.compile(r"(?:is|are) not installed \(apt-get install ([^)]+)\)")


def program(name: str) -> str:
    """The path of `name`, one of PROGRAMS; the calling test (or fixture) is skipped when it is not installed,
    or fails under CI / CELORA_TEST_STRICT."""
    return programs(name)[0]


def programs(*names: str) -> tuple[str, ...]:
    """The paths of `names`; when any is missing, one skip (or failure) names every missing one."""
    found = {name: _find_program(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if not missing:
        return tuple(path for path in found.values() if path is not None)
    packages = " ".join(dict.fromkeys(PROGRAMS[name][0] for name in missing))
    reason = f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} {_NOT_INSTALLED}{packages})"
    if STRICT_PROGRAMS:
        pytest.fail(f"{reason}; with CI or CELORA_TEST_STRICT set, every test must run.", pytrace=False)
    pytest.skip(reason)


def _find_program(name: str) -> str | None:
    if name in _HIDDEN_PROGRAMS:
        return None
    folders = PROGRAMS[name][1]
    return shutil.which(name) or (shutil.which(name, path=os.pathsep.join(folders)) if folders else None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Skips for a missing program are reported from one place, so `-ra` folds them into one line each."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and _NOT_INSTALLED in str(report.longrepr[2]):
        report.longrepr = (__file__, programs.__code__.co_firstlineno, report.longrepr[2])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The one line that says how many tests did not run for a missing program, and what to install."""
    stopped, wanted = 0, set()
    for kind in ("skipped", "error", "failed"):
        for report in terminalreporter.stats.get(kind, []):
            found = _MISSING_REASON.search(str(getattr(report, "longrepr", "")))
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def shared_tmpdir(prefix: str) -> Path:
    """A temp dir the unprivileged server user can reach (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


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


def admin_execute(server, sql: str, database: str = "postgres") -> None:
    import psycopg

    with psycopg.connect(server.url(database), autocommit=True) as conn:
        conn.execute(sql)


def settings_for(url: str, direct: str | None = None, **extra):
    """Settings from an explicit environment (never the developer's, nor the checkout's .env)."""
    from celora_cli.config.settings import load_settings

    environ = {"DATABASE_URL": url, "CELORA_ENV": "test"}
    if direct:
        environ["DIRECT_DATABASE_URL"] = direct
    environ.update({k: str(v) for k, v in extra.items()})
    return load_settings(environ=environ, project_root=TEST_PROJECT)


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
    _drop(pg_server, name)


@pytest.fixture
def migrated_db(pg_server, migrated_template) -> str:
    """URL of a new database at the head revision."""
    name = f"t_head_{next(_db_counter)}_{os.getpid()}"
    url = pg_server.create_database(name, template=migrated_template)
    yield url
    _drop(pg_server, name)


def _drop(server, name: str) -> None:
    admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pgbouncer_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)\.(\d+)", out)
    return tuple(int(n) for n in match.groups()) if match else (0, 0)


def _run_pgbouncer(pg_server, prefix: str, **overrides: str):
    """A real PgBouncer in transaction mode in front of `pg_server`, from the repo's production pgbouncer.ini with
    only the environment's keys replaced (plus `overrides`). Yields a function db_name -> URL: with
    ?pgbouncer=true by default, without it for `flag=False`."""
    binary = program("pgbouncer")
    base = shared_tmpdir(prefix)
    port = free_port()
    (base / "users.txt").write_text('"celora" ""\n')
    config = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
    config.read(REPO / "pgbouncer.ini")
    assert config["pgbouncer"]["pool_mode"] == "transaction"
    config["databases"] = {"*": f"host=127.0.0.1 port={pg_server.port}"}
    for key in ("admin_users", "stats_users"):  # the shipped file's users do not exist here (overrides may add)
        config["pgbouncer"].pop(key, None)
    config["pgbouncer"].update({
        "listen_addr": "127.0.0.1", "listen_port": str(port), "unix_socket_dir": "",
        "auth_type": "trust", "auth_file": str(base / "users.txt"),
        "logfile": str(base / "pgbouncer.log"), "pidfile": str(base / "pgbouncer.pid"),
        "server_tls_sslmode": "disable", "min_pool_size": "0",
        # One server connection per database: any session state or prepared statement that leaked
        # from one client would be seen by the next, so the tests can catch it.
        "default_pool_size": "1", "reserve_pool_size": "0",
        **overrides,
    })
    if _pgbouncer_version(binary) >= (1, 21):
        config["pgbouncer"]["max_prepared_statements"] = "0"  # keep the classic transaction-mode behaviour
    with open(base / "pgbouncer.ini", "w") as handle:
        config.write(handle)
    kwargs = {}
    if os.geteuid() == 0:  # PgBouncer refuses to run as root, like PostgreSQL
        user = pwd.getpwnam(pg_server.run_as)
        for path in (base, *base.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    process = subprocess.Popen([binary, str(base / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, **kwargs)
    try:
        wait_for_port(port)
    except RuntimeError:
        process.kill()
        pytest.fail(f"pgbouncer did not start: {process.stderr.read().decode(errors='replace')}")

    def url(database: str, flag: bool = True) -> str:
        suffix = "?pgbouncer=true" if flag else ""
        return f"postgresql://celora@127.0.0.1:{port}/{database}{suffix}"

    url.port = port  # type: ignore[attr-defined]
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(base, ignore_errors=True)


# pgbouncer_binary comes first: a machine without PgBouncer skips before the cluster is started for nothing.
@pytest.fixture(scope="session")
def pgbouncer(pgbouncer_binary, pg_server):
    """PgBouncer exactly as the repo configures it: it rejects the `options` startup parameter."""
    yield from _run_pgbouncer(pg_server, "celora-test-pgbouncer-")


@pytest.fixture(scope="session")
def pgbouncer_dropping_options(pgbouncer_binary, pg_server):
    """PgBouncer with `options` in ignore_startup_parameters, as some deployments configure it: it accepts
    celora's startup options and silently drops them (so the startup marker never arrives)."""
    yield from _run_pgbouncer(pg_server, "celora-test-pgbouncer-dropping-",
                              ignore_startup_parameters="extra_float_digits,options")


def db_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


def run_celora(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    """Run the real `celora` entry point in a subprocess with a clean environment, in TEST_PROJECT."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    # PYTHONPATH: always this checkout's code, whatever `pip install -e` last pointed at.
    clean.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1", "COLUMNS": "200",
                  "PYTHONPATH": str(REPO)})
    clean.update(env or {})
    # stdin is not the developer's terminal: a command that would ask must refuse, never hang `make test`.
    return subprocess.run([sys.executable, "-m", "celora_cli", *args], capture_output=True, text=True,
                          env=clean, cwd=cwd or TEST_PROJECT, timeout=timeout, stdin=subprocess.DEVNULL)
