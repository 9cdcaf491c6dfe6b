"""The verdict on a finished report: masked errors, the problems each part found, and the status
(UNHEALTHY only when the app path is down; DEGRADED for any problem; else HEALTHY)."""

from __future__ import annotations

import time

from celora_cli.config.settings import Settings, redact
from celora_cli.ops.health.findings import in_depth
from celora_cli.ops.health.report import (
    BUSY_CONNECTIONS,
    DEGRADED,
    SLOW_LATENCY_MS,
    UNHEALTHY,
    ConnectionCheck,
    HealthReport,
)


def finish(report: HealthReport, started: float, settings: Settings) -> HealthReport:
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
