"""Reads on read replicas: which server in CELORA_REPLICA_URLS serves the next read-only session.

`session_scope(read_only=True)` and `get_engine(read_only=True)` ask the ReadRouter for an engine. It goes round
the replicas whose replay lag is at most CELORA_REPLICA_MAX_LAG, and falls back to the primary when none is fit
(saying so on the `celora.notice` logger, once per change rather than once per session). Every route runs its
transactions READ ONLY (psycopg's `read_only`, so the BEGIN itself says READ ONLY: no extra round trip, nothing
left on a server session behind PgBouncer), and a write in one fails with ReadOnlySessionError instead of a
bare 25006.

Fitness is known, not assumed, but it is not asked before every session: a replica's state is trusted for
CELORA_REPLICA_CHECK_INTERVAL seconds (one short query on a pooled connection per replica per interval), and an
unreachable one is asked again only after UNREACHABLE_RECHECK seconds, so a stopped standby costs one refused
connection now and then, not one per session.

Lag: a standby that replayed all the WAL it received is 0 s behind, however long ago the primary last wrote
(now() - pg_last_xact_replay_timestamp() alone would grow on an idle primary and send every read to it). With
WAL waiting to be replayed, lag is the age of the last transaction it replayed. A standby whose replay is paused
(pg_wal_replay_pause()) is not fit whatever its lag: it will not catch up by itself. Nor is a server that is not
in recovery (a promoted standby, or the primary's own URL by mistake): its data no longer follows the primary.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import start_watch
from celora_cli.db.errors import postgres_message, sqlstate_of, translate
from celora_cli.db.factory import build_engine
from celora_cli.errors import CeloraError, DatabaseError, DatabaseUnreachable

notice = logging.getLogger("celora.notice")

# Seconds before an unreachable replica is tried again (or CELORA_REPLICA_CHECK_INTERVAL, when longer): a
# stopped server refuses at once, but a host that drops packets costs CELORA_CONNECT_TIMEOUT to the session
# that asks, and that must stay rare.
UNREACHABLE_RECHECK = 5.0

_STATE_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END"""


class ReadOnlySessionError(DatabaseError):
    """A write in a read-only session (session_scope(read_only=True)): PostgreSQL's 25006
    read_only_sql_transaction, on a replica or on the primary's READ ONLY fallback alike. A DatabaseError (exit
    13, sqlstate "25006") with a message that names the way out."""


@dataclass(frozen=True)
class ReplicaState:
    """What the last check of one replica found."""

    name: str  # "replica 1": its position in CELORA_REPLICA_URLS
    url: str  # masked
    fit: bool  # read-only sessions may go there
    problem: str | None  # when not fit: unreachable, unusable, not_in_recovery, paused, lag_unknown or lagging
    reason: str | None  # the problem in words (with the lag, the error)
    lag_s: float | None  # seconds of replay lag (0 when it replayed all it received); None when unknown
    in_recovery: bool | None
    replay_paused: bool | None
    check_ms: float  # how long the check took
    checked_at: float  # time.time() of the check

    def to_json(self) -> dict:
        return {"name": self.name, "url": self.url, "fit": self.fit, "problem": self.problem, "reason": self.reason,
                "lag_s": None if self.lag_s is None else round(self.lag_s, 3), "in_recovery": self.in_recovery,
                "replay_paused": self.replay_paused, "check_ms": round(self.check_ms, 2),
                "checked_at": self.checked_at}


def read_only(engine: Engine, where: str) -> Engine:
    """`engine` (sharing its pool) with every transaction READ ONLY and 25006 turned into ReadOnlySessionError.

    SQLAlchemy sets psycopg's `read_only` when it hands the connection out and resets it when the connection
    goes back to the pool, so the writable engine sharing the pool never sees it."""
    guarded = engine.execution_options(postgresql_readonly=True)

    @event.listens_for(guarded, "handle_error")
    def _refused_write(context) -> None:
        if sqlstate_of(context.original_exception) == "25006":
            raise ReadOnlySessionError(
                "This session is read-only (session_scope(read_only=True)); use session_scope() for writes. "
                f"PostgreSQL refused a write on {where}: {postgres_message(context.original_exception)}.",
                "Open a session with session_scope() (or get_engine() for a Connection) for anything that "
                "writes; read-only sessions go to the replicas in CELORA_REPLICA_URLS, or run READ ONLY on the "
                "primary when none is fit.",
                sqlstate="25006",
            ) from context.original_exception

    return guarded


