"""`celora db health`: the one-screen answer on-call needs when paged."""

from __future__ import annotations

import typer

from celora_cli.cli import console
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.console import safe
from celora_cli.cli.db import app, seconds_flag


@app.command("health")
def health(
    ctx: typer.Context,
    timeout: float | None = typer.Option(
        None, "--timeout", metavar="SECONDS",
        help="Seconds the whole check may take, 0.5 to 3600 (default CELORA_HEALTH_TIMEOUT or 5)."),
    # A check that could not run (a malformed URL) still answers with the status health promises.
    as_json: bool = json_option("Print the report as one JSON object (README: JSON output).", status="unhealthy"),
) -> None:
    """Check the pooled and direct connections, migrations and connection usage.

    Exit 0 healthy, 1 degraded, 2 unhealthy; 3 and up when the check could not run (README: Exit codes).
    Example: celora db health --json --timeout 3
    """
    from celora_cli.health import check_database_health
    from celora_cli.settings import HEALTH_TIMEOUT_LIMITS

    settings = load_settings_from(ctx, health_timeout=seconds_flag(timeout, "--timeout", HEALTH_TIMEOUT_LIMITS))
    report = check_database_health(settings)
    if as_json:
        console.print_json(report.as_dict())
    else:
        _render_health(report)
    raise typer.Exit(report.exit_code)


def _render_health(report) -> None:
    colour = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}[report.status]
    latency = f"{report.latency} ms" if report.latency is not None else "n/a"
    console.out.print(f"[bold {colour}]{report.status.upper()}[/]  latency {latency}  "
                      f"[dim](checked in {report.duration_ms:.0f} ms, timeout {report.timeout_s:g} s)[/]")
    for check in report.checks.values():
        if check.skipped:
            state, timing = "[dim]skipped[/]", ""
        elif check.ok:
            state = "[green]ok[/]  "
            timing = f"{check.latency_ms:.1f} ms round trip, connect {check.connect_ms:.0f} ms, "
            timing += f"PostgreSQL {safe((check.server_version or '?').split(' ')[0])}, "
        else:
            state, timing = "[red]down[/]", ""
        if check.pgbouncer:
            route = "via PgBouncer"
        elif check.pooler_detected:
            route = f"via a pooler ({safe(check.pooler_evidence or 'detected')})"
        else:
            route = "direct"
        console.out.print(f"{check.name:<7} {state} {timing}{route}  {safe(check.url or '-')}")
    if report.migrations is not None:
        m = report.migrations
        console.out.print(f"migrations: current {safe(', '.join(m.current) or 'none')}, head {safe(m.head)}, "
                          f"{m.pending} pending")
    if report.connections is not None:
        c = report.connections
        console.out.print(f"connections: {c.in_use} of {c.max_connections} in use ({c.ratio:.0%})")
    for problem in report.problems:
        console.out.print(f"[{colour}]problem:[/] {safe(problem)}")
    for warning in report.warnings:
        console.out.print(f"[yellow]warning:[/] {safe(warning)}")
    for check in report.checks.values():
        if check.hint and not check.ok:
            console.out.print(f"[yellow]hint ({check.name}):[/] {safe(check.hint)}")
