"""`celora db roles` on a real PostgreSQL: --apply builds the least-privilege model idempotently, --check exits 0
when the live grants match and 1 naming each difference (a grant added by hand included), --dry-run prints SQL and
changes nothing, and a role without the privilege a step needs gets a clear error, not a traceback."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.conftest import admin_execute, db_name, run_celora
from tests.roles import apply_roles, drop_role_set, least_privilege_fixture, new_role_set  # noqa: F401


def test_apply_then_check_matches_and_a_grant_added_by_hand_is_named(pg_server, least_privilege):
    roles = least_privilege
    checked = run_celora("db", "roles", "--check", *roles.grant_flags(), env=roles.env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = apply_roles(roles)  # idempotent: nothing left to do
    assert "Nothing to change" in again.stdout

    admin_execute(pg_server, f"GRANT INSERT ON audit_log TO {roles.group('app')}", db_name(roles.database_url))
    differs = run_celora("db", "roles", "--check", "--json", *roles.grant_flags(), env=roles.env)
    assert differs.returncode == 1, differs.stderr
    report = json.loads(differs.stdout)
    assert report["ok"] is True and report["matches"] is False
    assert [(d["change"], d["subject"], d["detail"]) for d in report["differences"]] == [
        ("extra", "table audit_log", f"{roles.group('app')} holds INSERT")]
    human = run_celora("db", "roles", *roles.grant_flags(), env=roles.env)
    assert human.returncode == 1 and f"Extra privilege: table audit_log: {roles.group('app')} holds INSERT" \
        in human.stdout

    dry = run_celora("db", "roles", "--dry-run", *roles.grant_flags(), env=roles.env)
    assert dry.returncode == 0
    assert dry.stdout.strip() == f"REVOKE INSERT ON TABLE public.audit_log FROM {roles.group('app')};"
    apply_roles(roles)
    assert run_celora("db", "roles", "--check", *roles.grant_flags(), env=roles.env).returncode == 0


def test_the_model_grants_least_privilege(least_privilege):
    roles = least_privilege
    with roles.connect("app", autocommit=True) as conn:
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('app-user')")
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] >= 1
        for forbidden in ("SELECT * FROM audit_log", "SELECT * FROM alembic_version", "SELECT * FROM audit_seal",
                          "SELECT * FROM celora_migrations", "CREATE TABLE app_made (id int)", "TRUNCATE users"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)
    with roles.connect("readonly", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] >= 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE users SET display_name = 'x'")
    with roles.connect("cdc", autocommit=True) as conn:
        assert conn.execute("SELECT rolreplication FROM pg_roles WHERE rolname = current_user").fetchone()[0]
    # A migration run by the migrator's login creates tables owned by the group, and the default privileges
    # give the app its DML on them.
    with roles.connect("migrator", autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == roles.group("migrator")
        conn.execute("CREATE TABLE later_table (id int)")
    with roles.connect("app", autocommit=True) as conn:
        conn.execute("INSERT INTO later_table VALUES (1)")


def test_a_role_without_createrole_gets_a_clear_error_and_nothing_changes(pg_server, migrated_db):
    roles = new_role_set(pg_server, migrated_db, groups=("app",))
    try:
        env = {**roles.env, "DATABASE_URL": roles.url("app")}
        refused = run_celora("db", "roles", "--apply", "--json", env=env)
        assert refused.returncode == 13, refused.stdout + refused.stderr
        error = json.loads(refused.stdout)["error"]
        assert error["sqlstate"] == "42501" and "CREATE ROLE" in error["message"]
        assert "CREATEROLE" in error["hint"] and "rds_superuser" in error["hint"]
        assert "Traceback" not in refused.stderr
        with psycopg.connect(pg_server.url("postgres")) as conn:
            assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE %s",
                                (roles.prefix + "\\_%",)).fetchone()[0] == 1  # the login only
    finally:
        drop_role_set(pg_server, roles)


def test_bad_flags_and_unknown_logins_are_clear_errors(pg_server, migrated_db):
    env = {"DATABASE_URL": migrated_db}
    both = run_celora("db", "roles", "--apply", "--check", env=env)
    assert both.returncode == 64 and "exclude each other" in both.stderr
    missing = run_celora("db", "roles", "--check", "--grant-app", "no_such_login_role", env=env)
    assert missing.returncode == 3 and "no_such_login_role" in missing.stderr and "PASSWORD" in missing.stderr
    bad_name = run_celora("db", "roles", env={**env, "CELORA_ROLE_APP": "pg_app"})
    assert bad_name.returncode == 3 and "CELORA_ROLE_APP" in bad_name.stderr
