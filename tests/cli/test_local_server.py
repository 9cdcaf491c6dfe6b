"""The celora-managed local PostgreSQL: the README's main job with no DATABASE_URL anywhere."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from celora_cli.errors import LocalServerError
from celora_cli.local_server import LocalServer, find_pg_bin, pgserver_bin_dir
from tests.conftest import run_celora, shared_tmpdir


@pytest.fixture
def local_dir():
    base = shared_tmpdir("celora-test-local-")
    yield base / ".celora"
    LocalServer(base / ".celora").destroy()
    shutil.rmtree(base, ignore_errors=True)


def test_main_job_on_the_local_server(local_dir, tmp_path):
    env = {"CELORA_LOCAL_DIR": str(local_dir)}
    status = run_celora("local", "status", env=env)
    assert status.returncode == 1 and "not initialised" in status.stdout

    deploy = run_celora("db", "migrate-deploy", env=env)  # initialises and starts the server on demand
    assert deploy.returncode == 0, deploy.stderr
    assert "Applied 20261126090000_init" in deploy.stdout

    health = run_celora("db", "health", "--json", env=env)
    assert health.returncode == 0, health.stdout + health.stderr
    report = json.loads(health.stdout)
    assert report["status"] == "healthy" and report["local_server"] is True

    url = run_celora("local", "url", env=env)
    assert url.returncode == 0 and url.stdout.strip().startswith("postgresql://celora@127.0.0.1:")
    status = run_celora("local", "status", "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
    if os.geteuid() == 0:
        assert json.loads(status.stdout)["run_as"] not in (None, "root")
        assert Path(local_dir / "pgdata").stat().st_uid != 0

    assert run_celora("local", "stop", env=env).stdout.strip() == "Local PostgreSQL stopped."
    assert run_celora("local", "stop", env=env).stdout.strip() == "Local PostgreSQL was not running."
    # Started again on demand, same data, same port.
    again = run_celora("db", "migrate-deploy", env=env)
    assert again.returncode == 0 and "No pending migrations" in again.stdout
    assert run_celora("local", "url", env=env).stdout == url.stdout


def test_explicit_bin_dir_must_hold_the_server(tmp_path):
    with pytest.raises(LocalServerError, match="CELORA_PG_BIN"):
        find_pg_bin(tmp_path)


def test_no_binaries_anywhere_says_how_to_get_them(monkeypatch, tmp_path):
    import celora_cli.local_server as local_server

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(local_server, "SYSTEM_BIN_GLOBS", (str(tmp_path / "none" / "*"),))
    monkeypatch.setattr(local_server, "pgserver_bin_dir", lambda: None)
    with pytest.raises(LocalServerError) as caught:
        find_pg_bin()
    assert "apt-get install postgresql" in caught.value.hint and "embedded" in caught.value.hint


@pytest.mark.skipif(pgserver_bin_dir() is None, reason="the embedded extra (pgserver) is not installed")
def test_pgserver_wheel_is_found_and_runs(monkeypatch, tmp_path):
    """With no system PostgreSQL, the binaries from the pgserver wheel are used and start a server."""
    import psycopg

    import celora_cli.local_server as local_server

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # Debian keeps its server binaries off PATH
    monkeypatch.setattr(local_server, "SYSTEM_BIN_GLOBS", (str(tmp_path / "none" / "*"),))
    monkeypatch.setattr(local_server.shutil, "which", lambda name: None)
    assert find_pg_bin() == pgserver_bin_dir()
    base = shared_tmpdir("celora-test-pgserver-")
    server = LocalServer(base / ".celora", fast=True)
    try:
        with psycopg.connect(server.ensure_running()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("env", ["staging", "production"])
def test_no_local_server_outside_development(env, local_dir):
    result = run_celora("db", "migrate-deploy", env={"CELORA_LOCAL_DIR": str(local_dir), "CELORA_ENV": env})
    assert result.returncode == 3
    assert f"DATABASE_URL is not set (CELORA_ENV={env})" in result.stderr
    assert not (local_dir / "pgdata").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_private_project_folder_as_root_uses_a_reachable_cluster_dir(tmp_path):
    """A project in a 0700 folder: the cluster moves to /var/tmp/celora-<hash> instead of failing."""
    from celora_cli.settings import load_settings

    project = tmp_path / "private-project"
    project.mkdir()
    tmp_path.chmod(0o700)
    settings = load_settings(environ={}, project_root=project)
    server = LocalServer.from_settings(settings)
    try:
        assert server.base_dir.parent == Path("/var/tmp") and server.base_dir.name.startswith("celora-")
        assert LocalServer.from_settings(settings).base_dir == server.base_dir  # stable per project
        url = run_celora("local", "url", env={"CELORA_PROJECT_ROOT": str(project)}, cwd=project)
        assert url.returncode == 0, url.stderr
        assert url.stdout.startswith("postgresql://celora@127.0.0.1:")
    finally:
        server.destroy()
