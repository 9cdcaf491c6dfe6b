"""`celora db migrate-deploy --plan`: against a real database with real sessions. A pending migration that adds a
column with a volatile default to a large table is named with its table, lock, rewrite and row estimate; another
session's lock on that table is named with its pid and application; nothing pending, safe pending and blocked plans
exit 0, 1, 34 (33 over the size setting); and the plan itself locks nothing and changes nothing, also as the
migrator role that sees only its own sessions."""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from celora_cli.migrate.plan import plan_deploy
from tests.migrate.test_journal import EXTRA, HEAD, query, write_history
from tests.support import run_celora, settings_for
from tests.support.roles import apply_roles, drop_role_set, new_role_set

ROWS = 60_000
VOLATILE_COLUMN = ("    op.add_column('users', sa.Column('token', sa.Uuid(), "
                   "server_default=sa.text('gen_random_uuid()')))")
SAFE_COLUMN = "    op.add_column('users', sa.Column('nickname', sa.Text()))"


def _history(tmp_path: Path, body: str) -> Path:
    history = write_history(tmp_path, body)
    extra = history / "versions" / f"{EXTRA}_extra.py"
    extra.write_text(extra.read_text().replace("from alembic import op\n",
                                               "import sqlalchemy as sa\nfrom alembic import op\n"))
    return history


def _fill_users(url: str, rows: int = ROWS) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (firebase_uid) SELECT 'uid-' || g FROM generate_series(1, %s) g", (rows,))
        conn.execute("ANALYZE users")


def _effects(plan, table: str) -> list:
    return [e for m in plan.migrations for s in m.statements for e in s.effects if e.table == table]


def _catalog_or_bookkeeping(lock: str) -> bool:
    """What the plan may hold: AccessShareLock on a catalog (pg_*) or the two bookkeeping tables it reads (and
    their indexes), and the ExclusiveLock every transaction holds on its own virtual transaction id."""
    if lock == "ExclusiveLock (virtualxid)":
        return True
    match = re.fullmatch(r"AccessShareLock on (\S+)", lock)
    return bool(match) and match.group(1).startswith(("pg_", "alembic_version", "celora_migrations"))


def test_nothing_pending_is_0_and_a_safe_pending_migration_is_1(migrated_db, tmp_path):
    plan = plan_deploy(settings_for(migrated_db), differences=[])
    assert (plan.exit_code, plan.migrations, plan.blockers) == (0, [], [])
    assert plan.verdict == "nothing pending: the database is at head"
    history = _history(tmp_path, SAFE_COLUMN)
    plan = plan_deploy(settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history), differences=[])
    assert plan.exit_code == 1, plan.verdict
    [effect] = _effects(plan, "users")
    assert (effect.lock, effect.rewrite, effect.scan, effect.over_threshold) == ("ACCESS EXCLUSIVE", False, False,
                                                                                 False)
    assert plan.migrations[0].revision == EXTRA and plan.findings == []


