"""`celora db migrate` for a role without CREATEDB (a cloud development database) and no SHADOW_DATABASE_URL: the
shadow database goes on the local PostgreSQL, announced, and the drift check still works. The dev role is a
plain login role (tests/support/roles.py) that owns its database and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from celora_cli.local.server import LocalServer
from tests.schema.test_migrate_dev import columns, dev_database, env_for, project, shadow_databases  # noqa: F401
from tests.support import admin_execute, run_celora, shared_tmpdir
from tests.support.roles import drop_role_set, new_role_set

OTHER_MAJOR = Path("/usr/lib/postgresql/15/bin")  # Debian's 15 beside the wheel's 18: the versions differ


@pytest.fixture
def no_createdb(pg_server, dev_database):  # noqa: F811 - the imported fixture
    """(database, URL as a role without CREATEDB that owns the database)."""
    name, superuser_url = dev_database
    roles = new_role_set(pg_server, superuser_url, groups=("migrator",))
    login = roles.logins["migrator"]
    admin_execute(pg_server, f'CREATE DATABASE "{name}" OWNER {login}')
    try:
        yield name, roles.url("migrator"), login
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        drop_role_set(pg_server, roles)


@pytest.fixture
def local_dir():
    base = shared_tmpdir("celora-shadow-local-")
    yield base / "local"
    LocalServer(base / "local").destroy()
    shutil.rmtree(base, ignore_errors=True)


def test_without_createdb_the_local_server_holds_the_shadow_and_drift_is_still_found(
        pg_server, project, no_createdb, local_dir):  # noqa: F811
    name, url, login = no_createdb
    with psycopg.connect(url) as conn:
        assert not conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
                                ).fetchone()[0]
    env = {**env_for(project, url), "CELORA_LOCAL_DIR": str(local_dir)}
    if OTHER_MAJOR.is_dir():
        env["CELORA_PG_BIN"] = str(OTHER_MAJOR)

    # At a revision with no stored snapshot of it, the drift check has to build one: a shadow is needed.
    deployed = run_celora("db", "migrate-deploy", env=env, timeout=240)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    _without_snapshots(project)
    first = run_celora("db", "migrate", env=env, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Already in sync" in first.stdout
    assert f"The role {login} may not create databases" in first.stderr
    assert "SHADOW_DATABASE_URL is not set, so the shadow database is celora_shadow_" in first.stderr
    assert "on the local PostgreSQL" in first.stderr
    dev_major, local_major = _major(url), _major(LocalServer(local_dir).url("postgres"))
    if dev_major != local_major:  # the wheel's 18 and Debian's 15: what that means is said
        assert f"The development server runs PostgreSQL {dev_major} and the local one {local_major}" \
            in first.stderr
        assert "normalised" in first.stderr and f"replayed on {local_major}" in first.stderr
    else:
        assert "The development server runs PostgreSQL" not in first.stderr
    assert "users" in {t for t in _tables(url)}
    assert shadow_databases(pg_server) == []  # nothing was created on the development server

    # The drift check is real: a column added by hand is still found, through the local shadow.
    admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text", name)
    drifted = run_celora("db", "migrate", "--name", "x", env=env, timeout=240)
    assert drifted.returncode == 15, drifted.stdout + drifted.stderr
    assert "column users.nickname exists in the development database but not in the migration history" \
        in drifted.stderr

    local = LocalServer(local_dir)
    with psycopg.connect(local.url("postgres")) as conn:  # every shadow on the local server was dropped
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'celora_shadow_%'"
                            ).fetchone()[0] == 0


def test_when_the_local_server_cannot_be_used_either_both_causes_and_the_fix_are_named(
        project, no_createdb, tmp_path):  # noqa: F811
    name, url, login = no_createdb
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {**env_for(project, url), "CELORA_LOCAL_DIR": str(blocker)}
    deployed = run_celora("db", "migrate-deploy", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    _without_snapshots(project)  # at a revision with no stored snapshot of it, a shadow is needed
    result = run_celora("db", "migrate", env=env)
    assert result.returncode == 13, result.stdout + result.stderr
    assert f"The role {login} may not create databases" in result.stderr
    assert "could not be used either" in result.stderr and "is a file" in result.stderr
    assert "SHADOW_DATABASE_URL" in result.stderr and f"ALTER ROLE {login} CREATEDB" in result.stderr
    assert "Traceback" not in result.stderr


def _without_snapshots(root: Path) -> None:
    """No stored schema snapshot: the drift check has to build one in a shadow, which is what these tests test."""
    shutil.rmtree(root / "migrations" / "snapshots", ignore_errors=True)
    shutil.rmtree(root / ".celora" / "cache", ignore_errors=True)


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]


def _major(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
