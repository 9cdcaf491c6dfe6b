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
    over_threshold: bool | None = None  # retained_bytes > CELORA_SLOT_WAL_THRESHOLD (set by the findings)
    # How far its consumer is behind: in WAL, the current position minus what it confirmed (confirmed_flush_lsn;
    # None for a physical slot); in time, for an attached consumer, the flush lag its walsender measured
    # (pg_stat_replication.flush_lag: how long a position took from sent to confirmed; NULL there once it has
    # caught up, so 0). None with no consumer attached: nothing measures it then (the WAL lag still grows).
    lag_bytes: int | None = None
    lag_seconds: float | None = None


@dataclass
class Replication:
    in_recovery: bool
    current_wal_lsn: str | None = None  # on a primary
    standbys: list[StandbyInfo] = field(default_factory=list)
    slots: list[SlotInfo] = field(default_factory=list)


# One round trip each: health runs when paged and is benchmarked, and these views are cheap to read at once.
# Durations come back as seconds, LSN differences are computed here (a standby has no pg_current_wal_lsn()).
# A lock wait's age is its statement's: the wait began during it, and PostgreSQL records no wait start.
_SESSION_JSON = """json_build_object('pid', {a}.pid, 'database', {a}.datname, 'user', {a}.usename,
    'application_name', {a}.application_name, 'client', {a}.client_addr::text, 'state', {a}.state,
    'seconds', extract(epoch FROM now() - {a}.{since})::float8)"""

_PRESSURE = f"""
SELECT current_setting('max_connections')::int,
  (SELECT coalesce(json_object_agg(state, n), '{{}}') FROM (
     SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM pg_stat_activity
     WHERE backend_type = 'client backend' GROUP BY 1) AS states),
  (SELECT {_SESSION_JSON.format(a='o', since='xact_start')} FROM pg_stat_activity o
     WHERE o.backend_type = 'client backend' AND o.xact_start IS NOT NULL AND o.pid <> pg_backend_pid()
     ORDER BY o.xact_start LIMIT 1),
  (SELECT coalesce(json_agg(json_build_object(
        'waiting', {_SESSION_JSON.format(a='w', since='query_start')},
        'blocker_pids', pg_blocking_pids(w.pid),
        'blockers', (SELECT json_agg({_SESSION_JSON.format(a='b', since='xact_start')})
                     FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(w.pid))))), '[]')
   FROM (SELECT * FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()
         ORDER BY query_start LIMIT 20) AS w)"""

_REPLICATION = """
SELECT pg_is_in_recovery(),
  CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END,
  (SELECT coalesce(json_agg(json_build_object('name', application_name, 'client', client_addr::text,
       'state', state, 'sync_state', sync_state, 'replay_lag_s', extract(epoch FROM replay_lag)::float8,
       'replay_lsn', replay_lsn::text) ORDER BY application_name), '[]') FROM pg_stat_replication),
  (SELECT coalesce(json_agg(json_build_object('name', s.slot_name, 'slot_type', s.slot_type,
       'database', s.database, 'active', s.active, 'restart_lsn', s.restart_lsn::text, 'wal_status', s.wal_status,
       'confirmed_flush_lsn', s.confirmed_flush_lsn::text,
       'lag_s', CASE WHEN s.active THEN coalesce(extract(epoch FROM r.flush_lag)::float8, 0) END)
       ORDER BY s.slot_name), '[]')
   FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid)"""


def read_pressure(conn) -> Pressure:
    max_connections, by_state, oldest, waits = conn.execute(_PRESSURE).fetchone()
    pressure = Pressure(max_connections=int(max_connections))
    pressure.by_state = {str(state): int(count) for state, count in by_state.items()}
    pressure.oldest_transaction = _session(oldest) if oldest else None
    for wait in waits:
        known = {blocker["pid"]: _session(blocker) for blocker in wait["blockers"] or ()}
        blocked_by = [known.get(pid) or SessionInfo(pid, None, None, None, None, None, None)
                      for pid in wait["blocker_pids"] or ()]
        pressure.lock_waits.append(LockWait(_session(wait["waiting"]), blocked_by))
    return pressure


def read_replication(conn) -> Replication:
    in_recovery, current, standbys, slots = conn.execute(_REPLICATION).fetchone()
    replication = Replication(in_recovery=bool(in_recovery))
    if in_recovery:
        return replication  # a standby's own standbys and slots are not what this report is about
    replication.current_wal_lsn = current
    replication.standbys = [
        StandbyInfo(s["name"], s["client"], s["state"], s["sync_state"], s["replay_lag_s"],
                    _behind(current, s["replay_lsn"]))
        for s in standbys]
    replication.slots = [
        SlotInfo(s["name"], s["slot_type"], s["database"], bool(s["active"]), _behind(current, s["restart_lsn"]),
                 s["wal_status"], lag_bytes=_behind(current, s["confirmed_flush_lsn"]), lag_seconds=s["lag_s"])
        for s in slots]
    return replication


def lsn_bytes(lsn: str) -> int:
    """PostgreSQL's pg_lsn text (16/B374D848) as a byte position."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _behind(current: str | None, lsn: str | None) -> int | None:
    return max(0, lsn_bytes(current) - lsn_bytes(lsn)) if current and lsn else None


def _session(row: dict) -> SessionInfo:
    seconds = row.get("seconds")
    return SessionInfo(int(row["pid"]), row.get("database"), row.get("user"), row.get("application_name"),
                       row.get("client"), row.get("state"), float(seconds) if seconds is not None else None)
