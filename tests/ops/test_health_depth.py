"""`celora db health` in depth, each cause made for real: a client waiting in PgBouncer, a replica whose replay
is paused while the primary writes, a session blocked on a lock, an inactive replication slot keeping WAL.

The replication tests use a throwaway primary (celora's own LocalServer) and a real streaming standby made
from it with pg_basebackup -R (tests/support/standby.py), both for this module only: the session server is never
restarted nor given slots.
"""

from __future__ import annotations

import json
import socket
import threading

import psycopg
import pytest

from celora_cli.ops.health import check_database_health
from tests.support import db_name, free_port, run_celora, run_pgbouncer, settings_for
from tests.support.standby import execute as _execute
from tests.support.standby import query as _query
from tests.support.standby import replication
from tests.support.standby import until as _until

pytestmark = pytest.mark.db  # some tests start a PostgreSQL of their own, outside the session's fixtures

# --------------------------------------------------------------------------- PgBouncer's admin console


@pytest.fixture(scope="module")
def console_bouncer(pg_server):
    """PgBouncer from the repo's pgbouncer.ini (transaction mode, one server connection per pool) whose admin
    console lets `celora` in (admin_users, stats_users). Yields its port."""
    bouncer = run_pgbouncer(pg_server, "celora-test-pgbouncer-console-", admin_users="celora",
                             stats_users="celora")
    yield next(bouncer).port
    next(bouncer, None)  # stops it (the generator's finally)


def test_a_client_waiting_in_pgbouncer_is_degraded_and_names_the_pool(console_bouncer, migrated_db):
    database = db_name(migrated_db)
    pooled = f"postgresql://celora@127.0.0.1:{console_bouncer}/{database}"
    console = f"postgresql://celora@127.0.0.1:{console_bouncer}/pgbouncer"
    environ = {"CELORA_PGBOUNCER_ADMIN_URL": console}

    calm = check_database_health(settings_for(migrated_db, **environ))
    assert calm.pgbouncer is not None and calm.pgbouncer.ok, calm.pgbouncer
    assert calm.status == "healthy", calm.problems

    # The pool has one server connection: one client holds it in a transaction, the next one waits.
    holder = psycopg.connect(pooled, prepare_threshold=None)
    holder.execute("SELECT 1")  # a transaction is open (not autocommit): the server stays paired with it
    waiter_done = threading.Event()

    def wait_in_pool() -> None:
        with psycopg.connect(pooled, autocommit=True, prepare_threshold=None) as waiter:
            waiter.execute("SELECT 1")
        waiter_done.set()

    waiter = threading.Thread(target=wait_in_pool, daemon=True)
    waiter.start()
    try:
        def waiting_clients():
            with psycopg.connect(console, autocommit=True) as admin:
                cursor = admin.execute("SHOW POOLS")
                names = [c.name for c in cursor.description]
                return sum(row[names.index("cl_waiting")] for row in cursor.fetchall()
                           if row[names.index("database")] == database)

        _until(waiting_clients, "a client waiting in PgBouncer")
        cli = run_celora("db", "health", "--json", env={"DATABASE_URL": migrated_db, **environ,
                                                         "CELORA_HEALTH_POOL_WAIT": "0"})
        assert cli.returncode == 1, cli.stdout + cli.stderr
        report = json.loads(cli.stdout)
        bouncer = report["pgbouncer"]
        assert report["status"] == "degraded" and bouncer["ok"]
        assert bouncer["clients_waiting"] >= 1 and bouncer["clients_active"] >= 1 and bouncer["max_wait_s"] > 0
        pool = next(p for p in bouncer["pools"] if p["database"] == database)
        assert pool["clients_waiting"] == 1 and pool["servers_active"] == 1
        assert any(f"PgBouncer pool {database}/celora" in p and "waiting" in p for p in report["problems"])
        assert bouncer["hint"] and "default_pool_size" in bouncer["hint"]
    finally:
        holder.rollback()
        holder.close()
        waiter_done.wait(10)
        waiter.join(10)
    assert waiter_done.is_set()

    # Production: app traffic straight to PostgreSQL (the marker arrived) and no SSL are warned about.
    production = check_database_health(settings_for(migrated_db, CELORA_ENV="production", **environ))
    assert any("bypassing PgBouncer" in w for w in production.warnings), production.warnings
    assert any("not encrypted" in w for w in production.warnings), production.warnings


