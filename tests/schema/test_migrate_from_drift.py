"""`celora db migrate --from-drift`: a development database changed by hand becomes a migration, marked applied there,
its data kept; without the flag (and no terminal) the drift still stops the run, naming the option."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.schema.test_migrate_dev import columns, dev_database, env_for, project, versions  # noqa: F401
from tests.support import admin_execute, run_celora, run_celora_at_terminal

NICKNAMES = ("Al", "Bö 'the' second")


@pytest.fixture
def drifted(pg_server, project, dev_database):  # noqa: F811 - the imported fixtures
    """(database, URL, project): at head, two users, then a column added by hand and filled."""
    name, url = dev_database
    first = run_celora("db", "migrate", env=env_for(project, url))
    assert first.returncode == 0, first.stdout + first.stderr
    with psycopg.connect(url) as conn:
        for index in range(len(NICKNAMES)):
            conn.execute("INSERT INTO users (firebase_uid) VALUES (%s)", (f"uid-{index}",))
    admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text", name)
    with psycopg.connect(url) as conn:
        for index, nickname in enumerate(NICKNAMES):
            conn.execute("UPDATE users SET nickname = %s WHERE firebase_uid = %s", (nickname, f"uid-{index}"))
    return name, url, project


def nicknames(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT nickname FROM users ORDER BY firebase_uid")]


def current(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_a_hand_added_column_becomes_a_migration_and_keeps_its_values(pg_server, drifted):
    name, url, root = drifted
    before = versions(root)
    env = env_for(root, url, "dev_models:metadata")  # the models have the column too (a `db push`, say)

    refused = run_celora("db", "migrate", "--name", "x", env=env)
    assert refused.returncode == 15, refused.stdout + refused.stderr
    assert "column users.nickname exists in the development database" in refused.stderr
    assert "celora db migrate --from-drift" in refused.stderr and "celora db reset" in refused.stderr
    assert versions(root) == before

    result = run_celora("db", "migrate", "--from-drift", "--name", "x", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (written,) = versions(root) - before  # the models match once the drift is in the history: one file
    assert written.endswith("_from_drift.py")
    body = (root / "migrations" / "versions" / written).read_text()
    assert "op.add_column('users', sa.Column('nickname', sa.TEXT()" in body
    assert "op.drop_column('users', 'nickname')" in body.split("def downgrade")[1]
    assert "from the drift, marked applied" in result.stdout and "Already in sync" in result.stdout
    assert "marked it applied there (nothing ran on the database" in result.stderr
    assert nicknames(url) == list(NICKNAMES)
    assert current(url) == written[:-3].split("_", 1)[0]
    with psycopg.connect(url) as conn:
        journal = conn.execute("SELECT status, checksum FROM celora_migrations WHERE name = %s",
                               (written[:-3],)).fetchall()
    assert [row[0] for row in journal] == ["resolved_applied"] and journal[0][1]

    status = run_celora("db", "status", "--drift", env=env)
    assert status.returncode == 0 and "No drift" in status.stdout, status.stdout + status.stderr
    again = run_celora("db", "migrate", env=env)
    assert again.returncode == 0 and "Already in sync" in again.stdout, again.stdout + again.stderr

    # The history now builds the column: a fresh database deployed from it has it.
    fresh = f"t_fresh_{uuid.uuid4().hex[:10]}"
    admin_execute(pg_server, f'CREATE DATABASE "{fresh}"')
    try:
        deployed = run_celora("db", "migrate-deploy", env=env_for(root, pg_server.url(fresh)))
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "nickname" in columns(pg_server.url(fresh), "users")
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


def test_with_a_pending_migration_it_is_applied_first_and_the_drift_goes_after_it(pg_server, drifted):
    name, url, root = drifted
    head = current(url)
    admin_execute(pg_server, "ALTER TABLE users DROP COLUMN nickname", name)  # drift only after the rollback
    back = run_celora("db", "rollback", "--steps", "1", "--force", env=env_for(root, url))
    assert back.returncode == 0, back.stdout + back.stderr
    admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text; "
                  "UPDATE users SET nickname = 'kept'", name)
    before = versions(root)
    result = run_celora("db", "migrate", "--from-drift", env=env_for(root, url, "dev_models:metadata"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Applied {head}" in result.stdout  # the pending migration ran first
    (written,) = versions(root) - before
    assert f"down_revision = '{head}'" in (root / "migrations" / "versions" / written).read_text()
    assert current(url) == written.split("_", 1)[0]
    assert nicknames(url) == ["kept", "kept"]
    status = run_celora("db", "status", "--drift", env=env_for(root, url))
    assert status.returncode == 0 and "No drift" in status.stdout, status.stdout + status.stderr


def test_an_index_and_an_enum_label_by_hand_and_json(pg_server, drifted):
    name, url, root = drifted
    admin_execute(pg_server, "ALTER TABLE users DROP COLUMN nickname; CREATE INDEX ix_by_hand ON users "
                  "(display_name); ALTER TYPE chain ADD VALUE 'tron'", name)
    # The models (celora's own) have neither: after the drift's migration, the models' revision takes the index
    # away again (written, not applied: --create-only).
    result = run_celora("db", "migrate", "--from-drift", "--name", "back_to_models", "--create-only", "--json",
                        env=env_for(root, url))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)  # one JSON object on stdout
    assert data["ok"] and data["drift_file"].endswith("_from_drift.py")
    body = Path(data["drift_file"]).read_text()
    assert "op.create_index('ix_by_hand', 'users', ['display_name']" in body
    assert "ALTER TYPE chain ADD VALUE IF NOT EXISTS 'tron'" in body
    assert "op.drop_index(op.f('ix_by_hand')" in Path(data["revision_file"]).read_text().split("def downgrade")[0]
    status = run_celora("db", "status", "--drift", env=env_for(root, url))
    assert status.returncode == 1, status.stdout + status.stderr  # 1: back_to_models is pending
    assert "No drift" in status.stdout


def test_what_autogenerate_cannot_follow_stops_with_no_file_and_nothing_marked(pg_server, drifted):
    name, url, root = drifted
    at = current(url)
    before = versions(root)
    admin_execute(pg_server, "CREATE FUNCTION by_hand() RETURNS int LANGUAGE sql AS 'SELECT 1'", name)
    result = run_celora("db", "migrate", "--from-drift", env=env_for(root, url, "dev_models:metadata"))
    assert result.returncode == 15, result.stdout + result.stderr
    assert "function by_hand() exists in the development database" in result.stderr
    assert "was removed and nothing was marked applied" in result.stderr
    assert "celora db resolve --applied" in result.stderr
    assert versions(root) == before and current(url) == at
    assert nicknames(url) == list(NICKNAMES)


def test_a_revision_this_checkout_lacks_cannot_become_a_migration(pg_server, drifted):
    name, url, root = drifted
    admin_execute(pg_server, "UPDATE alembic_version SET version_num = '20991231000000'", name)
    result = run_celora("db", "migrate", "--from-drift", env=env_for(root, url))
    assert result.returncode == 15, result.stdout + result.stderr
    assert "is at a revision this checkout does not have (20991231000000)" in result.stderr


def test_at_a_terminal_the_drift_is_offered_as_a_migration(drifted):
    name, url, root = drifted
    before = versions(root)
    process = run_celora_at_terminal("y", "db", "migrate", env=env_for(root, url, "dev_models:metadata"), cwd=root)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "Write the migration from the drift?" in process.stderr
    assert "column users.nickname exists in the development database" in process.stderr
    (written,) = versions(root) - before
    assert written.endswith("_from_drift.py") and nicknames(url) == list(NICKNAMES)


def test_a_column_renamed_by_hand_is_flagged_in_the_drift_migration(pg_server, drifted):
    """Marked applied here it loses nothing, but wherever else the file runs its drop + add would: flagged."""
    from tests.schema.test_migrate_renames import RENAMED

    name, url, root = drifted
    (root / "renamed.py").write_text(RENAMED)
    admin_execute(pg_server, "ALTER TABLE users DROP COLUMN nickname; "
                  "ALTER TABLE users RENAME COLUMN photo_url TO avatar_url", name)
    result = run_celora("db", "migrate", "--from-drift", env=env_for(root, url, "renamed:metadata"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "_from_drift.py: suspected rename users.photo_url -> users.avatar_url (both TEXT)" in result.stderr
    assert "replace them with op.alter_column('users', 'photo_url', new_column_name='avatar_url') in the file" \
        in result.stderr
    assert "--rename" not in result.stderr  # the file is already marked applied: a next run's flag would not reach it
    assert "Already in sync" in result.stdout