def test_volatile_default_on_a_large_table_then_a_blocking_session(migrated_db, tmp_path):
    """The issue's "done when": table, ACCESS EXCLUSIVE, the rewrite and the row estimate; with a session holding
    a lock on the table, that session by pid and application; nothing locked or changed, through the real CLI."""
    _fill_users(migrated_db)
    history = _history(tmp_path, VOLATILE_COLUMN)
    env = {"DATABASE_URL": migrated_db, "CELORA_MIGRATIONS_DIR": str(history),
           "CELORA_PLAN_REWRITE_THRESHOLD": "1MB"}
    cli = run_celora("db", "migrate-deploy", "--plan", "--json", env=env)
    assert cli.returncode == 33, cli.stdout + cli.stderr
    result = json.loads(cli.stdout)
    assert result["ok"] is True and result["exit_code"] == 33 and result["drift"] == []
    [migration] = result["migrations"]
    [statement] = migration["statements"]
    assert statement["sql"].startswith("ALTER TABLE users ADD COLUMN token UUID DEFAULT gen_random_uuid()")
    [effect] = statement["effects"]
    assert (effect["table"], effect["lock"], effect["rewrite"], effect["over_threshold"]) == (
        "users", "ACCESS EXCLUSIVE", True, True)
    assert "volatile default (gen_random_uuid())" in effect["reason"]
    assert abs(effect["rows"] - ROWS) < ROWS * 0.05 and effect["size_bytes"] > 1024 * 1024
    assert "users" in result["verdict"] and "| users ⚠️ | ACCESS EXCLUSIVE |" in result["markdown"]

    with psycopg.connect(migrated_db, application_name="billing-worker") as blocker:
        blocker.execute("SELECT count(*) FROM users")  # an open transaction holding ACCESS SHARE on users
        blocker_pid = blocker.info.backend_pid
        cli = run_celora("db", "migrate-deploy", "--plan", "--json", env=env)
        still_open = blocker.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert cli.returncode == 34, cli.stdout + cli.stderr
    result = json.loads(cli.stdout)
    [named] = result["blockers"]
    assert (named["pid"], named["application"], named["table"], named["holds"], named["granted"], named["needed"]) \
        == (blocker_pid, "billing-worker", "users", "ACCESS SHARE", True, "ACCESS EXCLUSIVE")
    assert named["state"] == "idle in transaction" and named["transaction_age_s"] >= 0
    assert result["migrations"][0]["statements"][0]["effects"][0]["blocked_by"] == [blocker_pid]
    assert f"pid {blocker_pid} (billing-worker) on users" in result["verdict"] and still_open

    assert all(_catalog_or_bookkeeping(lock) for lock in result["locks_taken"]), result["locks_taken"]
    assert query(migrated_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert query(migrated_db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' "
                              "AND column_name = 'token'") == [(0,)]


def test_an_access_exclusive_lock_on_the_table_does_not_make_the_plan_wait(migrated_db, tmp_path):
    """The plan reads catalogs only: a session holding ACCESS EXCLUSIVE on the table (and one queued behind it)
    is reported, not waited for."""
    history = _history(tmp_path, VOLATILE_COLUMN)
    settings = settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history)
    with psycopg.connect(migrated_db, application_name="holder") as holder, \
            psycopg.connect(migrated_db, application_name="queued", autocommit=True) as queued:
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        waiter = threading.Thread(target=lambda: queued.execute("SELECT count(*) FROM users"), daemon=True)
        waiter.start()
        try:
            for _ in range(100):
                if query(migrated_db, "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                                      "'users'::regclass")[0][0]:
                    break
                threading.Event().wait(0.05)
            plan = plan_deploy(settings, differences=[])
        finally:
            holder.rollback()
            waiter.join(10)
    assert plan.exit_code == 34
    assert {(b.application, b.holds, b.granted) for b in plan.blockers} == {
        ("holder", "ACCESS EXCLUSIVE", True), ("queued", "ACCESS SHARE", False)}


def test_drift_makes_the_verdict_15_and_is_listed(migrated_db, tmp_path):
    from celora_cli.schema.drift import Difference

    drift = [Difference("column", "users.nickname", "extra", database="text")]
    plan = plan_deploy(settings_for(migrated_db, CELORA_MIGRATIONS_DIR=_history(tmp_path, SAFE_COLUMN)),
                       differences=drift)
    assert plan.exit_code == 15 and plan.verdict.startswith("drift:")
    assert "column users.nickname exists in the database" in plan.to_json()["markdown"]


def test_a_column_added_by_hand_is_drift_through_the_cli(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN by_hand text")
    cli = run_celora("db", "migrate-deploy", "--plan", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 15, cli.stdout + cli.stderr
    assert "by_hand" in cli.stdout and "Verdict: drift" in cli.stdout


def test_as_the_migrator_role_other_sessions_are_named_but_their_age_is_hidden(pg_server, migrated_db, tmp_path):
    roles = new_role_set(pg_server, migrated_db, groups=("migrator",))
    try:
        apply_roles(roles)
        history = _history(tmp_path, VOLATILE_COLUMN)
        settings = settings_for(roles.url("migrator"), CELORA_MIGRATIONS_DIR=history)
        with psycopg.connect(migrated_db, application_name="app-under-superuser") as other:
            other.execute("SELECT 1 FROM users LIMIT 1")
            other_pid = other.info.backend_pid
            plan = plan_deploy(settings, differences=None, drift_note="not checked in this test")
        [blocker] = plan.blockers
        assert (blocker.pid, blocker.application, blocker.hidden, blocker.state) == (
            other_pid, "app-under-superuser", True, None)
        assert plan.exit_code == 34 and not plan.visibility.full and plan.visibility.hidden_sessions >= 1
        assert "pg_read_all_stats" in plan.visibility.note
        assert all(_catalog_or_bookkeeping(lock) for lock in plan.locks_taken), plan.locks_taken
    finally:
        drop_role_set(pg_server, roles)


@pytest.mark.parametrize("hostile", ['users"; DROP TABLE users; --', "Ünïcødé tæble"])
def test_odd_table_names_are_looked_up_not_executed(migrated_db, tmp_path, hostile):
    body = f"    op.create_table({hostile!r}, sa.Column('id', sa.Integer(), primary_key=True))"
    plan = plan_deploy(settings_for(migrated_db, CELORA_MIGRATIONS_DIR=_history(tmp_path, body)), differences=[])
    [effect] = _effects(plan, hostile)
    assert effect.created and effect.rows is None and plan.exit_code == 1
    assert query(migrated_db, "SELECT to_regclass('users') IS NOT NULL") == [(True,)]


def test_a_migration_that_cannot_be_rendered_offline_is_pending_but_not_called_safe(migrated_db, tmp_path):
    body = ("    count = op.get_bind().execute(sa.text('SELECT count(*) FROM users')).scalar()\n"
            "    op.execute(f'SELECT {count}')")
    plan = plan_deploy(settings_for(migrated_db, CELORA_MIGRATIONS_DIR=_history(tmp_path, body)), differences=[])
    assert plan.exit_code == 1 and "could not be rendered offline" in plan.verdict
    assert "safe to deploy" not in plan.verdict
    assert [f.rule for f in plan.findings] == ["unrenderable"]


def test_on_production_the_plan_is_allowed_and_creates_no_shadow_database(pg_server, migrated_db, tmp_path):
    history = _history(tmp_path, SAFE_COLUMN)
    env = {"DATABASE_URL": migrated_db, "CELORA_ENV": "production", "CELORA_MIGRATIONS_DIR": str(history),
           "CELORA_CACHE_DIR": str(tmp_path / "cache")}
    before = query(pg_server.url("postgres"), "SELECT count(*) FROM pg_database")
    cli = run_celora("db", "migrate-deploy", "--plan", "--json", env=env)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert json.loads(cli.stdout)["drift"] == []  # from the committed snapshot: no shadow needed

    shutil.rmtree(history / "snapshots")  # none stored: on production, drift is not checked (no shadow made)
    cli = run_celora("db", "migrate-deploy", "--plan", "--json", env=env)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    result = json.loads(cli.stdout)
    assert result["drift"] is None and "SHADOW_DATABASE_URL" in result["drift_note"]
    assert "celora db snapshots --write" in result["drift_note"]
    assert query(pg_server.url("postgres"), "SELECT count(*) FROM pg_database") == before
    assert query(migrated_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_another_migrate_deploy_holding_the_migration_lock_is_a_blocker(migrated_db, tmp_path):
    from celora_cli.migrate.lock import MIGRATION_LOCK_KEY

    settings = settings_for(migrated_db, CELORA_MIGRATIONS_DIR=_history(tmp_path, SAFE_COLUMN))
    with psycopg.connect(migrated_db, application_name="celora migrate-deploy ci-runner:42") as runner:
        runner.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        plan = plan_deploy(settings, differences=[])
    [blocker] = plan.blockers
    assert (blocker.table, blocker.application, blocker.granted) == (
        "(migration lock)", "celora migrate-deploy ci-runner:42", True)
    assert plan.exit_code == 34
