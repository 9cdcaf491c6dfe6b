"""The drift gate of `celora db migrate-deploy` (issue 20): before applying, under the migration lock, the live
schema is compared with the schema the history builds at the database's revision (a committed snapshot)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from celora_cli.migrate.history import read_history
from tests.support import REPO, admin_execute, db_name, run_celora, shared_tmpdir
from tests.support.roles import apply_roles, drop_role_set, new_role_set

PENDING = '''"""gate pending"""
from alembic import op

revision = "20991231000000"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE gate_pending (id bigint PRIMARY KEY)")


def downgrade() -> None:
    op.execute("DROP TABLE gate_pending")
'''


@pytest.fixture
def project() -> Path:
    """The repo's history (and its committed snapshots) plus one pending migration on top."""
    root = shared_tmpdir("celora-gate-")
    shutil.copytree(REPO / "migrations", root / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__", "schema.sql"))
    (head,) = read_history(REPO / "migrations" / "versions").heads
    (root / "migrations" / "versions" / "20991231000000_gate_pending.py").write_text(PENDING.format(down=head))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def env_for(project: Path, url: str) -> dict:
    return {"DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(project),
            "CELORA_MIGRATIONS_DIR": str(project / "migrations")}


def state(url: str) -> tuple[list[str], int, bool]:
    """alembic_version, journal rows, and whether the pending migration's table exists."""
    with psycopg.connect(url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        journal = conn.execute("SELECT count(*) FROM celora_migrations").fetchone()[0]
        applied = conn.execute("SELECT to_regclass('gate_pending') IS NOT NULL").fetchone()[0]
    return versions, journal, applied


def test_a_column_added_by_hand_stops_the_deploy_naming_it_and_allow_drift_applies(pg_server, project, migrated_db):
    admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text; CREATE INDEX ix_by_hand ON wallets (chain)",
                  db_name(migrated_db))
    before = state(migrated_db)

    refused = run_celora("db", "migrate-deploy", env=env_for(project, migrated_db))
    assert refused.returncode == 15, refused.stdout + refused.stderr
    assert "column users.nickname exists in the database but not in the migration history at" in refused.stderr
    assert "index wallets.ix_by_hand exists in the database" in refused.stderr
    assert "--allow-drift" in refused.stderr and "Traceback" not in refused.stderr
    assert state(migrated_db) == before  # nothing applied, nothing journaled

    as_json = run_celora("db", "migrate-deploy", "--json", env=env_for(project, migrated_db))
    assert as_json.returncode == 15
    error = json.loads(as_json.stdout)["error"]
    assert error["type"] == "DriftDetected"
    assert {(d["kind"], d["name"], d["change"]) for d in error["differences"]} == {
        ("column", "users.nickname", "extra"), ("index", "wallets.ix_by_hand", "extra")}

    allowed = run_celora("db", "migrate-deploy", "--allow-drift", env=env_for(project, migrated_db))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert state(migrated_db)[0] == ["20991231000000"] and state(migrated_db)[2]


def test_a_matching_database_deploys_and_an_empty_one_has_nothing_to_compare(project, migrated_db, empty_db):
    deployed = run_celora("db", "migrate-deploy", "--json", env=env_for(project, migrated_db))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert [m["revision"] for m in json.loads(deployed.stdout)["applied"]] == ["20991231000000"]

    fresh = run_celora("db", "migrate-deploy", env=env_for(project, empty_db))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert state(empty_db)[0] == ["20991231000000"]
    # up to date: nothing to apply, so nothing to guard (a no-op deploy stays as cheap as before)
    admin_execute_url(empty_db, "ALTER TABLE users ADD COLUMN later text")
    again = run_celora("db", "migrate-deploy", env=env_for(project, empty_db))
    assert again.returncode == 0 and "No pending migrations" in again.stdout, again.stdout + again.stderr


def admin_execute_url(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def test_an_edited_applied_migration_is_the_journal_check_first(project, migrated_db):
    """An applied file edited since: exit 14 (the journal) before the gate could compare anything."""
    edited = next((project / "migrations" / "versions").glob("*_schema_corrections.py"))
    marker = "def upgrade() -> None:\n"
    index = "    op.execute('CREATE INDEX ix_e ON users (email)')\n"
    edited.write_text(edited.read_text().replace(marker, marker + index))
    before = state(migrated_db)
    result = run_celora("db", "migrate-deploy", env=env_for(project, migrated_db))
    assert result.returncode == 14, result.stdout + result.stderr
    assert "schema_corrections" in result.stderr
    assert state(migrated_db) == before


def test_the_gate_as_the_least_privileged_migrator_with_no_shadow_needed(pg_server, project, migrated_db):
    """CI deploys as the migrator's login (no superuser, no CREATEDB): the committed snapshot answers."""
    roles = new_role_set(pg_server, migrated_db, groups=("migrator", "app"))
    try:
        apply_roles(roles)
        as_migrator = env_for(project, roles.url("migrator"))
        admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text", db_name(migrated_db))
        refused = run_celora("db", "migrate-deploy", env=as_migrator)
        assert refused.returncode == 15, refused.stdout + refused.stderr
        assert "column users.nickname" in refused.stderr
        admin_execute(pg_server, "ALTER TABLE users DROP COLUMN nickname", db_name(migrated_db))
        deployed = run_celora("db", "migrate-deploy", env=as_migrator)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert state(migrated_db)[0] == ["20991231000000"]
    finally:
        drop_role_set(pg_server, roles)


def test_without_a_matching_snapshot_and_without_createdb_the_error_says_what_to_commit(pg_server, project,
                                                                                        migrated_db):
    shutil.rmtree(project / "migrations" / "snapshots")
    roles = new_role_set(pg_server, migrated_db, groups=("migrator", "app"))
    try:
        apply_roles(roles)
        # The local PostgreSQL would stand in for the shadow (schema/shadow_server.py); a file where its folder
        # should be keeps it out, so the refusal itself is what this checks.
        (project / "no-local-server").write_text("")
        env = {**env_for(project, roles.url("migrator")), "CELORA_LOCAL_DIR": str(project / "no-local-server")}
        result = run_celora("db", "migrate-deploy", env=env)
        assert result.returncode == 13, result.stdout + result.stderr
        assert "may not create databases" in result.stderr
        assert "no committed snapshot in" in result.stderr and "celora db snapshots --write" in result.stderr
        assert "--allow-drift" in result.stderr and "Traceback" not in result.stderr
        assert state(migrated_db)[0] != ["20991231000000"]
    finally:
        drop_role_set(pg_server, roles)