def test_an_unreachable_console_is_a_warning_with_a_hint(migrated_db):
    report = check_database_health(settings_for(
        migrated_db, CELORA_PGBOUNCER_ADMIN_URL=f"postgresql://celora:s3cret@127.0.0.1:{free_port()}/pgbouncer"))
    assert report.status == "healthy"  # the app path works: the console is how we look, not what we serve
    assert report.pgbouncer is not None and not report.pgbouncer.ok and report.pgbouncer.hint
    assert any("PgBouncer's pools are unknown" in w for w in report.warnings)
    assert "s3cret" not in json.dumps(report.to_json(), default=str)


# --------------------------------------------------------------------------- locks


def test_a_session_blocked_on_a_lock_is_degraded_and_names_the_blocker(migrated_db):
    admin = psycopg.connect(migrated_db, autocommit=True)
    admin.execute("CREATE TABLE lock_target (id int)")
    blocker = psycopg.connect(migrated_db, application_name="blocker-app")
    blocker.execute("LOCK TABLE lock_target IN ACCESS EXCLUSIVE MODE")
    blocker_pid = blocker.info.backend_pid
    waiting = threading.Thread(target=_query, args=(migrated_db, "SELECT count(*) FROM lock_target"), daemon=True)
    waiting.start()
    try:
        _until(lambda: admin.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                     "AND %s = ANY(pg_blocking_pids(pid))", (blocker_pid,)).fetchone()[0],
               "a session waiting on the lock")
        report = check_database_health(settings_for(migrated_db, CELORA_HEALTH_LOCK_WAIT="0"))
        assert report.status == "degraded", report.problems
        problem = next(p for p in report.problems if "waits on a lock" in p)
        assert f"pid {blocker_pid}" in problem and "blocker-app" in problem
        assert report.pressure is not None
        wait = next(w for w in report.pressure.lock_waits if w.blocked_by and w.blocked_by[0].pid == blocker_pid)
        assert wait.blocked_by[0].application_name == "blocker-app"
        assert wait.blocked_by[0].state == "idle in transaction"
        assert report.pressure.oldest_transaction is not None
        assert report.pressure.by_state.get("idle in transaction", 0) >= 1
        # Below the threshold the same wait is a fact, not a problem.
        patient = check_database_health(settings_for(migrated_db, CELORA_HEALTH_LOCK_WAIT="3600"))
        assert not any("waits on a lock" in p for p in patient.problems)
        assert patient.pressure is not None and patient.pressure.lock_waits
    finally:
        blocker.rollback()
        blocker.close()
        waiting.join(10)
        admin.close()


def test_an_old_transaction_is_degraded_and_named(migrated_db):
    holder = psycopg.connect(migrated_db, application_name="forgot-to-commit")
    holder.execute("SELECT 1")
    try:
        report = check_database_health(settings_for(migrated_db, CELORA_HEALTH_TRANSACTION_AGE="0"))
        problem = next(p for p in report.problems if "transaction has been open" in p)
        assert f"pid {holder.info.backend_pid}" in problem and "forgot-to-commit" in problem
    finally:
        holder.close()


# --------------------------------------------------------------------------- replication


@pytest.fixture(scope="module")
def primary_and_standby():
    """A throwaway primary at head (the app's schema) and a streaming standby made with pg_basebackup -R."""
    with replication("celora-test-replication-") as (primary, (standby,)):
        yield primary, standby


