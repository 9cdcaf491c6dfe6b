"""Health gives the right answer: evidence-based pooler detection (a real PgBouncer that rejects or drops the
startup options, and a plain TCP forwarder standing in for Docker's -p 5433:5432), a role that may not read
alembic_version, and library timeouts validated like the flag."""

from __future__ import annotations

import itertools
import json
import os

import pytest

from celora_cli.errors import ConfigError
from celora_cli.ops.health import check_database_health
from tests.support import admin_execute, db_name, run_celora, settings_for
from tests.support.relay import Relay

_roles = itertools.count()


@pytest.fixture
def forwarded_port(pg_server):
    """127.0.0.1:<new port> -> the test server: a port mapping with no pooler (Docker -p, SSH -L, port-forward)."""
    with Relay.tcp(pg_server.port) as relay:
        yield relay.port


@pytest.fixture
def dropping_pgbouncer(pgbouncer_dropping_options):
    """URLs through a PgBouncer that drops celora's startup options, without ?pgbouncer=true."""
    return lambda database: pgbouncer_dropping_options(database, flag=False)


# -- pooler detection: evidence, not ports ---------------------------------------------------------------

def test_port_mapped_postgres_is_healthy_not_a_pooler(pg_server, migrated_db, forwarded_port):
    url = f"postgresql://celora@127.0.0.1:{forwarded_port}/{db_name(migrated_db)}"
    cli = run_celora("db", "health", "--json", env={"DATABASE_URL": url})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    report = json.loads(cli.stdout)
    assert report["status"] == "healthy" and report["problems"] == [], report
    for check in report["checks"].values():
        assert check["ok"] and check["pooler_detected"] is False and check["pooler_evidence"] is None
        assert check["server_port"] == pg_server.port != forwarded_port  # a fact, not an alarm
    assert not any("pooler" in line for line in report["warnings"])


def test_pooler_that_drops_the_marker_on_the_app_path_is_degraded(dropping_pgbouncer, migrated_db):
    url = dropping_pgbouncer(db_name(migrated_db))
    report = check_database_health(settings_for(url, direct=migrated_db))
    assert report.status == "degraded", report.problems
    pooled = report.checks["pooled"]
    assert pooled.ok and pooled.pooler_detected is True and "startup marker" in pooled.pooler_evidence
    assert any("lacks ?pgbouncer=true" in p and "startup marker" in p for p in report.problems)
    assert report.checks["direct"].pooler_detected is False


def test_direct_url_through_a_dropping_pooler_is_degraded(pgbouncer, dropping_pgbouncer, migrated_db):
    name = db_name(migrated_db)
    report = check_database_health(settings_for(pgbouncer(name), direct=dropping_pgbouncer(name)))
    assert report.status == "degraded"
    assert report.checks["direct"].pooler_detected is True
    assert any("migrations would go through a pooler" in p for p in report.problems), report.problems


def test_direct_url_through_a_rejecting_pgbouncer_names_the_pooler(pgbouncer, migrated_db):
    name = db_name(migrated_db)
    report = check_database_health(settings_for(pgbouncer(name), direct=pgbouncer(name, flag=False)))
    assert report.status == "degraded" and report.checks["pooled"].ok
    direct = report.checks["direct"]
    assert not direct.ok and direct.pooler_detected is True
    assert "unsupported startup parameter" in direct.pooler_evidence
    assert any("migrations would go through a pooler" in p for p in report.problems), report.problems
    # DIRECT_DATABASE_URL may not carry ?pgbouncer=true: the fix is to point it at PostgreSQL itself.
    assert "?pgbouncer=true" not in direct.hint and "PostgreSQL server itself" in direct.hint


# -- a role that may not read alembic_version ----------------------------------------------------------

@pytest.fixture
def app_role_url(pg_server, migrated_db):
    """The migrated database, reached as a role that can connect but not read alembic_version."""
    database, role = db_name(migrated_db), f"health_app_{os.getpid()}_{next(_roles)}"
    admin_execute(pg_server, f'CREATE ROLE "{role}" LOGIN')
    admin_execute(pg_server, f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
    admin_execute(pg_server, f'REVOKE ALL ON alembic_version FROM "{role}", PUBLIC', database)
    yield migrated_db.replace("celora@", f"{role}@", 1)
    admin_execute(pg_server, f'REVOKE ALL ON DATABASE "{database}" FROM "{role}"')
    admin_execute(pg_server, f'DROP ROLE IF EXISTS "{role}"')


def test_role_without_alembic_version_is_healthy_with_unknown_migrations(app_role_url):
    report = check_database_health(settings_for(app_role_url))
    assert report.checks["pooled"].ok and report.checks["direct"].ok
    assert report.status == "healthy" and report.exit_code == 0, report.problems
    assert report.migrations is None
    warning = next(w for w in report.warnings if w.startswith("Migration state unknown"))
    assert "permission denied" in warning and "alembic_version" in warning and "Grant" in warning
    assert report.connections is not None and report.connections.in_use >= 1


def test_role_without_alembic_version_cli_json(app_role_url):
    cli = run_celora("db", "health", "--json", env={"DATABASE_URL": app_role_url})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    report = json.loads(cli.stdout)
    assert report["status"] == "healthy" and report["migrations"] is None
    assert any("Migration state unknown" in w for w in report["warnings"])


# -- library timeout validation --------------------------------------------------------------------------

@pytest.mark.parametrize("timeout", [0, -1, 0.1, float("inf"), float("nan"), 1e12, 3601])
def test_library_timeout_outside_the_limits_is_a_config_error(timeout, migrated_db):
    with pytest.raises(ConfigError) as caught:
        check_database_health(settings_for(migrated_db), timeout=timeout)
    assert "timeout" in caught.value.message


def test_library_timeout_at_the_limits_works(migrated_db):
    report = check_database_health(settings_for(migrated_db), timeout=3600)
    assert report.status == "healthy" and report.timeout_s == 3600
