"""What the tests share besides fixtures: the suite's project folder, the programs it needs, ports and temp folders,
Settings and the real CLI in a subprocess, databases and PgBouncers of the session's cluster.

Test modules import these from here (`from tests.support import run_celora, settings_for`); tests/conftest.py
keeps the fixtures and hooks, and uses these too. A module of its own because pytest imports the conftest as
`conftest`: a test module importing it again as `tests.conftest` ran its import-time code twice (a second
TEST_PROJECT, a second cleaning of the environment). The helpers of one subject sit next to this module
(relay, roles, standby, cluster, studio_forms).
"""

from __future__ import annotations

import atexit
import configparser
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The server binaries the session's cluster runs on (make test-compat). CELORA_TEST_* configure the suite, not
# celora (which never reads them, and run_celora drops every CELORA_* variable from a child's environment), so
# the conftest's cleaning of the environment leaves them in place.
TEST_PG_BIN = os.environ.get("CELORA_TEST_PG_BIN") or None


def _set(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


STRICT_PROGRAMS = _set(os.environ.get("CI")) or _set(os.environ.get("CELORA_TEST_STRICT"))
_HIDDEN_PROGRAMS = {name.strip() for name in os.environ.get("CELORA_TEST_HIDE_PROGRAMS", "").split(",") if name.strip()}


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
# In every skip or failure programs() makes; the conftest's summary reads the reports for it (not this module's
# state, which a plugin loaded in another way would not share).
NOT_INSTALLED = "not installed (apt-get install "
MISSING_REASON = re.compile(r"(?:is|are) not installed \(apt-get install ([^)]+)\)")


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
    reason = f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} {NOT_INSTALLED}{packages})"
    if STRICT_PROGRAMS:
        pytest.fail(f"{reason}; with CI or CELORA_TEST_STRICT set, every test must run.", pytrace=False)
    pytest.skip(reason)


def _find_program(name: str) -> str | None:
    if name in _HIDDEN_PROGRAMS:
        return None
    folders = PROGRAMS[name][1]
    return shutil.which(name) or (shutil.which(name, path=os.pathsep.join(folders)) if folders else None)


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


def drop_database(server, name: str) -> None:
    admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pgbouncer_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)\.(\d+)", out)
    return tuple(int(n) for n in match.groups()) if match else (0, 0)


def run_pgbouncer(pg_server, prefix: str, **overrides: str):
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


def db_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


def _celora_env(env: dict | None, *, without: tuple[str, ...] = ()) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL", *without) and not k.startswith("CELORA_")}
    # PYTHONPATH: always this checkout's code, whatever `pip install -e` last pointed at.
    clean.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1", "COLUMNS": "200",
                  "PYTHONPATH": str(REPO)})
    clean.update(env or {})
    return clean


def run_celora(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    """Run the real `celora` entry point in a subprocess with a clean environment, in TEST_PROJECT."""
    # stdin is not the developer's terminal: a command that would ask must refuse, never hang `make test`.
    return subprocess.run([sys.executable, "-m", "celora_cli", *args], capture_output=True, text=True,
                          env=_celora_env(env), cwd=cwd or TEST_PROJECT, timeout=timeout, stdin=subprocess.DEVNULL)


def run_celora_at_terminal(answer: str, *args: str, env: dict | None = None, cwd: Path | None = None,
                           timeout: float = 120):
    """run_celora with a pseudo-terminal on stdin, `answer` and a newline already typed into it (it waits in the
    terminal's buffer until a prompt reads it), and no CI variable: the command asks, as at a developer's desk."""
    import pty

    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode() + b"\n")
        return subprocess.run([sys.executable, "-m", "celora_cli", *args], capture_output=True, text=True,
                              env=_celora_env(env, without=("CI",)), cwd=cwd or TEST_PROJECT, timeout=timeout,
                              stdin=terminal)
    finally:
        os.close(controller)
        os.close(terminal)
