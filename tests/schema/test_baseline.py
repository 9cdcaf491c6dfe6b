"""`celora db baseline` (Flyway's baseline) through the real CLI on a real PostgreSQL: a database whose schema was
made another way is adopted when, and only when, its schema is exactly the history's at the revision named.

"Made another way" here is SQLAlchemy's create_all from the models: the models' DDL events create the
functions and triggers the history creates (tests/db/test_schema_matches_models.py proves the two are identical
by pg_dump), so create_all alone builds the history's head.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from sqlalchemy import create_engine

from celora_cli.db.models import Base
from tests.support import admin_execute, db_name, run_celora

HEAD = "20261207023000"
SECOND = "20261126150000"


def create_all(url: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            Base.metadata.create_all(conn)
    finally:
        engine.dispose()


def bookkeeping(url: str) -> tuple[list[str], list[tuple]]:
    """(alembic_version rows, journal rows (revision, status, baseline)); empty when the tables don't exist."""
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename IN ('alembic_version', 'celora_migrations')")}
        versions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")] \
            if "alembic_version" in tables else []
        rows = conn.execute("SELECT revision, status, baseline FROM celora_migrations ORDER BY id").fetchall() \
            if "celora_migrations" in tables else []
    return versions, rows


def shadows(pg_server) -> list[str]:
    with psycopg.connect(pg_server.url("postgres")) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'celora_shadow_%'")]


def test_a_create_all_database_is_adopted_at_head_and_then_up_to_date(pg_server, empty_db):
    create_all(empty_db)
    result = run_celora("db", "baseline", "--json", env={"DATABASE_URL": empty_db})
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)
    assert body["revision"] == HEAD and len(body["recorded"]) == 4
    assert body["compared"]["table"] >= 9 and body["compared"]["trigger"] > 0
    versions, rows = bookkeeping(empty_db)
    assert versions == [HEAD]
    assert [r[2] for r in rows] == [True] * 4 and {r[1] for r in rows} == {"applied"}
    assert rows[-1][0] == HEAD

    status = run_celora("db", "status", "--json", env={"DATABASE_URL": empty_db})
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["up_to_date"] is True
    deploy = run_celora("db", "migrate-deploy", "--json", env={"DATABASE_URL": empty_db})
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert json.loads(deploy.stdout)["applied"] == []
    assert shadows(pg_server) == []

    again = run_celora("db", "baseline", env={"DATABASE_URL": empty_db})
    assert again.returncode == 12, again.stdout + again.stderr
    assert f"alembic_version holds {HEAD}" in again.stderr


def test_a_missing_column_is_named_and_nothing_is_recorded(pg_server, empty_db):
    create_all(empty_db)
    admin_execute(pg_server, "ALTER TABLE wallets DROP COLUMN label", db_name(empty_db))
    result = run_celora("db", "baseline", env={"DATABASE_URL": empty_db})
    assert result.returncode == 15, result.stdout + result.stderr
    assert (f"column wallets.label is in the migration history at {HEAD} but missing from the database"
            in result.stderr)
    assert "Nothing was recorded" in result.stderr
    assert bookkeeping(empty_db) == ([], [])
    as_json = run_celora("db", "baseline", "--json", env={"DATABASE_URL": empty_db})
    assert as_json.returncode == 15
    error = json.loads(as_json.stdout)["error"]
    assert error["type"] == "DriftDetected" and error["differences"][0]["name"] == "wallets.label"
    assert shadows(pg_server) == []


def test_an_older_revision_is_adopted_and_deploy_applies_the_rest(pg_server, empty_db):
    # The history's schema at SECOND, then its bookkeeping removed: a restore of an old dump made elsewhere.
    assert run_celora("db", "migrate-deploy", env={"DATABASE_URL": empty_db}).returncode == 0
    admin_execute(pg_server, "DROP TABLE alembic_version, celora_migrations", db_name(empty_db))
    too_new = run_celora("db", "baseline", "--to", SECOND, env={"DATABASE_URL": empty_db})
    assert too_new.returncode == 15  # the database is at head, not at SECOND: the audit log is extra
    assert "table audit_log exists in the database but not in the migration history" in too_new.stderr

    admin_execute(pg_server, "DROP DATABASE IF EXISTS old_copy WITH (FORCE)")
    old = pg_server.create_database("old_copy")
    try:
        assert run_celora("db", "migrate-deploy", env={"DATABASE_URL": old}).returncode == 0
        # back to SECOND with the real downgrades, then the bookkeeping dropped
        assert run_celora("db", "rollback", "--to", SECOND, "--force",
                          env={"DATABASE_URL": old}).returncode == 0
        admin_execute(pg_server, "DROP TABLE alembic_version, celora_migrations", "old_copy")
        adopted = run_celora("db", "baseline", "--to", SECOND[:10], "--json", env={"DATABASE_URL": old})
        assert adopted.returncode == 0, adopted.stdout + adopted.stderr
        assert json.loads(adopted.stdout)["revision"] == SECOND
        assert bookkeeping(old)[0] == [SECOND] and len(bookkeeping(old)[1]) == 2
        deploy = run_celora("db", "migrate-deploy", "--json", env={"DATABASE_URL": old})
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert len(json.loads(deploy.stdout)["applied"]) == 2
    finally:
        admin_execute(pg_server, "DROP DATABASE IF EXISTS old_copy WITH (FORCE)")


def test_production_needs_the_guard(empty_db):
    create_all(empty_db)
    env = {"DATABASE_URL": empty_db, "CELORA_ENV": "production"}
    refused = run_celora("db", "baseline", env=env)
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "production" in refused.stderr and "--allow-production" in refused.stderr
    assert bookkeeping(empty_db) == ([], [])
    not_asked = run_celora("db", "baseline", "--allow-production", env=env)
    assert not_asked.returncode == 12 and "--force" in not_asked.stderr  # no terminal: nobody to ask
    adopted = run_celora("db", "baseline", "--allow-production", "--force", env=env)
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert bookkeeping(empty_db)[0] == [HEAD]


@pytest.mark.parametrize("revision", ["nope", "base"])
def test_an_unknown_revision_is_a_config_error(empty_db, revision):
    result = run_celora("db", "baseline", "--to", revision, "--json", env={"DATABASE_URL": empty_db})
    assert result.returncode == 3, result.stdout + result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "ConfigError"
    assert "Traceback" not in result.stderr


def test_a_deploy_that_gets_in_first_under_the_lock_is_seen(pg_server, empty_db):
    """The comparison ran before the lock; a deploy that recorded a history while baseline waited for the lock
    makes baseline stop without writing anything."""
    import os
    import subprocess
    import sys
    import time

    from celora_cli.migrate.lock import MIGRATION_LOCK_KEY
    from tests.support import REPO, TEST_PROJECT

    create_all(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
        env.update({"DATABASE_URL": empty_db, "CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1",
                    "PYTHONPATH": str(REPO), "CELORA_LOCK_TIMEOUT": "60"})
        process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "baseline"], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=TEST_PROJECT)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not holder.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'celora db baseline %:%'").fetchone():
                assert process.poll() is None, process.communicate()
                time.sleep(0.1)
            # what a deploy would have recorded meanwhile
            holder.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); "
                           f"INSERT INTO alembic_version VALUES ('{HEAD}')")
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 12, out + err
    assert "already has a migration history" in err
    assert bookkeeping(empty_db) == ([HEAD], [])  # the journal was not written
