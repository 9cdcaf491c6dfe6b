"""`celora db health` and check_database_health() against real servers: direct, PgBouncer, down, silent."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import psycopg
import pytest

from celora_cli.ops.health import check_database_health
from tests.support import db_name, free_port, run_celora, settings_for, shared_tmpdir

pytestmark = pytest.mark.db  # some tests start a PostgreSQL of their own, outside the session's fixtures


def test_healthy_through_pgbouncer_and_direct(pgbouncer, migrated_db):
    pooled = pgbouncer(db_name(migrated_db))
    cli = run_celora("db", "health", "--json", env={"DATABASE_URL": pooled, "DIRECT_DATABASE_URL": migrated_db})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    report = json.loads(cli.stdout)
    assert report["status"] == "healthy" and report["problems"] == []
    assert isinstance(report["latency"], int)
    pooled_check, direct_check = report["checks"]["pooled"], report["checks"]["direct"]
    assert "through_proxy" not in pooled_check  # renamed: the port heuristic is gone
    # ?pgbouncer=true sends no startup options, so there is nothing to test; the direct path's marker arrived.
    assert pooled_check["ok"] and pooled_check["pgbouncer"] and pooled_check["pooler_detected"] is None
    assert direct_check["ok"] and not direct_check["pgbouncer"] and direct_check["pooler_detected"] is False
    assert pooled_check["server_port"] == direct_check["server_port"] != pgbouncer.port
    assert pooled_check["latency_ms"] > 0 and direct_check["latency_ms"] > 0
    assert pooled_check["server_version"].startswith(("14", "15", "16", "17", "18"))
    assert report["migrations"]["up_to_date"] and report["migrations"]["pending"] == 0
    assert report["connections"]["max_connections"] > 0 and report["connections"]["in_use"] >= 1


def test_healthy_with_only_a_direct_url(migrated_db):
    report = check_database_health(settings_for(migrated_db))
    assert report.status == "healthy" and report.exit_code == 0
    assert report.checks["pooled"].ok and report.checks["direct"].ok
    assert report.to_json()["latency"] is not None


def test_pending_migrations_are_degraded(empty_db):
    cli = run_celora("db", "health", env={"DATABASE_URL": empty_db})
    assert cli.returncode == 1, cli.stdout
    assert "DEGRADED" in cli.stdout and re.search(r"\d+ migration\(s\) pending", cli.stdout)


def test_pooler_without_the_flag_is_named(pgbouncer, migrated_db):
    url = pgbouncer(db_name(migrated_db), flag=False)
    # PgBouncer rejects the startup options celora sends to a direct server (the app would fail the same
    # way): the app path is down, and the report says what to add and why it knows.
    for extra in ({}, {"CELORA_STATEMENT_TIMEOUT": 0}):  # the startup marker alone is rejected too
        report = check_database_health(settings_for(url, direct=migrated_db, **extra))
        assert report.status == "unhealthy"
        assert "?pgbouncer=true" in report.checks["pooled"].hint
        assert report.checks["pooled"].pooler_detected is True
        assert "unsupported startup parameter" in report.checks["pooled"].pooler_evidence


def test_pgbouncer_without_direct_url_still_reports(pgbouncer, migrated_db):
    report = check_database_health(settings_for(pgbouncer(db_name(migrated_db))))
    assert report.status == "healthy"
    assert report.checks["direct"].skipped and report.warnings
    assert report.migrations is not None and report.migrations.up_to_date


def test_stopped_server_is_unhealthy_without_traceback():
    from celora_cli.local.server import LocalServer

    base = shared_tmpdir("celora-test-stopped-")
    server = LocalServer(base / "cluster", fast=True)
    try:
        url = server.ensure_running().replace("celora@", "celora:pa55word-xyz@")
        server.stop()
        cli = run_celora("db", "health", "--json", env={"DATABASE_URL": url})
        assert cli.returncode == 2
        report = json.loads(cli.stdout)
        assert report["status"] == "unhealthy"
        assert "Can't reach database server" in report["checks"]["pooled"]["error"]
        assert "Traceback" not in cli.stdout + cli.stderr
        assert "pa55word-xyz" not in cli.stdout + cli.stderr
        human = run_celora("db", "health", env={"DATABASE_URL": url})
        assert human.returncode == 2 and "UNHEALTHY" in human.stdout and "pa55word-xyz" not in human.stdout
    finally:
        server.destroy()


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a host that drops our packets)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_silent_host_returns_within_the_timeout(silent_server):
    url = f"postgresql://app:s3cr3t-pw@127.0.0.1:{silent_server}/celora"
    started = time.monotonic()
    cli = run_celora("db", "health", "--json", "--timeout", "1", env={"DATABASE_URL": url})
    elapsed = time.monotonic() - started
    assert cli.returncode == 2, cli.stderr
    report = json.loads(cli.stdout)
    assert report["status"] == "unhealthy" and report["timeout_s"] == 1
    assert report["duration_ms"] < 1500  # the report itself was cut at its timeout, not libpq's 2 s minimum
    assert elapsed < 20  # generous: process start-up on a busy machine, but nowhere near a hang
    assert "s3cr3t-pw" not in cli.stdout + cli.stderr


def test_refused_port_library_call(pg_server):
    report = check_database_health(settings_for(f"postgresql://celora:hunter2x@127.0.0.1:{free_port()}/x"),
                                   timeout=3)
    assert report.status == "unhealthy" and report.exit_code == 2
    assert "hunter2x" not in json.dumps(report.to_json())
    assert report.checks["pooled"].hint and "pg_isready" in report.checks["pooled"].hint


def test_health_counts_connections(migrated_db):
    extra = [psycopg.connect(migrated_db) for _ in range(3)]
    try:
        report = check_database_health(settings_for(migrated_db))
        assert report.connections.in_use >= 4
    finally:
        for conn in extra:
            conn.close()


def test_direct_path_down_is_degraded(pgbouncer, migrated_db):
    report = check_database_health(settings_for(pgbouncer(db_name(migrated_db)),
                                                direct=f"postgresql://celora:dpw-123x@127.0.0.1:{free_port()}/x"))
    assert report.status == "degraded" and report.exit_code == 1
    assert report.checks["pooled"].ok and not report.checks["direct"].ok
    assert any("direct path (DIRECT_DATABASE_URL) is down" in p for p in report.problems)
    assert "dpw-123x" not in json.dumps(report.to_json())


def test_cli_runner_in_process(migrated_db, monkeypatch):
    """The same command through Typer's CliRunner, in this process."""
    from typer.testing import CliRunner

    from celora_cli.cli.app import app
    from tests.support import REPO

    monkeypatch.chdir(REPO)
    env = {"DATABASE_URL": migrated_db, "CELORA_PROJECT_ROOT": str(REPO), "NO_COLOR": "1"}
    result = CliRunner().invoke(app, ["db", "health", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "healthy"
    deploy = CliRunner().invoke(app, ["db", "migrate-deploy"], env=env)
    assert deploy.exit_code == 0 and "No pending migrations" in deploy.output
