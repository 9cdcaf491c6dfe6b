"""Any revision id Alembic accepts works in every command, through the real `celora` process: a history that
started elsewhere with Alembic's own hex ids (ae1027a6acf), and one whose head is stamped far in the future with
an impossible time (29990101000199: second 99, which made `db migrate` exit 70 with "unconverted data remains").

Each test copies the repo's project (migrations, lint-allow.toml) into a folder of its own, so the repo's
history is never written; a models module with one extra table makes `db migrate` write a revision."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import psycopg
import pytest

from tests.support import REPO, run_celora, shared_tmpdir

# The repo's history, each id given a hex id of the form `alembic revision` makes (the history grows: derived).
_HISTORY = sorted(path.stem.split("_", 1) for path in (REPO / "migrations" / "versions").glob("*.py"))
HEX = dict(zip((timestamp for timestamp, _ in _HISTORY),
               ("ae1027a6acf", "1975ea83b712", "3adcc9a56557", "4b8e0f2d9c61", "5c3a7e19d0b4", "6d2f8a0c1e57",
                "7e1b9c3d2f68", "8f0a1b2c3d79"), strict=False))
HISTORY_HEAD = _HISTORY[-1][0]
HEX_NAMES = {HEX[timestamp]: f"{HEX[timestamp]}_{slug}" for timestamp, slug in _HISTORY}
FUTURE = "29990101000199"
EXTRA_MODELS = '''
from sqlalchemy import Column, Integer, Table

from celora_cli.db.models import Base

Table("revision_ids_extra", Base.metadata, Column("id", Integer, primary_key=True))
metadata = Base.metadata
'''
FUTURE_MIGRATION = f'''"""future

