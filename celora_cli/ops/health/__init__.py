"""`check_database_health()`: the one-screen answer on-call needs, always within its timeout.

Each connection path (pooled = DATABASE_URL, maybe PgBouncer; direct = DIRECT_DATABASE_URL) is checked in
its own daemon thread and the caller waits at most `timeout` seconds in all: libpq's connect_timeout does
not cover a host that accepts the TCP connection and then goes silent, and a thread we stop waiting for
cannot hold the report hostage.

Status: UNHEALTHY only when SELECT 1 on the app path fails; DEGRADED for a real problem found on the way
(the direct path down or reaching a pooler, an undeclared pooler on the app path, pending migrations, a slow
round trip, connections nearly exhausted); otherwise HEALTHY. What health cannot find out (the migration
state when the role may not read alembic_version) is a warning, not a problem. A pooler is reported only on
evidence (celora's startup marker missing, or PgBouncer rejecting the startup options), never because the
server's port differs from the URL's: Docker `-p 5433:5432`, SSH tunnels and port-forwards do that too.

In depth (each part in its own module, each read within the same deadline): PgBouncer's pools from its admin
console (pgbouncer.py), pressure and replication as the server sees them (server.py: connections by state,
the oldest transaction, lock waits and their blockers, standbys, replication slots), and the read replicas
named in the settings (replicas.py). Each threshold is a setting (CELORA_HEALTH_*, CELORA_SLOT_WAL_THRESHOLD).

Health never starts anything: a stopped (or never created) local PostgreSQL is reported as unhealthy.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from celora_cli.config.settings import DatabaseURL, Settings, redact
from celora_cli.errors import CeloraError, ConfigError, ExitCode
from celora_cli.ops.health.pgbouncer import PgBouncerCheck
from celora_cli.ops.health.replicas import ReplicaCheck
from celora_cli.ops.health.server import Pressure, Replication

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
SLOW_LATENCY_MS = 1000.0  # a round trip slower than this is reported as degraded
BUSY_CONNECTIONS = 0.8  # share of max_connections in use that counts as degraded


@dataclass
class ConnectionCheck:
    name: str  # "pooled" or "direct"
    setting: str  # the setting it came from
    url: str | None  # masked
    ok: bool = False  # SELECT 1 answered
    skipped: bool = False
    latency_ms: float | None = None  # round trip of SELECT 1 on an open connection
    connect_ms: float | None = None
    server_version: str | None = None
    server_port: int | None = None  # the port PostgreSQL itself listens on (a mapped port differs: no alarm)
    pgbouncer: bool = False  # declared with ?pgbouncer=true
    # Evidence-based: True when celora's startup marker did not reach the server session or PgBouncer
    # rejected the startup options; False when the marker arrived; None when it could not be tested
    # (?pgbouncer=true sends no startup options, nor does a URL with its own ?options=).
    pooler_detected: bool | None = None
    pooler_evidence: str | None = None
    ssl: bool | None = None  # libpq's own answer: is this connection (to PostgreSQL or the pooler) encrypted
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
    migrations: MigrationState | None = None  # None: not known (see warnings)
    connections: ConnectionUsage | None = None
    pressure: Pressure | None = None
    replication: Replication | None = None  # on the primary: standbys and slots
    pgbouncer: PgBouncerCheck | None = None  # with CELORA_PGBOUNCER_ADMIN_URL
    replicas: list[ReplicaCheck] = field(default_factory=list)  # CELORA_REPLICA_URLS
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timeout_s: float = 0.0
    duration_ms: float = 0.0
    local_server: bool = False

    @property
    def exit_code(self) -> int:
        return {HEALTHY: ExitCode.OK, DEGRADED: ExitCode.DEGRADED, UNHEALTHY: ExitCode.UNHEALTHY}[self.status]

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        if self.connections is not None:
            data["connections"]["ratio"] = round(self.connections.ratio, 3)
        return data


def _check(check: ConnectionCheck, url: DatabaseURL, settings: Settings, extras: dict, timeout: float) -> None:
    """Fill `check` in place (the thread may be abandoned, so it never raises).

    Plain psycopg, not an Engine: health is what on-call runs when paged, and SQLAlchemy's import would cost
    more than the whole check."""
    from celora_cli.db.connect import connect
    from celora_cli.db.errors import translate

    # Connect exactly as the app does (same startup options), only with timeouts capped by ours.
    statement_timeout = min(settings.statement_timeout, timeout) if settings.statement_timeout else 0
    quick = dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, timeout),
                                statement_timeout=statement_timeout)
    conn = None
    try:
        started = time.perf_counter()
        # autocommit: every query stands alone, so no transaction is left open on the server or a pooler.
        conn = connect(url, quick, application_name="celora health")
        with conn:
            check.connect_ms = round((time.perf_counter() - started) * 1000, 1)
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            check.latency_ms = round((time.perf_counter() - started) * 1000, 1)
            check.ok = True  # the path works; what follows only describes it
            try:
                _facts(check, conn, url)
                if extras.get("want_details"):
                    _details(conn, settings, extras, url, check.setting)
            except Exception as exc:  # noqa: BLE001 - a fact we could not read is a warning, not an outage
                extras["warning"] = (f"The {check.name} path answered SELECT 1, but reading the server's "
                                     f"details failed: {translate(exc, url, check.setting).message}")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a line of the report
        error = translate(exc, url, check.setting)  # a CeloraError comes back as it is
        check.error, check.hint = error.message, error.hint
        if _pooler_rejected_options(exc):
            check.pooler_detected = True
            check.pooler_evidence = f"it rejected celora's startup options ({_server_message(exc)})"
    finally:
        if conn is not None:
            conn.close()


def _facts(check: ConnectionCheck, conn, url: DatabaseURL) -> None:
    """Server version and port, and whether celora's startup marker reached the server session."""
    from celora_cli.db.connect import STARTUP_MARKER, sends_startup_options, startup_options_applied

    version, port = conn.execute("SELECT current_setting('server_version'), inet_server_port()").fetchone()
    check.server_version = version
    check.server_port = int(port) if port is not None else None
    check.ssl = bool(conn.pgconn.ssl_in_use)
    if sends_startup_options(url):
        applied = startup_options_applied(conn)
        check.pooler_detected = not applied
        if not applied:
            check.pooler_evidence = (f"celora's startup marker ({STARTUP_MARKER}, sent in the startup options) "
                                     "did not reach the server session: something in between dropped it, "
                                     "as a transaction pooler does")