def test_a_lagging_replica_is_degraded_and_named(primary_and_standby):
    primary, standby = primary_and_standby
    app_url, replica_url = primary.url("app"), standby.url("app")
    _execute(app_url, "CREATE TABLE IF NOT EXISTS replicated (n int); INSERT INTO replicated VALUES (1)")
    _until(lambda: _query(replica_url, "SELECT to_regclass('replicated') IS NOT NULL "
                                       "AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()")[0],
           "the standby replaying the table")
    # Caught up (the default 30 s threshold: the primary's own background WAL, such as the standby snapshot
    # it logs every 15 s, may be in flight for a moment).
    caught_up = check_database_health(settings_for(app_url, CELORA_REPLICA_URLS=replica_url))
    assert caught_up.status == "healthy", caught_up.problems
    replica = caught_up.replicas[0]
    assert replica.ok and replica.in_recovery and not replica.replay_paused
    assert replica.lag_s is not None and replica.lag_s < 30 and replica.bytes_behind is not None
    assert caught_up.replication is not None and not caught_up.replication.in_recovery
    assert [s.state for s in caught_up.replication.standbys] == ["streaming"]
    # Health pointed at the standby itself: in recovery, no standbys or slots of its own, nothing failing.
    on_standby = check_database_health(settings_for(replica_url))
    assert on_standby.replication is not None and on_standby.replication.in_recovery
    assert not on_standby.replication.slots and on_standby.pressure is not None
    assert not [w for w in on_standby.warnings if "Could not read" in w], on_standby.warnings

    _query(replica_url, "SELECT pg_wal_replay_pause()")
    try:
        _until(lambda: _query(replica_url, "SELECT pg_get_wal_replay_pause_state() = 'paused'")[0], "replay paused")
        _execute(app_url, "INSERT INTO replicated SELECT generate_series(1, 1000)")
        _until(lambda: _query(replica_url, "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")[0],
               "WAL received but not replayed")
        # Replay is paused with WAL waiting: any lag at all is past a threshold of 0.
        cli = run_celora("db", "health", "--json", env={"DATABASE_URL": app_url, "CELORA_REPLICA_URLS": replica_url,
                                                         "CELORA_HEALTH_REPLICA_LAG": "0"})
        assert cli.returncode == 1, cli.stdout + cli.stderr
        report = json.loads(cli.stdout)
        assert report["status"] == "degraded"
        (replica_report,) = report["replicas"]
        assert replica_report["replay_paused"] and replica_report["lag_s"] > 0
        assert replica_report["bytes_behind"] > 0
        problem = next(p for p in report["problems"] if "replica 1" in p)
        assert standby.url("app") in problem and "lags" in problem and "pg_wal_replay_resume" in problem
    finally:
        _query(replica_url, "SELECT pg_wal_replay_resume()")


def test_an_unreachable_replica_is_degraded_and_named(primary_and_standby):
    primary, _ = primary_and_standby
    gone = f"postgresql://celora:hunter22@127.0.0.1:{free_port()}/app"
    report = check_database_health(settings_for(primary.url("app"), CELORA_REPLICA_URLS=gone))
    assert report.status == "degraded"
    assert any("replica 1" in p and "unreachable" in p for p in report.problems), report.problems
    assert "hunter22" not in json.dumps(report.to_json(), default=str)


def test_an_inactive_slot_keeping_wal_is_degraded_and_named(primary_and_standby):
    primary, _ = primary_and_standby
    app_url = primary.url("app")
    _query(app_url, "SELECT pg_create_physical_replication_slot('forgotten_consumer', true)")
    try:
        _execute(app_url, "CREATE TABLE IF NOT EXISTS wal_filler (n int); "
                          "INSERT INTO wal_filler SELECT generate_series(1, 1000)")
        _query(app_url, "SELECT pg_switch_wal()")
        below = check_database_health(settings_for(app_url))  # default threshold: 1 GB
        assert not any("forgotten_consumer" in p for p in below.problems), below.problems
        report = check_database_health(settings_for(app_url, CELORA_SLOT_WAL_THRESHOLD="1kB"))
        assert report.status == "degraded"
        problem = next(p for p in report.problems if "forgotten_consumer" in p)
        assert "inactive" in problem and "pg_drop_replication_slot" in problem
        assert report.replication is not None
        slot = next(s for s in report.replication.slots if s.name == "forgotten_consumer")
        assert not slot.active and slot.retained_bytes is not None and slot.retained_bytes > 1024
    finally:
        _query(app_url, "SELECT pg_drop_replication_slot('forgotten_consumer')")


def test_a_silent_replica_and_console_cannot_hold_the_report_past_its_timeout(migrated_db):
    """Both accept the TCP connection and never answer: the report still comes back, saying so."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody ever reads or writes
        port = silent.getsockname()[1]
        report = check_database_health(settings_for(
            migrated_db, CELORA_REPLICA_URLS=f"postgresql://ro@127.0.0.1:{port}/app",
            CELORA_PGBOUNCER_ADMIN_URL=f"postgresql://stats@127.0.0.1:{port}/pgbouncer"), timeout=1)
    # "within 1 s": the deadline gave up on them (libpq's own connect timeout is at least 2 s).
    (replica,) = report.replicas
    assert not replica.ok and "within 1 s" in (replica.error or "")
    assert report.pgbouncer is not None and not report.pgbouncer.ok and "within 1 s" in (report.pgbouncer.error or "")
    assert report.status == "degraded" and any("replica 1" in p for p in report.problems)
