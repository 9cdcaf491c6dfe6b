"""The `--json` contract through the real process against the real test PostgreSQL (README "JSON output"):
stdout holds exactly one JSON object, on success and on failure, with format_version 1, `ok`, rounded
numbers and no password."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.support import REPO, run_celora, shared_tmpdir

PASSWORD = "s3cretPw0rd"  # the test server trusts every local connection, so any password gets in


def with_password(url: str) -> str:
    return url.replace("postgresql://celora@", f"postgresql://celora:{PASSWORD}@", 1)


def one_object(proc) -> dict:
    data = json.loads(proc.stdout)  # exactly one JSON document, or this raises
    assert isinstance(data, dict)
    assert data["format_version"] == 1
    assert PASSWORD not in proc.stdout + proc.stderr
    return data


def assert_error(proc, code: int, error_type: str) -> dict:
    assert proc.returncode == code, proc.stdout + proc.stderr
    data = one_object(proc)
    assert data["ok"] is False
    error = data["error"]
    assert (error["code"], error["type"]) == (code, error_type)
    assert error["message"] and error["hint"]
    assert "Error:" in proc.stderr  # people reading the log still get the message
    return data


def floats(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from floats(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from floats(v, key)
    elif isinstance(value, float):
        yield key, value


def assert_rounded(data: dict) -> None:
    for key, value in floats(data):
        places = 1 if key.endswith("_ms") else 3
        assert value == round(value, places), (key, value)


# --- success -----------------------------------------------------------------------------------------------

def test_status_up_to_date(migrated_db):
    proc = run_celora("db", "status", "--json", env={"DATABASE_URL": with_password(migrated_db)})
    assert proc.returncode == 0, proc.stderr
    data = one_object(proc)
    assert data["ok"] is True and data["up_to_date"] is True and data["pending"] == []


def test_status_pending_is_a_result_not_an_error(empty_db):
    proc = run_celora("db", "status", "--json", env={"DATABASE_URL": empty_db})
    assert proc.returncode == 1, proc.stderr
    data = one_object(proc)
    assert data["ok"] is True and data["up_to_date"] is False and data["pending"]


def test_migrate_deploy(empty_db):
    proc = run_celora("db", "migrate-deploy", "--json", env={"DATABASE_URL": with_password(empty_db)})
    assert proc.returncode == 0, proc.stderr
    data = one_object(proc)
    assert data["ok"] is True and data["applied"]
    assert data["applied"][0]["name"] == "20261126090000_init"
    assert "****" in data["database"]
    assert_rounded(data)


def test_health(migrated_db):
    proc = run_celora("db", "health", "--json", env={"DATABASE_URL": with_password(migrated_db)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = one_object(proc)
    assert data["ok"] is True and data["status"] == "healthy"
    assert_rounded(data)


def test_health_unhealthy_is_a_report(pg_server):
    url = f"postgresql://celora:{PASSWORD}@127.0.0.1:1/nowhere"  # nothing listens on port 1
    proc = run_celora("db", "health", "--json", "--timeout", "3", env={"DATABASE_URL": url})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    data = one_object(proc)
    assert data["ok"] is True and data["status"] == "unhealthy"
    assert "error" not in data  # the check ran; its findings are in the report


def test_local_status(tmp_path):
    proc = run_celora("local", "status", "--json", env={"CELORA_LOCAL_DIR": str(tmp_path / "none")})
    assert proc.returncode == 32, proc.stderr  # not running
    data = one_object(proc)
    assert data["ok"] is True and data["running"] is False


# --- failure -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [("db", "status"), ("db", "migrate-deploy"), ("db", "health"),
                                     ("local", "status")], ids=" ".join)
def test_malformed_url(command):
    url = f"postgresql://app:{PASSWORD}@db.example.com:notaport/celora"
    proc = run_celora(*command, "--json", env={"DATABASE_URL": url})
    data = assert_error(proc, 3, "ConfigError")
    assert "malformed" in data["error"]["message"]
    if command == ("db", "health"):
        assert data["status"] == "unhealthy"  # health promises a status, even when the check cannot run


def test_database_missing(pg_server):
    url = with_password(pg_server.url("no_such_database_here"))
    for command in (("db", "status"), ("db", "migrate-deploy")):
        data = assert_error(run_celora(*command, "--json", env={"DATABASE_URL": url}), 6, "DatabaseNotFound")
        assert "no_such_database_here" in data["error"]["message"]


def test_unknown_role(migrated_db):
    url = migrated_db.replace("postgresql://celora@", f"postgresql://nobody_here:{PASSWORD}@", 1)
    assert_error(run_celora("db", "status", "--json", env={"DATABASE_URL": url}), 5, "AuthenticationFailed")


GOOD = '''"""good

Revision ID: {revision}
Revises: {down}
"""
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE TABLE json_contract_good (id int)")


def downgrade():
    op.execute("DROP TABLE json_contract_good")
'''

BAD = GOOD.replace('"""good', '"""bad').replace(
    'op.execute("CREATE TABLE json_contract_good (id int)")', 'op.execute("CREATE TABLE oops (")')


def _head_revision(versions: Path) -> str:
    revisions = {re.search(r'^revision = "([^"]+)"', p.read_text(), re.MULTILINE).group(1): p
                 for p in versions.glob("*.py")}
    downs = {m.group(1) for p in versions.glob("*.py")
             if (m := re.search(r'^down_revision = "([^"]+)"', p.read_text(), re.MULTILINE))}
    (head,) = set(revisions) - downs
    return head


@pytest.fixture
def migrations_with_a_failure() -> Path:
    """The repo's migrations plus a good revision and then one with an SQL syntax error."""
    base = shared_tmpdir("celora-test-migrations-")
    target = base / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    versions = target / "versions"
    head = _head_revision(versions)
    (versions / "29990101000000_good.py").write_text(GOOD.format(revision="29990101000000", down=head))
    (versions / "29990101000001_bad.py").write_text(BAD.format(revision="29990101000001", down="29990101000000"))
    yield target
    shutil.rmtree(base, ignore_errors=True)


def test_failed_migration_keeps_the_applied_list(migrated_db, migrations_with_a_failure):
    env = {"DATABASE_URL": with_password(migrated_db), "CELORA_MIGRATIONS_DIR": str(migrations_with_a_failure)}
    proc = run_celora("db", "migrate-deploy", "--json", env=env)
    data = assert_error(proc, 9, "MigrationFailed")
    error = data["error"]
    assert error["revision"] == "29990101000001"
    assert error["sqlstate"] == "42601"  # syntax_error
    assert [m["revision"] for m in error["applied"]] == ["29990101000000"]
    assert error["applied"][0]["name"] == "29990101000000_good"
    assert_rounded(data)
    assert "29990101000001_bad" in error["message"]
    # The database itself stays at the good revision.
    status = run_celora("db", "status", "--json", env=env)
    assert one_object(status)["current"] == ["29990101000000"]
