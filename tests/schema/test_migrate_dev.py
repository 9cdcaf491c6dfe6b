"""`celora db migrate` (Prisma's migrate dev) end to end: a throwaway project (its own copy of the migration
history and a models module that differs from celora's), the real CLI, a real PostgreSQL.

The real models are never edited: CELORA_MODELS points the command at a module in the throwaway project.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support import REPO, admin_execute, run_celora, run_celora_at_terminal, shared_tmpdir

TIMESTAMPED = re.compile(r"^\d{14}_[a-z0-9_]+\.py$")

# celora's models plus one column: what a developer's edit to a model looks like to `migrate`.
MODELS_WITH_NICKNAME = """
from sqlalchemy import Column, MetaData, Text

from celora_cli.db.models import Base

metadata = MetaData(naming_convention=Base.metadata.naming_convention)
for table in Base.metadata.sorted_tables:
    table.to_metadata(metadata)
metadata.tables["users"].append_column(Column("nickname", Text))
"""


@pytest.fixture
def project() -> Path:
    root = shared_tmpdir("celora-migrate-")
    shutil.copytree(REPO / "migrations", root / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__", "schema.sql"))
    (root / "dev_models.py").write_text(MODELS_WITH_NICKNAME)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dev_database(pg_server):
    """A database name that does not exist yet (migrate creates it); dropped afterwards."""
    name = f"t_dev_{uuid.uuid4().hex[:12]}"
    yield name, pg_server.url(name)
    admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def env_for(project: Path, url: str, models: str | None = None) -> dict:
    env = {"DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(project),
           "CELORA_MIGRATIONS_DIR": str(project / "migrations"), "PYTHONPATH": f"{REPO}:{project}"}
    if models:
        env["CELORA_MODELS"] = models
    return env


def versions(project: Path) -> set[str]:
    return {p.name for p in (project / "migrations" / "versions").glob("*.py")}


def columns(url: str, table: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))}


def shadow_databases(pg_server) -> list[str]:
    with psycopg.connect(pg_server.url("postgres")) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'celora_shadow_%'")]


def test_migrate_writes_one_revision_applies_it_then_is_in_sync(pg_server, project, dev_database):
    name, url = dev_database
    before = versions(project)

    # The real models: creates the database, applies the history, nothing to write (no --name needed).
    first = run_celora("db", "migrate", env=env_for(project, url))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Already in sync" in first.stdout
    assert f"Created database {name}" in first.stderr
    assert versions(project) == before

    # A model gained a column: exactly one timestamped revision, applied.
    second = run_celora("db", "migrate", "--name", "add_x", env=env_for(project, url, "dev_models:metadata"))
    assert second.returncode == 0, second.stdout + second.stderr
    new = versions(project) - before
    assert len(new) == 1, new
    (written,) = new
    assert TIMESTAMPED.match(written) and written.endswith("_add_x.py")
    body = (project / "migrations" / "versions" / written).read_text()
    assert "op.add_column('users', sa.Column('nickname', sa.Text()" in body
    assert "nickname" in columns(url, "users")
    assert "Regenerated" in second.stdout and "nickname TEXT" in (project / "migrations" / "schema.sql").read_text()
    assert "Generating" not in second.stdout  # Alembic's own progress line stays out of the result

    # Again: already in sync, nothing written.
    third = run_celora("db", "migrate", "--name", "add_x", env=env_for(project, url, "dev_models:metadata"))
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Already in sync" in third.stdout
    assert versions(project) - before == {written}
    assert shadow_databases(pg_server) == []  # every shadow database was dropped


def test_a_column_added_by_hand_is_drift_naming_table_and_column(pg_server, project, dev_database):
    name, url = dev_database
    assert run_celora("db", "migrate", env=env_for(project, url)).returncode == 0
    admin_execute(pg_server, "ALTER TABLE users ADD COLUMN nickname text", name)
    before = versions(project)

    result = run_celora("db", "migrate", "--name", "x", env=env_for(project, url))
    assert result.returncode == 15, result.stdout + result.stderr
    assert "column users.nickname exists in the development database but not in the migration history" \
        in result.stderr
    assert "celora db reset" in result.stderr
    assert versions(project) == before
    assert "nickname" in columns(url, "users")  # never reset on its own

    as_json = run_celora("db", "migrate", "--json", env=env_for(project, url))
    assert as_json.returncode == 15
    assert '"type": "DriftDetected"' in as_json.stdout and '"name": "users.nickname"' in as_json.stdout
    assert shadow_databases(pg_server) == []


def test_drift_names_an_index_an_enum_label_and_an_unknown_migration(pg_server, project, dev_database):
    name, url = dev_database
    assert run_celora("db", "migrate", env=env_for(project, url)).returncode == 0
    admin_execute(pg_server, "CREATE INDEX ix_by_hand ON users (display_name); "
                  "ALTER TYPE chain ADD VALUE 'tron'", name)
    result = run_celora("db", "migrate", env=env_for(project, url))
    assert result.returncode == 15, result.stdout + result.stderr
    assert "index users.ix_by_hand exists in the development database" in result.stderr
    assert "enum label chain.tron exists in the development database" in result.stderr

    admin_execute(pg_server, "DROP INDEX ix_by_hand; UPDATE alembic_version SET version_num = '20991231000000'",
                  name)
    result = run_celora("db", "migrate", env=env_for(project, url))
    assert result.returncode == 15
    assert "migration 20991231000000 exists in the development database" in result.stderr


def test_a_needed_name_without_a_terminal_is_a_config_error(project, dev_database):
    name, url = dev_database
    before = versions(project)
    result = run_celora("db", "migrate", env=env_for(project, url, "dev_models:metadata"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "--name" in result.stderr and "Traceback" not in result.stderr
    assert versions(project) == before


def test_enums_and_a_suspected_rename_in_a_history_of_its_own(pg_server, dev_database):
    """Enum types created, extended and dropped, and a drop + add of one type flagged (not silently lost)."""
    name, url = dev_database
    root = shared_tmpdir("celora-migrate-enums-")
    try:
        shutil.copytree(REPO / "migrations", root / "migrations",
                        ignore=shutil.ignore_patterns("__pycache__", "schema.sql", "versions"))
        (root / "migrations" / "versions").mkdir()
        stages = {
            "stage1": "color = Enum('red', 'green', name='color')\n"
                      "Table('things', metadata, Column('id', Integer, primary_key=True),"
                      " Column('title', Text), Column('color', color, server_default='red'))",
            "stage2": "color = Enum('red', 'green', 'blue', name='color')\n"
                      "Table('things', metadata, Column('id', Integer, primary_key=True),"
                      " Column('name', Text), Column('color', color, server_default='blue'))",
            "stage3": "Table('things', metadata, Column('id', Integer, primary_key=True), Column('name', Text))",
        }
        for stage, body in stages.items():
            (root / f"{stage}.py").write_text("from sqlalchemy import Column, Enum, Integer, MetaData, Table, Text\n"
                                              "metadata = MetaData()\n" + textwrap.dedent(body) + "\n")

        first = run_celora("db", "migrate", "--name", "things", env=env_for(root, url, "stage1:metadata"))
        assert first.returncode == 0, first.stdout + first.stderr
        with psycopg.connect(url) as conn:
            labels = [r[0] for r in conn.execute("SELECT unnest(enum_range(NULL::color))::text")]
        assert labels == ["red", "green"]

        second = run_celora("db", "migrate", "--name", "blue", env=env_for(root, url, "stage2:metadata"))
        assert second.returncode == 0, second.stdout + second.stderr
        body = next(p for p in (root / "migrations" / "versions").glob("*_blue.py")).read_text()
        assert "ALTER TYPE color ADD VALUE IF NOT EXISTS 'blue'" in body
        # a changed server default is part of the revision; here it uses the label added in the same revision
        assert "server_default='blue'" in body
        assert "suspected rename things.title -> things.name" in body
        assert "suspected rename things.title -> things.name" in second.stderr
        with psycopg.connect(url) as conn:
            labels = [r[0] for r in conn.execute("SELECT unnest(enum_range(NULL::color))::text")]
        assert labels == ["red", "green", "blue"]

        third = run_celora("db", "migrate", "--name", "no_color", env=env_for(root, url, "stage3:metadata"))
        assert third.returncode == 0, third.stdout + third.stderr
        body = next(p for p in (root / "migrations" / "versions").glob("*_no_color.py")).read_text()
        assert "DROP TYPE IF EXISTS color" in body
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regtype('color')").fetchone()[0] is None
        again = run_celora("db", "migrate", env=env_for(root, url, "stage3:metadata"))
        assert again.returncode == 0 and "Already in sync" in again.stdout, again.stdout + again.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_create_only_writes_without_applying_and_the_next_run_applies_it(project, dev_database):
    name, url = dev_database
    before = versions(project)
    created = run_celora("db", "migrate", "--name", "add_x", "--create-only", "--json",
                         env=env_for(project, url, "dev_models:metadata"))
    assert created.returncode == 0, created.stdout + created.stderr
    data = json.loads(created.stdout)  # exactly one JSON object on stdout
    assert data["revision_applied"] is False and not data["in_sync"]
    (written,) = versions(project) - before
    assert data["revision_file"].endswith(written)
    assert "nickname" not in columns(url, "users")

    applied = run_celora("db", "migrate", "--json", env=env_for(project, url, "dev_models:metadata"))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    data = json.loads(applied.stdout)
    assert data["ok"] and data["in_sync"] and data["applied"] == [written[:-3]]
    assert "nickname" in columns(url, "users")
    assert versions(project) - before == {written}


def test_at_a_terminal_the_name_is_asked_for(project, dev_database):
    """stdin a terminal and no CI variable: migrate asks for the name instead of failing."""
    name, url = dev_database
    before = versions(project)
    process = run_celora_at_terminal("typed_name", "db", "migrate", env=env_for(project, url, "dev_models:metadata"),
                                     cwd=project)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "Name of the new migration" in process.stderr
    (written,) = versions(project) - before
    assert written.endswith("_typed_name.py")


NICKNAME_LINE = 'metadata.tables["users"].append_column(Column("nickname", Text))'
MODELS_WITH_TOKENS = MODELS_WITH_NICKNAME.replace(NICKNAME_LINE, """
from sqlalchemy import Integer, Table
Table("tokens", metadata, Column("id", Integer, primary_key=True),
      Column("chain", metadata.tables["wallets"].c.chain.type, nullable=False))
""")


def test_a_new_table_using_an_existing_enum_type_does_not_create_it_again(project, dev_database):
    """Plain autogenerate renders sa.Enum(..., name='chain') and create_table then runs CREATE TYPE chain,
    which already exists."""
    name, url = dev_database
    (project / "token_models.py").write_text(MODELS_WITH_TOKENS)
    result = run_celora("db", "migrate", "--name", "add_tokens", env=env_for(project, url, "token_models:metadata"))
    assert result.returncode == 0, result.stdout + result.stderr
    body = next((project / "migrations" / "versions").glob("*_add_tokens.py")).read_text()
    assert "name='chain', create_type=False" in body
    assert "id" in columns(url, "tokens")