def _pooler_rejected_options(exc: BaseException) -> bool:
    """PgBouncer's own answer to startup options it does not pass on."""
    from celora_cli.db.errors import root_cause

    return "unsupported startup parameter" in str(root_cause(exc)).lower()


def _server_message(exc: BaseException) -> str:
    from celora_cli.db.errors import postgres_message

    return postgres_message(exc)


def _details(conn, settings: Settings, extras: dict, url: DatabaseURL, setting: str) -> None:
    """Connections in use vs max_connections, and migration state (on one connection)."""
    import psycopg

    from celora_cli.db.errors import postgres_message, sqlstate_of
    from celora_cli.migrate.status import migration_state

    in_use, max_conn = conn.execute(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        "       current_setting('max_connections')::int").fetchone()
    extras["connections"] = ConnectionUsage(int(in_use), int(max_conn))
    _server_views(conn, extras)
    try:
        status = migration_state(conn, settings)
    except (CeloraError, psycopg.Error) as exc:
        database_error = exc.__cause__ if isinstance(exc, CeloraError) else exc
        if not isinstance(database_error, psycopg.Error):
            extras["migration_error"] = str(exc)  # a CeloraError's message: e.g. the database is ahead of the code
            return
        # The app role may lack SELECT on alembic_version: the app still works, we just cannot tell.
        role = url.username or "the connecting role"
        fix = ("Grant that role SELECT on alembic_version, or set DIRECT_DATABASE_URL to the migration role so "
               "health can read it." if sqlstate_of(database_error) == "42501" else "Run `celora db status`.")
        extras["migration_unknown"] = (f"Migration state unknown: {setting} as role {role!r} could not read "
                                       f"alembic_version ({postgres_message(database_error)}). {fix}")
        return
    extras["migrations"] = MigrationState(
        current=list(status.current), head=status.head, pending=len(status.pending),
        pending_names=[m.name for m in status.pending], up_to_date=status.up_to_date)


def _server_views(conn, extras: dict) -> None:
    """Pressure and replication: a view the role may not read is a warning, the rest of the report stands."""
    from celora_cli.db.errors import postgres_message
    from celora_cli.ops.health.server import read_pressure, read_replication

    for key, read in (("pressure", read_pressure), ("replication", read_replication)):
        try:
            extras[key] = read(conn)
        except Exception as exc:  # noqa: BLE001 - e.g. a role without pg_monitor on a locked-down server
            extras.setdefault("view_warnings", []).append(
                f"Could not read the server's {key} views: {postgres_message(exc)}. Grant the role pg_monitor.")


