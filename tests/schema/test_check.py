"""`celora db migrate --check` (the CI gate "the models need a migration"): a throwaway project (its own copy of
the history, models modules that differ from celora's), the real CLI, a real PostgreSQL.

The promise for CI: exit 1 naming each operation when the models differ from the history's head (enum labels,
server defaults, indexes, constraints and comments included), 0 when they match; no file and no development
database written; the shadow database dropped.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.schema.test_migrate_dev import env_for, versions
from tests.support import REPO, admin_execute, run_celora, shared_tmpdir

COPY = """
from sqlalchemy import CheckConstraint, Column, DefaultClause, Enum, ForeignKey, Index, MetaData, Text, text
from sqlalchemy import UniqueConstraint

from celora_cli.db.models import Base

metadata = MetaData(naming_convention=Base.metadata.naming_convention)
for table in Base.metadata.sorted_tables:
    table.to_metadata(metadata)
"""

# A developer added a label to an enum of the models.
WITH_STUCK = COPY + """
status = metadata.tables["transactions"].c.status
status.type = Enum(*status.type.enums, "stuck", name=status.type.name, metadata=metadata)
"""

# Everything Alembic's plain autogenerate is known to miss or that a gate must see, in one edit.
WITH_EVERYTHING = COPY + """
wallets = metadata.tables["wallets"]
wallets.append_column(Column("nickname", Text, server_default=text("'main'"), comment="shown in the app"))
wallets.append_column(Column("owner_note", Text))
wallets.comment = "one row per address a user holds"
Index("ix_wallets_nickname", wallets.c.nickname)
UniqueConstraint(wallets.c.owner_note, name="uq_wallets_owner_note")
CheckConstraint("length(nickname) < 40", name="nickname_short", table=wallets)
wallets.c.label.server_default = DefaultClause(text("'unnamed'"))
wallets.c.address.comment = "as the chain spells it"
sessions = metadata.tables["sessions"]
sessions.append_column(Column("wallet_id", wallets.c.id.type, ForeignKey("wallets.id", name="fk_sessions_wallet")))
"""


@pytest.fixture
def project() -> Path:
    root = shared_tmpdir("celora-check-")
    shutil.copytree(REPO / "migrations", root / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__", "schema.sql"))
    (root / "stuck_models.py").write_text(WITH_STUCK)
    (root / "everything_models.py").write_text(WITH_EVERYTHING)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dev_database(pg_server):
    name = f"t_check_{uuid.uuid4().hex[:12]}"
    yield name, pg_server.url(name)
    admin_execute(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def databases(pg_server, pattern: str) -> list[str]:
    with psycopg.connect(pg_server.url("postgres")) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,))]


def test_an_added_enum_label_fails_the_check_until_db_migrate_writes_it(pg_server, project, dev_database):
    name, url = dev_database
    before = versions(project)

    stale = run_celora("db", "migrate", "--check", env=env_for(project, url, "stuck_models:metadata"))
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert "add enum label transaction_status 'stuck'" in stale.stdout
    assert "1 operation(s) need a migration" in stale.stdout
    assert "temporary database celora_shadow_" in stale.stderr  # announced
    # Nothing written: no file, no development database (only its server was used), no shadow left.
    assert versions(project) == before
    assert databases(pg_server, name) == []
    assert databases(pg_server, "celora_shadow_%") == []

    as_json = run_celora("db", "migrate", "--check", "--json", env=env_for(project, url, "stuck_models:metadata"))
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)  # exactly one object
    assert body["ok"] is True and body["in_sync"] is False
    assert [c["description"] for c in body["changes"]] == ["add enum label transaction_status 'stuck'"]

    written = run_celora("db", "migrate", "--name", "add_stuck", env=env_for(project, url, "stuck_models:metadata"))
    assert written.returncode == 0, written.stdout + written.stderr
    assert len(versions(project) - before) == 1

    fresh = run_celora("db", "migrate", "--check", env=env_for(project, url, "stuck_models:metadata"))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "The models match the migration history" in fresh.stdout
    assert databases(pg_server, "celora_shadow_%") == []


def test_the_project_models_match_their_history(project, dev_database):
    _name, url = dev_database
    result = run_celora("db", "migrate", "--check", "--json", env=env_for(project, url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["changes"] == []


def test_defaults_indexes_constraints_and_comments_are_each_named(project, dev_database):
    _name, url = dev_database
    result = run_celora("db", "migrate", "--check", env=env_for(project, url, "everything_models:metadata"))
    assert result.returncode == 1, result.stdout + result.stderr
    for expected in (
        "add column wallets.nickname (TEXT DEFAULT 'main')",
        "add column wallets.owner_note (TEXT)",
        "add column sessions.wallet_id (UUID)",
        "change comment of column wallets.address (None -> 'as the chain spells it')",
        "add index wallets.ix_wallets_nickname (nickname)",
        "add unique constraint wallets.uq_wallets_owner_note (owner_note)",
        "add check constraint wallets.ck_wallets_nickname_short",
        "add foreign key sessions.fk_sessions_wallet ((wallet_id) -> wallets (id))",
        "set comment on table wallets ('one row per address a user holds')",
        "change server default of column wallets.label (none -> 'unnamed')",
    ):
        assert expected in result.stdout, (expected, result.stdout + result.stderr)


def test_a_broken_models_module_is_a_config_error_not_a_traceback(project, dev_database):
    _name, url = dev_database
    (project / "broken_models.py").write_text("raise RuntimeError('half-edited')\n")
    result = run_celora("db", "migrate", "--check", "--json", env=env_for(project, url, "broken_models:metadata"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "ConfigError"
    assert "Traceback" not in result.stderr


def test_check_with_a_name_is_a_usage_error(project, dev_database):
    _name, url = dev_database
    result = run_celora("db", "migrate", "--check", "--name", "x", "--json", env=env_for(project, url))
    assert result.returncode == 64, result.stdout + result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "UsageError"
