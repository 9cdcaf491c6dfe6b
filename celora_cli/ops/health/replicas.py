"""Read replicas named in CELORA_REPLICA_URLS: reachable, really in recovery, and how far behind.

Lag in seconds is now() - pg_last_xact_replay_timestamp() while WAL it received is still waiting to be
replayed; a standby that replayed all it received is 0 s behind, however long ago the primary last wrote
(the bare timestamp difference would grow on an idle primary and cry wolf). Bytes behind need the primary's
current WAL position, so the report fills them in when the primary was read too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import connect
from celora_cli.db.errors import translate

_STATE = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END,
       pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0.0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END"""


@dataclass
class ReplicaCheck:
    name: str  # "replica 1", "replica 2": the position in CELORA_REPLICA_URLS
    url: str  # masked
    ok: bool = False  # it answered
    in_recovery: bool | None = None
    replay_paused: bool | None = None
    receive_lsn: str | None = None
    replay_lsn: str | None = None
    lag_s: float | None = None
    bytes_behind: int | None = None  # the primary's current WAL position minus replay_lsn
    error: str | None = None
    hint: str | None = None


def check_replica(check: ReplicaCheck, url: DatabaseURL, settings: Settings, timeout: float) -> None:
    """Fill `check` in place (runs in a thread that may be abandoned: never raises)."""
    quick = dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, timeout),
                                statement_timeout=min(settings.statement_timeout or timeout, timeout))
    try:
        with connect(url, quick, application_name="celora health") as conn:
            row = conn.execute(_STATE).fetchone()
    except Exception as exc:  # noqa: BLE001 - an unreachable replica is a line of the report
        error = translate(exc, url, f"CELORA_REPLICA_URLS ({check.name})")
        check.error, check.hint = error.message, error.hint
        return
    in_recovery, paused, receive_lsn, replay_lsn, lag = row
    check.ok, check.in_recovery = True, bool(in_recovery)
    check.replay_paused = None if paused is None else bool(paused)
    check.receive_lsn, check.replay_lsn = receive_lsn, replay_lsn
    check.lag_s = float(lag) if in_recovery and lag is not None else None


def replica_problems(check: ReplicaCheck, max_lag_s: float) -> list[str]:
    label = f"{check.name} ({check.url})"
    if not check.ok:
        return [f"{label} is unreachable: {check.error}"]
    if not check.in_recovery:
        check.hint = "Point CELORA_REPLICA_URLS at standbys only; a promoted standby is a primary now."
        return [f"{label} is not a replica: pg_is_in_recovery() is false (promoted, or the primary's URL)."]
    if check.lag_s is not None and check.lag_s > max_lag_s:
        behind = f", {check.bytes_behind} bytes of WAL behind" if check.bytes_behind is not None else ""
        paused = " Replay is paused (pg_wal_replay_pause()): resume it with pg_wal_replay_resume()." \
            if check.replay_paused else ""
        check.hint = ("Look at the standby's replay (pg_stat_wal_receiver, its log) and at long queries on it "
                      "holding replay back (max_standby_streaming_delay)." + paused)
        return [f"{label} lags {check.lag_s:.1f} s behind the primary{behind} "
                f"(CELORA_HEALTH_REPLICA_LAG is {max_lag_s:g} s).{paused}"]
    return []