class Replica:
    """One URL of CELORA_REPLICA_URLS: its pooled engine (built on first use) and its last known state."""

    def __init__(self, number: int, url: DatabaseURL, settings: Settings) -> None:
        self.name = f"replica {number}"
        self.url = url
        self.settings = settings
        self.state: ReplicaState | None = None
        self._engine: Engine | None = None
        self._next_check = 0.0  # time.monotonic()
        self._lock = threading.RLock()  # one check at a time (re-entered when a check's own connection fails)
        self._engine_lock = threading.Lock()  # one engine (one pool), however many threads ask first

    @property
    def engine(self) -> Engine:
        if self._engine is not None:  # every route asks: no lock once it exists
            return self._engine
        with self._engine_lock:
            if self._engine is None:
                # Through PgBouncer when the URL says ?pgbouncer=true: build_engine then prepares nothing on the
                # server and sends no startup options, exactly as for the primary's pooled URL.
                engine = read_only(build_engine(self.url, self.settings, pooled=True,
                                                application_name="celora read"),
                                   f"{self.name} ({self.url.masked})")

                @event.listens_for(engine, "handle_error")
                def _lost(context) -> None:
                    # Core users (get_engine(read_only=True)) meet a replica that went away in their own
                    # statement; the next route must not send them back there until it answers a check again.
                    if context.is_disconnect or context.connection is None:  # lost, or never connected
                        self.mark_unreachable(context.original_exception)

                self._engine = engine
            return self._engine

    def current(self, *, refresh: bool = False) -> ReplicaState:
        """The state to route by: checked now when the last check is older than the interval (or `refresh`)."""
        if self.state is not None and time.monotonic() < self._next_check and not refresh:
            return self.state
        # The first check is waited for; later ones are made by one thread while the others use the last state.
        if not self._lock.acquire(blocking=self.state is None or refresh):
            assert self.state is not None
            return self.state
        try:
            if self.state is None or time.monotonic() >= self._next_check or refresh:
                self.state = self.check()
                interval = self.settings.replica_check_interval
                if self.state.in_recovery is None:  # it did not answer
                    interval = max(interval, UNREACHABLE_RECHECK)
                self._next_check = time.monotonic() + interval
            return self.state
        finally:
            self._lock.release()

    def mark_unreachable(self, exc: BaseException) -> None:
        """A connection to it failed or was lost: unfit until the next check, as if a check had failed now."""
        with self._lock:
            self.state = self._state(*self._failure(exc), time.perf_counter())
            self._next_check = time.monotonic() + max(self.settings.replica_check_interval, UNREACHABLE_RECHECK)

    def check(self) -> ReplicaState:
        """Ask the replica where its replay is (one query on a pooled connection). Never raises."""
        import psycopg
        import sqlalchemy.exc

        started = time.perf_counter()
        try:
            with self.engine.connect() as conn:
                # A path that went silent under a pooled connection would hold this session until keepalives
                # gave up (25 s): the answer is due within the connect timeout, like a connection's.
                watch = start_watch(conn.connection.dbapi_connection, self.settings.connect_timeout)
                try:
                    in_recovery, paused, lag = conn.exec_driver_sql(_STATE_SQL).one()
                finally:
                    watch.done = True
        except (sqlalchemy.exc.SQLAlchemyError, psycopg.Error, CeloraError, OSError) as exc:
            return self._state(*self._failure(exc), started)
        lag = None if lag is None else max(0.0, float(lag))
        paused = None if paused is None else bool(paused)
        problem, reason = None, None
        if not in_recovery:
            problem = "not_in_recovery"
            reason = "not a replica: pg_is_in_recovery() is false (a promoted standby, or the primary's URL)"
        elif paused:
            behind = f", {lag:.1f} s behind" if lag is not None else ""
            problem = "paused"
            reason = f"replay is paused (pg_wal_replay_pause(); resume with pg_wal_replay_resume()){behind}"
        elif lag is None:
            problem = "lag_unknown"
            reason = "lag unknown: WAL is waiting to be replayed and no transaction was replayed yet"
        elif lag > self.settings.replica_max_lag:
            problem = "lagging"
            reason = f"{lag:.1f} s behind the primary (CELORA_REPLICA_MAX_LAG is {self.settings.replica_max_lag:g} s)"
        return self._state(problem, reason, started, lag=lag, in_recovery=bool(in_recovery), paused=paused)

    def _failure(self, exc: BaseException) -> tuple[str, str]:
        """(problem, reason) of a replica that did not answer, in words a user can act on (password masked)."""
        error = translate(exc, self.url, f"CELORA_REPLICA_URLS ({self.name})")
        problem = "unreachable" if isinstance(error, DatabaseUnreachable) else "unusable"
        return problem, f"{problem}: {error.message}"

    def _state(self, problem: str | None, reason: str | None, started: float, *, lag: float | None = None,
               in_recovery: bool | None = None, paused: bool | None = None) -> ReplicaState:
        return ReplicaState(name=self.name, url=self.url.masked, fit=problem is None, problem=problem,
                            reason=reason, lag_s=lag, in_recovery=in_recovery, replay_paused=paused,
                            check_ms=(time.perf_counter() - started) * 1000, checked_at=time.time())


