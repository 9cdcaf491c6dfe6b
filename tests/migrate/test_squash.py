"""`celora db squash --to REV` through the real `celora` process, on a copy of the repo's project: the history up to
its third revision becomes one generated migration, and every kind of database ends with the same schema (pg_dump
--schema-only, and the drift snapshot): a fresh one, one migrated to the head with the old history before the
squash, one left at REV exactly (recorded as at the squash), while one inside the squashed range is refused.
Rollback through the squash empties the schema; rollback into the range names no revision."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from celora_cli.local.binaries import embedded_bin_dir
from celora_cli.schema.drift import snapshot
from tests.support import REPO, run_celora, shared_tmpdir

HISTORY = sorted(path.stem for path in (REPO / "migrations" / "versions").glob("*.py"))


@pytest.fixture
def project():
    base = shared_tmpdir("celora-squash-")
    shutil.copytree(REPO / "migrations", base / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def celora(project: Path, database: str, *args: str):
    env = {"DATABASE_URL": database, "CELORA_ENV": "development", "CELORA_PROJECT_ROOT": str(project),
           "PYTHONPATH": f"{REPO}:{project}", "CI": "true"}
    done = run_celora(*args, env=env, cwd=project)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    return done


def ok(done, code: int = 0) -> dict:
    assert done.returncode == code, done.stdout + done.stderr
    return json.loads(done.stdout)


def files(project: Path) -> list[str]:
    return sorted(p.stem for p in (project / "migrations" / "versions").glob("*.py"))


def schema_dump(url: str) -> str:
    """pg_dump --schema-only, the bookkeeping tables left out, normalised for the database's name."""
    done = subprocess.run([str(embedded_bin_dir() / "pg_dump"), "--schema-only", "--no-owner",
                           "--exclude-table=alembic_version", "--exclude-table=celora_migrations",
                           "--exclude-table=celora_metadata", "-d", url], capture_output=True, text=True, check=True)
    text = re.sub(r"^\\(un)?restrict .*$", "", done.stdout, flags=re.MULTILINE)
    return text.replace(url.rsplit("/", 1)[1], "DB")


def catalog(url: str):
    with psycopg.connect(url) as conn:
        return snapshot(conn)


def version(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]


def journal_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT revision, status, baseline FROM celora_migrations ORDER BY id").fetchall()


@pytest.fixture
def databases(pg_server):
    made = []

    def make() -> str:
        name = f"t_squash_{len(made)}_{id(made) % 100000}"
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return pg_server.url(name)

    yield make
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_squash_keeps_every_database_on_the_same_schema(project, databases):
    assert len(HISTORY) >= 4
    ids = [name.split("_", 1)[0] for name in HISTORY]
    target, following = ids[2], ids[3]
    at_head, at_target, inside, fresh = databases(), databases(), databases(), databases()
    for url in (at_head, at_target, inside):
        ok(celora(project, url, "db", "migrate-deploy", "--json"))
    ok(celora(project, at_target, "db", "rollback", "--to", target, "--force", "--json"))
    ok(celora(project, inside, "db", "rollback", "--to", ids[1], "--force", "--json"))
    before = schema_dump(at_head)
    following_file = project / "migrations" / "versions" / f"{HISTORY[3]}.py"
    following_text = following_file.read_text()

    refused = celora(project, fresh, "db", "squash", "--to", target, "--json")  # no terminal, no --yes
    assert refused.returncode == 12 and "--yes" in json.loads(refused.stdout)["error"]["hint"]
    assert files(project) == HISTORY

    result = ok(celora(project, fresh, "db", "squash", "--to", HISTORY[2], "--yes", "--json"))
    squash_id = result["revision"]
    assert result["replaces"] == ids[:3] and result["target"] == target
    assert squash_id == f"{target[:-1]}{int(target[-1]) + 1}"  # sorts right where the range ended
    assert files(project) == [f"{squash_id}_squashed", HISTORY[3]]
    text = Path(result["file"]).read_text()
    assert f"replaces = {tuple(ids[:3])!r}" in text and "down_revision = None" in text
    for generated in ("CREATE TYPE public.chain AS ENUM", "CREATE FUNCTION public.celora_audit_row()",
                      "CREATE TRIGGER trg_users_audit "):
        assert generated in text  # enum types, functions, triggers: from the dump
    assert "set_config('search_path', ''" not in text and "\\restrict" not in text
    assert following_file.read_text() == following_text.replace(f'down_revision = "{target}"',
                                                                f"down_revision = '{squash_id}'").replace(
        f"Revises: {target}", f"Revises: {squash_id}")

    # status understands the squash on each kind of database before it is deployed
    head_status = ok(celora(project, at_head, "db", "status", "--json"))
    assert head_status["up_to_date"] and not head_status["missing"] and not head_status["modified"]
    assert head_status["squashes"] == [{"revision": squash_id, "name": f"{squash_id}_squashed",
                                        "replaces": ids[:3]}]
    target_status = ok(celora(project, at_target, "db", "status", "--json"), 1)
    assert target_status["recorded_as"] == squash_id and [m["revision"] for m in target_status["pending"]] == \
        [following]
    drift = ok(celora(project, at_target, "db", "status", "--drift", "--json"), 1)  # pending, no drift
    assert drift["drift"]["drifted"] is False, drift
    assert [m["revision"] for m in ok(celora(project, fresh, "db", "status", "--json"), 1)["pending"]] == \
        [squash_id, following]
    refusal = celora(project, inside, "db", "migrate-deploy", "--json")
    assert refusal.returncode == 14, refusal.stdout
    error = json.loads(refusal.stdout)["error"]
    assert "inside the range squashed" in error["message"] and "Keep the old migration files" in error["hint"]
    assert version(inside) == [ids[1]]

    assert ok(celora(project, at_head, "db", "migrate-deploy", "--json"))["applied"] == []
    assert [m["revision"] for m in ok(celora(project, at_target, "db", "migrate-deploy", "--json"))["applied"]] == \
        [following]
    assert [m["revision"] for m in ok(celora(project, fresh, "db", "migrate-deploy", "--json"))["applied"]] == \
        [squash_id, following]
    assert version(at_target) == version(fresh) == version(at_head) == [following]
    assert (squash_id, "applied", True) in journal_rows(at_head)  # found applied: recorded as a baseline
    for url in (at_target, fresh):
        assert schema_dump(url) == before
        assert catalog(url) == catalog(at_head)
    assert ok(celora(project, at_head, "db", "migrate-deploy", "--json"))["applied"] == []  # the journal agrees
    assert ok(celora(project, at_target, "db", "status", "--drift", "--json"))["up_to_date"]

    # Rollback: across the squash to base drops what it created; into the range names no revision.
    into = celora(project, fresh, "db", "rollback", "--to", ids[1], "--force", "--json")
    assert into.returncode == 3 and "no such revision" in json.loads(into.stdout)["error"]["message"]
    undone = ok(celora(project, fresh, "db", "rollback", "--steps", "2", "--force", "--json"))
    assert [m["revision"] for m in undone["undone"]] == [following, squash_id] and undone["current"] == []
    assert "CREATE TABLE" not in schema_dump(fresh) and "CREATE TYPE" not in schema_dump(fresh)
    assert ok(celora(project, fresh, "db", "migrate-deploy", "--json"))["current"] == [following]
    assert schema_dump(fresh) == before


