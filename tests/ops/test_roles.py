"""`celora db roles` on a real PostgreSQL: --apply builds the least-privilege model idempotently, --check exits 0
when the live grants match and 1 naming each difference (a grant added by hand included), --dry-run prints SQL and
changes nothing, and a role without the privilege a step needs gets a clear error, not a traceback."""

from __future__ import annotations

import json
import os

import psycopg
import pytest

from tests.support import admin_execute, db_name, run_celora
from tests.support.roles import RoleSet, apply_roles, drop_role_set, least_privilege_fixture, new_role_set  # noqa: F401


def test_apply_then_check_matches_and_a_grant_added_by_hand_is_named(pg_server, least_privilege):
    roles = least_privilege
    checked = run_celora("db", "roles", "--check", *roles.grant_flags(), env=roles.env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = apply_roles(roles)  # idempotent: nothing left to do
    assert "Nothing to change" in again.stdout

    admin_execute(pg_server, f"GRANT INSERT ON audit_log TO {roles.group('app')}", db_name(roles.database_url))
    differs = run_celora("db", "roles", "--check", "--json", *roles.grant_flags(), env=roles.env)
    assert differs.returncode == 31, differs.stderr
    report = json.loads(differs.stdout)
    assert report["ok"] is True and report["matches"] is False
    assert [(d["change"], d["subject"], d["detail"]) for d in report["differences"]] == [
        ("extra", "table audit_log", f"{roles.group('app')} holds INSERT")]
    human = run_celora("db", "roles", *roles.grant_flags(), env=roles.env)
    assert human.returncode == 31 and f"Extra privilege: table audit_log: {roles.group('app')} holds INSERT" \
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


TRANSFER_TO = """
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
                   AND c.relkind IN ('r', 'v', 'm') LOOP
        EXECUTE format('ALTER TABLE public.%I OWNER TO {admin}', item.relname);
    END LOOP;
    FOR item IN SELECT p.oid::regprocedure AS routine FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO {admin}', item.routine);
    END LOOP;
    FOR item IN SELECT t.oid::regtype AS type FROM pg_type t WHERE t.typnamespace = 'public'::regnamespace
                   AND t.typtype = 'e' LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO {admin}', item.type);
    END LOOP;
END;
$$"""


def test_apply_works_without_superuser_as_a_createrole_owner_like_a_managed_providers_admin(pg_server,
                                                                                              migrated_db):
    """As RDS's rds_superuser, Cloud SQL's cloudsqlsuperuser or Azure's azure_pg_admin: CREATEROLE, owner of the
    database and of what its migrations made, not superuser."""
    roles = RoleSet(migrated_db, f"t{os.getpid()}_adm")
    admin = f"{roles.prefix}_admin"
    database = db_name(migrated_db)
    admin_execute(pg_server, f"CREATE ROLE {admin} LOGIN CREATEROLE; ALTER DATABASE {database} OWNER TO {admin}")
    try:
        admin_execute(pg_server, TRANSFER_TO.replace("{admin}", admin), database)
        admin_url = migrated_db.replace("celora@", f"{admin}@", 1)
        roles.logins = {"migrator": f"{roles.prefix}_migrator_login", "app": f"{roles.prefix}_app_login"}
        with psycopg.connect(admin_url, autocommit=True) as conn:  # the operator creates the logins
            for login in roles.logins.values():
                conn.execute(f"CREATE ROLE {login} LOGIN")
        env = {**roles.env, "DATABASE_URL": admin_url}
        applied = run_celora("db", "roles", "--apply", *roles.grant_flags(), env=env)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert run_celora("db", "roles", "--check", *roles.grant_flags(), env=env).returncode == 0
        with roles.connect("app", autocommit=True) as conn:
            conn.execute("INSERT INTO users (firebase_uid) VALUES ('by-app')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM audit_log")
        with roles.connect("migrator", autocommit=True) as conn:  # the migrator's login may seal
            assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 1
    finally:
        admin_execute(pg_server, f"ALTER DATABASE {database} OWNER TO celora")
        drop_role_set(pg_server, roles)
        admin_execute(pg_server, f"DROP OWNED BY {admin} CASCADE", database)
        admin_execute(pg_server, f"DROP OWNED BY {admin}; DROP ROLE {admin}")
