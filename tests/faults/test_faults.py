"""Fault injection with real processes: a PostgreSQL SIGKILLed mid-migration, eight concurrent deploys, a server
restart under `with_retry`, a PgBouncer restart under the pooled engine, and a network path that accepts
connections and then says nothing.

The server these tests kill and restart is a throwaway cluster of this module (never the session `pg_server`,
which other tests share). Every CLI process runs under a subprocess timeout: a hang fails the test instead of
hanging the suite.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from tests.support import REPO, run_celora, settings_for
from tests.support.cluster import PgBouncer, crash, restart, start_celora, throwaway_cluster
from tests.support.relay import Blackhole, GoesSilent

pytestmark = pytest.mark.db  # some tests start a PostgreSQL of their own, outside the session's fixtures


def _repo_history() -> list[str]:
    from celora_cli.migrate.scripts import load_script_directory

    return [s.revision for s in reversed(list(load_script_directory(REPO / "migrations").walk_revisions()))]


REVISIONS = _repo_history()
HEAD = REVISIONS[-1]
CLI_TIMEOUT = 90  # seconds: only a hang reaches it


@pytest.fixture(scope="module")
def cluster():
    with throwaway_cluster("celora-faults-pg-") as server:
        # The cluster runs with synchronous_commit=off (fast); a SIGKILL would then lose commits still in the WAL
        # buffers, and a migration that celora saw commit would vanish. This test is about crashes: commits here
        # are durable against a killed server (fsync stays off: the OS does not crash, its page cache survives).
        query(server.url("postgres"), "ALTER ROLE celora SET synchronous_commit = on")
        yield server


def history_with(tmp_path: Path, extras: list[tuple[str, str]], downgrade: str = "    pass") -> Path:
    """A copy of the repo's migrations plus `extras` (revision, upgrade body), each after the one before; the
    last one's downgrade() is `downgrade`."""
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    previous = HEAD
    for index, (revision, body) in enumerate(extras):
        undo = downgrade if index == len(extras) - 1 else "    pass"
        (target / "versions" / f"{revision}_fault.py").write_text(
            f'"""fault {revision}"""\nfrom alembic import op\n\nrevision = "{revision}"\n'
            f'down_revision = "{previous}"\nbranch_labels = None\ndepends_on = None\n\n\n'
            f"def upgrade():\n{body}\n\n\ndef downgrade():\n{undo}\n")
        previous = revision
    return target


