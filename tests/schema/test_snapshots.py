"""Schema snapshots per revision (celora_cli.schema.snapshots): keys that follow the history's files, the committed
files that answer the drift checks without a shadow, the cache, the build, and what the snapshot sees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from celora_cli.migrate.scripts import alembic_config, script_directory
from celora_cli.schema import snapshots
from celora_cli.schema.drift import compare, snapshot
from tests.support import REPO, admin_execute, db_name, run_celora, shared_tmpdir


@pytest.fixture
def project() -> Path:
    root = shared_tmpdir("celora-snapshots-")
    shutil.copytree(REPO / "migrations", root / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__", "schema.sql"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def env_for(project: Path, url: str = "postgresql://celora@127.0.0.1:1/unused") -> dict:
    return {"DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(project),
            "CELORA_MIGRATIONS_DIR": str(project / "migrations")}


def _settings(project: Path, url: str = "postgresql://celora@127.0.0.1:1/unused"):
    from celora_cli.config.settings import load_settings

    return load_settings(environ={**env_for(project, url), "CELORA_ENV": "test"}, project_root=project)


def _keys(project: Path) -> dict[str, str]:
    settings = _settings(project)
    script = script_directory(settings, alembic_config(settings))
    return {r.revision: snapshots.history_key(script, (r.revision,)) for r in script.walk_revisions()}


def _ordered(project: Path) -> list[str]:
    return sorted(p.name.split("_", 1)[0] for p in (project / "migrations" / "versions").glob("*.py"))


def test_an_edited_old_migration_changes_its_key_and_every_later_one_only(project):
    before = _keys(project)
    revisions = _ordered(project)
    assert len(set(before.values())) == len(revisions)  # one key per revision
    second = next((project / "migrations" / "versions").glob(f"{revisions[1]}_*.py"))
    second.write_text(second.read_text() + "\n# a comment is an edit too: the file's bytes are the key\n")
    after = _keys(project)
    assert after[revisions[0]] == before[revisions[0]]
    assert all(after[r] != before[r] for r in revisions[1:])


def test_the_committed_snapshots_match_the_history_and_check_says_when_one_is_stale(project):
    fresh = run_celora("db", "snapshots", "--check", "--json", env=env_for(project))  # no database needed
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    data = json.loads(fresh.stdout)
    assert data["outdated"] == 0 and {f["state"] for f in data["files"]} == {"current"}
    assert len(data["files"]) == len(_ordered(project))

    revisions = _ordered(project)
    edited = next((project / "migrations" / "versions").glob(f"{revisions[-2]}_*.py"))
    edited.write_text(edited.read_text() + "\n")
    (project / "migrations" / "snapshots" / f"{revisions[0]}.json").unlink()
    stale = run_celora("db", "snapshots", "--check", env=env_for(project))
    assert stale.returncode == 30, stale.stdout + stale.stderr
    assert f"missing  {project / 'migrations' / 'snapshots' / revisions[0]}.json" in stale.stdout
    for revision in revisions[-2:]:
        assert f"stale    {project / 'migrations' / 'snapshots' / revision}.json" in stale.stdout
    assert "celora db snapshots --write" in stale.stderr


def test_write_rebuilds_only_what_is_outdated_and_leaves_no_shadow(pg_server, project, empty_db):
    revisions = _ordered(project)
    kept = project / "migrations" / "snapshots" / f"{revisions[0]}.json"
    kept_text = kept.read_text()
    gone = project / "migrations" / "snapshots" / f"{revisions[-1]}.json"
    gone_text = gone.read_text()
    gone.unlink()
    result = run_celora("db", "snapshots", "--write", "--json", env=env_for(project, empty_db))
    assert result.returncode == 0, result.stdout + result.stderr
    states = {f["revision"]: f["state"] for f in json.loads(result.stdout)["files"]}
    assert states == {**{r: "current" for r in revisions[:-1]}, revisions[-1]: "written"}
    assert json.loads(gone.read_text())["objects"] == json.loads(gone_text)["objects"]
    assert kept.read_text() == kept_text
    with psycopg.connect(pg_server.url("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'celora_shadow_%'").fetchone()[0] \
            == 0
    with psycopg.connect(empty_db) as conn:  # the database named was only the shadow's server
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None


def test_built_once_then_cached_and_a_damaged_cache_file_is_rebuilt(pg_server, project, migrated_db):
    shutil.rmtree(project / "migrations" / "snapshots")
    settings = _settings(project, migrated_db)
    config = alembic_config(settings)
    script = script_directory(settings, config)
    head = script.get_current_head()
    shadows: list[int] = []

    def counting_shadow():
        from celora_cli.schema.autogenerate import shadow_database

        shadows.append(1)
        return shadow_database(settings, settings.database_url, None)

    built = snapshots.expected_at(settings, config, script, (head,), shadow=counting_shadow)
    assert built.source == "built" and len(shadows) == 1
    with psycopg.connect(migrated_db) as conn:
        assert compare(snapshot(conn), built.snapshot) == []
    cached = snapshots.expected_at(settings, config, script, (head,), shadow=counting_shadow)
    assert cached.source == "cache" and len(shadows) == 1 and cached.snapshot == built.snapshot
    Path(cached.path).write_text('{"format": 2, "key": "' + cached.key + '", "objects": {"table": [1]}}')
    rebuilt = snapshots.expected_at(settings, config, script, (head,), shadow=counting_shadow)
    assert rebuilt.source == "built" and len(shadows) == 2 and rebuilt.snapshot == built.snapshot
    assert snapshots.expected_at(settings, config, script, (), shadow=counting_shadow).source == "empty"


def test_postgres_18_not_null_constraints_are_left_out_and_comments_are_seen(pg_server, migrated_db):
    """A snapshot built on one major must compare equal on another: NOT NULL is in the column's definition
    (PostgreSQL 18 also catalogs it as a constraint, older servers do not)."""
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        before = snapshot(conn)
        assert not any(name.endswith("_not_null") for name in before.objects["constraint"])
        assert before.objects["column"]["users.firebase_uid"].endswith("NOT NULL")
        conn.execute("COMMENT ON TABLE users IS 'people'; COMMENT ON COLUMN users.email IS 'login'")
        after = snapshot(conn)
    differences = {(d.kind, d.name, d.change, d.database) for d in compare(after, before)}
    assert differences == {("table comment", "users", "extra", "people"),
                           ("column comment", "users.email", "extra", "login")}


def test_status_drift_names_a_hand_made_comment_through_the_committed_snapshot(pg_server, migrated_db):
    admin_execute(pg_server, "COMMENT ON COLUMN wallets.address IS 'by hand'", db_name(migrated_db))
    result = run_celora("db", "status", "--drift", "--json", env={"DATABASE_URL": migrated_db})
    assert result.returncode == 15, result.stdout + result.stderr
    differences = json.loads(result.stdout)["drift"]["differences"]
    assert [(d["kind"], d["name"]) for d in differences] == [("column comment", "wallets.address")]


MODELS_WITH_NICKNAME = """
from sqlalchemy import Column, MetaData, Text

