"""The local PostgreSQL without surprises: nothing is created before a command's own checks pass, creating and
starting are announced on stderr, health reports a stopped server instead of starting it, `celora local destroy`
removes the cluster wherever it lives (and only celora's files), and bad CELORA_PG_USER / CELORA_LOCAL_DIR
values are clear errors (exit 3)."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from celora_cli.config.settings import load_settings
from celora_cli.local.server import LocalServer
from tests.support import REPO, TEST_PROJECT, run_celora, shared_tmpdir

pytestmark = pytest.mark.db  # some tests start a PostgreSQL of their own, outside the session's fixtures

CELORA_ENTRIES = ("server.json", "postgres.log", "lock")


@pytest.fixture
def base():
    path = shared_tmpdir("celora-test-lifecycle-")
    yield path
    LocalServer(path / "cluster").destroy()
    shutil.rmtree(path, ignore_errors=True)


def _settings(local_dir: Path):
    return load_settings(environ={"CELORA_LOCAL_DIR": str(local_dir), "CELORA_ENV": "test"},
                         project_root=TEST_PROJECT)


def _run_without_terminal(*args: str, env: dict, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """Like run_celora, but stdin is never the developer's terminal (confirmation prompts must not hang)."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL", "CI") and not k.startswith("CELORA_")}
    clean.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1", "COLUMNS": "200",
                  "PYTHONPATH": str(REPO), **env})
    return subprocess.run([sys.executable, "-m", "celora_cli", *args], capture_output=True, text=True, env=clean,
                          cwd=TEST_PROJECT, stdin=stdin, timeout=120, check=False)


