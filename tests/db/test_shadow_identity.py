"""SHADOW_DATABASE_URL spelled differently from DATABASE_URL but reaching the same database (localhost vs
127.0.0.1, a TCP port mapping) is refused by asking the servers, before anything is dropped (issue 16, item 5).

Everything runs as a non-superuser login role that owns the development database (CREATEDB, as a developer's
role would have), not as the suite's superuser: the role that would really lose its tables."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from celora_cli.db.identity import same_database
from tests.support import REPO, admin_execute, run_celora, shared_tmpdir
from tests.support.relay import Relay


@pytest.fixture
def project() -> Path:
    root = shared_tmpdir("celora-shadow-")
    # no schema snapshots: the drift check must build its expected schema in a shadow, the thing under test
    shutil.copytree(REPO / "migrations", root / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__", "schema.sql", "snapshots"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def developer(pg_server):
    """(role, url as that role) of a development database the role owns, migrated by it, holding one user."""
    role = f"dev_{uuid.uuid4().hex[:10]}"
    name = f"t_devshadow_{uuid.uuid4().hex[:10]}"
    admin_execute(pg_server, f"CREATE ROLE {role} LOGIN CREATEDB NOSUPERUSER")
    admin_execute(pg_server, f'CREATE DATABASE "{name}" OWNER {role}')
    url = pg_server.url(name).replace("://celora@", f"://{role}@", 1)
    try:
        deployed = run_celora("db", "migrate-deploy", env={"DATABASE_URL": url})
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
            conn.execute("INSERT INTO users (firebase_uid, email) VALUES ('uid-dev', 'dev@celora.io')")
        yield role, url
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_execute(pg_server, f"DROP ROLE IF EXISTS {role}")


def fingerprint(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        users = conn.execute("SELECT email FROM users").fetchall()
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    return tables, users, revision


def env_for(project: Path, url: str, shadow: str) -> dict:
    return {"DATABASE_URL": url, "SHADOW_DATABASE_URL": shadow, "CELORA_PROJECT_ROOT": str(project),
            "CELORA_MIGRATIONS_DIR": str(project / "migrations")}


def spelled(url: str, host: str, port: int) -> str:
    """The same URL with another host:port."""
    scheme, rest = url.split("://", 1)
    credentials, after = rest.split("@", 1)
    return f"{scheme}://{credentials}@{host}:{port}/{after.split('/', 1)[1]}"


COMMANDS = [("db", "migrate"), ("db", "status", "--drift")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[1:]))
@pytest.mark.parametrize("path", ["localhost", "relay"])
def test_another_spelling_of_the_development_database_is_refused_and_nothing_is_dropped(
        pg_server, project, developer, command, path):
    _, url = developer
    before = fingerprint(url)
    assert before[0] >= 6 and before[1] == [("dev@celora.io",)]
    with Relay.tcp(pg_server.port) as relay:
        shadow = spelled(url, "localhost", pg_server.port) if path == "localhost" else \
            spelled(url, "127.0.0.1", relay.port)
        assert shadow != url
        result = run_celora(*command, env=env_for(project, url, shadow))
        if path == "relay":
            assert relay.accepted > 0  # the shadow was really reached through the mapped port
    assert result.returncode == 3, result.stdout + result.stderr
    assert "SHADOW_DATABASE_URL" in result.stderr and "is the development database itself" in result.stderr
    assert "system identifier" in result.stderr and "nothing was dropped" in result.stderr
    assert "Traceback" not in result.stderr
    assert fingerprint(url) == before


def test_without_pg_control_system_the_advisory_lock_probe_still_refuses(pg_server, project, developer):
    """A managed provider may revoke pg_control_system(): the probe answers instead, as the same role."""
    role, url = developer
    name = url.rsplit("/", 1)[1]
    admin_execute(pg_server, "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC", name)
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT system_identifier FROM pg_control_system()")
    before = fingerprint(url)
    result = run_celora("db", "migrate", env=env_for(project, url, spelled(url, "localhost", pg_server.port)))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "advisory lock" in result.stderr and "nothing was dropped" in result.stderr
    assert fingerprint(url) == before


def test_both_answers_tell_a_different_database_apart(pg_server, developer):
    """The check is not a blanket refusal: another database on the same server is a different one, by the
    identity and by the probe (as the same non-superuser role)."""
    role, url = developer
    other = f"t_other_{uuid.uuid4().hex[:10]}"
    admin_execute(pg_server, f'CREATE DATABASE "{other}" OWNER {role}')
    try:
        other_url = spelled(url, "localhost", pg_server.port).rsplit("/", 1)[0] + f"/{other}"
        same_spelled = spelled(url, "localhost", pg_server.port)
        with psycopg.connect(url, autocommit=True) as dev, psycopg.connect(other_url, autocommit=True) as shadow, \
                psycopg.connect(same_spelled, autocommit=True) as alias:
            assert same_database(dev, alias).same is True
            assert same_database(dev, shadow).same is False
            for conn in (dev, shadow):
                admin_execute(pg_server, "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC",
                              conn.info.dbname)
            answer = same_database(dev, shadow)
            assert answer.same is False and "advisory lock" in answer.evidence
            answer = same_database(dev, alias)
            assert answer.same is True and "advisory lock" in answer.evidence
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_a_shadow_of_its_own_spelled_with_localhost_still_works(pg_server, project, developer):
    role, url = developer
    shadow = f"t_ownshadow_{uuid.uuid4().hex[:10]}"
    admin_execute(pg_server, f'CREATE DATABASE "{shadow}" OWNER {role}')
    try:
        shadow_url = spelled(url, "localhost", pg_server.port).rsplit("/", 1)[0] + f"/{shadow}"
        result = run_celora("db", "status", "--drift", env=env_for(project, url, shadow_url))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "is the development database itself" not in result.stderr
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{shadow}" WITH (FORCE)')
