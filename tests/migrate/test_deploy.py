"""migrate-deploy against a real PostgreSQL: fresh schema, idempotence, concurrency, failure, lock timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, inspect

from celora_cli.errors import ConfigError, LockTimeout, MigrationFailed
from celora_cli.migrate.deploy import deploy
from celora_cli.migrate.lock import MIGRATION_LOCK_KEY
from celora_cli.migrate.status import migration_status
from celora_cli.results import to_json
from tests.support import REPO, run_celora, settings_for

TABLES = {"users", "sessions", "wallets", "transactions", "notifications", "idempotency_keys", "rate_limits",
          "audit_log", "audit_seal"}
BOOKKEEPING = {"alembic_version", "celora_metadata", "celora_migrations"}  # outside the migration history


def _repo_history() -> list[str]:
    """The repository's revisions, oldest first: the tests follow the history as it grows."""
    from celora_cli.migrate.scripts import load_script_directory

    return [s.revision for s in reversed(list(load_script_directory(REPO / "migrations").walk_revisions()))]


REVISIONS = _repo_history()
INIT, HEAD = REVISIONS[0], REVISIONS[-1]


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def version(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version").fetchall()]


def test_deploy_creates_every_table_and_records_head(empty_db):
    result = deploy(settings_for(empty_db))
    assert [m.revision for m in result.applied] == REVISIONS
    assert result.applied[0].name == f"{INIT}_init"
    assert tables(empty_db) == TABLES | BOOKKEEPING  # the env stamp and the migration journal
    assert version(empty_db) == [HEAD]


def test_second_deploy_applies_nothing(migrated_db):
    result = deploy(settings_for(migrated_db))
    assert result.applied == []
    assert result.current == (HEAD,)


def test_cli_reports_each_migration_then_nothing_pending(empty_db):
    first = run_celora("db", "migrate-deploy", env={"DATABASE_URL": empty_db})
    assert first.returncode == 0, first.stderr
    assert f"Applied {INIT}_init" in first.stdout and " ms)" in first.stdout
    second = run_celora("db", "migrate-deploy", "--json", env={"DATABASE_URL": empty_db})
    assert second.returncode == 0, second.stderr
    data = json.loads(second.stdout)
    assert data["applied"] == [] and data["current"] == [HEAD] and data["head"] == HEAD


def test_models_and_migrations_agree(migrated_db):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from celora_cli.db.models import Base
    from celora_cli.migrate.runtime import include_name

    engine = create_engine(settings_for(migrated_db).database_url.sqlalchemy_url())
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True,
                                                         "include_name": include_name})
        assert compare_metadata(context, Base.metadata) == []
        assert set(inspect(conn).get_table_names()) == TABLES | BOOKKEEPING
    engine.dispose()


# -- a migration history of our own, to make runs slow (concurrency) or broken (failure) -----------------

def write_history(tmp_path: Path, *extra: tuple[str, str, str]) -> Path:
    """Copy the real history and append migrations (revision, down_revision, upgrade body)."""
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    for revision, down, body in extra:
        (target / "versions" / f"{revision}_step.py").write_text(
            f'"""step {revision}"""\nfrom alembic import op\n\nrevision = "{revision}"\n'
            f'down_revision = "{down}"\nbranch_labels = None\ndepends_on = None\n\n\n'
            f"def upgrade():\n{body}\n\n\ndef downgrade():\n    pass\n")
    return target


