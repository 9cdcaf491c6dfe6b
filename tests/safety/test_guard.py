"""The guard and the protected-environment stamp through the real CLI (subprocess) and a real PostgreSQL.

stdin is never the developer's terminal: run_celora gives /dev/null (a command that would ask must refuse);
`run_celora_at_terminal` (tests.support) gives a pseudo-terminal that types an answer, as a developer at a terminal
would.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from celora_cli.migrate.deploy import deploy
from celora_cli.safety.stamp import database_environment, stamp_environment
from tests.support import REPO, run_celora, run_celora_at_terminal, settings_for

HEAD_COMMANDS = [("db", "reset", "--skip-seed"), ("db", "rollback", "--steps", "1")]


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def stamp(url: str, environment: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM celora_metadata")
        stamp_environment(conn, environment)


def stamped(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        return database_environment(conn)


def fingerprint(url: str) -> tuple:
    """What a refused command must leave alone: the rows and the revision."""
    return (query(url, "SELECT count(*) FROM users")[0][0], query(url, "SELECT version_num FROM alembic_version"))


@pytest.fixture
def with_alice(migrated_db) -> str:
    query(migrated_db, "INSERT INTO users (firebase_uid, email) VALUES ('uid-alice', 'alice@celora.io')")
    return migrated_db


# -- the stamp ---------------------------------------------------------------------------------------------

def test_migrate_deploy_stamps_the_environment_and_keeps_a_production_stamp(empty_db):
    assert stamped(empty_db) is None
    deploy(settings_for(empty_db, CELORA_ENV="staging"))
    assert stamped(empty_db) == "staging"
    deploy(settings_for(empty_db, CELORA_ENV="production"))
    assert stamped(empty_db) == "production"
    # A laptop with the default CELORA_ENV deploying to production does not lift production's protection.
    cli = run_celora("db", "migrate-deploy", env={"DATABASE_URL": empty_db})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert stamped(empty_db) == "production"
    assert "stays stamped 'production'" in cli.stderr


def test_a_failed_deploy_does_not_stamp(empty_db, tmp_path):
    import shutil

    project = tmp_path / "project"
    shutil.copytree(REPO / "migrations", project / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    versions = sorted((project / "migrations" / "versions").glob("2*.py"))
    head = versions[-1].stem.split("_", 1)[0]
    (project / "migrations" / "versions" / "29990101000000_fails.py").write_text(
        f"revision = '29990101000000'\ndown_revision = '{head}'\nfrom alembic import op\n\n"
        "def upgrade():\n    op.execute('SELECT * FROM no_such_table')\n\ndef downgrade():\n    pass\n")
    cli = run_celora("db", "migrate-deploy", env={"DATABASE_URL": empty_db, "CELORA_PROJECT_ROOT": str(project)},
                     cwd=project)
    assert cli.returncode == 9, cli.stdout + cli.stderr
    assert stamped(empty_db) is None


# -- not interactive: --force ------------------------------------------------------------------------------

@pytest.mark.parametrize("command", HEAD_COMMANDS, ids=lambda c: c[1])
def test_without_a_terminal_and_without_force_refused_naming_the_flag(with_alice, command):
    before = fingerprint(with_alice)
    cli = run_celora(*command, env={"DATABASE_URL": with_alice})
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "cannot ask here" in cli.stderr and f"celora db {command[1]} --force" in cli.stderr
    assert "Traceback" not in cli.stderr
    assert fingerprint(with_alice) == before


@pytest.mark.parametrize("command", HEAD_COMMANDS, ids=lambda c: c[1])
def test_refusal_as_json_is_one_object(with_alice, command):
    cli = run_celora(*command, "--json", env={"DATABASE_URL": with_alice})
    assert cli.returncode == 12
    error = json.loads(cli.stdout)
    assert error["ok"] is False and error["error"]["code"] == 12 and error["error"]["type"] == "Refused"
    assert "--force" in error["error"]["hint"]


def test_ci_variable_refuses_even_at_a_terminal(with_alice):
    before = fingerprint(with_alice)
    cli = run_celora_at_terminal("y", "db", "reset", "--skip-seed", env={"DATABASE_URL": with_alice, "CI": "true"})
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "cannot ask here" in cli.stderr
    assert fingerprint(with_alice) == before


def test_force_proceeds(with_alice):
    cli = run_celora("db", "reset", "--force", "--skip-seed", env={"DATABASE_URL": with_alice})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert query(with_alice, "SELECT count(*) FROM users") == [(0,)]


# -- production --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", HEAD_COMMANDS, ids=lambda c: c[1])
def test_production_stamp_refused_even_with_force(with_alice, command):
    stamp(with_alice, "production")
    before = fingerprint(with_alice)
    cli = run_celora(*command, "--force", env={"DATABASE_URL": with_alice})  # CELORA_ENV: development
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "production database" in cli.stderr and "stamped 'production'" in cli.stderr
    assert "celora_metadata.environment" in cli.stderr and "--allow-production" in cli.stderr
    assert fingerprint(with_alice) == before and stamped(with_alice) == "production"


def test_celora_env_production_refused_on_an_unstamped_database(with_alice):
    query(with_alice, "DROP TABLE celora_metadata")
    cli = run_celora("db", "reset", "--force", "--skip-seed",
                     env={"DATABASE_URL": with_alice, "CELORA_ENV": "production"})
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "CELORA_ENV is 'production'" in cli.stderr and "not stamped" in cli.stderr
    assert query(with_alice, "SELECT count(*) FROM users") == [(1,)]


def test_override_with_force_proceeds_and_the_database_stays_production(with_alice):
    stamp(with_alice, "production")
    cli = run_celora("db", "reset", "--force", "--allow-production", "--skip-seed", env={"DATABASE_URL": with_alice})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert query(with_alice, "SELECT count(*) FROM users") == [(0,)]
    assert stamped(with_alice) == "production"  # the reset does not lift the protection either


def test_override_without_force_still_needs_a_confirmation(with_alice):
    stamp(with_alice, "production")
    cli = run_celora("db", "rollback", "--steps", "1", "--allow-production", env={"DATABASE_URL": with_alice})
    assert cli.returncode == 12 and "--force" in cli.stderr


# -- at a terminal -----------------------------------------------------------------------------------------

def test_prompt_names_target_and_rows_and_yes_proceeds(with_alice):
    # A password in the URL (the test server trusts local connections and ignores it) must be masked.
    with_password = with_alice.replace("://celora@", "://celora:s3cret@", 1)
    cli = run_celora_at_terminal("y", "db", "reset", "--skip-seed", env={"DATABASE_URL": with_password})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "users (1 row)" in cli.stderr and "Proceed?" in cli.stderr
    assert f"celora:****@127.0.0.1:{with_alice.split(':')[-1]}" in cli.stderr
    assert "s3cret" not in cli.stdout + cli.stderr
    assert query(with_alice, "SELECT count(*) FROM users") == [(0,)]


def test_prompt_answered_no_changes_nothing(with_alice):
    before = fingerprint(with_alice)
    cli = run_celora_at_terminal("n", "db", "rollback", "--steps", "1", env={"DATABASE_URL": with_alice})
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "is undone" in cli.stderr and "not confirmed" in cli.stderr
    assert fingerprint(with_alice) == before


def test_end_of_input_at_the_prompt_is_a_no(with_alice):
    """Ctrl-D at the prompt (end of input on the terminal) refuses; it is not a crash."""
    before = fingerprint(with_alice)
    cli = run_celora_at_terminal("\x04", "db", "reset", "--skip-seed", env={"DATABASE_URL": with_alice})
    assert cli.returncode == 12, cli.stdout + cli.stderr
    assert "not confirmed" in cli.stderr and "Traceback" not in cli.stderr
    assert fingerprint(with_alice) == before
