"""Exit codes through the real `celora` process (README "Exit codes"): usage errors 64 (never 2, which is
"unhealthy"), bugs 70 (never 1, which is "degraded"/"pending"), stdout unwritable 74, Ctrl-C 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psycopg
import pytest

from tests.support import REPO, TEST_PROJECT, run_celora

MALFORMED = {"DATABASE_URL": "postgresql://u:topsecret@h:notaport/db"}


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    env.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1", "PYTHONPATH": str(REPO)})
    env.update(extra or {})
    return env


def _run_to(stdout, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI with stdout going to `stdout` (a file or a pipe end), stderr captured."""
    return subprocess.run([sys.executable, "-m", "celora_cli", *args], check=False, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=_env(env), cwd=TEST_PROJECT, timeout=120)


def _assert_one_line_output_error(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 74, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "could not write its output" in lines[0]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


# --- usage -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [("db", "health", "--timeout", "abc"), ("db", "health", "--bogus"),
                                  ("--bogus", "db", "status"), ("db", "nosuchcommand")])
def test_usage_error_exits_64(args):
    proc = run_celora(*args)
    assert proc.returncode == 64, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_command_prints_help_and_exits_64():
    proc = run_celora()
    assert proc.returncode == 64
    assert "Usage: celora" in proc.stdout + proc.stderr


def test_help_and_version_exit_0():
    assert run_celora("--help").returncode == 0
    version = run_celora("--version")
    assert version.returncode == 0 and version.stdout.startswith("celora ")


# --- stdout on a full disk or a closed pipe ----------------------------------------------------------------

@pytest.mark.parametrize("args, env", [
    (("--version",), None),
    (("--help",), None),
    (("db", "health", "--help"), None),
], ids=["version", "help", "subcommand-help"])
def test_full_disk_exits_74(args, env):
    with open("/dev/full", "w") as full:
        proc = _run_to(full, *args, env=env)
    _assert_one_line_output_error(proc)


def test_full_disk_for_a_json_error_object_still_tells_the_error():
    with open("/dev/full", "w") as full:
        proc = _run_to(full, "db", "status", "--json", env=MALFORMED)  # the error object cannot be written
    assert proc.returncode == 74, proc.stderr
    assert "malformed" in proc.stderr  # the error itself is not lost ...
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: celora could not write its output")  # ... then why
    assert "Traceback" not in proc.stderr and "topsecret" not in proc.stderr


def test_full_disk_for_a_bug_with_json():
    with open("/dev/full", "w") as full:
        proc = _run_bug("db", "status", "--json", stdout=full)
    assert proc.returncode == 74, proc.stderr
    assert "unexpected internal error" in proc.stderr and "Traceback" not in proc.stderr


def test_full_disk_without_output_keeps_the_real_error():
    with open("/dev/full", "w") as full:
        proc = _run_to(full, "db", "status", env=MALFORMED)  # nothing goes to stdout: the config error stands
    assert proc.returncode == 3, proc.stderr
    assert "malformed" in proc.stderr and "topsecret" not in proc.stderr


def test_full_disk_with_a_real_result(migrated_db):
    with open("/dev/full", "w") as full:
        proc = _run_to(full, "db", "status", "--json", env={"DATABASE_URL": migrated_db})
    _assert_one_line_output_error(proc)


def test_closed_pipe(migrated_db):
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: every write to stdout fails with EPIPE
    try:
        proc = _run_to(write_end, "db", "status", env={"DATABASE_URL": migrated_db})
    finally:
        os.close(write_end)
    _assert_one_line_output_error(proc)


# --- bugs --------------------------------------------------------------------------------------------------

BUG = """
import sys
import celora_cli.migrate.status
def broken(settings):
    return {}["no such key"]  # a real bug: a KeyError deep in the core
celora_cli.migrate.status.migration_status = broken
sys.argv = ["celora", *sys.argv[1:]]
from celora_cli.cli.app import main
main()
"""


def _run_bug(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BUG, *args], check=False, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env=_env({"DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/db"}),
                          cwd=TEST_PROJECT, timeout=120)


def test_bug_exits_70_and_says_so():
    proc = _run_bug("db", "status")
    assert proc.returncode == 70, proc.stderr
    assert "unexpected internal error" in proc.stderr and "KeyError" in proc.stderr
    assert "--debug" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_bug_with_json_prints_the_error_object():
    proc = _run_bug("db", "status", "--json")
    assert proc.returncode == 70
    data = json.loads(proc.stdout)
    assert data["ok"] is False and data["error"]["code"] == 70 and data["error"]["type"] == "InternalError"


def test_bug_with_debug_shows_the_traceback_masked():
    proc = _run_bug("--debug", "db", "status")
    assert proc.returncode == 70
    assert "Traceback" in proc.stderr and "topsecret" not in proc.stderr


# --- Ctrl-C ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_ctrl_c_while_waiting_for_the_migration_lock_exits_130(migrated_db, as_json):
    from celora_cli.migrate.lock import MIGRATION_LOCK_KEY

    with psycopg.connect(migrated_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        args = ["db", "migrate-deploy", "--lock-timeout", "60"] + (["--json"] if as_json else [])
        proc = subprocess.Popen([sys.executable, "-m", "celora_cli", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env({"DATABASE_URL": migrated_db}),
                                cwd=TEST_PROJECT)  # SIGINT at its default even in a background run: conftest
        try:
            first_line = proc.stderr.readline()  # blocks until celora says it is waiting
            assert "Waiting for the migration lock" in first_line, first_line
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr
    if as_json:
        data = json.loads(stdout)
        assert data["error"]["code"] == 130 and data["error"]["type"] == "Interrupted"
    else:
        assert stdout == ""