def test_concurrent_runs_apply_each_migration_once(empty_db, tmp_path):
    # Each extra migration logs itself and sleeps, so the second runner must wait on the lock.
    body = ("    op.execute(\"CREATE TABLE IF NOT EXISTS deploy_log (revision text, at timestamptz DEFAULT now())\")\n"
            "    op.execute(\"INSERT INTO deploy_log (revision) VALUES ('{rev}')\")\n"
            "    op.execute(\"SELECT pg_sleep(0.7)\")")
    history = write_history(tmp_path, ("20261127000000", HEAD, body.format(rev="a")),
                            ("20261128000000", "20261127000000", body.format(rev="b")))
    env = {"DATABASE_URL": empty_db, "CELORA_MIGRATIONS_DIR": str(history)}
    clean = {**os.environ, **env, "CELORA_PROJECT_ROOT": str(REPO), "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    runners = [subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "migrate-deploy"], env=clean,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=120) for r in runners]
    assert [r.returncode for r in runners] == [0, 0], outputs
    with psycopg.connect(empty_db) as conn:
        log = [r[0] for r in conn.execute("SELECT revision FROM deploy_log ORDER BY at").fetchall()]
    assert log == ["a", "b"]
    assert version(empty_db) == ["20261128000000"]
    combined = "".join(out + err for out, err in outputs)
    for revision in (*REVISIONS, "20261127000000", "20261128000000"):
        assert combined.count(f"Applied {revision}_") == 1, combined
    assert "Waiting for the migration lock held by pid" in combined
    # Usually one runner applies everything and the other then finds nothing to do. The lock is taken per
    # transaction, so the waiter may also get in between two migrations and apply the rest: each migration is
    # still applied exactly once (above), which is what matters; test_runner_replans_... pins that case down.


def test_runner_replans_when_another_runner_moves_the_revision_between_migrations(empty_db, tmp_path):
    """Between two of this run's transactions another runner takes the lock and applies the next migration:
    this run must notice under the lock (the revision moved), re-read, and not apply it a second time."""
    history = write_history(tmp_path, ("20261127000000", HEAD, "    op.execute('CREATE TABLE step_a (id int)')"),
                            ("20261128000000", "20261127000000", "    op.execute('CREATE TABLE step_b (id int)')"))
    other: dict = {}

    def other_runner():  # what a second migrate-deploy would do with 20261128000000
        with psycopg.connect(empty_db) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))  # waits for our transaction
            conn.execute("CREATE TABLE step_b (id int)")
            conn.execute("UPDATE alembic_version SET version_num = '20261128000000'")
        other["done"] = True

    events = []

    def progress(kind, data):
        events.append((kind, data))
        if kind == "applied" and data.revision == "20261127000000":  # still inside that migration's transaction
            thread = threading.Thread(target=other_runner, daemon=True)
            thread.start()
            other["thread"] = thread
            with psycopg.connect(empty_db, autocommit=True) as watcher:
                for _ in range(400):  # until the other runner queues for the lock
                    if watcher.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                       " AND objid = %s", (MIGRATION_LOCK_KEY,)).fetchone()[0]:
                        break
                    time.sleep(0.025)
                else:
                    raise AssertionError("the other runner never queued for the migration lock")

    result = deploy(settings_for(empty_db, CELORA_MIGRATIONS_DIR=history), progress=progress, lock_timeout=30)
    other["thread"].join(30)
    assert other.get("done")
    assert [m.revision for m in result.applied] == [*REVISIONS, "20261127000000"]
    assert result.current == ("20261128000000",)
    assert version(empty_db) == ["20261128000000"]
    assert [kind for kind, _ in events if kind == "replan"] == ["replan"]


def test_failed_migration_is_named_and_database_stays_at_last_good(empty_db, tmp_path):
    good = "    op.execute('CREATE TABLE good_step (id int)')"
    bad = ("    op.execute('CREATE TABLE half_done (id int)')\n"
           "    op.execute('INSERT INTO half_done VALUES (1), (1)')\n"
           "    op.execute('ALTER TABLE half_done ADD PRIMARY KEY (id)')")
    history = write_history(tmp_path, ("20261127000000", HEAD, good), ("20261128000000", "20261127000000", bad))
    settings = settings_for(empty_db, CELORA_MIGRATIONS_DIR=history)
    with pytest.raises(MigrationFailed) as caught:
        deploy(settings)
    error = caught.value
    assert error.revision == "20261128000000"
    assert error.sqlstate == "23505"
    assert "20261128000000_step" in error.message and "23505" in error.message
    assert "20261127000000" in error.message  # where the database was left
    assert [m.revision for m in error.applied] == [*REVISIONS, "20261127000000"]
    assert version(empty_db) == ["20261127000000"]
    assert "good_step" in tables(empty_db) and "half_done" not in tables(empty_db)

    cli = run_celora("db", "migrate-deploy", env={"DATABASE_URL": empty_db, "CELORA_MIGRATIONS_DIR": str(history)})
    assert cli.returncode == 9
    assert "20261128000000_step failed" in cli.stderr and "Traceback" not in cli.stderr + cli.stdout


