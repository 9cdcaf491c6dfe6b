"""What the server itself says about pressure and replication, read on one connection (the direct path).

Pressure: connections by state against max_connections, the oldest open transaction, sessions waiting on a
lock and who blocks them (pg_blocking_pids). Replication on a primary: each standby in pg_stat_replication
and every replication slot with the WAL it keeps. Cluster-wide on purpose: a blocked session or a forgotten
slot in another database of the same server is the app's problem too. A role without pg_monitor sees other
roles' sessions without their query text; the counts stay right.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SessionInfo:
    """A server session named well enough to act on (pg_terminate_backend(pid))."""

    pid: int
    database: str | None
    user: str | None
    application_name: str | None
    client: str | None
    state: str | None
    seconds: float | None  # transaction age, or how long it has waited


@dataclass
class LockWait:
    waiting: SessionInfo  # .seconds: how long its statement has run (it waits on a lock)
    blocked_by: list[SessionInfo]


@dataclass
class Pressure:
    max_connections: int
    by_state: dict[str, int] = field(default_factory=dict)  # client backends by pg_stat_activity.state
    oldest_transaction: SessionInfo | None = None  # .seconds: age of its open transaction
    lock_waits: list[LockWait] = field(default_factory=list)


@dataclass
class StandbyInfo:
    """One row of pg_stat_replication: a standby streaming from this primary."""

    name: str | None  # application_name (the standby's cluster_name or primary_conninfo's)
    client: str | None
    state: str | None
    sync_state: str | None
    replay_lag_s: float | None
    bytes_behind: int | None


@dataclass
class SlotInfo:
    name: str
    slot_type: str
    database: str | None
    active: bool
    retained_bytes: int | None  # WAL kept for it: current WAL position minus its restart_lsn
    wal_status: str | None


@dataclass
class Replication:
    in_recovery: bool
    current_wal_lsn: str | None = None  # on a primary
    standbys: list[StandbyInfo] = field(default_factory=list)
    slots: list[SlotInfo] = field(default_factory=list)


_BY_STATE = """
SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1"""

_OLDEST_TRANSACTION = """
SELECT pid, datname, usename, application_name, client_addr::text, state,
       extract(epoch FROM now() - xact_start)::float8
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND xact_start IS NOT NULL AND pid <> pg_backend_pid()
ORDER BY xact_start LIMIT 1"""

# The statement's age stands for the wait: the wait began during it, PostgreSQL records no wait start.
_LOCK_WAITS = """
SELECT w.pid, w.datname, w.usename, w.application_name, w.client_addr::text, w.state,
       extract(epoch FROM now() - w.query_start)::float8, pg_blocking_pids(w.pid)
FROM pg_stat_activity w
WHERE w.wait_event_type = 'Lock' AND w.pid <> pg_backend_pid()
ORDER BY w.query_start LIMIT 20"""

_SESSIONS = """
SELECT pid, datname, usename, application_name, client_addr::text, state,
       extract(epoch FROM now() - xact_start)::float8
FROM pg_stat_activity WHERE pid = ANY(%s)"""

_STANDBYS = """
SELECT application_name, client_addr::text, state, sync_state, extract(epoch FROM replay_lag)::float8,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint
FROM pg_stat_replication ORDER BY application_name"""

_SLOTS = """
SELECT slot_name, slot_type, database, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
       wal_status
FROM pg_replication_slots ORDER BY slot_name"""


def read_pressure(conn) -> Pressure:
    max_connections = conn.execute("SELECT current_setting('max_connections')::int").fetchone()[0]
    pressure = Pressure(max_connections=int(max_connections))
    pressure.by_state = {state: int(count) for state, count in conn.execute(_BY_STATE).fetchall()}
    row = conn.execute(_OLDEST_TRANSACTION).fetchone()
    pressure.oldest_transaction = _session(row) if row else None
    waits = conn.execute(_LOCK_WAITS).fetchall()
    blocker_pids = sorted({pid for row in waits for pid in row[7] or ()})
    blockers = {}
    if blocker_pids:
        blockers = {row[0]: _session(row) for row in conn.execute(_SESSIONS, (blocker_pids,)).fetchall()}
    for row in waits:
        blocked_by = [blockers.get(pid) or SessionInfo(pid, None, None, None, None, None, None) for pid in row[7] or ()]
        pressure.lock_waits.append(LockWait(_session(row[:7]), blocked_by))
    return pressure


def read_replication(conn) -> Replication:
    (in_recovery,) = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    replication = Replication(in_recovery=bool(in_recovery))
    if in_recovery:
        return replication  # a standby's own standbys and slots are not what this report is about
    replication.current_wal_lsn = str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])
    replication.standbys = [
        StandbyInfo(name, client, state, sync, lag, int(behind) if behind is not None else None)
        for name, client, state, sync, lag, behind in conn.execute(_STANDBYS).fetchall()]
    replication.slots = [
        SlotInfo(name, slot_type, database, bool(active), int(retained) if retained is not None else None, status)
        for name, slot_type, database, active, retained, status in conn.execute(_SLOTS).fetchall()]
    return replication


def _session(row) -> SessionInfo:
    pid, database, user, application, client, state, seconds = row
    return SessionInfo(int(pid), database, user, application, client, state,
                       float(seconds) if seconds is not None else None)
