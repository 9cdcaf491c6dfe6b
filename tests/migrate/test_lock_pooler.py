"""The migration lock never stays held behind a pooler, whatever DIRECT_DATABASE_URL points at.

Against real PgBouncers in transaction mode: the repo's pgbouncer.ini (which rejects the `options` startup
parameter) and a variant that ignores it (so celora's startup marker is silently dropped). A port-mapped
PostgreSQL (a plain TCP relay, as Docker -p or an SSH tunnel) must still deploy: a port is not evidence.
"""

from __future__ import annotations

import psycopg
import pytest

from celora_cli.errors import Refused
from celora_cli.migrate.deploy import deploy
from celora_cli.migrate.lock import MIGRATION_LOCK_KEY
from tests.support import (
    db_name,
    run_celora,
    settings_for,
)
from tests.support.relay import Relay

pytestmark = pytest.mark.pgbouncer


@pytest.fixture(params=["rejects-options", "drops-options"])
def pooled_direct_url(request, pgbouncer, empty_db):
    """(DIRECT_DATABASE_URL through a PgBouncer, without ?pgbouncer=true; the real URL of the same database)."""
    if request.param == "rejects-options":
        return pgbouncer(db_name(empty_db), flag=False), empty_db
    return request.getfixturevalue("pgbouncer_dropping_options")(db_name(empty_db), flag=False), empty_db


def migration_locks(server) -> list[tuple]:
    """Every advisory lock on the migration key, in any database of the server, granted or not."""
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        return conn.execute("SELECT pid, database, granted, mode FROM pg_locks WHERE locktype = 'advisory'"
                            " AND classid = 0 AND objid = %s", (MIGRATION_LOCK_KEY,)).fetchall()


def has_version_table(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]


def test_direct_url_through_pgbouncer_is_refused_and_nothing_stays_locked(pooled_direct_url, pgbouncer,
                                                                          pg_server):
    through_pooler, real = pooled_direct_url
    env = {"DATABASE_URL": pgbouncer(db_name(real)), "DIRECT_DATABASE_URL": through_pooler}
    cli = run_celora("db", "migrate-deploy", env=env)
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "DIRECT_DATABASE_URL" in cli.stderr and "connection pooler" in cli.stderr
    assert "5432" in cli.stderr  # the fix: PostgreSQL itself
    assert "Traceback" not in cli.stderr and "internal error" not in cli.stderr
    assert migration_locks(pg_server) == []
    assert not has_version_table(real)  # nothing changed

    # The next deploy on the real direct URL does not wait for anyone.
    result = deploy(settings_for(pgbouncer(db_name(real)), direct=real), lock_timeout=0)
    assert result.applied and result.waited_for_lock_s == 0


def test_database_url_through_pgbouncer_without_the_flag_is_refused(pgbouncer, empty_db, pg_server):
    # No DIRECT_DATABASE_URL: DATABASE_URL is the migration URL, and the refusal names it.
    cli = run_celora("db", "migrate-deploy", env={"DATABASE_URL": pgbouncer(db_name(empty_db), flag=False)})
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "DATABASE_URL" in cli.stderr and "DIRECT_DATABASE_URL (" not in cli.stderr
    assert "connection pooler" in cli.stderr and "unsupported startup parameter" in cli.stderr
    assert migration_locks(pg_server) == [] and not has_version_table(empty_db)


def test_library_refusal_is_a_refused_error(pgbouncer_dropping_options, pgbouncer, empty_db):
    through_pooler = pgbouncer_dropping_options(db_name(empty_db), flag=False)
    with pytest.raises(Refused) as caught:
        deploy(settings_for(pgbouncer(db_name(empty_db)), direct=through_pooler))
    assert "startup marker" in caught.value.message and caught.value.exit_code == 12


def test_lock_is_released_even_when_the_pooler_check_cannot_run(pgbouncer_dropping_options, pgbouncer,
                                                                 empty_db, pg_server):
    # With its own ?options= the URL carries no celora marker, so the refusal has no evidence and the run
    # goes through the pooler. The lock itself must still end with the run (it is transaction-level).
    through_pooler = pgbouncer_dropping_options(db_name(empty_db), flag=False) + "?options=-c%20work_mem%3D8MB"
    result = deploy(settings_for(pgbouncer(db_name(empty_db)), direct=through_pooler))
    assert result.applied
    assert migration_locks(pg_server) == []
    again = deploy(settings_for(pgbouncer(db_name(empty_db)), direct=empty_db), lock_timeout=0)
    assert again.applied == [] and again.waited_for_lock_s == 0


def test_port_mapped_postgresql_still_deploys(pg_server, empty_db):
    with Relay.tcp(pg_server.port) as relay:
        mapped = empty_db.replace(f":{pg_server.port}/", f":{relay.port}/")
        assert mapped != empty_db
        cli = run_celora("db", "migrate-deploy", env={"DATABASE_URL": mapped})
        assert cli.returncode == 0, cli.stderr
        assert has_version_table(empty_db)