def _answer_prompt(answer: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    """Run with a pseudo-terminal on stdin (an interactive user) that types `answer`."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode() + b"\n")
        return _run_without_terminal(*args, env=env, stdin=terminal)
    finally:
        os.close(controller)
        os.close(terminal)


def test_lifecycle_announced_never_started_by_health_and_destroyed(base):
    from celora_cli.ops.health import check_database_health

    local_dir = base / "cluster"
    env = {"CELORA_LOCAL_DIR": str(local_dir)}

    # Never created: health says so and creates nothing.
    report = check_database_health(_settings(local_dir))
    assert report.status == "unhealthy" and report.local_server
    assert "has not been created" in report.checks["pooled"].error
    assert "celora local start" in report.checks["pooled"].hint
    assert not local_dir.exists()

    # A command that needs the database creates and starts it, and says so on stderr.
    status = run_celora("db", "status", env=env)
    assert status.returncode == 1, status.stdout + status.stderr  # pending: the database is new
    assert "Creating a local PostgreSQL cluster in" in status.stderr
    assert "Starting the local PostgreSQL in" in status.stderr
    server = LocalServer.from_settings(_settings(local_dir))
    assert server.is_running()

    # Already running: nothing to announce.
    again = run_celora("db", "status", env=env)
    assert again.returncode == 1 and "Creating" not in again.stderr and "Starting" not in again.stderr

    # Stopped: health reports it and leaves it stopped.
    assert server.stop()
    health = run_celora("db", "health", "--json", env=env)
    assert health.returncode == 2, health.stdout + health.stderr
    data = json.loads(health.stdout)
    assert data["status"] == "unhealthy" and "is not running" in data["checks"]["pooled"]["error"]
    assert "celora local start" in data["checks"]["pooled"]["hint"]
    assert "Starting" not in health.stderr and not server.is_running()

    # destroy deletes data: refused when nobody can be asked, or when the user says no.
    for refused in (_run_without_terminal("local", "destroy", env=env),
                    _run_without_terminal("local", "destroy", env={**env, "CI": "true"}),
                    _answer_prompt("n", "local", "destroy", env={**env, "CI": ""})):
        assert refused.returncode == 12, refused.stdout + refused.stderr
        assert "--yes" in refused.stderr and "Traceback" not in refused.stderr
        assert (local_dir / "pgdata" / "PG_VERSION").is_file()
    destroyed = _run_without_terminal("local", "destroy", "--yes", env=env)
    assert destroyed.returncode == 0, destroyed.stderr
    assert f"Deleted the local PostgreSQL in {local_dir}" in destroyed.stdout
    assert not local_dir.exists()
    nothing = _run_without_terminal("local", "destroy", "--yes", env=env)
    assert nothing.returncode == 0 and "No local PostgreSQL to delete" in nothing.stdout


def test_destroy_on_a_running_server_stops_it_first(base):
    local_dir = base / "cluster"
    server = LocalServer(local_dir, fast=True)
    server.ensure_running()
    pid_file = local_dir / "pgdata" / "postmaster.pid"
    assert pid_file.is_file()
    postmaster = int(pid_file.read_text().splitlines()[0])
    result = _run_without_terminal("local", "destroy", "--yes", env={"CELORA_LOCAL_DIR": str(local_dir)})
    assert result.returncode == 0, result.stderr
    assert not local_dir.exists()
    assert not _alive(postmaster)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie (an exited postmaster whose parent, PID 1 in some containers,
    has not reaped it yet still answers kill(pid, 0))."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_destroy_deletes_only_celoras_entries(base):
    local_dir = base / "shared-folder"
    local_dir.mkdir()
    for name in CELORA_ENTRIES:
        (local_dir / name).write_text("{}")
    (local_dir / "notes.txt").write_text("not celora's")
    result = _run_without_terminal("local", "destroy", "--yes", env={"CELORA_LOCAL_DIR": str(local_dir)})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in local_dir.iterdir()) == ["notes.txt"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root keeps the cluster outside a private project")
def test_destroy_finds_the_cluster_outside_a_private_project(tmp_path):
    """As root with the project in a 0700 folder, the cluster lives in /var/tmp/celora-<hash>: destroy finds it
    (and an older <project>/.celora too)."""
    project = tmp_path / "private-project"
    (project / ".celora").mkdir(parents=True)
    tmp_path.chmod(0o700)
    outside = LocalServer.from_settings(load_settings(environ={}, project_root=project)).base_dir
    assert outside.parent == Path("/var/tmp")
    try:
        outside.mkdir(parents=True, exist_ok=True)
        for folder in (outside, project / ".celora"):
            for name in CELORA_ENTRIES:
                (folder / name).write_text("{}")
        result = _run_without_terminal("local", "destroy", "--yes", env={"CELORA_PROJECT_ROOT": str(project)})
        assert result.returncode == 0, result.stderr
        assert not outside.exists() and not (project / ".celora").exists()
        assert result.stdout.count("Deleted the local PostgreSQL") == 2
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_db_command_without_migrations_creates_no_server(base):
    """A folder that merely has a pyproject.toml and a .env: the command fails on its own check first."""
    folder = base / "some-python-project"
    folder.mkdir()
    (folder / "pyproject.toml").write_text("[project]\nname = 'unrelated'\n")
    (folder / ".env").write_text("# nothing for celora here\n")
    try:
        for command in (("db", "migrate-deploy"), ("db", "status")):
            result = run_celora(*command, env={"CELORA_PROJECT_ROOT": ""}, cwd=folder)
            assert result.returncode == 3, result.stdout + result.stderr
            assert "migrations" in result.stderr.lower() and "Traceback" not in result.stderr
            assert "Creating a local PostgreSQL" not in result.stderr
        assert not (folder / ".celora").exists()
        assert not LocalServer._fallback_dir(folder / ".celora").exists()
    finally:  # when this fails, do not leave the server it started running
        LocalServer(folder / ".celora").destroy()


# -- bad settings ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [("local", "start"), ("db", "migrate-deploy"), ("db", "health"),
                                     ("local", "destroy", "--yes")], ids=" ".join)
def test_unknown_pg_user_is_a_config_error(command, base):
    local_dir = base / "cluster"
    result = run_celora(*command, env={"CELORA_PG_USER": "no_such_user_celora", "CELORA_LOCAL_DIR": str(local_dir)})
    assert result.returncode == 3, result.stdout + result.stderr
    assert "CELORA_PG_USER='no_such_user_celora' is not a user on this machine" in result.stderr
    assert "useradd" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert not local_dir.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="naming root only matters when celora runs as root")
def test_root_as_pg_user_is_a_config_error(base):
    result = run_celora("local", "start", env={"CELORA_PG_USER": "root", "CELORA_LOCAL_DIR": str(base / "c")})
    assert result.returncode == 3 and "refuses to run as root" in result.stderr


@pytest.mark.parametrize("below", [False, True], ids=["the file", "a folder under the file"])
@pytest.mark.parametrize("command", [("local", "start"), ("db", "status"), ("local", "stop")], ids=" ".join)
def test_local_dir_that_is_a_file_is_a_config_error(command, below, base):
    a_file = base / "not-a-folder"
    a_file.write_text("x")
    local_dir = a_file / "sub" if below else a_file
    result = run_celora(*command, env={"CELORA_LOCAL_DIR": str(local_dir)})
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"CELORA_LOCAL_DIR={local_dir}" in result.stderr and "is a file" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert a_file.read_text() == "x"
