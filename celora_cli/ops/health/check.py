"""`check_database_health()`: both paths and the side checks (PgBouncer's console, each replica), each in its own
daemon thread on its own copy, all within one deadline; the verdict comes from verdict.py.

paths.py imports psycopg at module level, so the driver is loaded with this module, before any clock starts and
not first in a worker thread (measurably slower there): a report's duration is the check's, not the import's."""

from __future__ import annotations

import dataclasses
import threading
import time

from celora_cli.config.settings import HEALTH_TIMEOUT_LIMITS, Settings, load_settings, validate_seconds
from celora_cli.db.connect import resolve_urls
from celora_cli.errors import CeloraError, ConfigError
from celora_cli.ops.health.paths import check_path
from celora_cli.ops.health.pgbouncer import PgBouncerCheck, check_pgbouncer
from celora_cli.ops.health.replicas import ReplicaCheck, check_replica
from celora_cli.ops.health.report import HEALTHY, ConnectionCheck, HealthReport
from celora_cli.ops.health.verdict import finish


def _validated_timeout(timeout: float) -> float:
    return validate_seconds(timeout, "check_database_health(timeout=...)", minimum=HEALTH_TIMEOUT_LIMITS[0],
                            maximum=HEALTH_TIMEOUT_LIMITS[1])


def check_database_health(settings: Settings | None = None, *, timeout: float | None = None) -> HealthReport:
    """Check the pooled and direct paths; returns within `timeout` seconds (default CELORA_HEALTH_TIMEOUT).

    Raises ConfigError for a timeout outside 0.5..3600 s or settings it cannot run with (e.g. CELORA_PG_USER
    naming no user). Never starts the local PostgreSQL: a stopped one is reported as unhealthy."""
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
        return finish(report, started, settings)

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
        thread = threading.Thread(target=check_path, args=(work, url, settings, extras, timeout), daemon=True,
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
    return finish(report, started, settings)


def _start_side_checks(report: HealthReport, settings: Settings, timeout: float) -> list:
    """PgBouncer's console and each replica, each in its own daemon thread on its own copy (as above)."""
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

