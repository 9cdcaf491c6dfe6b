"""From the facts health read to what on-call should act on: problems (degraded) and warnings.

Every problem names its cause (the pool, the pid, the replica, the slot), the threshold setting it crossed and
the fix, so the one screen health prints is enough to start working.
"""

from __future__ import annotations

from celora_cli.config.settings import Settings
from celora_cli.ops.health.replicas import replica_problems
from celora_cli.ops.health.report import HealthReport
from celora_cli.ops.health.server import SessionInfo, lsn_bytes
from celora_cli.safety.production import PRODUCTION


def in_depth(report: HealthReport, settings: Settings) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    _pgbouncer(report, settings, problems, warnings)
    _routing(report, settings, warnings)
    _pressure(report, settings, problems)
    _replication(report, settings, problems, warnings)
    _replicas(report, settings, problems)
    _ssl(report, settings, warnings)
    return problems, warnings


def describe_size(size: int) -> str:
    for unit, factor in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("kB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


def describe_session(session: SessionInfo, age: str = "transaction open") -> str:
    parts = [f"application {session.application_name!r}" if session.application_name else "no application_name"]
    parts += [f"user {session.user}"] if session.user else []
    parts += [f"database {session.database}"] if session.database else []
    parts += [f"client {session.client}"] if session.client else []
    parts += [f"state {session.state!r}"] if session.state else []
    parts += [f"{age} {session.seconds:.1f} s"] if session.seconds is not None else []
    return f"pid {session.pid} ({', '.join(parts)})"


def _pgbouncer(report: HealthReport, settings: Settings, problems: list[str], warnings: list[str]) -> None:
    bouncer = report.pgbouncer
    if bouncer is None:
        return
    if not bouncer.ok:
        warnings.append(f"PgBouncer's pools are unknown: {bouncer.error}")
        return
    threshold = settings.health_pool_wait
    for pool in bouncer.pools:
        if pool.clients_waiting and pool.max_wait_s > threshold:
            problems.append(
                f"PgBouncer pool {pool.database}/{pool.user}: {pool.clients_waiting} client(s) waiting for a server "
                f"connection, the longest for {pool.max_wait_s:.3f} s (CELORA_HEALTH_POOL_WAIT is {threshold:g} s); "
                f"{pool.servers_active} server(s) busy, {pool.servers_idle} idle. The pool is too small for the load "
                "or transactions hold their server too long (see the oldest transaction below).")
    if any(p.clients_waiting and p.max_wait_s > threshold for p in bouncer.pools):
        bouncer.hint = ("Raise default_pool_size (pgbouncer.ini) within the server's max_connections, or find the "
                        "long transactions (`celora db health` lists the oldest) and shorten them.")


def _routing(report: HealthReport, settings: Settings, warnings: list[str]) -> None:
    """Production app traffic should go through PgBouncer; migrations never should."""
    if settings.uses_local_server:
        return
    pooled, direct = report.checks.get("pooled"), report.checks.get("direct")
    console = settings.pgbouncer_admin_url
    if (settings.env == PRODUCTION and pooled is not None and pooled.ok and not pooled.pgbouncer
            and pooled.pooler_detected is False):
        warnings.append(
            "CELORA_ENV=production and DATABASE_URL reaches PostgreSQL directly (celora's startup marker arrived), "
            "bypassing PgBouncer: every app process holds its own server connections. Point DATABASE_URL at "
            "PgBouncer with ?pgbouncer=true.")
    direct_url = settings.direct_database_url
    if (console is not None and direct_url is not None and direct is not None and not direct.pooler_detected
            and direct_url.display_host == console.display_host):
        warnings.append(
            f"DIRECT_DATABASE_URL points at {direct_url.display_host}, where PgBouncer's console "
            "(CELORA_PGBOUNCER_ADMIN_URL) answers: migrations would go through the pooler. Point it at PostgreSQL "
            "itself.")


def _pressure(report: HealthReport, settings: Settings, problems: list[str]) -> None:
    pressure = report.pressure
    if pressure is None:
        return
    oldest = pressure.oldest_transaction
    if oldest is not None and oldest.seconds is not None and oldest.seconds > settings.health_transaction_age:
        problems.append(
            f"A transaction has been open for {oldest.seconds:.0f} s (CELORA_HEALTH_TRANSACTION_AGE is "
            f"{settings.health_transaction_age:g} s): {describe_session(oldest)}. It holds back vacuum and may hold "
            f"locks: end it in the app, or `SELECT pg_terminate_backend({oldest.pid})`.")
    for wait in pressure.lock_waits:
        if wait.waiting.seconds is None or wait.waiting.seconds <= settings.health_lock_wait:
            continue
        blockers = "; ".join(describe_session(b) for b in wait.blocked_by) or "a session that already ended"
        pids = ", ".join(str(b.pid) for b in wait.blocked_by) or "?"
        problems.append(
            f"{describe_session(wait.waiting, 'waiting')} waits on a lock (CELORA_HEALTH_LOCK_WAIT is "
            f"{settings.health_lock_wait:g} s), blocked by {blockers}. End the blocker's transaction, or "
            f"`SELECT pg_terminate_backend(pid)` for pid {pids}.")


def _replication(report: HealthReport, settings: Settings, problems: list[str], warnings: list[str]) -> None:
    replication = report.replication
    if replication is None:
        return
    for standby in replication.standbys:
        name = standby.name or standby.client or "a standby"
        # replay_lag keeps its last measured value for a while after the standby caught up: only a standby
        # with WAL still to replay is behind.
        behind = standby.bytes_behind is None or standby.bytes_behind > 0
        if behind and standby.replay_lag_s is not None and standby.replay_lag_s > settings.health_replica_lag:
            problems.append(f"Standby {name!r} ({standby.client or 'local'}) replays {standby.replay_lag_s:.1f} s "
                            f"behind (CELORA_HEALTH_REPLICA_LAG is {settings.health_replica_lag:g} s).")
        elif standby.state not in (None, "streaming"):
            warnings.append(f"Standby {name!r} is in state {standby.state!r}, not streaming yet.")
    threshold = settings.slot_wal_threshold
    for slot in replication.slots:
        slot.over_threshold = None if slot.retained_bytes is None else slot.retained_bytes > threshold
        if slot.wal_status == "lost":
            problems.append(f"Replication slot {slot.name!r} lost the WAL its consumer needs (wal_status 'lost'): "
                            f"its consumer must be re-initialised; drop it with "
                            f"`SELECT pg_drop_replication_slot('{slot.name}')`.")
        elif not slot.active and slot.retained_bytes is not None and slot.retained_bytes > threshold:
            problems.append(
                f"Replication slot {slot.name!r} ({slot.slot_type}) is inactive and retains "
                f"{describe_size(slot.retained_bytes)} of WAL (CELORA_SLOT_WAL_THRESHOLD is "
                f"{describe_size(threshold)}): the server keeps that WAL until the slot's consumer comes back, and an "
                f"abandoned slot fills the disk. Restart its consumer, or drop it: "
                + (f"`celora db changes --drop {slot.name}`." if slot.slot_type == "logical"
                   else f"`SELECT pg_drop_replication_slot('{slot.name}')`."))
        elif slot.over_threshold and slot.retained_bytes is not None:
            # Attached but behind: a consumer too slow for the write rate, or stuck, holds WAL just the same.
            problems.append(
                f"Replication slot {slot.name!r} ({slot.slot_type}) retains {describe_size(slot.retained_bytes)} "
                f"of WAL (CELORA_SLOT_WAL_THRESHOLD is {describe_size(threshold)}) though its consumer is attached: "
                "the consumer is behind (too slow, or stuck), and the server keeps that WAL until it catches up. "
                "Check the consumer (`celora db changes --list` shows the slot's lag); raise the threshold if this "
                "backlog is normal for it.")


def _replicas(report: HealthReport, settings: Settings, problems: list[str]) -> None:
    primary_lsn = report.replication.current_wal_lsn if report.replication is not None else None
    for replica in report.replicas:
        if primary_lsn and replica.replay_lsn:
            replica.bytes_behind = max(0, lsn_bytes(primary_lsn) - lsn_bytes(replica.replay_lsn))
        problems.extend(replica_problems(replica, settings.health_replica_lag))


def _ssl(report: HealthReport, settings: Settings, warnings: list[str]) -> None:
    if settings.env != PRODUCTION:
        return
    urls = {"pooled": settings.database_url, "direct": settings.direct_database_url or settings.database_url}
    for name, check in report.checks.items():
        url = urls.get(name)
        if check.ok and check.ssl is False and url is not None and not url.is_socket:
            warnings.append(f"CELORA_ENV=production and the {name} path ({check.setting}) is not encrypted: add "
                            "?sslmode=verify-full (with the server's CA as sslrootcert) to the URL.")
