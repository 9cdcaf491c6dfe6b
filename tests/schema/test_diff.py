"""`celora db diff` through the real CLI on a real PostgreSQL: every kind of source, the summary, the SQL (applied
to prove it turns FROM into TO), --exit-code, and bad sources (a clear message and a documented exit code, never a
traceback or a password). Shadows made for sources are always dropped, also on errors and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from tests.support import REPO, TEST_PROJECT, admin_execute, db_name, run_celora, shared_tmpdir

HEAD = "20261207023000"
SECOND = "20261126150000"


def shadows(pg_server) -> list[str]:
    with psycopg.connect(pg_server.url("postgres")) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'celora_shadow_%'")]


def replaying(pg_server) -> bool:
    with psycopg.connect(pg_server.url("postgres")) as conn:
        return conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'celora_shadow_%' "
                            "AND application_name = 'celora (shadow)'").fetchone() is not None


def celora_diff(url: str, *args: str):
    return run_celora("db", "diff", *args, env={"DATABASE_URL": url})


def test_two_revisions_summary_and_exit_code(pg_server, empty_db):
    result = celora_diff(empty_db, "--from", f"migrations@{SECOND}", "--to", "migrations")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (f"table audit_log is in the migration history at {HEAD} but missing from the migration history at "
            f"{SECOND}") in result.stdout
    flagged = celora_diff(empty_db, "--from", f"migrations@{SECOND}", "--to", "migrations", "--exit-code",
                          "--json")
    assert flagged.returncode == 1
    body = json.loads(flagged.stdout)
    assert body["differ"] is True and body["statements"] is None
    assert {"kind": "table", "name": "audit_log", "change": "missing"}.items() <= body["differences"][0].items() \
        or any(d["name"] == "audit_log" for d in body["differences"])
    assert shadows(pg_server) == []


def test_the_models_and_the_history_agree_every_way(pg_server, empty_db):
    for args in (("--from", "migrations", "--to", "models"),
                 ("--from", "models", "--to", "migrations", "--sql"),
                 ("--from", "migrations", "--to", "migrations", "--sql"),  # TO reflected: no noise either
                 ("--from", str(REPO / "migrations" / "schema.sql"), "--to", "migrations")):
        result = celora_diff(empty_db, *args, "--exit-code")
        assert result.returncode == 0, (args, result.stdout + result.stderr)
        assert "No differences" in result.stdout or "nothing to change" in result.stdout, (args, result.stdout)
    assert shadows(pg_server) == []


def test_the_sql_turns_from_into_to(pg_server, migrated_db):
    """FROM a database at SECOND (the real downgrades), the SQL to the history's head, applied: afterwards only
    what Alembic can't render (functions, triggers) differs, and --sql listed each of those as a comment."""
    assert run_celora("db", "rollback", "--to", SECOND, "--force",
                      env={"DATABASE_URL": migrated_db}).returncode == 0
    result = celora_diff(migrated_db, "--from", "database", "--to", "migrations", "--sql")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CREATE TABLE audit_log" in result.stdout
    assert "-- celora: not rendered: function celora_audit_row()" in result.stdout
    statements = "\n".join(line for line in result.stdout.splitlines() if not line.startswith("--"))
    admin_execute(pg_server, statements, db_name(migrated_db))

    after = celora_diff(migrated_db, "--from", "database", "--to", "migrations", "--json")
    left = {(d["kind"], d["name"]) for d in json.loads(after.stdout)["differences"]}
    assert left and {kind for kind, _name in left} <= {"function", "trigger"}, left
    assert shadows(pg_server) == []


def test_a_live_database_is_read_only_and_named_masked(pg_server, migrated_db):
    name = db_name(migrated_db)
    admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text; ALTER TYPE chain ADD VALUE 'tron'", name)
    with_password = migrated_db.replace("celora@", "celora:s3cret-pw@")
    summary = run_celora("db", "diff", "--from", with_password, "--to", "migrations", "--exit-code",
                         env={"DATABASE_URL": migrated_db})
    assert summary.returncode == 1, summary.stdout + summary.stderr
    assert "column users.nickname exists in postgresql://celora:****@" in summary.stdout
    assert "enum label chain.tron exists in" in summary.stdout
    to_live = run_celora("db", "diff", "--from", "migrations", "--to", with_password, "--sql",
                         env={"DATABASE_URL": migrated_db})
    assert to_live.returncode == 0, to_live.stdout + to_live.stderr
    assert "ALTER TYPE chain ADD VALUE IF NOT EXISTS 'tron';" in to_live.stdout
    assert "ALTER TABLE users ADD COLUMN nickname TEXT;" in to_live.stdout
    back = run_celora("db", "diff", "--from", with_password, "--to", "migrations", "--sql",
                      env={"DATABASE_URL": migrated_db})
    assert "ALTER TABLE users DROP COLUMN nickname;" in back.stdout
    for result in (summary, to_live, back):
        assert "s3cret-pw" not in result.stdout + result.stderr
    with psycopg.connect(migrated_db) as conn:  # read, never changed
        assert conn.execute("SELECT count(*) FROM information_schema.columns "
                            "WHERE table_name = 'users' AND column_name = 'nickname'").fetchone()[0] == 1