def test_squash_refuses_what_it_cannot_stand_for(project, databases):
    url = databases()
    ids = [name.split("_", 1)[0] for name in HISTORY]
    for args, code, words in [
        (("--to", "base"), 3, "nothing before base"),
        (("--to", "nope"), 3, "no such revision"),
        (("--to", ids[0]), 3, "nothing to squash"),
        (("--to", ids[2], "--name", "bad'name"), 3, "characters"),
    ]:
        done = celora(project, url, "db", "squash", *args, "--yes", "--json")
        assert done.returncode == code, done.stdout + done.stderr
        assert words in json.loads(done.stdout)["error"]["message"]
    assert files(project) == HISTORY
    # a branch in the range: a second child of the first revision
    branch = project / "migrations" / "versions" / "29990101000000_branch.py"
    branch.write_text(f'revision = "29990101000000"\ndown_revision = "{ids[0]}"\nbranch_labels = None\n'
                      "depends_on = None\n\ndef upgrade():\n    pass\n\ndef downgrade():\n    pass\n")
    done = celora(project, url, "db", "squash", "--to", ids[2], "--yes", "--json")
    assert done.returncode == 14 and "heads" in json.loads(done.stdout)["error"]["message"]
    assert files(project) == sorted([*HISTORY, branch.stem])


def test_the_whole_history_squashed_deploys_the_same_schema(project, databases):
    """The Done-when: `db squash` of the current history; a fresh database and one migrated with the old history
    end with identical schemas. A database at the squashed head is refused by rollback until deploy records it."""
    ids = [name.split("_", 1)[0] for name in HISTORY]
    existing, fresh = databases(), databases()
    ok(celora(project, existing, "db", "migrate-deploy", "--json"))
    before = schema_dump(existing)
    result = ok(celora(project, existing, "db", "squash", "--to", ids[-1], "--yes", "--json"))
    assert result["repointed"] is None and result["replaces"] == ids
    text = Path(result["file"]).read_text()
    for generated in ("SECURITY DEFINER", "SET search_path TO 'pg_catalog', 'public', 'pg_temp'",
                      "REVOKE ALL ON FUNCTION public.celora_audit_row() FROM PUBLIC"):
        assert generated in text  # the definer function with its pinned search_path, and the revoke
    (squash_file,) = (project / "migrations" / "versions").glob("*.py")
    squash_id = squash_file.stem.split("_", 1)[0]
    assert squash_id == result["revision"]
    linted = celora(project, fresh, "db", "lint", "--json")
    assert linted.returncode == 0 and json.loads(linted.stdout)["findings"] == [], linted.stdout

    refused = celora(project, existing, "db", "rollback", "--steps", "1", "--force", "--json")
    assert refused.returncode == 14 and "migrate-deploy" in json.loads(refused.stdout)["error"]["hint"]
    assert ok(celora(project, existing, "db", "migrate-deploy", "--json"))["current"] == [squash_id]
    assert ok(celora(project, existing, "db", "status", "--json"))["up_to_date"]
    assert ok(celora(project, fresh, "db", "migrate-deploy", "--json"))["current"] == [squash_id]
    assert schema_dump(fresh) == schema_dump(existing) == before
    assert catalog(fresh) == catalog(existing)