def _validated_timeout(timeout: float) -> float:
    from celora_cli.config.settings import HEALTH_TIMEOUT_LIMITS, validate_seconds

    return validate_seconds(timeout, "check_database_health(timeout=...)", minimum=HEALTH_TIMEOUT_LIMITS[0],
                            maximum=HEALTH_TIMEOUT_LIMITS[1])


def check_database_health(settings: Settings | None = None, *, timeout: float | None = None) -> HealthReport:
    """Check the pooled and direct paths; returns within `timeout` seconds (default CELORA_HEALTH_TIMEOUT).

    Raises ConfigError for a timeout outside 0.5..3600 s or settings it cannot run with (e.g. CELORA_PG_USER
    naming no user). Never starts the local PostgreSQL: a stopped one is reported as unhealthy."""
    # Imported before the clock starts, and here rather than first in a worker thread (measurably slower there):
    # the report's duration is the check's, not the driver's import.
    import psycopg  # noqa: F401

    from celora_cli.config.settings import load_settings
    from celora_cli.db.connect import resolve_urls

    settings = settings or load_settings()
    timeout = settings.health_timeout if timeout is None else _validated_timeout(timeout)
    started = time.monotonic()
    deadline = started + timeout
    report = HealthReport(status=HEALTHY, latency=None, checks={}, timeout_s=round(timeout, 3),
                          local_server=settings.uses_local_server)
    pooled_setting = "local database" if report.local_server else "DATABASE_URL"
    try:
        urls = resolve_urls(settings, start=False)
    except ConfigError:
        raise  # the check cannot run as configured (exit 3), as for a malformed DATABASE_URL
    except CeloraError as exc:  # e.g. the local server is stopped: that is the answer, not an error
        report.checks["pooled"] = ConnectionCheck("pooled", pooled_setting, None, error=exc.message,
                                                  hint=exc.hint)
        return _finish(report, started, settings)

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
    # With no DIRECT_DATABASE_URL both paths are the same URL: one connection answers for both.
    same_url = urls.direct == urls.pooled
    jobs = []
    for name, url in (("pooled", urls.pooled), ("direct", None if same_url else urls.direct)):
        if url is None:
            continue
        work = dataclasses.replace(report.checks[name])
        extras: dict = {"want_details": name == "direct" or urls.direct is None or same_url}
        thread = threading.Thread(target=_check, args=(work, url, settings, extras, timeout), daemon=True,
                                  name=f"celora-health-{name}")
        thread.start()
        jobs.append((name, thread, work, extras))
    side_jobs = _start_side_checks(report, settings, timeout)
    for name, thread, work, extras in jobs:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            check = report.checks[name]
            check.error = (f"No answer from {check.url} within {timeout:g} s (the host may be dropping packets "
                           "or the server is overloaded).")
            check.hint = "Check the network path and the server (`pg_isready`); raise --timeout if it is just slow."
            continue
        report.checks[name] = work
        if "warning" in extras:
            report.warnings.append(extras["warning"])
        if extras["want_details"]:
            report.connections = extras.get("connections")
            report.migrations = extras.get("migrations")
            if "migration_error" in extras:
                report.problems.append(extras["migration_error"])
            if "migration_unknown" in extras:
                report.warnings.append(extras["migration_unknown"])
            report.pressure, report.replication = extras.get("pressure"), extras.get("replication")
            report.warnings.extend(extras.get("view_warnings", []))
    _adopt_side_checks(report, side_jobs, deadline, timeout)
    if same_url:
        pooled = report.checks["pooled"]
        report.checks["direct"] = dataclasses.replace(pooled, name="direct", setting=report.checks["direct"].setting)
    return _finish(report, started, settings)


def _start_side_checks(report: HealthReport, settings: Settings, timeout: float) -> list:
    """PgBouncer's console and each replica, each in its own daemon thread on its own copy (as above)."""
    from celora_cli.ops.health.pgbouncer import check_pgbouncer
    from celora_cli.ops.health.replicas import check_replica

    jobs: list = []
    if settings.pgbouncer_admin_url is not None:
        work = PgBouncerCheck(url=settings.pgbouncer_admin_url.masked)
        jobs.append(("pgbouncer", work, threading.Thread(
            target=check_pgbouncer, args=(work, settings.pgbouncer_admin_url, min(settings.connect_timeout, timeout)),
            daemon=True, name="celora-health-pgbouncer")))
    for number, url in enumerate(settings.replica_urls, 1):
        replica = ReplicaCheck(name=f"replica {number}", url=url.masked)
        jobs.append(("replica", replica, threading.Thread(
            target=check_replica, args=(replica, url, settings, timeout), daemon=True,
            name=f"celora-health-replica-{number}")))
    for _, _, thread in jobs:
        thread.start()
    return jobs


