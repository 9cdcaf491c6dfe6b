"""`celora db reset` and `celora db rollback` against a real PostgreSQL (and a real PgBouncer for the refusal)."""

from __future__ import annotations

import json

import psycopg
import pytest

from celora_cli.migrate.lock import MIGRATION_LOCK_KEY
from celora_cli.migrate.scripts import load_script_directory
from tests.db.test_schema_matches_models import schema_dump
from tests.support import REPO, db_name, run_celora

REVISIONS = [s.revision for s in reversed(list(load_script_directory(REPO / "migrations").walk_revisions()))]
INIT, HEAD = REVISIONS[0], REVISIONS[-1]


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def version(url: str) -> list[str]:
    if not query(url, "SELECT to_regclass('alembic_version') IS NOT NULL")[0][0]:
        return []
    return [r[0] for r in query(url, "SELECT version_num FROM alembic_version")]


def add_user(url: str, email: str = "alice@celora.io") -> None:
    query(url, f"INSERT INTO users (firebase_uid, email) VALUES ('uid-{email}', '{email}')")


def users(url: str) -> int:
    return query(url, "SELECT count(*) FROM users")[0][0]


# -- reset -------------------------------------------------------------------------------------------------

def test_reset_drops_everything_reapplies_and_keeps_the_schema_itself(pg_server, migrated_db):
    add_user(migrated_db)
    query(migrated_db, "CREATE ROLE celora_reader_test; GRANT USAGE ON SCHEMA public TO celora_reader_test;"
                       " COMMENT ON SCHEMA public IS 'kept by reset'")
    at_head = schema_dump(pg_server, migrated_db)
    # Objects the migrations never made (a drifted database): all of them must go.
    query(migrated_db, """
        CREATE TYPE mood AS ENUM ('ok');
        CREATE SEQUENCE stray_seq;
        CREATE TABLE scratch (id int, m mood);
        CREATE VIEW scratch_view AS SELECT id FROM scratch;
        CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql AS 'SELECT i + 1';
        CREATE DOMAIN positive AS int CHECK (VALUE > 0);
        CREATE TABLE "50% ""odd"" Name" (id int);
    """)
    try:
        cli = run_celora("db", "reset", "--force", "--skip-seed", "--json", env={"DATABASE_URL": migrated_db})
        assert cli.returncode == 0, cli.stdout + cli.stderr
        result = json.loads(cli.stdout)
        assert result["ok"] and result["seed"] == "skipped" and result["head"] == HEAD
        assert [m["revision"] for m in result["applied"]] == REVISIONS
        assert {"name": "users", "rows": 1} in result["tables"]
        assert result["dropped"]["types"] >= 6 and result["dropped"]["routines"] >= 2
        assert result["dropped"]["views"] == 1 and result["dropped"]["domains"] == 1
        assert result["environment"] == "development"  # the template was deployed as test; this CLI runs as dev

        assert users(migrated_db) == 0 and version(migrated_db) == [HEAD]
        leftovers = query(migrated_db, "SELECT to_regclass('scratch'), to_regclass('stray_seq'),"
                                       " to_regtype('mood'), to_regtype('positive'), to_regproc('add_one')")
        assert leftovers == [(None, None, None, None, None)]
        # The migrations' schema exactly, and the schema itself kept (its comment, and its grants below).
        assert schema_dump(pg_server, migrated_db) == at_head
        granted = query(migrated_db, "SELECT has_schema_privilege('celora_reader_test', 'public', 'USAGE'),"
                                     " obj_description('public'::regnamespace, 'pg_namespace')")
        assert granted == [(True, "kept by reset")]
        assert query(migrated_db, "SELECT value FROM celora_metadata WHERE key = 'environment'") == [("development",)]
    finally:
        query(migrated_db, "DROP OWNED BY celora_reader_test; DROP ROLE celora_reader_test")


def test_reset_of_an_empty_database_applies_everything(empty_db):
    cli = run_celora("db", "reset", "--force", "--skip-seed", env={"DATABASE_URL": empty_db})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "dropped nothing" in cli.stdout and f"{len(REVISIONS)} migration(s) applied" in cli.stdout
    assert version(empty_db) == [HEAD]


