"""The migration journal (celora_migrations) against a real PostgreSQL: rows per run, failures on record,
changed or deleted applied files refused, a baseline for older databases, `db status` and `db resolve`."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import psycopg
import pytest

from celora_cli.errors import MigrationFailed, MigrationHistoryError
from celora_cli.migrate.deploy import deploy
from tests.support import REPO, run_celora, settings_for

EXTRA = "20261127000000"


def _repo_history() -> list[str]:
    from celora_cli.migrate.scripts import load_script_directory

    return [s.revision for s in reversed(list(load_script_directory(REPO / "migrations").walk_revisions()))]


REVISIONS = _repo_history()
HEAD = REVISIONS[-1]


def write_history(tmp_path: Path, body: str | None = None) -> Path:
    """A copy of the real history, plus (when `body` is given) migration EXTRA whose upgrade() is `body`."""
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    if body is not None:
        (target / "versions" / f"{EXTRA}_extra.py").write_text(
            f'"""extra"""\nfrom alembic import op\n\nrevision = "{EXTRA}"\ndown_revision = "{HEAD}"\n'
            f"branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n{body}\n\n\n"
            "def downgrade():\n    op.execute('DROP TABLE IF EXISTS extra_table')\n")
    return target


def journal(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT revision, name, status, checksum, started_at, duration_ms, os_user, host,"
                            " celora_version, error, baseline FROM celora_migrations ORDER BY id").fetchall()


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deploy_writes_one_row_per_migration_with_checksum_duration_and_user(empty_db):
    deploy(settings_for(empty_db))
    rows = journal(empty_db)
    assert [(r[0], r[2]) for r in rows] == [(revision, "applied") for revision in REVISIONS]
    for revision, name, _status, checksum, started_at, duration_ms, os_user, host, version, error, baseline in rows:
        assert checksum == sha256(REPO / "migrations" / "versions" / f"{name}.py")
        assert name.startswith(revision) and started_at is not None and duration_ms is not None and duration_ms >= 0
        assert os_user == getpass.getuser() and host == socket.gethostname() and version
        assert error is None and baseline is False


def test_failed_migration_leaves_a_failed_row_and_its_changes_rolled_back(empty_db, tmp_path):
    body = ("    op.execute('CREATE TABLE extra_table (id int)')\n"
            "    op.execute(\"SELECT 'postgresql://app:s3cret@db/x'::int\")")  # fails after creating a table
    history = write_history(tmp_path, body)
    with pytest.raises(MigrationFailed):
        deploy(settings_for(empty_db, CELORA_MIGRATIONS_DIR=history))
    rows = journal(empty_db)
    assert [(r[0], r[2]) for r in rows] == [(revision, "applied") for revision in REVISIONS] + [(EXTRA, "failed")]
    error = rows[-1][9]
    assert "22P02" in error and "invalid input syntax" in error
    assert "s3cret" not in error and "****" in error  # masked
    assert query(empty_db, "SELECT to_regclass('extra_table')") == [(None,)]  # rolled back
    assert query(empty_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_edited_applied_file_makes_deploy_refuse_naming_it(migrated_db, tmp_path):
    history = write_history(tmp_path)
    edited = history / "versions" / f"{REVISIONS[0]}_init.py"
    edited.write_text(edited.read_text() + "\n# edited after it was applied\n")
    with pytest.raises(MigrationHistoryError) as raised:
        deploy(settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history))
    assert str(edited) in raised.value.message and "changed since it was applied" in raised.value.message
    cli = run_celora("db", "migrate-deploy", "--json",
                     env={"DATABASE_URL": migrated_db, "CELORA_MIGRATIONS_DIR": str(history)})
    assert cli.returncode == 14, cli.stderr
    error = json.loads(cli.stdout)["error"]
    assert error["type"] == "MigrationHistoryError" and f"{REVISIONS[0]}_init.py" in error["message"]


def test_deleted_applied_file_makes_deploy_refuse_naming_it(empty_db, tmp_path):
    history = write_history(tmp_path, "    op.execute('CREATE TABLE extra_table (id int)')")
    deploy(settings_for(empty_db, CELORA_MIGRATIONS_DIR=history))
    (history / "versions" / f"{EXTRA}_extra.py").unlink()
    with pytest.raises(MigrationHistoryError) as raised:
        deploy(settings_for(empty_db, CELORA_MIGRATIONS_DIR=history))
    assert f"{EXTRA}_extra" in raised.value.message and "missing locally" in raised.value.message


def test_database_migrated_before_the_journal_gets_a_baseline(migrated_db):
    query(migrated_db, "DROP TABLE celora_migrations")  # as a database deployed before the journal existed
    before = run_celora("db", "status", "--json", env={"DATABASE_URL": migrated_db})
    assert before.returncode == 0, before.stderr  # reading a database without the journal works
    data = json.loads(before.stdout)
    assert data["journal"] is False and [m["status"] for m in data["applied"]] == ["unrecorded"] * len(REVISIONS)
    result = deploy(settings_for(migrated_db))
    assert result.applied == [] and result.baseline == [Path(p).stem for p in _files()]
    rows = journal(migrated_db)
    assert [(r[0], r[2], r[10], r[4]) for r in rows] == [(revision, "applied", True, None) for revision in REVISIONS]
    assert rows[0][3] == sha256(_files()[0])
    assert deploy(settings_for(migrated_db)).baseline == []  # recorded once


def _files() -> list[Path]:
    return sorted((REPO / "migrations" / "versions").glob("2*.py"))


def test_status_shows_when_applied_and_modified(migrated_db, tmp_path):
    ok = run_celora("db", "status", "--json", env={"DATABASE_URL": migrated_db})
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert [m["revision"] for m in data["applied"]] == REVISIONS
    assert all(m["applied_at"] and m["duration_ms"] is not None and not m["modified"] for m in data["applied"])
    history = write_history(tmp_path)
    edited = history / "versions" / f"{REVISIONS[0]}_init.py"
    edited.write_text(edited.read_text() + "\n# edited\n")
    env = {"DATABASE_URL": migrated_db, "CELORA_MIGRATIONS_DIR": str(history)}
    changed = run_celora("db", "status", "--json", env=env)
    assert changed.returncode == 14, changed.stderr
    data = json.loads(changed.stdout)
    assert data["modified"] == [f"{REVISIONS[0]}_init"] and data["applied"][0]["modified"] is True
    text = run_celora("db", "status", env=env)
    assert text.returncode == 14 and f"Modified {REVISIONS[0]}_init" in text.stdout
    assert f"Applied  {REVISIONS[-1]}" in text.stdout and " ms, by " in text.stdout


def test_status_shows_a_failed_migration(empty_db, tmp_path):
    history = write_history(tmp_path, "    op.execute('SELECT 1/0')")
    env = {"DATABASE_URL": empty_db, "CELORA_MIGRATIONS_DIR": str(history)}
    assert run_celora("db", "migrate-deploy", env=env).returncode == 9
    status = run_celora("db", "status", "--json", env=env)
    assert status.returncode == 1, status.stderr  # the failed migration is still pending
    data = json.loads(status.stdout)
    assert [f["revision"] for f in data["failed"]] == [EXTRA] and "22012" in data["failed"][0]["error"]
    assert [p["revision"] for p in data["pending"]] == [EXTRA]


def test_rollback_and_a_hand_run_alembic_upgrade_are_recorded(migrated_db):
    cli = run_celora("db", "rollback", "--steps", "1", "--force", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 0, cli.stderr
    assert [(r[0], r[2]) for r in journal(migrated_db)][-1] == (HEAD, "rolled_back")
    status = json.loads(run_celora("db", "status", "--json", env={"DATABASE_URL": migrated_db}).stdout)
    assert [m["revision"] for m in status["applied"]] == REVISIONS[:-1]
    from alembic import command

    from celora_cli.migrate.scripts import alembic_config

    command.upgrade(alembic_config(settings_for(migrated_db)), "head")  # env.py's hand-run path
    last = journal(migrated_db)[-1]
    assert (last[0], last[2]) == (HEAD, "applied") and last[3] == sha256(_files()[-1])


# -- celora db resolve -------------------------------------------------------------------------------------

def _failed_extra(empty_db, tmp_path) -> dict:
    """A database where migration EXTRA failed (1/0); the environment to run celora on it."""
    history = write_history(tmp_path, "    op.execute('CREATE TABLE extra_table (id int)')\n"
                                      "    op.execute('SELECT 1/0')")
    env = {"DATABASE_URL": empty_db, "CELORA_MIGRATIONS_DIR": str(history)}
    assert run_celora("db", "migrate-deploy", env=env).returncode == 9
    return env


def test_resolve_rolled_back_records_it_and_leaves_the_migration_pending(empty_db, tmp_path):
    env = _failed_extra(empty_db, tmp_path)
    cli = run_celora("db", "resolve", "--rolled-back", f"{EXTRA}_extra", "--json", env=env)
    assert cli.returncode == 0, cli.stderr
    data = json.loads(cli.stdout)
    assert data["recorded"] == "resolved_rolled_back" and data["previous"] == "failed" and data["stamped"] is False
    assert [(r[0], r[2]) for r in journal(empty_db)][-2:] == [(EXTRA, "failed"), (EXTRA, "resolved_rolled_back")]
    assert query(empty_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    status = json.loads(run_celora("db", "status", "--json", env=env).stdout)
    assert status["failed"] == [] and [p["revision"] for p in status["pending"]] == [EXTRA]
    again = run_celora("db", "resolve", "--rolled-back", EXTRA, env=env)  # nothing failed any more
    assert again.returncode == 12 and "no failed run" in again.stderr


def test_resolve_applied_stamps_the_next_migration_and_deploy_skips_it(empty_db, tmp_path):
    env = _failed_extra(empty_db, tmp_path)
    query(empty_db, "CREATE TABLE extra_table (id int)")  # the human finished the migration by hand
    text = run_celora("db", "resolve", "--applied", f"{EXTRA}_extra", env=env)
    assert text.returncode == 0, text.stderr
    assert f"alembic_version moved from {HEAD} to {EXTRA}" in text.stdout
    assert query(empty_db, "SELECT version_num FROM alembic_version") == [(EXTRA,)]
    last = journal(empty_db)[-1]
    assert (last[0], last[2]) == (EXTRA, "resolved_applied")
    deployed = run_celora("db", "migrate-deploy", "--json", env=env)
    assert deployed.returncode == 0 and json.loads(deployed.stdout)["applied"] == []
    status = json.loads(run_celora("db", "status", "--json", env=env).stdout)
    assert status["applied"][-1]["status"] == "resolved_applied" and status["failed"] == []
    assert status["applied"][-1]["applied_at"]  # when it was resolved
    assert "(resolved by hand)" in run_celora("db", "status", env=env).stdout


def test_resolve_applied_refuses_a_migration_that_is_not_next(empty_db, tmp_path):
    history = write_history(tmp_path, "    op.execute('SELECT 1')")
    env = {"DATABASE_URL": empty_db, "CELORA_MIGRATIONS_DIR": str(history)}
    cli = run_celora("db", "resolve", "--applied", EXTRA, "--json", env=env)
    assert cli.returncode == 12, cli.stderr
    assert "not the next migration" in json.loads(cli.stdout)["error"]["message"]
    assert query(empty_db, "SELECT to_regclass('alembic_version')") == [(None,)]  # nothing written


def test_resolve_applied_accepts_an_edited_applied_file(migrated_db, tmp_path):
    history = write_history(tmp_path)
    edited = history / "versions" / f"{REVISIONS[0]}_init.py"
    edited.write_text(edited.read_text() + "\n# a comment, the schema is the same\n")
    env = {"DATABASE_URL": migrated_db, "CELORA_MIGRATIONS_DIR": str(history)}
    assert run_celora("db", "migrate-deploy", env=env).returncode == 14
    cli = run_celora("db", "resolve", "--applied", REVISIONS[0], env=env)
    assert cli.returncode == 0, cli.stderr
    assert journal(migrated_db)[-1][3] == sha256(edited)
    assert run_celora("db", "migrate-deploy", env=env).returncode == 0


def test_resolve_is_refused_on_production_without_the_override(empty_db, tmp_path):
    env = _failed_extra(empty_db, tmp_path)
    env["CELORA_ENV"] = "production"
    refused = run_celora("db", "resolve", "--rolled-back", EXTRA, env=env)
    assert refused.returncode == 12 and "--allow-production" in refused.stderr
    assert journal(empty_db)[-1][2] == "failed"
    allowed = run_celora("db", "resolve", "--rolled-back", EXTRA, "--allow-production", env=env)
    assert allowed.returncode == 0, allowed.stderr


def test_status_as_a_role_that_may_not_read_the_journal(pg_server, migrated_db):
    from tests.support import admin_execute

    database = migrated_db.rsplit("/", 1)[1].split("?", 1)[0]
    role = f"journal_reader_{os.getpid()}"
    admin_execute(pg_server, f'CREATE ROLE "{role}" LOGIN')
    try:
        admin_execute(pg_server, f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
        admin_execute(pg_server, f'GRANT SELECT ON alembic_version TO "{role}"', database)
        cli = run_celora("db", "status", "--json", env={"DATABASE_URL": migrated_db.replace("celora@", f"{role}@", 1)})
        assert cli.returncode == 0, cli.stdout + cli.stderr
        data = json.loads(cli.stdout)
        assert data["up_to_date"] is True and data["journal"] is False
        assert "Grant this role SELECT on celora_migrations" in cli.stderr
    finally:
        admin_execute(pg_server, f'REVOKE ALL ON alembic_version FROM "{role}"', database)
        admin_execute(pg_server, f'REVOKE ALL ON DATABASE "{database}" FROM "{role}"')
        admin_execute(pg_server, f'DROP ROLE IF EXISTS "{role}"')


def test_a_hand_run_alembic_upgrade_that_fails_is_on_record(migrated_db, tmp_path):
    from alembic import command

    from celora_cli.migrate.scripts import alembic_config

    history = write_history(tmp_path, "    op.execute('CREATE TABLE extra_table (id int)')\n"
                                      "    op.execute('SELECT 1/0')")
    with pytest.raises(Exception, match="division by zero"):
        command.upgrade(alembic_config(settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history)), "head")
    last = journal(migrated_db)[-1]
    assert (last[0], last[2]) == (EXTRA, "failed") and "22012" in last[9]
    assert query(migrated_db, "SELECT to_regclass('extra_table')") == [(None,)]