from celora_cli.db.models import Base

metadata = MetaData(naming_convention=Base.metadata.naming_convention)
for table in Base.metadata.sorted_tables:
    table.to_metadata(metadata)
metadata.tables["users"].append_column(Column("nickname", Text, comment="shown to friends"))
"""


def test_db_migrate_writes_the_snapshot_of_the_revision_it_writes_and_the_next_run_needs_no_shadow(
        pg_server, project, migrated_db):
    (project / "nick_models.py").write_text(MODELS_WITH_NICKNAME)
    env = {**env_for(project, migrated_db), "CELORA_MODELS": "nick_models:metadata",
           "PYTHONPATH": f"{REPO}:{project}"}
    before = set((project / "migrations" / "snapshots").iterdir())
    written = run_celora("db", "migrate", "--name", "add_nickname", "--json", env=env)
    assert written.returncode == 0, written.stdout + written.stderr
    data = json.loads(written.stdout)
    revision = Path(data["revision_file"]).name.split("_", 1)[0]
    new = project / "migrations" / "snapshots" / f"{revision}.json"
    assert set((project / "migrations" / "snapshots").iterdir()) - before == {new}
    assert str(new) in data["artifacts_written"] and data["shadow"] == ""  # autogenerate ran on the dev database
    objects = json.loads(new.read_text())["objects"]
    assert objects["column"]["users.nickname"] == "text"
    assert objects["column comment"]["users.nickname"] == "shown to friends"
    check = run_celora("db", "snapshots", "--check", env=env_for(project))
    assert check.returncode == 0, check.stdout + check.stderr

    # the next run's drift check reads that snapshot: nothing replayed (the build announces itself on stderr)
    admin_execute(pg_server, "COMMENT ON COLUMN users.nickname IS 'changed by hand'", db_name(migrated_db))
    drifted = run_celora("db", "migrate", env=env)
    assert drifted.returncode == 15, drifted.stdout + drifted.stderr
    assert "column comment users.nickname differs" in drifted.stderr
    assert "replaying the history" not in drifted.stderr
