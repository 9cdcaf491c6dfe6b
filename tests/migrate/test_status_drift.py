"""`celora db status --drift`: the shadow comparison of `db migrate`, read-only, exit 15 on drift."""

from __future__ import annotations

import json

from tests.support import admin_execute, db_name, run_celora


def test_status_drift(pg_server, migrated_db):
    clean = run_celora("db", "status", "--drift", env={"DATABASE_URL": migrated_db})
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "No drift" in clean.stdout
    admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text", db_name(migrated_db))
    drifted = run_celora("db", "status", "--drift", env={"DATABASE_URL": migrated_db})
    assert drifted.returncode == 15, drifted.stdout + drifted.stderr
    assert "Drift column users.nickname exists in the database but not in the migration history" in drifted.stdout
    data = json.loads(run_celora("db", "status", "--drift", "--json", env={"DATABASE_URL": migrated_db}).stdout)
    assert data["drift"]["drifted"] and data["drift"]["differences"][0]["name"] == "users.nickname"
    assert run_celora("db", "status", env={"DATABASE_URL": migrated_db}).returncode == 0  # without the flag: as before
