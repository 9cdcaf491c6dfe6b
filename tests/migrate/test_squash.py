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

    # A squash of a range holding a squash stands for everything that one stood for.
    again = ok(celora(project, fresh, "db", "squash", "--to", following, "--name", "again", "--yes", "--json"))
    assert again["replaces"] == [*ids[:3], squash_id, following]
    assert files(project) == [f"{again['revision']}_again"]
    for url in (at_head, fresh):
        assert ok(celora(project, url, "db", "migrate-deploy", "--json"))["current"] == [again["revision"]]
        assert schema_dump(url) == before


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


# -- the pieces, without a database ------------------------------------------------------------------------------

DUMP = """--
-- PostgreSQL database dump
--

\\restrict abc123

-- Dumped from database version 18.6
-- Dumped by pg_dump version 18.6

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;

DROP TRIGGER IF EXISTS trg_t ON public.t;
DROP TABLE IF EXISTS public.t;
DROP TYPE IF EXISTS public.e;
--
-- Name: e; Type: TYPE; Schema: public; Owner: -
--

CREATE TYPE public.e AS ENUM (
    'a:b'
);


--
-- Name: f(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.f() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
BEGIN
-- a comment at the start of a line inside the body stays
    RETURN NULL;
END;
$$;


--
-- Name: TABLE t; Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON TABLE public.t FROM "Mig Role";
GRANT SELECT ON TABLE public.t TO "Mig Role";
GRANT SELECT ON TABLE public.t TO app;


--
-- PostgreSQL database dump complete
--

\\unrestrict abc123

"""


def test_a_dump_becomes_upgrade_and_downgrade_sql():
    from celora_cli.schema.squash import clean_dump

    upgrade, downgrade = clean_dump(DUMP, "Mig Role")
    assert downgrade == "DROP TRIGGER IF EXISTS trg_t ON public.t;\nDROP TABLE IF EXISTS public.t;\n" \
                        "DROP TYPE IF EXISTS public.e;\n"
    assert upgrade.startswith("SET LOCAL check_function_bodies = false;\n\nCREATE TYPE public.e AS ENUM (\n")
    for gone in ("restrict", "Dumped", "set_config", "statement_timeout", "-- Name:", "dump complete"):
        assert gone not in upgrade
    assert "-- a comment at the start of a line inside the body stays" in upgrade
    assert "REVOKE ALL ON TABLE public.t FROM CURRENT_USER;\nGRANT SELECT ON TABLE public.t TO CURRENT_USER;\n" \
           "GRANT SELECT ON TABLE public.t TO app;" in upgrade
    assert "\n\n\n" not in upgrade


@pytest.mark.parametrize("source, expected", [
    ('"""x\n\nRevises: 111\n"""\nrevision = "222"\ndown_revision = "111"\n',
     '"""x\n\nRevises: 999\n"""\nrevision = "222"\ndown_revision = \'999\'\n'),
    ('"""x\r\n\r\nRevises: 111\r\n"""\r\nrevision = "222"\r\ndown_revision: str | None = \'111\'  # é\r\n',
     '"""x\r\n\r\nRevises: 999\r\n"""\r\nrevision = "222"\r\ndown_revision: str | None = \'999\'  # é\r\n'),
])
def test_the_following_revision_is_re_pointed_and_nothing_else(tmp_path, source, expected):
    from celora_cli.migrate.squash import repointed_source

    path = tmp_path / "222_next.py"
    assert repointed_source(path, source.encode(), "111", "999") == expected.encode()


def test_a_down_revision_it_cannot_re_point_is_refused_before_any_work(tmp_path):
    from celora_cli.errors import MigrationHistoryError
    from celora_cli.migrate.squash import repointed_source

    with pytest.raises(MigrationHistoryError, match="one-line literal"):
        repointed_source(tmp_path / "x.py", b'down_revision = ("111",\n    )\n', "111", "999")


@pytest.mark.parametrize("last, following, existing, expected", [
    ("20261126170000", "20261207023000", (), "20261126170001"),  # sorts where the range ended
    ("20261126170000", "20261126170001", (), "20261126170002"),  # no room before the next: after every id
    ("20261126170000", None, ("20261126170001",), "20261126170002"),
    ("ae1027a6acf", "1975ea83b712", (), "20261126120000"),  # hex ids: the clock
    ("20261126170000", "4b8e0f2d9c61", (), "20261126170001"),  # the next one is no timestamp: no order to keep
])
def test_the_squash_id(last, following, existing, expected):
    import datetime

    from celora_cli.migrate.revision_ids import squash_revision_id

    now = datetime.datetime(2026, 11, 26, 12, 0, 0)
    assert squash_revision_id(last, following, {last, *existing, *([following] if following else [])}, now) == \
        expected


def _settings(project: Path, url: str):
    from tests.support import settings_for

    return settings_for(url, CELORA_MIGRATIONS_DIR=project / "migrations", CELORA_ENV="development")


def test_the_plan_is_shown_and_a_no_changes_nothing(project):
    """What the guard shows before anything is generated or written; a refusal leaves every file as it was."""
    from celora_cli.errors import Refused
    from celora_cli.schema.squash import squash

    ids = [name.split("_", 1)[0] for name in HISTORY]
    seen = []

    def refuse(plan):
        seen.append(plan)
        raise Refused("no", "")

    def dump(*args, **kwargs):
        raise AssertionError("nothing is generated before the answer")

    before = {p.name: p.read_bytes() for p in (project / "migrations" / "versions").glob("*.py")}
    with pytest.raises(Refused):
        squash(_settings(project, "postgresql://nobody@127.0.0.1:1/none"), ids[2], dump=dump, confirm=refuse)
    (plan,) = seen
    losses = plan.losses()
    assert [f"{name}.py is deleted" in line for line, name in zip(losses, HISTORY[:3], strict=False)] == [True] * 3
    assert any(plan.path.name in line and "is written" in line for line in losses)
    assert any(f"{HISTORY[3]}.py gets down_revision" in line for line in losses)
    assert {p.name: p.read_bytes() for p in (project / "migrations" / "versions").glob("*.py")} == before


def test_interrupted_while_generating_writes_nothing_and_leaves_no_shadow(project, empty_db, pg_server):
    from celora_cli.errors import Interrupted
    from celora_cli.schema.squash import squash

    def interrupted(*args, **kwargs):
        raise Interrupted("Stopped by SIGTERM.")

    before = {p.name: p.read_bytes() for p in (project / "migrations" / "versions").glob("*.py")}
    with pytest.raises(Interrupted):
        squash(_settings(project, empty_db), HISTORY[-1], dump=interrupted, confirm=lambda plan: None)
    assert {p.name: p.read_bytes() for p in (project / "migrations" / "versions").glob("*.py")} == before
    assert not list((project / "migrations" / "versions").glob(".*"))
    with psycopg.connect(pg_server.url("postgres")) as conn:
        assert not conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'celora_shadow_%'").fetchall()
