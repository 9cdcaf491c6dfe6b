"""DDL lock safety against a real PostgreSQL: a migration whose ALTER TABLE queues behind a long transaction gives
up after CELORA_DDL_LOCK_TIMEOUT (so other queries on the table do not queue behind it), is rolled back and
retried, then fails naming the blocking session; a blocker that goes away lets the retry succeed; and a
migration with autocommit_block() (CREATE INDEX CONCURRENTLY) runs under the migration lock."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from celora_cli.migrate.deploy import deploy
from tests.migrate.test_journal import EXTRA, HEAD, journal, query, write_history
from tests.support import run_celora, settings_for

ALTER_USERS = "    op.execute('ALTER TABLE users ADD COLUMN nickname text')"
FAST = {"CELORA_DDL_LOCK_TIMEOUT": "0.3"}


@pytest.fixture
def blocker(migrated_db):
    """An open transaction holding ACCESS SHARE on users: what a forgotten `BEGIN; SELECT ...` in a client does."""
    conn = psycopg.connect(migrated_db, application_name="test-blocker")
    conn.execute("SELECT count(*) FROM users")  # psycopg began a transaction: it stays open, idle
    yield conn
    conn.close()


def _wait_for(condition, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def _migration_waits_for_lock(url: str) -> bool:
    return bool(query(url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           " AND query ILIKE 'ALTER TABLE users%' AND datname = current_database()"))


def _has_nickname(url: str) -> bool:
    return bool(query(url, "SELECT 1 FROM information_schema.columns WHERE table_name = 'users'"
                           " AND column_name = 'nickname'"))


def test_blocked_migration_retries_then_fails_naming_the_blocker_and_readers_are_not_held_up(
        migrated_db, blocker, tmp_path):
    history = write_history(tmp_path, ALTER_USERS)
    env = {"DATABASE_URL": migrated_db, "CELORA_MIGRATIONS_DIR": str(history), **FAST}
    outcome: dict = {}
    deploying = threading.Thread(target=lambda: outcome.update(
        run=run_celora("db", "migrate-deploy", "--json", "--ddl-lock-retries", "2", env=env)))
    deploying.start()
    try:
        # While the ALTER waits in the lock queue, a reader's SELECT queues behind it, but only until the DDL lock
        # timeout ends the wait (0.3 s). The reader allows itself 3 s: without the DDL lock timeout the ALTER would
        # wait for the blocker forever and the reader would fail with its own lock timeout (55P03).
        _wait_for(lambda: _migration_waits_for_lock(migrated_db), "the migration to wait for its lock")
        with psycopg.connect(migrated_db, autocommit=True) as reader:
            reader.execute("SET lock_timeout = '3s'")
            reads = 0
            while deploying.is_alive():
                reader.execute("SELECT count(*) FROM users").fetchone()
                reads += 1
        assert reads >= 1
    finally:
        deploying.join(60)
    run = outcome["run"]
    assert run.returncode == 10, run.stderr
    error = json.loads(run.stdout)["error"]
    assert error["type"] == "LockTimeout" and error["revision"] == EXTRA and error["attempts"] == 3
    blocker_pid = blocker.info.backend_pid
    assert [b["pid"] for b in error["blockers"]] == [blocker_pid]
    assert error["blockers"][0]["application_name"] == "test-blocker"
    assert error["blockers"][0]["state"] == "idle in transaction"
    assert "SELECT count(*) FROM users" in error["blockers"][0]["query"]
    assert f"pid {blocker_pid}" in error["message"] and f"pg_terminate_backend({blocker_pid})" in error["hint"]
    assert run.stderr.count("retrying in") == 2 and "Traceback" not in run.stderr
    # Rolled back every time: nothing of the migration, the database still at the previous head; each try journalled.
    assert not _has_nickname(migrated_db)
    assert query(migrated_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    failed = [row for row in journal(migrated_db) if row[0] == EXTRA]
    assert [row[2] for row in failed] == ["failed"] * 3
    assert all("55P03" in row[9] and f"pid {blocker_pid}" in row[9] for row in failed)


def test_blocker_gone_during_the_retries_lets_the_migration_through(migrated_db, blocker, tmp_path):
    history = write_history(tmp_path, ALTER_USERS)
    settings = settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history, CELORA_DDL_LOCK_RETRIES=5, **FAST)

    def release_after_first_failure():
        _wait_for(lambda: any(row[0] == EXTRA for row in journal(migrated_db)), "the first failed try")
        blocker.rollback()

    releasing = threading.Thread(target=release_after_first_failure)
    releasing.start()
    try:
        result = deploy(settings)
    finally:
        releasing.join(60)
    assert [m.revision for m in result.applied] == [EXTRA]
    assert _has_nickname(migrated_db)
    statuses = [row[2] for row in journal(migrated_db) if row[0] == EXTRA]
    assert statuses[-1] == "applied" and set(statuses[:-1]) == {"failed"} and len(statuses) >= 2


def test_no_retries_configured_fails_on_the_first_lock_timeout(migrated_db, blocker, tmp_path):
    from celora_cli.errors import LockTimeout

    history = write_history(tmp_path, ALTER_USERS)
    settings = settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history, CELORA_DDL_LOCK_RETRIES=0, **FAST)
    with pytest.raises(LockTimeout) as raised:
        deploy(settings)
    assert raised.value.attempts == 1 and raised.value.exit_code == 10
    assert [b.pid for b in raised.value.blockers] == [blocker.info.backend_pid]
    assert not _has_nickname(migrated_db)


# Inside the block the migration checks that its session still holds the migration lock (the transaction-level
# lock ended with the commit Alembic makes before the block) and that no other session could take it.
CONCURRENT_INDEX = """\
    import sqlalchemy as sa
    op.execute('CREATE TABLE extra_table (id int)')
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        held = bind.execute(sa.text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 1667591279"
            " AND pid = pg_backend_pid() AND granted")).scalar()
        assert held >= 1, 'the migration lock is not held inside autocommit_block()'
        assert not bind.execute(sa.text("SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL")).scalar()
        op.create_index('ix_users_created_at_extra', 'users', ['created_at'], postgresql_concurrently=True)
    op.execute('INSERT INTO extra_table VALUES (1)')"""


def test_autocommit_block_creates_an_index_concurrently_under_the_migration_lock(migrated_db, tmp_path):
    history = write_history(tmp_path, CONCURRENT_INDEX)
    with psycopg.connect(migrated_db, autocommit=True) as other:
        result = deploy(settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history, **FAST))
        # The lock is free again afterwards: the session-level lock that bridged the block was released.
        assert other.execute("SELECT pg_try_advisory_lock(1667591279)").fetchone() == (True,)
        other.execute("SELECT pg_advisory_unlock(1667591279)")
    assert [m.revision for m in result.applied] == [EXTRA]
    assert query(migrated_db, "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                              " WHERE c.relname = 'ix_users_created_at_extra'") == [(True,)]
    assert query(migrated_db, "SELECT * FROM extra_table") == [(1,)]
    assert query(migrated_db, "SELECT version_num FROM alembic_version") == [(EXTRA,)]
    assert [row[2] for row in journal(migrated_db) if row[0] == EXTRA] == ["applied"]


def test_a_failing_autocommit_block_releases_the_lock_and_is_journalled(migrated_db, tmp_path):
    from celora_cli.errors import MigrationFailed

    body = ("    op.execute('CREATE TABLE extra_table (id int)')\n"
            "    with op.get_context().autocommit_block():\n"
            "        op.create_index('ix_users_nothing', 'users', ['no_such_column'], postgresql_concurrently=True)")
    history = write_history(tmp_path, body)
    with pytest.raises(MigrationFailed) as raised:
        deploy(settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history, **FAST))
    assert raised.value.sqlstate == "42703" and raised.value.revision == EXTRA
    with psycopg.connect(migrated_db, autocommit=True) as other:  # nothing left holding the migration lock
        assert other.execute("SELECT pg_try_advisory_lock(1667591279)").fetchone() == (True,)
    assert query(migrated_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    # Not atomic, as documented: what ran before the block stays committed; the journal says the run failed.
    assert query(migrated_db, "SELECT to_regclass('extra_table') IS NOT NULL") == [(True,)]
    assert [row[2] for row in journal(migrated_db) if row[0] == EXTRA] == ["failed"]


@pytest.mark.parametrize(("variable", "value"), [
    ("CELORA_DDL_LOCK_TIMEOUT", "0"), ("CELORA_DDL_LOCK_TIMEOUT", "inf"), ("CELORA_DDL_LOCK_TIMEOUT", "3601"),
    ("CELORA_DDL_LOCK_RETRIES", "101"), ("CELORA_DDL_LOCK_RETRIES", "-1"), ("CELORA_DDL_LOCK_RETRIES", "x")])
def test_ddl_lock_settings_out_of_range_are_config_errors(variable, value):
    from celora_cli.errors import ConfigError

    with pytest.raises(ConfigError, match=variable):
        settings_for("postgresql://u@127.0.0.1:1/x", **{variable: value})
    defaults = settings_for("postgresql://u@127.0.0.1:1/x")
    assert (defaults.ddl_lock_timeout, defaults.ddl_lock_retries) == (5.0, 3)