def _adopt_side_checks(report: HealthReport, jobs: list, deadline: float, timeout: float) -> None:
    for kind, work, thread in jobs:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():  # a fresh, empty copy says so; the thread's own copy is dropped
            late = {"url": work.url, "error": f"No answer from {work.url} within {timeout:g} s.",
                    "hint": "Check that it runs and the network path to it; raise --timeout if it is just slow."}
            work = PgBouncerCheck(**late) if kind == "pgbouncer" else ReplicaCheck(name=work.name, **late)
        if kind == "pgbouncer":
            report.pgbouncer = work
        else:
            report.replicas.append(work)


def _finish(report: HealthReport, started: float, settings: Settings) -> HealthReport:
    pooled, direct = report.checks.get("pooled"), report.checks.get("direct")
    secrets = settings.secrets()
    for check in report.checks.values():
        check.error = redact(check.error, secrets) if check.error else None
    # One URL for both paths (no DIRECT_DATABASE_URL): one connection was checked, so one problem says so.
    one_path = pooled is not None and direct is not None and not direct.skipped and direct.url == pooled.url
    if pooled is None or not pooled.ok:
        also = ", also the direct path" if one_path else ""
        report.problems.append(f"The app path ({pooled.setting if pooled else 'DATABASE_URL'}{also}) is down: "
                               f"{pooled.error if pooled else 'not checked'}")
    else:
        report.latency = round(pooled.latency_ms) if pooled.latency_ms is not None else None
    if direct is not None and not direct.skipped and not (one_path and not direct.ok):
        report.problems.extend(_direct_problems(direct))
    for check in report.checks.values():
        if check.ok and check.latency_ms is not None and check.latency_ms > SLOW_LATENCY_MS:
            report.problems.append(f"The {check.name} path is slow: {check.latency_ms:.0f} ms round trip.")
    if pooled is not None and pooled.ok and pooled.pooler_detected and not pooled.pgbouncer:
        report.problems.append(
            f"{pooled.setting} goes through a connection pooler ({pooled.pooler_evidence}) but lacks "
            "?pgbouncer=true: prepared statements and session settings break under transaction pooling.")
    if report.migrations is not None and not report.migrations.up_to_date:
        names = ", ".join(report.migrations.pending_names[:3])
        report.problems.append(f"{report.migrations.pending} migration(s) pending ({names}): "
                               "run `celora db migrate-deploy`.")
    if report.connections is not None and report.connections.ratio >= BUSY_CONNECTIONS:
        report.problems.append(f"{report.connections.in_use} of {report.connections.max_connections} "
                               "connections in use.")
    from celora_cli.ops.health.findings import in_depth

    problems, warnings = in_depth(report, settings)
    report.problems.extend(problems)
    report.warnings.extend(warnings)
    for side in (report.pgbouncer, *report.replicas):
        if side is not None and side.error:
            side.error = redact(side.error, secrets)
    if pooled is None or not pooled.ok:
        report.status = UNHEALTHY
    elif report.problems:
        report.status = DEGRADED
    report.duration_ms = round((time.monotonic() - started) * 1000, 1)
    return report


def _direct_problems(direct: ConnectionCheck) -> list[str]:
    """The direct path is for migrations: down is degraded, and so is a pooler behind it."""
    if direct.pooler_detected:
        if direct.setting == "DIRECT_DATABASE_URL":
            direct.hint = ("Point DIRECT_DATABASE_URL at the PostgreSQL server itself (usually port 5432), "
                           "not at PgBouncer.")
        else:
            direct.hint = ("Add ?pgbouncer=true to DATABASE_URL and set DIRECT_DATABASE_URL to the PostgreSQL "
                           "server itself for migrations.")
        problem = (f"The direct path ({direct.setting}) reaches a connection pooler ({direct.pooler_evidence}): "
                   "migrations would go through a pooler, which cannot keep their session advisory lock.")
        return [problem]
    if not direct.ok:
        return [f"The direct path ({direct.setting}) is down: {direct.error}"]
    return []