def query(url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


def wait_for_query(url: str, fragment: str, process=None, timeout: float = 60) -> None:
    """Until a session runs a statement containing `fragment` (or the process under test exits early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(url, "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND strpos(query, %s) > 0 "
                      "AND strpos(query, 'pg_stat_activity') = 0", fragment):
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"exited {process.returncode} before running {fragment!r}: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail(f"no session ran {fragment!r} within {timeout} s")


def assert_clean(stdout: str, stderr: str) -> None:
    both = stdout + stderr
    assert "Traceback" not in both and "Unexpected error" not in both and "unexpected internal error" not in both, both


# -- PostgreSQL SIGKILLed in the middle of a migration ---------------------------------------------------------

KILLED = "20261127000001"


def test_postgres_killed_mid_migration_leaves_previous_revision_and_a_rerun_completes(cluster, tmp_path):
    cluster.create_database("killed")
    url = cluster.url("killed")
    # The migration creates a table, then waits for an advisory lock this test holds: the server dies while the
    # migration's transaction is open with its DDL done but not committed.
    wait = "    op.execute('SELECT pg_advisory_xact_lock(424242)')"
    history = history_with(tmp_path, [(KILLED, f"    op.execute('CREATE TABLE half_applied (id int)')\n{wait}")],
                           downgrade=f"    op.execute('DROP TABLE half_applied')\n{wait}")
    env = {"DATABASE_URL": url, "CELORA_MIGRATIONS_DIR": str(history), "CELORA_ENV": "test"}
    process, stdout, stderr = _crash_while_waiting(cluster, url, "db", "migrate-deploy", env=env)
    # The migration run failed (exit 9), and the message says why: the server went away, the file is not at
    # fault, and what PostgreSQL guarantees about the uncommitted transaction.
    assert process.returncode == 9, stderr
    assert_clean(stdout, stderr)
    assert f"Migration {KILLED}_fault was interrupted" in stderr and "connection to the database server was lost" \
        in stderr and "not at fault" in stderr and "None" not in stderr, stderr

    restart(cluster)
    # Crash recovery rolled the open transaction back: the previous revision, nothing of the killed one.
    assert query(url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert query(url, "SELECT to_regclass('half_applied')") == [(None,)]
    # The failure could not be journaled (the server was gone), so the journal holds only what committed ...
    assert query(url, "SELECT revision, status FROM celora_migrations ORDER BY id") == [
        (revision, "applied") for revision in REVISIONS]
    # ... and `db status` tells the truth: the killed migration is pending, not applied and not failed.
    status = run_celora("db", "status", "--json", env=env)
    assert status.returncode == 1, status.stderr
    data = json.loads(status.stdout)
    assert [m["revision"] for m in data["pending"]] == [KILLED], data

    rerun = run_celora("db", "migrate-deploy", env=env, timeout=CLI_TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    assert query(url, "SELECT version_num FROM alembic_version") == [(KILLED,)]
    assert query(url, "SELECT revision, status FROM celora_migrations WHERE revision = %s", KILLED) == [
        (KILLED, "applied")]

    # The same for `db rollback`: the server dies while the downgrade waits, its DROP TABLE done, uncommitted.
    process, stdout, stderr = _crash_while_waiting(cluster, url, "db", "rollback", "--steps", "1", "--force",
                                                   env=env)
    assert process.returncode == 9, stderr
    assert_clean(stdout, stderr)
    assert f"Undoing migration {KILLED}_fault was interrupted" in stderr and "not at fault" in stderr, stderr
    restart(cluster)
    assert query(url, "SELECT version_num FROM alembic_version") == [(KILLED,)]
    assert query(url, "SELECT to_regclass('half_applied') IS NOT NULL") == [(True,)]  # the DROP was rolled back


def _crash_while_waiting(cluster, url: str, *args: str, env: dict):
    """Run the CLI while this test holds advisory lock 424242, SIGKILL the server once the CLI's migration
    waits for it inside its transaction, and return (process, stdout, stderr)."""
    holder = psycopg.connect(url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(424242)")
    process = start_celora(*args, env=env)
    try:
        wait_for_query(url, "pg_advisory_xact_lock(424242)", process)
        crash(cluster)
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT)
    finally:
        process.kill()
        holder.close()
    return process, stdout, stderr


# -- eight concurrent migrate-deploy processes -----------------------------------------------------------------

CONCURRENT = [f"2026112800000{n}" for n in range(1, 4)]


def test_eight_concurrent_deploys_apply_each_migration_exactly_once(cluster, tmp_path):
    cluster.create_database("concurrent")
    url = cluster.url("concurrent")
    # Each migration also inserts a row, which is not idempotent: a migration run twice would show two rows.
    bodies = [(CONCURRENT[0], "    op.execute('CREATE TABLE deploy_log (revision text NOT NULL)')\n"
                              f"    op.execute(\"INSERT INTO deploy_log VALUES ('{CONCURRENT[0]}')\")")]
    bodies += [(rev, f"    op.execute('CREATE TABLE t_{rev} (id int)')\n"
                     f"    op.execute(\"INSERT INTO deploy_log VALUES ('{rev}')\")") for rev in CONCURRENT[1:]]
    history = history_with(tmp_path, bodies)
    env = {"DATABASE_URL": url, "CELORA_MIGRATIONS_DIR": str(history), "CELORA_ENV": "test"}
    processes = [start_celora("db", "migrate-deploy", "--json", env=env) for _ in range(8)]
    outputs = [p.communicate(timeout=CLI_TIMEOUT) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert_clean(stdout, stderr)
    every = REVISIONS + CONCURRENT
    applied = [m["revision"] for out, _ in outputs for m in json.loads(out)["applied"]]
    assert sorted(applied) == sorted(every), applied  # each migration applied by exactly one of the processes
    assert query(url, "SELECT version_num FROM alembic_version") == [(CONCURRENT[-1],)]
    assert query(url, "SELECT revision, count(*) FROM celora_migrations WHERE status = 'applied' "
                      "GROUP BY revision ORDER BY revision") == [(rev, 1) for rev in sorted(every)]
    assert query(url, "SELECT revision, count(*) FROM deploy_log GROUP BY revision ORDER BY 1") == [
        (rev, 1) for rev in CONCURRENT]


# -- the server restarted while a with_retry query runs --------------------------------------------------------

def test_with_retry_recovers_from_a_server_restart_within_its_budget(cluster):
    from celora_cli.db.connect import connect, resolve_urls
    from celora_cli.db.retry import with_retry

    settings = settings_for(cluster.url("postgres"))
    url = resolve_urls(settings).pooled
    started_before = query(cluster.url("postgres"), "SELECT pg_postmaster_start_time()")[0][0]
    attempts: list[BaseException | None] = []

    # About 12 s of waits in all (0.2, 0.4, 0.8, then 1 s each): a restart of this cluster takes ~1 s, more on a
    # loaded machine.
    @with_retry(attempts=15, initial_wait=0.2, max_wait=1.0)
    def server_start_time():
        attempts.append(None)
        with connect(url, settings, application_name="celora-fault-retry") as conn:
            if len(attempts) == 1:
                conn.execute("SELECT pg_sleep(60)")  # the query the restart interrupts
            return conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(server_start_time)
        wait_for_query(cluster.url("postgres"), "pg_sleep(60)")
        cluster.stop()  # fast shutdown: the running query is terminated (57P01), new connections are refused
        restart(cluster)
        started_after = future.result(timeout=CLI_TIMEOUT)
    assert started_after > started_before  # answered by the restarted server
    assert len(attempts) >= 2


# -- PgBouncer restarted under the pooled engine ---------------------------------------------------------------

def test_pooled_engine_recovers_on_the_next_call_after_pgbouncer_restarts(cluster):
    from sqlalchemy import text

    from celora_cli.db.engine import get_engine, session_scope

    bouncer = PgBouncer(cluster)
    bouncer.start()
    try:
        settings = settings_for(bouncer.url("postgres"), direct=cluster.url("postgres"))
        engine = get_engine(settings)
        with session_scope(settings) as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
        assert engine.pool.checkedin() >= 1  # a pooled connection to this PgBouncer is kept for the next call
        bouncer.restart()  # every client connection it had is gone
        with session_scope(settings) as session:  # the very next call, no retry wrapper
            assert session.execute(text("SELECT 2")).scalar() == 2
        engine.dispose()
    finally:
        bouncer.close()


# -- a network path that accepts connections and then goes silent ----------------------------------------------

def test_silent_network_path_makes_commands_fail_within_their_timeouts():
    hole = Blackhole.tcp()
    try:
        url = f"postgresql://celora@127.0.0.1:{hole.port}/celora"
        env = {"DATABASE_URL": url, "CELORA_ENV": "test", "CELORA_CONNECT_TIMEOUT": "2"}
        calls = [("db", "health", "--timeout", "3", "--json"), ("db", "status", "--json"),
                 ("db", "migrate-deploy", "--json")]
        # The subprocess timeout is the hang guard, not a timing assert.
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            health, status, deploy = pool.map(lambda args: run_celora(*args, env=env, timeout=CLI_TIMEOUT), calls)
    finally:
        hole.close()
    assert health.returncode == 2, health.stdout + health.stderr  # db health: unhealthy (README)
    assert json.loads(health.stdout)["status"] == "unhealthy"
    for result in (status, deploy):
        assert result.returncode == 4, result.stderr  # can't reach the database server
        error = json.loads(result.stdout)["error"]
        assert error["type"] == "DatabaseUnreachable" and "timeout" in error["message"].lower(), error
    for result in (health, status, deploy):
        assert_clean(result.stdout, result.stderr)


def test_path_that_goes_silent_after_start_up_ends_status_and_health_within_their_timeouts(cluster):
    relay = GoesSilent.tcp(cluster.port)
    try:
        env = {"DATABASE_URL": f"postgresql://celora@127.0.0.1:{relay.port}/postgres", "CELORA_ENV": "test",
               "CELORA_CONNECT_TIMEOUT": "2", "CELORA_STATEMENT_TIMEOUT": "2"}
        # Before celora watched its own statements `db status` and `db migrate-deploy` waited forever; 60 s is
        # the hang guard, not a measure. (A migration's own statements stay unbounded: one may rightly run for
        # hours; celora's bookkeeping around them is bounded.)
        calls = [("db", "status", "--json"), ("db", "health", "--timeout", "3", "--json"),
                 ("db", "migrate-deploy", "--json", "--lock-timeout", "1")]
        with ThreadPoolExecutor(max_workers=3) as pool:
            result, health, deploy = pool.map(lambda args: run_celora(*args, env=env, timeout=60), calls)
    finally:
        relay.close()
    assert deploy.returncode == 4, deploy.stdout + deploy.stderr
    deploy_error = json.loads(deploy.stdout)["error"]
    assert deploy_error["type"] == "DatabaseUnreachable", deploy_error
    assert "No answer from the database server" in deploy_error["message"], deploy_error
    assert_clean(deploy.stdout, deploy.stderr)
    assert health.returncode == 2, health.stdout + health.stderr  # its own deadline: unhealthy
    assert json.loads(health.stdout)["status"] == "unhealthy"
    assert_clean(health.stdout, health.stderr)
    assert result.returncode == 4, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "DatabaseUnreachable" and "No answer from the database server" in error["message"]
    assert "within 4 s" in error["message"] and "pg_isready" in error["hint"], error
    assert_clean(result.stdout, result.stderr)