@pytest.mark.parametrize(("source", "code", "words"), [
    ("nowhere/schema.sql", 3, "no such file"),
    ("modles", 3, "is not a schema source"),
    ("migrations@nope", 3, "has no revision 'nope'"),
    ("postgresql://celora:s3cret-pw@127.0.0.1:1/x", 4, "postgresql://celora:****@127.0.0.1:1/x"),
])
def test_bad_sources_are_clear_errors(pg_server, empty_db, source, code, words):
    result = celora_diff(empty_db, "--from", source, "--to", "migrations", "--json")
    assert result.returncode == code, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]  # one object
    assert words in error["message"] and error["hint"]
    assert "Traceback" not in result.stderr and "s3cret-pw" not in result.stdout + result.stderr
    assert shadows(pg_server) == []


def test_a_broken_sql_file_names_the_line_and_leaves_no_shadow(pg_server, empty_db):
    folder = shared_tmpdir("celora-diff-sql-")
    broken = folder / "schema.sql"
    broken.write_text("CREATE TABLE ok (id int);\n\nCREATE TABLEE nope (id int);\n")
    result = celora_diff(empty_db, "--from", str(broken), "--to", "models")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"PostgreSQL refused {broken} at line 3: syntax error" in result.stderr
    assert "Traceback" not in result.stderr
    assert shadows(pg_server) == []


def test_ctrl_c_drops_the_shadow(pg_server, empty_db):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    env.update({"DATABASE_URL": empty_db, "CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1",
                "PYTHONPATH": str(REPO)})
    process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "diff", "--from", "migrations", "--to",
                                "models"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=TEST_PROJECT)
    try:
        deadline = time.monotonic() + 60
        # Interrupted while the history is being replayed into the shadow (its connection is open there).
        while not replaying(pg_server) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert replaying(pg_server), process.communicate()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    assert "Traceback" not in err
    assert shadows(pg_server) == []


ODD_SCHEMA = """CREATE TYPE "Mood" AS ENUM ('ok', 'it''s bad');
CREATE TABLE "Odd Name" ("Col%s" int PRIMARY KEY, m "Mood" DEFAULT 'ok', note text);
COMMENT ON TABLE "Odd Name" IS '50% [bold]x[/]';
"""


def test_odd_names_survive_the_sql_round_trip(pg_server, empty_db):
    """Quoted names, a '%', a quote in a label and Rich markup in a comment: the SQL printed creates exactly the
    file's schema (nothing doubled, nothing read as markup)."""
    schema = shared_tmpdir("celora-diff-odd-") / "odd.sql"
    schema.write_text(ODD_SCHEMA)
    result = celora_diff(empty_db, "--from", "database", "--to", str(schema), "--sql")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"Col%s" INTEGER NOT NULL' in result.stdout and "'50% [bold]x[/]'" in result.stdout
    admin_execute(pg_server, result.stdout, db_name(empty_db))
    same = celora_diff(empty_db, "--from", "database", "--to", str(schema), "--exit-code")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "No differences" in same.stdout


@pytest.mark.parametrize(("user", "database", "code"), [("nobody", "postgres", 5), ("celora", "nosuchdb", 6)])
def test_a_url_that_refuses_is_named_masked_before_any_shadow(pg_server, empty_db, user, database, code):
    url = f"postgresql://{user}:s3cret-pw@127.0.0.1:{pg_server.port}/{database}"
    result = celora_diff(empty_db, "--from", "migrations", "--to", url)
    assert result.returncode == code, result.stdout + result.stderr
    assert f"--to=postgresql://{user}:****@127.0.0.1:{pg_server.port}/{database}" in result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert "temporary database" not in result.stderr  # checked before a shadow was made


def test_a_pg_dump_of_the_schema_loads_as_a_source(pg_server, migrated_db, empty_db):
    """What the docs promise: `pg_dump --schema-only --no-owner --no-privileges` output (psql's \\restrict lines,
    search_path emptied, names qualified) is a source as is, and equals the history it was dumped from."""
    pg_dump = pg_server.bin_dir / "pg_dump"
    if not pg_dump.exists():
        pytest.skip("this server build has no pg_dump")
    dump = shared_tmpdir("celora-diff-dump-") / "dump.sql"
    done = subprocess.run([str(pg_dump), "--schema-only", "--no-owner", "--no-privileges",
                           "--exclude-table=public.alembic_version", "--exclude-table=public.celora_migrations*",
                           "--file", str(dump), "--dbname", migrated_db], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result = celora_diff(empty_db, "--from", str(dump), "--to", "migrations", "--exit-code")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No differences" in result.stdout