@dataclass(frozen=True)
class Route:
    """Where one read-only session goes."""

    engine: Engine
    target: str  # "replica 1", ... or "primary"
    replica: Replica | None = None


class ReadRouter:
    """Round-robin over the fit replicas of one Settings; the primary (READ ONLY) when none is fit."""

    def __init__(self, settings: Settings, primary: Engine) -> None:
        self.replicas = [Replica(number, url, settings) for number, url in enumerate(settings.replica_urls, 1)]
        self.primary = read_only(primary, "the primary (no replica is fit)" if self.replicas else "the primary")
        self._turn = itertools.count()
        self._falling_back: bool | None = None  # None: no read routed yet
        self._reported: dict[str, str | None] = {}  # each replica's last logged problem (None: fit)
        self._log_lock = threading.Lock()

    def route(self) -> Route:
        if not self.replicas:  # none configured: the primary is the plan, not a fallback
            return Route(self.primary, "primary")
        states = [replica.current() for replica in self.replicas]
        self._report(states)
        fit = [replica for replica, state in zip(self.replicas, states, strict=True) if state.fit]
        if not fit:
            return Route(self.primary, "primary")
        replica = fit[next(self._turn) % len(fit)]
        return Route(replica.engine, replica.name, replica)

    def session(self) -> Session:
        """A Session on the next route, already connected: a replica that went away since its last check is
        found here (and skipped) rather than in the caller's first query."""
        import sqlalchemy.exc

        for _ in self.replicas:  # each failure takes one replica out of the round
            route = self.route()
            session = Session(route.engine, expire_on_commit=False, info={"celora_route": route.target})
            if route.replica is None:
                return session
            try:
                session.connection()
            except sqlalchemy.exc.DBAPIError as exc:
                session.close()
                route.replica.mark_unreachable(exc)
                continue
            return session
        self._report([replica.current() for replica in self.replicas])  # says the primary serves this one
        return Session(self.primary, expire_on_commit=False, info={"celora_route": "primary"})

    def status(self, *, refresh: bool = False) -> list[ReplicaState]:
        """Each replica's state: as last checked (checked now when older than the interval), or fresh."""
        return [replica.current(refresh=refresh) for replica in self.replicas]

    def _report(self, states: list[ReplicaState]) -> None:
        """Log changes only: a replica's problem (not its lag, which moves at every check), reads falling back
        to the primary or leaving it. Each session logging its route would drown the app's log."""
        with self._log_lock:
            for state in states:
                if self._reported.get(state.name, "never") != state.problem:
                    if state.problem is not None:
                        notice.info("Read replica %s (%s) is skipped: %s.", state.name, state.url, state.reason)
                    elif state.name in self._reported:
                        notice.info("Read replica %s (%s) is fit again (%.1f s behind); reads go to it.",
                                    state.name, state.url, state.lag_s or 0.0)
                    self._reported[state.name] = state.problem
            falling_back = not any(state.fit for state in states)
            if falling_back and not self._falling_back:
                notice.warning("Read-only sessions fall back to the primary: no replica in CELORA_REPLICA_URLS "
                               "is fit (%s).", "; ".join(f"{s.name}: {s.reason}" for s in states))
            elif not falling_back and self._falling_back:
                notice.info("Read-only sessions go to the replicas again.")
            self._falling_back = falling_back
