"""The models and the migrations build the same schema, compared by `pg_dump --schema-only`.

Alembic's compare_metadata cannot see CHECK constraints, enum labels, partial-index predicates, triggers or
functions; pg_dump prints all of them, so any difference between the two schemas fails here with a diff.
"""

from __future__ import annotations

import difflib
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from celora_cli.db.models import Base
from tests.support import db_name, settings_for

INIT = "20261126090000"

# Lines that differ between any two dumps and say nothing about the schema: session settings, and
# psql's \restrict / \unrestrict guards (a random key per dump since PostgreSQL 15.14).
NOISE = re.compile(r"^(SET |SELECT pg_catalog\.set_config|\\restrict |\\unrestrict )")


def schema_dump(pg_server, url: str) -> list[str]:
    """The schema as pg_dump prints it, minus Alembic's and celora's bookkeeping tables and per-dump noise.

    pg_dump from the server's own bin directory, so its version matches the server's; a server-only build
    (make test-compat PG=14) has none, and then the one celora's backups would use is taken.
    """
    pg_dump = pg_server.bin_dir / "pg_dump"
    if not pg_dump.exists():
        from celora_cli.local.binaries import version_key
        from celora_cli.ops.backup.tools import find_client_tools

        major = version_key(pg_server.binaries.version)[0]
        pg_dump = Path(find_client_tools(settings_for(url), server_major=major, needed_for="-").path("pg_dump"))
    result = subprocess.run(
        [str(pg_dump), "--schema-only", "--no-owner", "--no-privileges",
         "--exclude-table=public.alembic_version", "--exclude-table=public.celora_metadata",
         "--exclude-table=public.celora_migrations*",
         "--dbname", pg_server.url(db_name(url))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not NOISE.match(line)]
    return collapse_blank_lines(lines)


def collapse_blank_lines(lines: list[str]) -> list[str]:
    collapsed: list[str] = []
    for line in lines:
        if line.strip() or (collapsed and collapsed[-1].strip()):
            collapsed.append(line)
    return collapsed


def assert_same_schema(expected: list[str], actual: list[str], expected_name: str, actual_name: str) -> None:
    diff = "\n".join(difflib.unified_diff(expected, actual, expected_name, actual_name, lineterm=""))
    if diff:
        pytest.fail(f"{expected_name} and {actual_name} differ (- {expected_name}, + {actual_name}):\n{diff}",
                    pytrace=False)


def migrate(url: str, action: str, target: str) -> None:
    """alembic upgrade/downgrade on celora's direct connection, as migrate-deploy runs it."""
    from alembic import command

    from celora_cli.db.engine import get_direct_engine
    from celora_cli.migrate.scripts import alembic_config

    settings = settings_for(url)
    engine = get_direct_engine(settings)
    try:
        with engine.connect() as conn:
            getattr(command, action)(alembic_config(settings, connection=conn), target)
            conn.commit()
    finally:
        engine.dispose()


def on_metadata(url: str, action: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            getattr(Base.metadata, action)(conn)
    finally:
        engine.dispose()


def create_all(url: str) -> None:
    on_metadata(url, "create_all")


def test_migrations_and_models_build_the_same_schema(pg_server, migrated_db, empty_db):
    create_all(empty_db)
    migrated = schema_dump(pg_server, migrated_db)
    from_models = schema_dump(pg_server, empty_db)
    # The dumps really hold the schema, including what Alembic's comparison cannot see.
    for expected in ("CREATE TABLE public.users (", "CREATE FUNCTION public.celora_set_updated_at()",
                     "CREATE TRIGGER trg_wallets_set_updated_at", "ck_wallets_evm_address_lowercase CHECK"):
        assert any(expected in line for line in migrated), expected
    assert_same_schema(migrated, from_models, "migrations", "models")


def test_each_migration_downgrades_to_the_schema_before_it(pg_server, migrated_db, empty_db):
    """head -> init gives exactly the schema init alone builds; init -> head again gives head's."""
    at_head = schema_dump(pg_server, migrated_db)
    migrate(empty_db, "upgrade", INIT)
    init_only = schema_dump(pg_server, empty_db)
    assert init_only != at_head

    migrate(migrated_db, "downgrade", INIT)
    assert_same_schema(init_only, schema_dump(pg_server, migrated_db), "init", "head downgraded to init")
    migrate(migrated_db, "upgrade", "head")
    assert_same_schema(at_head, schema_dump(pg_server, migrated_db), "head", "init upgraded to head again")


def test_create_all_twice_then_drop_all_leaves_nothing(pg_server, empty_db):
    """The trigger function rides on the metadata's DDL events: created once, dropped with the tables."""
    create_all(empty_db)
    create_all(empty_db)  # checkfirst for tables; the function is replaced, not duplicated
    on_metadata(empty_db, "drop_all")
    leftovers = [line for line in schema_dump(pg_server, empty_db) if line.startswith("CREATE ")]
    assert leftovers == []