Revision ID: {FUTURE}
Revises: {HISTORY_HEAD}
"""
from alembic import op

revision = "{FUTURE}"
down_revision = "{HISTORY_HEAD}"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE TABLE revision_ids_future (id int)")


def downgrade():
    op.execute("DROP TABLE revision_ids_future")
'''


@pytest.fixture
def project():
    base = shared_tmpdir("celora-revision-ids-")
    shutil.copytree(REPO / "migrations", base / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    (base / "extra_models.py").write_text(EXTRA_MODELS)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def hex_history(project: Path) -> None:
    """The same schema, as a project that started with `alembic revision` would have it: hex ids and names."""
    versions = project / "migrations" / "versions"
    for path in sorted(versions.glob("*.py")):
        timestamp, slug = path.stem.split("_", 1)
        text = path.read_text()
        for old, new in HEX.items():
            text = text.replace(old, new)
        path.unlink()
        (versions / f"{HEX[timestamp]}_{slug}.py").write_text(text)
    allow = project / "migrations" / "lint-allow.toml"
    text = allow.read_text()
    for old, new in HEX.items():
        text = text.replace(old, new)
    allow.write_text(text)


def celora(project: Path, database: str, *args: str):
    env = {"DATABASE_URL": database, "CELORA_ENV": "development", "CELORA_PROJECT_ROOT": str(project),
           "CELORA_MODELS": "extra_models:metadata", "PYTHONPATH": f"{REPO}:{project}", "CI": "true"}
    done = run_celora(*args, env=env, cwd=project)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    return done


def ok(done, code: int = 0) -> dict:
    assert done.returncode == code, done.stdout + done.stderr
    return json.loads(done.stdout)


def new_revision_file(project: Path, before: set[Path]) -> Path:
    (created,) = set((project / "migrations" / "versions").glob("*.py")) - before
    return created


def test_a_history_with_hex_ids_works_in_every_command(project, empty_db):
    hex_history(project)
    ids = list(HEX.values())
    assert len(ids) == len(_HISTORY) >= 3
    init, corrections, audit, head = ids[0], ids[1], ids[2], ids[-1]
    assert ok(celora(project, empty_db, "db", "status", "--json"), 1)["head"] == head
    applied = ok(celora(project, empty_db, "db", "migrate-deploy", "--json"))["applied"]
    assert [m["revision"] for m in applied] == ids
    assert ok(celora(project, empty_db, "db", "lint", "--json"))["findings"] == []
    assert ok(celora(project, empty_db, "db", "status", "--drift", "--json"))["up_to_date"]
    assert ok(celora(project, empty_db, "db", "health", "--json"))["status"] == "healthy"

    versions = set((project / "migrations" / "versions").glob("*.py"))
    migrated = ok(celora(project, empty_db, "db", "migrate", "--name", "add extra", "--json"))
    created = new_revision_file(project, versions)
    new_id = created.stem.split("_", 1)[0]
    assert re.fullmatch(r"\d{14}", new_id) and created.name == f"{new_id}_add_extra.py"  # a timestamp, its name
    assert f"revision = '{new_id}'" in created.read_text() and f"down_revision = '{head}'" in created.read_text()
    assert migrated["revision_applied"]

    undone = ok(celora(project, empty_db, "db", "rollback", "--to", HEX_NAMES[corrections], "--force", "--json"))
    assert [m["revision"] for m in undone["undone"]] == [new_id, *reversed(ids[2:])]
    assert undone["current"] == [corrections]
    assert ok(celora(project, empty_db, "db", "rollback", "--to", init, "--force", "--json"))["current"] == [init]
    resolved = celora(project, empty_db, "db", "resolve", "--rolled-back", HEX_NAMES[audit], "--json")
    assert resolved.returncode == 12 and "no failed run" in json.loads(resolved.stdout)["error"]["message"]
    assert ok(celora(project, empty_db, "db", "generate", "--check", "--json"))["up_to_date"]
    assert ok(celora(project, empty_db, "db", "migrate-deploy", "--json"))["current"] == [new_id]


def test_a_head_stamped_in_the_future_with_an_impossible_time(project, empty_db):
    (project / "migrations" / "versions" / f"{FUTURE}_future.py").write_text(FUTURE_MIGRATION)
    assert ok(celora(project, empty_db, "db", "migrate-deploy", "--json"))["current"] == [FUTURE]
    assert ok(celora(project, empty_db, "db", "status", "--json"))["up_to_date"]
    assert ok(celora(project, empty_db, "db", "lint", "--json"))["findings"] == []

    versions = set((project / "migrations" / "versions").glob("*.py"))
    ok(celora(project, empty_db, "db", "migrate", "--name", "after the future", "--json"))
    created = new_revision_file(project, versions)
    assert created.name == "29990101000200_after_the_future.py"  # the first valid time after second 99
    assert "revision = '29990101000200'" in created.read_text()

    # The models lack the future's table, so the new revision drops it: lint names it by its id and file.
    linted = celora(project, empty_db, "db", "lint", "--json")
    (finding,) = json.loads(linted.stdout)["error"]["findings"]
    assert linted.returncode == 16 and finding["rule"] == "dropped-table"
    assert (finding["revision"], finding["migration"]) == ("29990101000200", "29990101000200_after_the_future")
    undone = ok(celora(project, empty_db, "db", "rollback", "--steps", "2", "--force", "--json"))
    assert undone["current"] == [HISTORY_HEAD]
    assert ok(celora(project, empty_db, "db", "migrate-deploy", "--json"))["current"] == ["29990101000200"]


def test_a_hex_history_orders_by_its_graph_and_squashes(project, empty_db, pg_server):
    """Hex ids whose file names sort against the graph (Alembic's `ae10..` after `1975..`): status, deploy and
    rollback follow the down_revisions; `db squash` of such a history writes a timestamped revision that replaces
    the hex ids, and a database migrated with the hex files needs nothing after it (the journal agrees)."""
    hex_history(project)
    ids = list(HEX.values())
    names = [HEX_NAMES[revision] for revision in ids]
    assert sorted(names) != names  # the file names alone would put the history in the wrong order
    pending = ok(celora(project, empty_db, "db", "status", "--json"), 1)["pending"]
    assert [m["revision"] for m in pending] == ids
    assert [m["revision"] for m in ok(celora(project, empty_db, "db", "migrate-deploy", "--json"))["applied"]] == ids
    applied = ok(celora(project, empty_db, "db", "status", "--json"))["applied"]
    assert [m["revision"] for m in applied] == ids

    squashed = ok(celora(project, empty_db, "db", "squash", "--to", HEX_NAMES[ids[-2]], "--yes", "--json"))
    squash_id = squashed["revision"]
    assert re.fullmatch(r"\d{14}", squash_id) and squashed["replaces"] == ids[:-1]
    assert squashed["repointed"].endswith(f"{HEX_NAMES[ids[-1]]}.py")
    status = ok(celora(project, empty_db, "db", "status", "--json"))
    assert status["up_to_date"] and not status["missing"] and not status["modified"]
    assert [m["revision"] for m in status["applied"]] == [squash_id, ids[-1]]
    assert ok(celora(project, empty_db, "db", "migrate-deploy", "--json"))["applied"] == []

    fresh = pg_server.url(f"{empty_db.rsplit('/', 1)[1]}_fresh")
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh.rsplit("/", 1)[1]}"')
    try:
        deployed = ok(celora(project, fresh, "db", "migrate-deploy", "--json"))["applied"]
        assert [m["revision"] for m in deployed] == [squash_id, ids[-1]]
        undone = ok(celora(project, fresh, "db", "rollback", "--to", squash_id, "--force", "--json"))
        assert undone["current"] == [squash_id]
        versions = set((project / "migrations" / "versions").glob("*.py"))
        ok(celora(project, fresh, "db", "migrate", "--name", "after squash", "--json"))
        created = new_revision_file(project, versions)
        assert re.fullmatch(r"\d{14}_after_squash\.py", created.name) and created.name > f"{squash_id}_squashed.py"
    finally:
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh.rsplit("/", 1)[1]}" WITH (FORCE)')
