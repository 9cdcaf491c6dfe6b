"""Read replicas in the library: `session_scope(read_only=True)` on real streaming standbys made with
pg_basebackup (tests/support/standby.py), one of them behind a real PgBouncer: reads go round the fit ones, a paused or
stopped standby is skipped for the primary (with a log line saying so), and a write in a read-only scope fails
with a clear error on a standby and on the primary alike.

Which server answered is proven by the server itself: pg_is_in_recovery() and inet_server_port().
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy.exc
from sqlalchemy import Integer, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from celora_cli import ReadOnlySessionError, get_engine, get_read_router, session_scope
from celora_cli.db import engine as engine_module
from celora_cli.errors import ExitCode
from tests.support import free_port, run_pgbouncer, settings_for
from tests.support.standby import caught_up, execute, query, replication, stop_immediately, streaming_count, until

pytestmark = pytest.mark.db  # some tests start a PostgreSQL of their own, outside the session's fixtures

WRITE_REFUSED = "This session is read-only (session_scope(read_only=True)); use session_scope() for writes."


class Base(DeclarativeBase):
    pass


class Read(Base):
    __tablename__ = "reads"
    n: Mapped[int] = mapped_column(Integer, primary_key=True)


@pytest.fixture(scope="module")
def cluster():
    """A primary with table `reads`, two streaming standbys, and PgBouncer (transaction mode, from the repo's
    pgbouncer.ini) in front of the primary and of the second standby. Yields (primary, standby1, standby2,
    replica_bouncer, primary_bouncer): the bouncers are functions database -> URL with ?pgbouncer=true."""
    with replication("celora-test-read-replicas-", standbys=2, migrate=False) as (primary, standbys):
        execute(primary.url("app"), "CREATE TABLE reads (n int PRIMARY KEY); INSERT INTO reads VALUES (1)")
        for standby in standbys:
            until(lambda s=standby: query(s.url(), "SELECT to_regclass('reads') IS NOT NULL")[0] and caught_up(s),
                  "the standby replaying the table")
        replica_bouncer = run_pgbouncer(standbys[1], "celora-test-pgbouncer-replica-")
        primary_bouncer = run_pgbouncer(primary, "celora-test-pgbouncer-primary-")
        try:
            yield primary, standbys[0], standbys[1], next(replica_bouncer), next(primary_bouncer)
        finally:
            for bouncer in (replica_bouncer, primary_bouncer):
                next(bouncer, None)  # stops it


@pytest.fixture(autouse=True)
def fresh_routers():
    """Each test starts with no remembered replica state (routers are kept per Settings, like engines)."""
    yield
    for router in engine_module._routers.values():
        for replica in router.replicas:
            if replica._engine is not None:
                replica._engine.dispose()
    engine_module._routers.clear()


def settings(primary, *replica_urls: str, **extra):
    """Checked before every session unless a test says otherwise: the tests see each change at once."""
    extra.setdefault("CELORA_REPLICA_CHECK_INTERVAL", "0")
    return settings_for(primary.url("app"), CELORA_REPLICA_URLS=",".join(replica_urls), **extra)


def where(session) -> tuple[bool, int]:
    """(in recovery, server port) of the server this session reads from."""
    return tuple(session.execute(text("SELECT pg_is_in_recovery(), current_setting('port')::int")).one())


def test_a_read_only_scope_reads_from_the_standby_and_its_lag_is_reported(cluster):
    primary, standby, *_ = cluster
    config = settings(primary, standby.url("app"))
    with session_scope(config, read_only=True) as session:
        assert where(session) == (True, standby.port)
        assert session.info["celora_route"] == "replica 1"
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "on"
        assert session.get(Read, 1) is not None
    (state,) = get_read_router(config).status()
    assert state.fit and state.in_recovery and state.replay_paused is False and state.reason is None
    assert state.lag_s is not None and 0 <= state.lag_s <= config.replica_max_lag
    assert state.name == "replica 1" and state.url == standby.url("app") and state.check_ms > 0
    assert state.to_json()["fit"] is True
    # The plain scope is untouched: the primary, writable.
    with session_scope(config) as session:
        assert where(session) == (False, primary.port)
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"


def test_a_standby_that_replayed_all_it_received_is_0_s_behind_however_long_ago_the_primary_wrote(cluster):
    primary, standby, *_ = cluster
    config = settings(primary, standby.url("app"), CELORA_REPLICA_MAX_LAG="0.5")
    naive = "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
    until(lambda: query(standby.url(), naive)[0] > 1, "the primary idle for more than a second")
    # Only 0 is within a limit the naive measure already exceeds (waited for: background WAL such as a standby
    # snapshot may be in flight for a moment).
    state = until(lambda: next((s for s in get_read_router(config).status() if s.fit), None), "the standby fit")
    assert state.lag_s == 0.0 and query(standby.url(), naive)[0] > 1


def test_a_write_in_a_read_only_scope_fails_clearly_on_a_replica_and_on_the_primary(cluster):
    primary, standby, _, _, primary_bouncer = cluster
    on_replica, on_primary = settings(primary, standby.url("app")), settings(primary)  # no replica: the primary
    # The primary through PgBouncer: READ ONLY travels in each BEGIN, so transaction pooling keeps it.
    pooled = settings_for(primary_bouncer("app"),  # with a replica that is not there: the fallback
                          CELORA_REPLICA_URLS=f"postgresql://celora@127.0.0.1:{free_port()}/app")
    for config, in_recovery in ((on_replica, True), (on_primary, False), (pooled, False)):
        with pytest.raises(ReadOnlySessionError) as caught:
            with session_scope(config, read_only=True) as session:
                assert where(session)[0] is in_recovery
                session.execute(text("INSERT INTO reads VALUES (2)"))
        assert caught.value.message.startswith(WRITE_REFUSED)
        assert "cannot execute INSERT in a read-only transaction" in caught.value.message
        assert caught.value.sqlstate == "25006" and caught.value.exit_code == ExitCode.DATABASE_ERROR
        assert "session_scope()" in caught.value.hint
        # An ORM write fails the same way when the scope flushes it at the end.
        with pytest.raises(ReadOnlySessionError, match=r"session_scope\(read_only=True\)"):
            with session_scope(config, read_only=True) as session:
                session.add(Read(n=3))
        # get_engine(read_only=True) is as read-only as the scope.
        with pytest.raises(ReadOnlySessionError), get_engine(config, read_only=True).begin() as conn:
            conn.execute(text("DELETE FROM reads"))
    # The read-only fallback shares the primary's pool: the connections it used are writable again there (and
    # behind PgBouncer's single server connection, nothing of the read-only transactions stayed either).
    for config in (on_primary, pooled):
        for _ in range(3):
            with session_scope(config) as session:
                assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"
                session.execute(text("INSERT INTO reads VALUES (2) ON CONFLICT DO NOTHING"))
    assert query(primary.url("app"), "SELECT count(*) FROM reads WHERE n = 2")[0] == 1


def test_reads_go_round_the_fit_replicas_through_their_pooler_and_skip_an_unreachable_one(cluster):
    primary, standby1, standby2, bouncer, _ = cluster
    gone = f"postgresql://celora:hunter22@127.0.0.1:{free_port()}/app"
    config = settings(primary, standby1.url("app"), gone, bouncer("app"), CELORA_REPLICA_CHECK_INTERVAL="60")
    served = []
    for _ in range(4):
        with session_scope(config, read_only=True) as session:
            served.append((session.info["celora_route"], *where(session)))
            for _ in range(8):  # past psycopg's prepare threshold: nothing may be prepared behind PgBouncer
                session.execute(text("SELECT count(*) FROM reads WHERE n = :n"), {"n": 1}).scalar()
            # One server connection behind that PgBouncer (default_pool_size=1): a statement prepared there
            # would still be listed here. Direct to the standby, psycopg prepares it, as it should.
            prepared = session.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar()
            assert (prepared > 0) is (session.info["celora_route"] == "replica 1")
    assert served == [("replica 1", True, standby1.port), ("replica 3", True, standby2.port)] * 2
    states = get_read_router(config).status()
    assert [s.fit for s in states] == [True, False, True]
    assert states[1].problem == "unreachable" and states[1].reason.startswith("unreachable")
    assert "hunter22" not in states[1].reason and "****" in states[1].reason


def test_a_paused_standby_is_skipped_for_the_primary_and_used_again_once_resumed(cluster, caplog):
    primary, standby, *_ = cluster
    config = settings(primary, standby.url("app"), CELORA_REPLICA_MAX_LAG="1")
    router = get_read_router(config)
    with session_scope(config, read_only=True) as session:
        assert where(session) == (True, standby.port)
    query(standby.url(), "SELECT pg_wal_replay_pause()")
    try:
        until(lambda: query(standby.url(), "SELECT pg_get_wal_replay_pause_state() = 'paused'")[0], "replay paused")
        execute(primary.url("app"), "INSERT INTO reads SELECT generate_series(100, 1100)")
        rows = query(primary.url("app"), "SELECT count(*) FROM reads")[0]
        until(lambda: query(standby.url(), "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()")[0],
              "WAL received but not replayed")
        # Past the lag limit: the age of the last replayed transaction grows while the new rows wait unreplayed.
        lagging = until(lambda: next((s for s in router.status() if s.lag_s is not None and s.lag_s > 1), None),
                        "the standby more than 1 s behind")
        assert not lagging.fit and lagging.replay_paused and lagging.problem == "paused"
        assert query(standby.url(), "SELECT count(*) FROM reads")[0] < rows  # what a read there would miss
        assert "replay is paused" in lagging.reason and "behind" in lagging.reason
        with caplog.at_level(logging.INFO, logger="celora.notice"):
            with session_scope(config, read_only=True) as session:
                assert where(session) == (False, primary.port)
                assert session.info["celora_route"] == "primary"
                assert session.execute(text("SELECT count(*) FROM reads")).scalar() == rows  # the primary's rows
                assert session.execute(text("SHOW transaction_read_only")).scalar() == "on"
            # A change is logged once, not per session nor per check (the lag moves at each one).
            until(lambda: get_read_router(config).status()[0].lag_s > lagging.lag_s, "the lag growing")
            with session_scope(config, read_only=True):
                pass
        fallbacks = [r for r in caplog.records if "fall back to the primary" in r.getMessage()]
        assert len(fallbacks) == 1 and fallbacks[0].levelno == logging.WARNING
        assert len([r for r in caplog.records if "is skipped: replay is paused" in r.getMessage()]) == 1
        assert "replica 1: replay is paused" in fallbacks[0].getMessage()
    finally:
        query(standby.url(), "SELECT pg_wal_replay_resume()")
    until(lambda: caught_up(standby), "the standby caught up")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="celora.notice"):
        with session_scope(config, read_only=True) as session:
            assert where(session) == (True, standby.port)
            assert session.execute(text("SELECT count(*) FROM reads")).scalar() == rows
    assert any("go to the replicas again" in r.getMessage() for r in caplog.records)


def test_a_stopped_standby_is_skipped_without_asking_it_again_on_every_session(cluster, caplog):
    primary, _, standby, *_ = cluster
    config = settings(primary, standby.url("app"), CELORA_REPLICA_CHECK_INTERVAL="60")
    core = settings(primary, standby.url("app"), CELORA_REPLICA_CHECK_INTERVAL="60", CELORA_REPLICA_MAX_LAG="6")
    router = get_read_router(config)
    with session_scope(config, read_only=True) as session:
        assert where(session) == (True, standby.port)
    with get_engine(core, read_only=True).connect() as conn:
        assert conn.execute(text("SELECT pg_is_in_recovery()")).scalar()
    stop_immediately(standby)
    try:
        # Core: the engine chosen while its last check (fit) is trusted fails in the caller's own statement, and
        # that failure takes it out of the round: the next choice is the primary.
        with pytest.raises(sqlalchemy.exc.OperationalError), get_engine(core, read_only=True).connect() as conn:
            conn.execute(text("SELECT 1"))
        with get_engine(core, read_only=True).connect() as conn:
            assert conn.execute(text("SELECT pg_is_in_recovery()")).scalar() is False
        assert get_read_router(core).status()[0].reason.startswith("unreachable")
        # Its last check (fit) is still trusted, but the session connects before handing itself over: the
        # standby that went away since is found there and the session goes to the primary instead.
        with caplog.at_level(logging.INFO, logger="celora.notice"):
            with session_scope(config, read_only=True) as session:
                assert where(session) == (False, primary.port)
        (state,) = router.status()
        assert not state.fit and state.problem == "unreachable" and state.in_recovery is None
        assert any("fall back to the primary" in r.getMessage() and "unreachable" in r.getMessage()
                   for r in caplog.records)
        # Not asked again on the next sessions: the same state object, no new check.
        for _ in range(3):
            with session_scope(config, read_only=True) as session:
                assert where(session) == (False, primary.port)
        assert router.status() == [state] and router.status()[0] is state
        # A fresh router (a new process) checks once, finds it stopped, and reads from the primary.
        engine_module._routers.clear()
        with session_scope(config, read_only=True) as session:
            assert where(session) == (False, primary.port)
        assert not get_read_router(config).status()[0].fit
    finally:
        standby.ensure_running()
        until(lambda: streaming_count(primary) == 2, "the standby streaming again")
