"""The production guard reads every schema's environment stamp, whatever the URL's ?schema= or search_path
(issue 16, item 4): `db restore` (the whole database), `db changes --drop` (a server-wide slot) and `db reset`
(one schema of a production database) are refused on a production database reached through a search path that
does not hold its stamp; a restore keeps the target's stamp. Run as non-superuser login roles that own their
databases (CREATEDB, REPLICATION where the command needs it), as on a managed provider."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import psycopg
import pytest

from tests.data.test_changes import setup_only
from tests.support import admin_execute, run_celora, shared_tmpdir


def query(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def owner(pg_server):
    """A login role with CREATEDB and REPLICATION (no superuser), and a factory of databases it owns, migrated by
    it with a given CELORA_ENV, holding one user."""
    role = f"owner_{uuid.uuid4().hex[:10]}"
    admin_execute(pg_server, f"CREATE ROLE {role} LOGIN CREATEDB REPLICATION NOSUPERUSER")
    made: list[str] = []

    def database(environment: str, email: str) -> str:
        name = f"t_stamp_{uuid.uuid4().hex[:10]}"
        admin_execute(pg_server, f'CREATE DATABASE "{name}" OWNER {role}')
        made.append(name)
        url = pg_server.url(name).replace("://celora@", f"://{role}@", 1)
        deployed = run_celora("db", "migrate-deploy", env={"DATABASE_URL": url, "CELORA_ENV": environment})
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        query(url, "INSERT INTO users (firebase_uid, email) VALUES (%s, %s)", (f"uid-{email}", email))
        query(url, "CREATE SCHEMA elsewhere")  # an empty schema of the role's own
        assert query(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]
        return url

    yield role, database
    for name in made:
        for (slot,) in query(pg_server.url("postgres"), "SELECT slot_name FROM pg_replication_slots "
                                                        "WHERE database = %s", (name,)):
            query(pg_server.url("postgres"), "SELECT pg_drop_replication_slot(%s)", (slot,))
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(pg_server, f"DROP ROLE IF EXISTS {role}")


def elsewhere(url: str, how: str) -> str:
    """The same database with a search path that does not hold the stamp."""
    if how == "schema":
        return f"{url}?schema=elsewhere"
    return f"{url}?options={quote('-csearch_path=elsewhere')}"


def stamp_in_public(url: str) -> str | None:
    rows = query(url, "SELECT value FROM public.celora_metadata WHERE key = 'environment'")
    return rows[0][0] if rows else None


def emails(url: str) -> list[str]:
    return [row[0] for row in query(url, "SELECT email FROM public.users ORDER BY 1")]


@pytest.mark.parametrize("how", ["schema", "options"])
def test_restore_of_a_development_backup_into_production_is_refused_and_keeps_the_stamp(owner, how):
    _, database = owner
    development = database("development", "dev@celora.io")
    production = database("production", "prod@celora.io")
    folder = shared_tmpdir("celora-test-stamp-")
    file = folder / "dev.dump"
    backed = run_celora("db", "backup", "--output", str(file), env={"DATABASE_URL": development})
    assert backed.returncode == 0, backed.stdout + backed.stderr
    target = elsewhere(production, how)

    refused = run_celora("db", "restore", str(file), "--yes", env={"DATABASE_URL": target})
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "production database" in refused.stderr and "stamped 'production'" in refused.stderr
    assert "outside this connection's search path" in refused.stderr and "schema public" in refused.stderr
    assert emails(production) == ["prod@celora.io"]

    done = run_celora("db", "restore", str(file), "--yes", "--allow-production", "--json",
                      env={"DATABASE_URL": target})
    assert done.returncode == 0, done.stdout + done.stderr
    assert emails(production) == ["dev@celora.io"]  # the backup's rows
    assert stamp_in_public(production) == "production"  # the target's stamp, not the backup's 'development'
    assert json.loads(done.stdout)["environment"] == "production"
    assert "keeps its environment stamp 'production'" in done.stderr and "'development'" in done.stderr

    # ... so the next destructive command is still refused there.
    reset = run_celora("db", "reset", "--force", "--skip-seed", env={"DATABASE_URL": production})
    assert reset.returncode == 12, reset.stdout + reset.stderr
    assert emails(production) == ["dev@celora.io"]


def test_a_restore_into_development_keeps_development(owner):
    """The rule is "the target's stamp", not "production wins": a production backup restored into a staging
    database stays staging (the module docstring of environment_stamp says how to re-purpose on purpose)."""
    _, database = owner
    production = database("production", "prod@celora.io")
    staging = database("staging", "staging@celora.io")
    file = shared_tmpdir("celora-test-stamp-") / "prod.dump"
    assert run_celora("db", "backup", "--output", str(file), env={"DATABASE_URL": production}).returncode == 0
    done = run_celora("db", "restore", str(file), "--yes", env={"DATABASE_URL": staging})
    assert done.returncode == 0, done.stdout + done.stderr
    assert emails(staging) == ["prod@celora.io"] and stamp_in_public(staging) == "staging"


@pytest.mark.parametrize("how", ["schema", "options"])
def test_changes_drop_on_production_through_another_search_path_is_refused(owner, how):
    _, database = owner
    production = database("production", "prod@celora.io")
    setup = run_celora("db", "changes", *setup_only(production), "--slot", "s_guard", env={"DATABASE_URL": production})
    assert setup.returncode == 0, setup.stdout + setup.stderr
    target = elsewhere(production, how)

    refused = run_celora("db", "changes", "--drop", "s_guard", "--force", env={"DATABASE_URL": target})
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "stamped 'production'" in refused.stderr and "--allow-production" in refused.stderr
    assert query(production, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_guard'") == [(1,)]

    dropped = run_celora("db", "changes", "--drop", "s_guard", "--force", "--allow-production",
                         env={"DATABASE_URL": target})
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert query(production, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_guard'") == [(0,)]


def test_changes_drop_from_another_database_reads_the_slots_own_database(owner):
    """A slot is the server's: dropping production's slot while connected to a development database is refused."""
    _, database = owner
    production = database("production", "prod@celora.io")
    development = database("development", "dev@celora.io")
    assert run_celora("db", "changes", *setup_only(production), "--slot", "s_prod",
                      env={"DATABASE_URL": production}).returncode == 0
    refused = run_celora("db", "changes", "--drop", "s_prod", "--force", env={"DATABASE_URL": development})
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert query(production, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_prod'") == [(1,)]


def test_a_stamp_this_role_may_not_read_counts_as_production(pg_server, owner):
    """Fail closed: a replication role without SELECT on celora_metadata can't prove the database is not
    production, so --drop needs --allow-production (and says why)."""
    _, database = owner
    development = database("development", "dev@celora.io")
    assert run_celora("db", "changes", *setup_only(development), "--slot", "s_blind",
                      env={"DATABASE_URL": development}).returncode == 0
    reader = f"reader_{uuid.uuid4().hex[:10]}"
    admin_execute(pg_server, f"CREATE ROLE {reader} LOGIN REPLICATION NOSUPERUSER")
    try:
        as_reader = development.replace(development.split("://", 1)[1].split("@", 1)[0] + "@", f"{reader}@", 1)
        refused = run_celora("db", "changes", "--drop", "s_blind", "--force", env={"DATABASE_URL": as_reader})
        assert refused.returncode == 12, refused.stdout + refused.stderr
        assert "may not read it" in refused.stderr and "schema public" in refused.stderr
        allowed = run_celora("db", "changes", "--drop", "s_blind", "--force", "--allow-production",
                             env={"DATABASE_URL": as_reader})
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    finally:
        admin_execute(pg_server, f"DROP ROLE IF EXISTS {reader}")


def test_reset_of_another_schema_of_a_production_database_is_refused(owner):
    """A per-schema command reads the database's stamp too: a schema of a production database is production's."""
    _, database = owner
    production = database("production", "prod@celora.io")
    query(production, "CREATE TABLE elsewhere.notes (id int); INSERT INTO elsewhere.notes VALUES (1)")
    refused = run_celora("db", "reset", "--force", "--skip-seed",
                         env={"DATABASE_URL": elsewhere(production, "schema")})
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "stamped 'production'" in refused.stderr
    assert query(production, "SELECT count(*) FROM elsewhere.notes") == [(1,)]
