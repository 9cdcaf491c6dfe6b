"""`check_database_health()`: the one-screen answer on-call needs, always within its timeout.

Each connection path (pooled = DATABASE_URL, maybe PgBouncer; direct = DIRECT_DATABASE_URL) is checked in
its own daemon thread and the caller waits at most `timeout` seconds in all: libpq's connect_timeout does
not cover a host that accepts the TCP connection and then goes silent, and a thread we stop waiting for
cannot hold the report hostage.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from celora_cli.errors import CeloraError, ExitCode
from celora_cli.settings import DatabaseURL, Settings, redact

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
SLOW_LATENCY_MS = 1000.0  # a round trip slower than this is reported as degraded
BUSY_CONNECTIONS = 0.8  # share of max_connections in use that counts as degraded


@dataclass
class ConnectionCheck:
    name: str  # "pooled" or "direct"
    setting: str  # the setting it came from
    url: str | None  # masked
    ok: bool = False
    skipped: bool = False
    latency_ms: float | None = None  # round trip of SELECT 1 on an open connection
    connect_ms: float | None = None
    server_version: str | None = None
    pgbouncer: bool = False  # declared with ?pgbouncer=true
    through_proxy: bool | None = None  # the server's port differs from the URL's: a pooler is in between
    error: str | None = None
    hint: str | None = None


@dataclass
class MigrationState:
    current: list[str]
    head: str | None
    pending: int
    pending_names: list[str]
    up_to_date: bool


@dataclass
class ConnectionUsage:
    in_use: int
    max_connections: int

    @property
    def ratio(self) -> float:
        return self.in_use / self.max_connections if self.max_connections else 0.0


@dataclass
class HealthReport:
    status: str
    latency: int | None  # ms, the app path's round trip (the seed's `{status, latency}`)
    checks: dict[str, ConnectionCheck]
    migrations: MigrationState | None = None
    connections: ConnectionUsage | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timeout_s: float = 0.0
    duration_ms: float = 0.0
    local_server: bool = False

    @property
    def exit_code(self) -> int:
        return {HEALTHY: ExitCode.OK, DEGRADED: 1, UNHEALTHY: 2}[self.status]

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if self.connections is not None:
            data["connections"]["ratio"] = round(self.connections.ratio, 3)
        return data


def _check(check: ConnectionCheck, url: DatabaseURL, settings: Settings, extras: dict, timeout: float) -> None:
    """Fill `check` in place (the thread may be abandoned, so it never raises)."""
    from sqlalchemy import text

    from celora_cli.db.engine import build_engine
    from celora_cli.db.errors import translate

    # Connect exactly as the app does (same startup options), only with timeouts capped by ours.
    statement_timeout = min(settings.statement_timeout, timeout) if settings.statement_timeout else 0
    quick = dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, timeout),
                                statement_timeout=statement_timeout)
    engine = None
    try:
        engine = build_engine(url, quick, pooled=False, application_name="celora health")
        started = time.perf_counter()
        with engine.connect() as conn:
            check.connect_ms = round((time.perf_counter() - started) * 1000, 1)
            started = time.perf_counter()
            conn.execute(text("SELECT 1"))
            check.latency_ms = round((time.perf_counter() - started) * 1000, 2)
            version, port = conn.execute(text("SELECT current_setting('server_version'), inet_server_port()")).one()
            check.server_version = version
            if port is not None and url.port is not None:
                check.through_proxy = int(port) != url.port
            if extras.get("want_details"):
                _details(conn, settings, extras)
            check.ok = True
    except Exception as exc:  # noqa: BLE001 - every failure becomes a line of the report
        error = translate(exc, url, check.setting)  # a CeloraError comes back as it is
        check.error, check.hint = error.message, error.hint
    finally:
        if engine is not None:
            engine.dispose()


def _details(conn, settings: Settings, extras: dict) -> None:
    """Connections in use vs max_connections, and migration state (on one connection)."""
    from sqlalchemy import text

    in_use, max_conn = conn.execute(text(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        "       current_setting('max_connections')::int")).one()
    extras["connections"] = ConnectionUsage(int(in_use), int(max_conn))
    conn.rollback()
    try:
        from celora_cli.migrations import status_on

        status = status_on(conn, settings)
        extras["migrations"] = MigrationState(
            current=list(status.current), head=status.head, pending=len(status.pending),
            pending_names=[m.name for m in status.pending], up_to_date=status.up_to_date)
    except CeloraError as exc:
        extras["migration_error"] = exc.message


def check_database_health(settings: Settings | None = None, *, timeout: float | None = None) -> HealthReport:
    """Check the pooled and direct paths; returns within `timeout` seconds (default CELORA_HEALTH_TIMEOUT)."""
    from celora_cli.db.engine import resolve_urls
    from celora_cli.settings import load_settings

    settings = settings or load_settings()
    timeout = settings.health_timeout if timeout is None else timeout
    started = time.monotonic()
    deadline = started + timeout
    report = HealthReport(status=HEALTHY, latency=None, checks={}, timeout_s=timeout,
                          local_server=settings.uses_local_server)
    try:
        urls = resolve_urls(settings)
    except CeloraError as exc:
        report.checks["pooled"] = ConnectionCheck("pooled", "DATABASE_URL", None, error=exc.message,
                                                  hint=exc.hint)
        return _finish(report, started, settings)

    pooled_setting = "local database" if report.local_server else "DATABASE_URL"
    report.checks["pooled"] = ConnectionCheck("pooled", pooled_setting, urls.pooled.masked,
                                              pgbouncer=urls.pooled.pgbouncer)
    report.checks["direct"] = ConnectionCheck(
        "direct", "DIRECT_DATABASE_URL" if settings.direct_database_url else pooled_setting,
        urls.direct.masked if urls.direct else None)
    if urls.direct is None:
        report.checks["direct"].skipped = True
        report.checks["direct"].hint = "Set DIRECT_DATABASE_URL so migrations can bypass PgBouncer."
        report.warnings.append("No direct URL: DATABASE_URL is pooled and DIRECT_DATABASE_URL is not set.")

    # Each thread fills its own copy; a copy is adopted only if its thread finished in time, so a thread
    # we stopped waiting for can never change the report after it is returned.
    # Details (connections, migrations) come from the direct path when there is one.
    jobs = []
    for name, url in (("pooled", urls.pooled), ("direct", urls.direct)):
        if url is None:
            continue
        work = dataclasses.replace(report.checks[name])
        extras: dict = {"want_details": name == "direct" or urls.direct is None}
        thread = threading.Thread(target=_check, args=(work, url, settings, extras, timeout), daemon=True,
                                  name=f"celora-health-{name}")
        thread.start()
        jobs.append((name, thread, work, extras))
    for name, thread, work, extras in jobs:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            check = report.checks[name]
            check.error = (f"No answer from {check.url} within {timeout:g} s (the host may be dropping packets "
                           "or the server is overloaded).")
            check.hint = "Check the network path and the server (`pg_isready`); raise --timeout if it is just slow."
            continue
        report.checks[name] = work
        if extras["want_details"]:
            report.connections = extras.get("connections")
            report.migrations = extras.get("migrations")
            if "migration_error" in extras:  # e.g. the database is ahead of the code: the app may not match it
                report.problems.append(extras["migration_error"])
    return _finish(report, started, settings)


def _finish(report: HealthReport, started: float, settings: Settings) -> HealthReport:
    pooled, direct = report.checks.get("pooled"), report.checks.get("direct")
    secrets = settings.secrets()
    for check in report.checks.values():
        check.error = redact(check.error, secrets) if check.error else None
    if pooled is None or not pooled.ok:
        report.problems.append(f"The app path ({pooled.setting if pooled else 'DATABASE_URL'}) is down: "
                               f"{pooled.error if pooled else 'not checked'}")
    else:
        report.latency = round(pooled.latency_ms) if pooled.latency_ms is not None else None
    if direct is not None and not direct.ok and not direct.skipped:
        report.problems.append(f"The direct path ({direct.setting}) is down: {direct.error}")
    for check in report.checks.values():
        if check.ok and check.latency_ms is not None and check.latency_ms > SLOW_LATENCY_MS:
            report.problems.append(f"The {check.name} path is slow: {check.latency_ms:.0f} ms round trip.")
        if check.ok and check.through_proxy and not check.pgbouncer and check.name == "pooled":
            report.problems.append(
                f"{check.setting} reaches PostgreSQL through a pooler (the server listens on another port) "
                "but lacks ?pgbouncer=true: prepared statements will fail in transaction pooling.")
    if report.migrations is not None and not report.migrations.up_to_date:
        names = ", ".join(report.migrations.pending_names[:3])
        report.problems.append(f"{report.migrations.pending} migration(s) pending ({names}): "
                               "run `celora db migrate-deploy`.")
    if report.connections is not None and report.connections.ratio >= BUSY_CONNECTIONS:
        report.problems.append(f"{report.connections.in_use} of {report.connections.max_connections} "
                               "connections in use.")
    if pooled is None or not pooled.ok:
        report.status = UNHEALTHY
    elif report.problems:
        report.status = DEGRADED
    report.duration_ms = round((time.monotonic() - started) * 1000, 1)
    return report
