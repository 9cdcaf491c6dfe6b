"""The database-admin helper (any server) and the catalog comparison behind `celora db migrate`'s drift check."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from celora_cli.config.settings import parse_database_url
from celora_cli.db import admin
from celora_cli.schema.drift import compare, snapshot
from tests.support import REPO, admin_execute, db_name, run_celora, settings_for, shared_tmpdir

ODD_NAME = 'Odd "name"; DROP DATABASE x'


def test_admin_create_clone_end_sessions_and_drop_with_odd_names(pg_server, migrated_db):
    settings = settings_for(migrated_db)
    url = settings.database_url
    clone = f"{ODD_NAME} {uuid.uuid4().hex[:6]}"
    holder = psycopg.connect(migrated_db)  # PostgreSQL refuses to copy a database someone is connected to
    try:
        with admin.maintenance_connection(url, settings) as conn:
            admin.clone_database(conn, db_name(migrated_db), clone)
            assert admin.database_exists(conn, clone)
        assert holder.closed or holder.broken or _is_terminated(holder)
        copy_url = admin.with_database(url, clone)
        with psycopg.connect(pg_server.url("postgres")) as check:
            assert check.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (clone,)).fetchone()[0] == 1
        with psycopg.connect(**{"host": copy_url.host, "port": copy_url.port, "dbname": clone,
                                "user": copy_url.username}) as copy:
            assert copy.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
        with admin.maintenance_connection(url, settings) as conn:
            assert admin.create_database(conn, clone, if_missing=True) is False
            admin.drop_database(conn, clone)
            assert not admin.database_exists(conn, clone)
            admin.drop_database(conn, clone)  # IF EXISTS: dropping twice is fine
    finally:
        holder.close()


def _is_terminated(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_ensure_database_creates_it_once_and_announces_it(pg_server, caplog):
    name = f"t_ensure_{uuid.uuid4().hex[:8]}"
    settings = settings_for(pg_server.url(name))
    try:
        with caplog.at_level(logging.INFO, logger="celora.notice"):
            assert admin.ensure_database(settings.database_url, settings) is True
            assert admin.ensure_database(settings.database_url, settings) is False
        assert [r.getMessage() for r in caplog.records if r.name == "celora.notice"] == [
            f"Created database {name} ({settings.database_url.masked})."]
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_compare_names_a_changed_default_and_ignores_bookkeeping(pg_server, migrated_db, empty_db):
    with psycopg.connect(migrated_db) as conn:
        baseline = snapshot(conn)
    assert compare(baseline, baseline) == []
    assert "alembic_version" not in baseline.objects["table"]
    assert "users.email" in baseline.objects["column"]
    assert "chain" in baseline.objects["enum"]

    admin_execute(pg_server, "ALTER TABLE wallets ALTER COLUMN label SET DEFAULT 'main'; CREATE EXTENSION citext; "
                  "ALTER TABLE users DROP CONSTRAINT uq_users_firebase_uid; "
                  "CREATE TABLE IF NOT EXISTS celora_metadata (key text); "
                  "ALTER TABLE celora_metadata ADD COLUMN by_hand text; ALTER TABLE alembic_version ADD COLUMN x int",
                  db_name(migrated_db))
    with psycopg.connect(migrated_db) as conn:
        changed = snapshot(conn)
    by_name = {d.name: d for d in compare(changed, baseline)}
    assert set(by_name) == {"wallets.label", "users.uq_users_firebase_uid", "citext"}  # not citext's functions
    assert by_name["citext"].kind == "extension" and by_name["citext"].change == "extra"
    assert by_name["wallets.label"].change == "changed"
    assert "DEFAULT 'main'::text" in by_name["wallets.label"].database
    assert by_name["users.uq_users_firebase_uid"].change == "missing"

    with psycopg.connect(empty_db) as conn:
        empty = snapshot(conn)
    tables = {d.name for d in compare(empty, baseline) if d.kind == "table"}
    assert tables == {"users", "wallets", "transactions", "sessions", "notifications", "idempotency_keys",
                      "rate_limits", "audit_log", "audit_seal"}
    assert not [d for d in compare(empty, baseline) if d.kind == "column"]  # the missing table says it all


@pytest.fixture
def project() -> Path:
    root = shared_tmpdir("celora-drift-")
    shutil.copytree(REPO / "migrations", root / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__", "schema.sql"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def env_for(project: Path, url: str, **extra: str) -> dict:
    return {"DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(project),
            "CELORA_MIGRATIONS_DIR": str(project / "migrations"), **extra}


def test_an_applied_migration_edited_since_is_drift(project, migrated_db):
    edited = next((project / "migrations" / "versions").glob("*_schema_corrections.py"))
    text = edited.read_text()
    marker = "def upgrade() -> None:\n"
    assert marker in text
    edited.write_text(text.replace(marker, marker + "    op.execute('CREATE INDEX ix_edited ON users (email)')\n"))

    result = run_celora("db", "migrate", env=env_for(project, migrated_db))
    assert result.returncode == 15, result.stdout + result.stderr
    assert "index users.ix_edited is in the migration history but missing from the development database" \
        in result.stderr


def test_shadow_database_url_is_used_and_never_the_development_database(pg_server, project, migrated_db):
    shutil.rmtree(project / "migrations" / "snapshots")  # no stored snapshot: the drift check needs the shadow
    shadow = f"t_shadow_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(shadow)
    try:
        admin_execute(pg_server, "CREATE TABLE leftover (id int)", shadow)
        result = run_celora("db", "migrate", env=env_for(project, migrated_db,
                                                         SHADOW_DATABASE_URL=pg_server.url(shadow)))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Already in sync" in result.stdout
        with psycopg.connect(pg_server.url(shadow)) as conn:  # emptied after use
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0

        same = run_celora("db", "migrate", env=env_for(project, migrated_db, SHADOW_DATABASE_URL=migrated_db))
        assert same.returncode == 3, same.stdout + same.stderr
        assert "is the development database itself" in same.stderr
        with psycopg.connect(migrated_db) as conn:  # untouched
            assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{shadow}" WITH (FORCE)')


def test_with_database_keeps_server_credentials_and_parameters():
    url = parse_database_url("postgresql://me:s%40cret@db.example:6543/app?sslmode=require&schema=tenant")
    other = admin.with_database(url, "postgres")
    assert (other.host, other.port, other.username, other.password, other.database) == (
        "db.example", 6543, "me", "s@cret", "postgres")
    assert other.libpq_param("sslmode") == "require" and other.schema == "tenant"
    socket = admin.with_database(parse_database_url("postgresql:///app?host=/run/pg"), "x y")
    assert (socket.host, socket.database) == ("/run/pg", "x y")


def test_database_drift_is_read_only_and_names_the_difference(pg_server, migrated_db):
    """The core of a `db status --drift`: compares, changes nothing, leaves no shadow database behind."""
    from celora_cli.schema.autogenerate import database_drift

    settings = settings_for(migrated_db)
    clean = database_drift(settings)
    assert not clean.drifted and clean.current and clean.to_json()["differences"] == []

    admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text", db_name(migrated_db))
    report = database_drift(settings)
    assert report.drifted
    assert [(d.kind, d.name, d.change) for d in report.differences] == [("column", "users.nickname", "extra")]
    with psycopg.connect(pg_server.url("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'celora_shadow_%'").fetchone()[0] \
            == 0


def test_a_role_without_createdb_is_told_what_to_grant_or_set(pg_server, project):
    role = f"nocreate_{uuid.uuid4().hex[:6]}"
    owned = f"t_owned_{uuid.uuid4().hex[:6]}"
    admin_execute(pg_server, f"CREATE ROLE {role} LOGIN NOCREATEDB")
    admin_execute(pg_server, f"CREATE DATABASE {owned} OWNER {role}")
    try:
        base = pg_server.url(owned)
        as_role = base.replace("://celora@", f"://{role}@", 1)
        assert as_role != base
        # The committed schema snapshots answer the drift check and autogenerate runs on the development
        # database itself: no shadow, so no CREATEDB needed.
        works = run_celora("db", "migrate", env=env_for(project, as_role))
        assert works.returncode == 0, works.stdout + works.stderr
        assert "Already in sync" in works.stdout

        # No stored snapshot matches (none committed, none cached): the shadow is needed and cannot be made.
        shutil.rmtree(project / "migrations" / "snapshots")
        shutil.rmtree(project / ".celora" / "cache")
        # The local PostgreSQL would stand in (tests/schema/test_shadow_fallback.py); a file where its folder
        # should be keeps it out, so the refusal itself is what this checks.
        (project / "no-local-server").write_text("")
        no_local = {**env_for(project, as_role), "CELORA_LOCAL_DIR": str(project / "no-local-server")}
        result = run_celora("db", "migrate", env=no_local)
        assert result.returncode == 13, result.stdout + result.stderr
        assert f"The role {role} may not create databases" in result.stderr
        assert f"ALTER ROLE {role} CREATEDB" in result.stderr and "SHADOW_DATABASE_URL" in result.stderr
        assert "no committed snapshot in" in result.stderr and "celora db snapshots --write" in result.stderr

        missing = run_celora("db", "migrate", env=env_for(project, as_role.replace(owned, owned + "_missing")))
        assert missing.returncode == 13, missing.stdout + missing.stderr
        assert f"the database {owned}_missing could not be created" in missing.stderr
    finally:
        admin_execute(pg_server, f"DROP DATABASE IF EXISTS {owned} WITH (FORCE)")
        admin_execute(pg_server, f"DROP ROLE IF EXISTS {role}")


def test_behind_pgbouncer_migrate_works_on_the_direct_url_and_needs_one(pgbouncer, project, migrated_db):
    pooled = pgbouncer(db_name(migrated_db))
    result = run_celora("db", "migrate", env={**env_for(project, pooled), "DIRECT_DATABASE_URL": migrated_db})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Already in sync" in result.stdout

    without = run_celora("db", "migrate", env=env_for(project, pooled))
    assert without.returncode == 3, without.stdout + without.stderr
    assert "DIRECT_DATABASE_URL" in without.stderr


def test_migrate_refuses_production_by_setting_or_by_stamp(project, migrated_db):
    unreachable = "postgresql://celora@127.0.0.1:1/nowhere"
    by_setting = run_celora("db", "migrate", env={**env_for(project, unreachable), "CELORA_ENV": "production"})
    assert by_setting.returncode == 12, by_setting.stdout + by_setting.stderr  # refused before connecting
    assert "CELORA_ENV is 'production'" in by_setting.stderr and "migrate-deploy" in by_setting.stderr

    stamp = run_celora("db", "migrate-deploy", env={**env_for(project, migrated_db), "CELORA_ENV": "production"})
    assert stamp.returncode == 0, stamp.stdout + stamp.stderr
    by_stamp = run_celora("db", "migrate", env={**env_for(project, migrated_db), "CELORA_ENV": "development"})
    assert by_stamp.returncode == 12, by_stamp.stdout + by_stamp.stderr
    assert "the database is stamped 'production'" in by_stamp.stderr