def test_reset_seeds_the_fixtures_of_the_project(migrated_db, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "migrations").symlink_to(REPO / "migrations")
    (project / "fixtures").symlink_to(REPO / "fixtures")
    add_user(migrated_db, "someone@example.com")
    cli = run_celora("db", "reset", "--force", "--json",
                     env={"DATABASE_URL": migrated_db, "CELORA_PROJECT_ROOT": str(project)}, cwd=project)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    result = json.loads(cli.stdout)
    assert result["seed"] == "done" and result["seed_result"]["tables"]["users"]["created"] == 2
    emails = {r[0] for r in query(migrated_db, "SELECT email FROM users")}
    assert emails == {"alice@celora.io", "bob@celora.io"}


def test_reset_in_a_project_without_fixtures_says_so(migrated_db):
    cli = run_celora("db", "reset", "--force", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "Seed: no fixtures folder" in cli.stdout


@pytest.mark.pgbouncer
def test_reset_through_a_pooler_is_refused_and_nothing_is_dropped(pgbouncer, migrated_db):
    add_user(migrated_db)
    cli = run_celora("db", "reset", "--force", "--skip-seed",
                     env={"DATABASE_URL": pgbouncer(db_name(migrated_db), flag=False)})
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "connection pooler" in cli.stderr and "Traceback" not in cli.stderr
    assert users(migrated_db) == 1 and version(migrated_db) == [HEAD]


def test_reset_waits_for_the_migration_lock_and_times_out_without_dropping(migrated_db):
    add_user(migrated_db)
    with psycopg.connect(migrated_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        cli = run_celora("db", "reset", "--force", "--skip-seed", "--lock-timeout", "0.5",
                         env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 10, cli.stdout + cli.stderr
    assert "migration lock" in cli.stderr
    assert users(migrated_db) == 1 and version(migrated_db) == [HEAD]


def test_reset_with_a_broken_history_drops_nothing(migrated_db, tmp_path):
    import shutil

    project = tmp_path / "project"
    shutil.copytree(REPO / "migrations", project / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "migrations" / "versions" / "29990101000000_broken.py").write_text("revision = (\n")
    add_user(migrated_db)
    cli = run_celora("db", "reset", "--force", "--skip-seed",
                     env={"DATABASE_URL": migrated_db, "CELORA_PROJECT_ROOT": str(project)}, cwd=project)
    assert cli.returncode == 14, cli.stdout + cli.stderr
    assert users(migrated_db) == 1


# -- rollback ----------------------------------------------------------------------------------------------

def test_rollback_one_step_then_deploy_round_trips(pg_server, migrated_db):
    at_head = schema_dump(pg_server, migrated_db)
    cli = run_celora("db", "rollback", "--steps", "1", "--force", "--json", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    result = json.loads(cli.stdout)
    assert [m["revision"] for m in result["undone"]] == [HEAD]
    assert result["current"] == [REVISIONS[-2]] and result["target"] == REVISIONS[-2]
    assert version(migrated_db) == [REVISIONS[-2]]
    assert schema_dump(pg_server, migrated_db) != at_head

    deployed = run_celora("db", "migrate-deploy", env={"DATABASE_URL": migrated_db})
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert version(migrated_db) == [HEAD]
    assert schema_dump(pg_server, migrated_db) == at_head


def test_rollback_to_a_revision_by_id_or_file_name_and_to_base(migrated_db):
    cli = run_celora("db", "rollback", "--to", f"{INIT}_init", "--force", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert version(migrated_db) == [INIT]
    again = run_celora("db", "rollback", "--to", INIT, "--force", env={"DATABASE_URL": migrated_db})
    assert again.returncode == 0 and "Nothing to undo" in again.stdout
    base = run_celora("db", "rollback", "--to", "base", "--force", env={"DATABASE_URL": migrated_db})
    assert base.returncode == 0, base.stdout + base.stderr
    assert version(migrated_db) == []
    assert query(migrated_db, "SELECT to_regclass('users')") == [(None,)]


@pytest.mark.parametrize(("args", "expected"), [
    (["--steps", str(len(REVISIONS) + 1)], f"only {len(REVISIONS)} are applied"),
    (["--to", "nope"], "no such revision"),
    (["--steps", "0"], "--steps must be 1 or more"),
    (["--steps", "1", "--to", INIT], "not both"),
    ([], "Give either --steps N or --to REVISION"),
])
def test_rollback_bad_targets_are_clear_errors_and_change_nothing(migrated_db, args, expected):
    cli = run_celora("db", "rollback", *args, "--force", "--json", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 3, cli.stdout + cli.stderr
    error = json.loads(cli.stdout)["error"]
    assert error["type"] == "ConfigError" and expected in error["message"] and error["hint"]
    assert version(migrated_db) == [HEAD]


def test_rollback_to_a_revision_ahead_is_refused(migrated_db):
    run_celora("db", "rollback", "--to", INIT, "--force", env={"DATABASE_URL": migrated_db})
    cli = run_celora("db", "rollback", "--to", HEAD, "--force", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 3 and "would be an upgrade" in cli.stderr
    assert version(migrated_db) == [INIT]


def test_rollback_on_an_empty_database_says_nothing_to_roll_back(empty_db):
    cli = run_celora("db", "rollback", "--steps", "1", "--force", env={"DATABASE_URL": empty_db})
    assert cli.returncode == 3 and "Nothing to roll back" in cli.stderr


def test_rollback_waits_for_the_migration_lock(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        cli = run_celora("db", "rollback", "--steps", "1", "--force", "--lock-timeout", "0.5",
                         env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 10, cli.stdout + cli.stderr
    assert version(migrated_db) == [HEAD]


@pytest.mark.pgbouncer
def test_rollback_through_a_pooler_is_refused(pgbouncer, migrated_db):
    cli = run_celora("db", "rollback", "--steps", "1", "--force",
                     env={"DATABASE_URL": pgbouncer(db_name(migrated_db), flag=False)})
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "connection pooler" in cli.stderr
    assert version(migrated_db) == [HEAD]


def test_rollback_stops_when_another_runner_moved_the_database_after_the_plan(migrated_db):
    """The plan (undo HEAD) is re-checked under the lock: a database moved meanwhile is left alone."""
    import os
    import subprocess
    import sys

    from tests.support import TEST_PROJECT

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL")
           and not k.startswith("CELORA_")}
    env.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1", "PYTHONPATH": str(REPO),
                "DATABASE_URL": migrated_db})
    with psycopg.connect(migrated_db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        runner = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "rollback", "--steps", "1", "--force"],
                                  cwd=TEST_PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert runner.stderr is not None
            line = runner.stderr.readline()  # it has planned and now waits for the lock
            assert "Waiting for the migration lock" in line, line
            holder.execute("UPDATE alembic_version SET version_num = %s", (INIT,))  # another runner's rollback
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            out, err = runner.communicate(timeout=60)
        finally:
            if runner.poll() is None:
                runner.kill()
    assert runner.returncode == 12, out + err
    assert "moved from" in err and "run `celora db rollback` again" in err
    assert version(migrated_db) == [INIT]
    assert query(migrated_db, "SELECT to_regclass('users')")[0][0] is not None  # nothing of INIT was undone


def test_reset_touches_only_the_urls_schema(empty_db):
    """With ?schema=app, reset drops and rebuilds app only: a table in public survives."""
    query(empty_db, "CREATE SCHEMA app; CREATE TABLE public.keep_me (id int); INSERT INTO public.keep_me VALUES (1)")
    url = f"{empty_db}?schema=app"
    first = run_celora("db", "migrate-deploy", env={"DATABASE_URL": url})
    assert first.returncode == 0, first.stdout + first.stderr
    query(empty_db, "INSERT INTO app.users (firebase_uid, email) VALUES ('uid', 'a@celora.io')")
    cli = run_celora("db", "reset", "--force", "--skip-seed", "--json", env={"DATABASE_URL": url})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert json.loads(cli.stdout)["schema"] == "app"
    assert query(empty_db, "SELECT count(*) FROM app.users") == [(0,)]
    assert query(empty_db, "SELECT version_num FROM app.alembic_version")[0][0] == HEAD
    assert query(empty_db, "SELECT count(*) FROM public.keep_me") == [(1,)]
