"""`celora db push` (Prisma's db push) end to end: the real CLI, a real PostgreSQL, models modules written into a
throwaway project and named by CELORA_MODELS (the real models are never edited)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import psycopg
import pytest

from tests.schema.test_migrate_dev import MODELS_WITH_NICKNAME, columns, env_for
from tests.support import admin_execute, db_name, run_celora, run_celora_at_terminal, shared_tmpdir

HEADER = "from sqlalchemy import Column, Enum, Integer, MetaData, String, Table, Text\nmetadata = MetaData()\n"
THINGS = "Table('things', metadata, Column('id', Integer, primary_key=True), Column('title', Text){extra})\n"


@pytest.fixture
def project() -> Path:
    root = shared_tmpdir("celora-push-")
    (root / "dev_models.py").write_text(MODELS_WITH_NICKNAME)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def models(project: Path, name: str, extra: str = "", before: str = "") -> str:
    """A models module `name` holding table things (plus `extra` columns); returns its CELORA_MODELS value."""
    (project / f"{name}.py").write_text(HEADER + before + THINGS.format(extra=extra))
    return f"{name}:metadata"


def push(project: Path, url: str, model: str, *flags: str, **env: str):
    return run_celora("db", "push", *flags, env={**env_for(project, url, model), **env})


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def test_a_new_column_is_pushed_then_in_sync_and_alembic_version_untouched(project, migrated_db):
    before = query(migrated_db, "SELECT version_num FROM alembic_version")
    first = push(project, migrated_db, "dev_models:metadata")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "op.add_column('users', sa.Column('nickname', sa.Text()" in first.stdout
    assert "nickname" in columns(migrated_db, "users")

    second = push(project, migrated_db, "dev_models:metadata")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Already in sync" in second.stdout
    assert query(migrated_db, "SELECT version_num FROM alembic_version") == before


def test_the_real_models_on_a_migrated_database_are_in_sync(project, migrated_db):
    result = push(project, migrated_db, "celora_cli.db.models:Base.metadata", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["in_sync"] and data["operations"] == []


def test_dropping_a_column_with_data_needs_the_flag(project, empty_db):
    created = push(project, empty_db, models(project, "with_legacy", ", Column('legacy', Text)"))
    assert created.returncode == 0, created.stdout + created.stderr
    execute(empty_db, "INSERT INTO things (id, title, legacy) VALUES (1, 'a', 'keep'), (2, 'b', 'me'), (3, 'c', NULL)")
    without = models(project, "without_legacy")

    refused = push(project, empty_db, without)
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "--accept-data-loss" in refused.stderr and "Nothing was changed" in refused.stderr
    assert query(empty_db, "SELECT legacy FROM things ORDER BY id") == [("keep",), ("me",), (None,)]

    as_json = push(project, empty_db, without, "--json")
    assert as_json.returncode == 12
    error = json.loads(as_json.stdout)["error"]
    assert error["type"] == "Refused" and error["code"] == 12
    assert "legacy" in columns(empty_db, "things")

    accepted = push(project, empty_db, without, "--accept-data-loss", "--json")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    data = json.loads(accepted.stdout)
    assert data["data_loss"] == ["column things.legacy is dropped (2 non-null values)"]
    assert data["operations"] == ["op.drop_column('things', 'legacy')"]
    assert "legacy" not in columns(empty_db, "things")
    assert query(empty_db, "SELECT count(*) FROM things") == [(3,)]


def test_dropping_an_empty_column_needs_no_flag(project, empty_db):
    assert push(project, empty_db, models(project, "with_empty", ", Column('unused', Text)")).returncode == 0
    execute(empty_db, "INSERT INTO things (id, title) VALUES (1, 'a')")
    result = push(project, empty_db, models(project, "without_empty"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unused" not in columns(empty_db, "things")


def test_a_narrowed_type_is_a_loss(project, empty_db):
    assert push(project, empty_db, models(project, "wide")).returncode == 0
    execute(empty_db, "INSERT INTO things (id, title) VALUES (1, 'abc')")
    narrow = models(project, "narrow")
    (project / "narrow.py").write_text((project / "narrow.py").read_text().replace("Column('title', Text)",
                                                                                   "Column('title', String(5))"))
    refused = push(project, empty_db, narrow)
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "things.title changes type TEXT -> VARCHAR(5)" in refused.stderr
    assert query(empty_db, "SELECT data_type FROM information_schema.columns WHERE table_name = 'things' "
                 "AND column_name = 'title'") == [("text",)]
    accepted = push(project, empty_db, narrow, "--accept-data-loss")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert query(empty_db, "SELECT title FROM things") == [("abc",)]


def test_a_production_database_refuses_even_with_the_flag(project, empty_db):
    from celora_cli.safety.stamp import stamp_environment

    assert push(project, empty_db, models(project, "prod_legacy", ", Column('legacy', Text)")).returncode == 0
    execute(empty_db, "INSERT INTO things (id, title, legacy) VALUES (1, 'a', 'keep')")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        stamp_environment(conn, "production")
    without = models(project, "prod_without")

    refused = push(project, empty_db, without, "--accept-data-loss")
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "production" in refused.stderr and "--allow-production" in refused.stderr
    assert query(empty_db, "SELECT legacy FROM things") == [("keep",)]

    # the loudly named override, with the flag, proceeds; the stamp survives
    allowed = push(project, empty_db, without, "--accept-data-loss", "--allow-production")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "legacy" not in columns(empty_db, "things")
    assert query(empty_db, "SELECT value FROM celora_metadata WHERE key = 'environment'") == [("production",)]


def test_celora_env_production_refuses_a_push_without_loss(project, empty_db):
    result = push(project, empty_db, models(project, "fresh"), CELORA_ENV="production")
    assert result.returncode == 12, result.stdout + result.stderr
    assert "CELORA_ENV is 'production'" in result.stderr
    assert query(empty_db, "SELECT to_regclass('things')") == [(None,)]


def test_a_not_null_column_without_default_on_a_non_empty_table_is_blocked(project, empty_db):
    assert push(project, empty_db, models(project, "base")).returncode == 0
    execute(empty_db, "INSERT INTO things (id, title) VALUES (1, 'a'), (2, 'b')")
    required = models(project, "required", ", Column('code', Text, nullable=False)")

    for flags in ((), ("--accept-data-loss",)):  # no flag makes it possible
        result = push(project, empty_db, required, *flags)
        assert result.returncode == 3, result.stdout + result.stderr
        assert "things.code is new and NOT NULL without a server default" in result.stderr
        assert "table things has 2 rows" in result.stderr and "server_default" in result.stderr
        assert "Traceback" not in result.stderr
    assert "code" not in columns(empty_db, "things")

    defaulted = models(project, "defaulted", ", Column('code', Text, nullable=False, server_default='x')")
    result = push(project, empty_db, defaulted)
    assert result.returncode == 0, result.stdout + result.stderr
    assert query(empty_db, "SELECT code FROM things ORDER BY id") == [("x",), ("x",)]


def test_a_new_enum_label_used_as_the_new_default(project, empty_db):
    first = push(project, empty_db, models(project, "colors", ", Column('color', color, server_default='red')",
                                           before="color = Enum('red', 'green', name='color')\n"), "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["operations"][0] == "CREATE TYPE color AS ENUM ('red', 'green')"
    execute(empty_db, "INSERT INTO things (id, title) VALUES (1, 'a')")

    blue = models(project, "blue", ", Column('color', color, server_default='blue')",
                  before="color = Enum('red', 'green', 'blue', name='color')\n")
    second = push(project, empty_db, blue, "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    data = json.loads(second.stdout)
    assert data["enum_labels_committed_first"] == ["ALTER TYPE color ADD VALUE IF NOT EXISTS 'blue'"]
    assert any("server_default=sa.text(\"'blue'" in op or "'blue'" in op for op in data["operations"])
    assert query(empty_db, "SELECT unnest(enum_range(NULL::color))::text") == [("red",), ("green",), ("blue",)]
    execute(empty_db, "INSERT INTO things (id, title) VALUES (2, 'b')")
    assert query(empty_db, "SELECT color::text FROM things ORDER BY id") == [("red",), ("blue",)]

    again = push(project, empty_db, blue, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["in_sync"], again.stdout + again.stderr


def test_force_reset_drops_everything_then_creates_the_models(project, migrated_db):
    stamp = query(migrated_db, "SELECT value FROM celora_metadata WHERE key = 'environment'")
    assert stamp  # the template was deployed, so it is stamped
    refused = push(project, migrated_db, models(project, "reset_models"), "--force-reset")
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "--accept-data-loss" in refused.stderr
    assert query(migrated_db, "SELECT to_regclass('users') IS NOT NULL") == [(True,)]

    result = push(project, migrated_db, models(project, "reset_models"), "--force-reset", "--accept-data-loss",
                  "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["force_reset"] and data["reset_dropped"]["tables"] >= 7
    tables = {row[0] for row in query(migrated_db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"things", "celora_metadata"}  # alembic_version went with the reset; the stamp was kept
    assert query(migrated_db, "SELECT value FROM celora_metadata WHERE key = 'environment'") == stamp
    assert query(migrated_db, "SELECT to_regtype('chain')") == [(None,)]


def test_the_real_models_onto_an_empty_database(project, empty_db):
    """Every table and enum type from nothing; an enum type shared by two tables is created once."""
    result = push(project, empty_db, "celora_cli.db.models:Base.metadata")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Applied CREATE TYPE chain AS ENUM" in result.stdout
    assert query(empty_db, "SELECT to_regclass('wallets') IS NOT NULL, to_regclass('transactions') IS NOT NULL, "
                 "to_regclass('alembic_version')") == [(True, True, None)]
    again = push(project, empty_db, "celora_cli.db.models:Base.metadata")
    assert "Already in sync" in again.stdout, again.stdout + again.stderr


def test_a_missing_database_is_created_and_announced(project, pg_server):
    name = f"t_push_new_{os.getpid()}"
    url = pg_server.url(name)
    try:
        result = push(project, url, models(project, "brand_new"), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["created_database"] is True
        assert f"Created database {name}" in result.stderr
        assert "id" in columns(url, "things")
    finally:
        admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_dropped_table_with_rows_and_its_unused_enum_type(project, empty_db):
    colors = models(project, "table_colors", ", Column('color', color)", before="color = Enum('red', name='color')\n")
    assert push(project, empty_db, colors).returncode == 0
    execute(empty_db, "INSERT INTO things (id, title, color) VALUES (1, 'a', 'red'), (2, 'b', NULL)")
    others = "Table('others', metadata, Column('id', Integer, primary_key=True))\n"
    (project / "no_things.py").write_text(HEADER + others)

    refused = push(project, empty_db, "no_things:metadata")
    assert refused.returncode == 12, refused.stdout + refused.stderr
    assert "table things is dropped (2 rows)" in refused.stderr
    assert query(empty_db, "SELECT count(*) FROM things") == [(2,)]
    assert query(empty_db, "SELECT to_regclass('others')") == [(None,)]  # nothing of the plan ran

    accepted = push(project, empty_db, "no_things:metadata", "--accept-data-loss")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "DROP TYPE color" in accepted.stdout
    assert query(empty_db, "SELECT to_regclass('things'), to_regtype('color'), to_regclass('others') IS NOT NULL") \
        == [(None, None, True)]


def test_at_a_terminal_the_prompt_names_the_database_and_the_losses(project, empty_db):
    assert push(project, empty_db, models(project, "t_legacy", ", Column('legacy', Text)")).returncode == 0
    execute(empty_db, "INSERT INTO things (id, title, legacy) VALUES (1, 'a', 'keep')")
    env = env_for(project, empty_db, models(project, "t_without"))

    declined = run_celora_at_terminal("n", "db", "push", env=env)
    assert declined.returncode == 12, declined.stdout + declined.stderr
    assert "column things.legacy is dropped (1 non-null value)" in declined.stderr
    assert db_name(empty_db) in declined.stderr and "Proceed?" in declined.stderr
    assert "legacy" in columns(empty_db, "things")

    accepted = run_celora_at_terminal("y", "db", "push", env=env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "legacy" not in columns(empty_db, "things")


@pytest.mark.pgbouncer
def test_push_through_a_pooler_is_refused(project, pgbouncer, migrated_db):
    result = run_celora("db", "push", env={**env_for(project, migrated_db, "dev_models:metadata"),
                                           "DATABASE_URL": pgbouncer(db_name(migrated_db), flag=False)})
    assert result.returncode == 12, result.stdout + result.stderr
    assert "connection pooler" in result.stderr and "Traceback" not in result.stderr
    assert "nickname" not in columns(migrated_db, "users")


@pytest.mark.parametrize("old, new, narrower", [
    ("Text()", "String(5)", True), ("String(5)", "Text()", False), ("String(5)", "String(10)", False),
    ("String(10)", "String(5)", True), ("BigInteger()", "Integer()", True), ("Integer()", "BigInteger()", False),
    ("Integer()", "Numeric()", False), ("Numeric(10, 2)", "Numeric(12, 2)", False),
    ("Numeric(10, 2)", "Numeric(10, 0)", True), ("Text()", "Integer()", True),
])
def test_narrows(old, new, narrower):
    import sqlalchemy  # noqa: F401 - the types below are evaluated from their names

    from celora_cli.schema.push import narrows

    assert narrows(eval(f"sqlalchemy.{old}"), eval(f"sqlalchemy.{new}")) is narrower