def test_failed_migration_json_keeps_what_was_applied(empty_db, tmp_path):
    bad = "    op.execute('SELECT 1/0')"
    history = write_history(tmp_path, ("20261127000000", HEAD, "    pass"), ("20261128000000", "20261127000000", bad))
    cli = run_celora("db", "migrate-deploy", "--json",
                     env={"DATABASE_URL": empty_db, "CELORA_MIGRATIONS_DIR": str(history)})
    assert cli.returncode == 9, cli.stderr
    error = json.loads(cli.stdout)["error"]
    assert error["type"] == "MigrationFailed" and error["code"] == 9
    assert error["revision"] == "20261128000000" and error["sqlstate"] == "22012"
    assert [m["revision"] for m in error["applied"]] == [*REVISIONS, "20261127000000"]
    assert all(isinstance(m["duration_ms"], float) and m["name"] for m in error["applied"])


def test_lock_timeout_names_the_holder(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as holder:
        holder.execute("SET application_name = 'stuck deploy'")
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        pid = holder.info.backend_pid
        with pytest.raises(LockTimeout) as caught:
            deploy(settings_for(migrated_db), lock_timeout=0.5)
        assert f"pid {pid}" in caught.value.message and "stuck deploy" in caught.value.message
        cli = run_celora("db", "migrate-deploy", "--lock-timeout", "0.5", env={"DATABASE_URL": migrated_db})
        assert cli.returncode == 10, cli.stderr
        assert f"pid {pid}" in cli.stderr


def test_waiting_runner_reports_the_holder_connection_age(migrated_db):
    holder = psycopg.connect(migrated_db, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    release = threading.Timer(0.6, holder.close)  # closing the session ends its lock
    release.start()
    try:
        result = deploy(settings_for(migrated_db), lock_timeout=30)
    finally:
        release.join()
    data = to_json(result)
    assert set(data["lock_holder"]) == {"pid", "application_name", "client", "connection_age_s"}
    age = data["lock_holder"]["connection_age_s"]
    assert isinstance(age, float) and age == round(age, 3) and age >= 0
    assert data["waited_for_lock_s"] > 0 and data["waited_for_lock_s"] == round(data["waited_for_lock_s"], 3)


def test_pgbouncer_url_without_direct_url_is_refused_for_ddl(pgbouncer, empty_db):
    from tests.support import db_name

    with pytest.raises(ConfigError, match="DIRECT_DATABASE_URL"):
        deploy(settings_for(pgbouncer(db_name(empty_db))))
    assert "alembic_version" not in tables(empty_db)


def test_deploy_uses_the_direct_url_next_to_pgbouncer(pgbouncer, empty_db):
    from tests.support import db_name

    result = deploy(settings_for(pgbouncer(db_name(empty_db)), direct=empty_db))
    assert [m.revision for m in result.applied] == REVISIONS
    status = migration_status(settings_for(pgbouncer(db_name(empty_db)), direct=empty_db))
    assert status.up_to_date and status.current == (HEAD,)


def test_missing_database_is_a_clear_error(pg_server):
    url = pg_server.url("no_such_db")
    cli = run_celora("db", "migrate-deploy", env={"DATABASE_URL": url})
    assert cli.returncode == 6, cli.stderr
    assert "'no_such_db' does not exist" in cli.stderr and "createdb" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_database_ahead_of_the_code_is_named(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '20991231000000'")
    for command in (("db", "status"), ("db", "migrate-deploy")):
        cli = run_celora(*command, env={"DATABASE_URL": migrated_db})
        assert cli.returncode == 9, cli.stderr
        assert "revision 20991231000000, which is not in this project's migration history" in cli.stderr
        assert "Traceback" not in cli.stderr
    health = run_celora("db", "health", "--json", env={"DATABASE_URL": migrated_db})
    report = json.loads(health.stdout)
    assert health.returncode == 1 and report["status"] == "degraded"
    assert report["migrations"] is None and any("20991231000000" in p for p in report["problems"])


def test_status_reads_through_pgbouncer_without_a_direct_url(pgbouncer, migrated_db):
    from tests.support import db_name

    status = migration_status(settings_for(pgbouncer(db_name(migrated_db))))
    assert status.up_to_date and status.current == (HEAD,)
