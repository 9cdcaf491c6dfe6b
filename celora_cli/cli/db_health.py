"""`celora db health`: the one-screen answer on-call needs when paged."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.options import seconds_flag
from celora_cli.cli.output import safe
from celora_cli.errors import ExitCode

FORMATS = ("text", "json", "prometheus")
WATCH_LIMITS = (0.5, 86400.0)


@app.command("health")
def health(
    ctx: typer.Context,
    timeout: float | None = typer.Option(
        None, "--timeout", metavar="SECONDS",
        help="Seconds the whole check may take, 0.5 to 3600 (default CELORA_HEALTH_TIMEOUT or 5)."),
    watch: float | None = typer.Option(
        None, "--watch", metavar="SECONDS", help="Check again every SECONDS (0.5 to 86400) until Ctrl-C (exit 130): "
        "in place at a terminal; with --json one object per line per check."),
    output_format: str = typer.Option(
        "text", "--format", metavar="FORMAT", help="text, json (same as --json) or prometheus (the text "
        "exposition format; README: Metrics)."),
    # A check that could not run (a malformed URL) still answers with the status health promises.
    as_json: bool = json_option("Print the report as one JSON object (README: JSON output).", status="unhealthy"),
) -> None:
    """Check connections, pools, replicas, locks, migrations.

    Check the connections, PgBouncer's pools, replicas, locks and slots, migrations and connection usage.

    Exit 0 healthy, 1 degraded, 2 unhealthy; 3 and up when the check could not run (README: Exit codes).
    Example: celora db health --json --timeout 3
    """
    from celora_cli.config.settings import HEALTH_TIMEOUT_LIMITS
    from celora_cli.errors import UsageError
    from celora_cli.ops.health import check_database_health

    if output_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {output_format!r}.",
                         "Use --format text, --format json or --format prometheus.")
    output_format = "json" if as_json else output_format
    interval = seconds_flag(watch, "--watch", WATCH_LIMITS)
    settings = load_settings_from(ctx, health_timeout=seconds_flag(timeout, "--timeout", HEALTH_TIMEOUT_LIMITS))
    if interval is not None:
        _watch(lambda: check_database_health(settings), interval, output_format)
    report = check_database_health(settings)
    if output_format == "prometheus":  # a third view of the report, for a textfile collector
        _print_prometheus(report)
        raise typer.Exit(report.exit_code)
    output.emit(report, output_format == "json")


@output.renders("celora_cli.ops.health.report.HealthReport")
def render_health(report) -> None:
    for line in health_lines(report):
        output.out.print(line)


def _print_prometheus(report) -> None:
    from celora_cli.ops.metrics import exposition

    output.out.print(exposition(report), markup=False, highlight=False, soft_wrap=True, end="")


def _watch(produce, interval: float, output_format: str) -> NoReturn:
    """Check every `interval` seconds until Ctrl-C, which ends it with exit 130 and nothing more on stdout."""
    import time

    live = None
    try:
        if output_format == "text" and output.out.is_terminal:
            from rich.live import Live

            live = Live(console=output.out, auto_refresh=False, transient=False)
            live.start()
        while True:
            report = produce()
            if live is not None:
                live.update(_renderable(report), refresh=True)
            elif output_format == "json":
                output.json_line(report)
            elif output_format == "prometheus":
                _print_prometheus(report)
                output.out.print()
            else:
                for line in health_lines(report):
                    output.out.print(line)
                output.out.print()
            sys.stdout.flush()  # a reader of the pipe sees each check as it happens
            time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    finally:
        if live is not None:
            live.stop()


def _renderable(report):
    from rich.console import Group
    from rich.text import Text

    # Wrapped, not cropped: the result console soft-wraps (no wrapping), which Live would crop at the edge.
    lines = [Text.from_markup(line, overflow="fold") for line in health_lines(report)]
    for line in lines:
        line.no_wrap = False
    return Group(*lines)


def health_lines(report) -> list[str]:
    """The one-screen report as Rich markup lines (database values escaped)."""
    colour = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}[report.status]
    latency = f"{report.latency} ms" if report.latency is not None else "n/a"
    lines = [f"[bold {colour}]{report.status.upper()}[/]  latency {latency}  "
             f"[dim](checked in {report.duration_ms:.0f} ms, timeout {report.timeout_s:g} s)[/]"]
    lines += [_path_line(check) for check in report.checks.values()]
    if report.migrations is not None:
        m = report.migrations
        lines.append(f"migrations: current {safe(', '.join(m.current) or 'none')}, head {safe(m.head)}, "
                     f"{m.pending} pending")
    lines += _pressure_lines(report)
    lines += _pgbouncer_lines(report.pgbouncer)
    lines += _replication_lines(report)
    lines += [f"[{colour}]problem:[/] {safe(problem)}" for problem in report.problems]
    lines += [f"[yellow]warning:[/] {safe(warning)}" for warning in report.warnings]
    # A path's hint is for when it is down; PgBouncer's and a replica's come with their problem.
    hinted = [(c.name, c.hint) for c in report.checks.values() if c.hint and not c.ok]
    hinted += [("pgbouncer", report.pgbouncer.hint)] if report.pgbouncer is not None else []
    hinted += [(r.name, r.hint) for r in report.replicas]
    names_by_hint: dict[str, list[str]] = {}  # the same hint for two paths (one URL for both) is shown once
    for name, hint in hinted:
        if hint:
            names_by_hint.setdefault(hint, []).append(name)
    lines += [f"[yellow]hint ({safe(', '.join(names))}):[/] {safe(hint)}" for hint, names in names_by_hint.items()]
    return lines


def _path_line(check) -> str:
    if check.skipped:
        state, timing = "[dim]skipped[/]", ""
    elif check.ok:
        state = "[green]ok[/]  "
        timing = f"{check.latency_ms:.1f} ms round trip, connect {check.connect_ms:.0f} ms, "
        timing += f"PostgreSQL {safe((check.server_version or '?').split(' ')[0])}, "
        timing += "SSL, " if check.ssl else "no SSL, "
    else:
        state, timing = "[red]down[/]", ""
    if check.pgbouncer:
        route = "via PgBouncer"
    elif check.pooler_detected:
        route = f"via a pooler ({safe(check.pooler_evidence or 'detected')})"
    else:
        route = "direct"
    return f"{check.name:<7} {state} {timing}{route}  {safe(check.url or '-')}"


def _pressure_lines(report) -> list[str]:
    from celora_cli.ops.health.findings import describe_session

    lines = []
    if report.connections is not None:
        c = report.connections
        states = ""
        if report.pressure is not None and report.pressure.by_state:
            states = " (" + ", ".join(f"{n} {safe(s)}" for s, n in report.pressure.by_state.items()) + ")"
        lines.append(f"connections: {c.in_use} of {c.max_connections} in use ({c.ratio:.0%}){states}")
    pressure = report.pressure
    if pressure is not None and pressure.oldest_transaction is not None:
        lines.append(f"oldest transaction: {safe(describe_session(pressure.oldest_transaction))}")
    for wait in pressure.lock_waits if pressure is not None else []:
        blockers = ", ".join(str(b.pid) for b in wait.blocked_by) or "?"
        lines.append(f"lock wait: {safe(describe_session(wait.waiting, 'waiting'))} blocked by pid {blockers}")
    return lines


def _pgbouncer_lines(bouncer) -> list[str]:
    if bouncer is None:
        return []
    if not bouncer.ok:
        return [f"pgbouncer: [red]down[/]  {safe(bouncer.url)}"]
    lines = [f"pgbouncer: clients {bouncer.clients_active} active, {bouncer.clients_waiting} waiting (longest "
             f"{bouncer.max_wait_s:.3f} s); servers {bouncer.servers_active} active, {bouncer.servers_idle} idle"]
    for pool in bouncer.pools:
        if pool.clients_waiting:
            lines.append(f"  pool {safe(pool.database)}/{safe(pool.user)}: {pool.clients_waiting} waiting, "
                         f"longest {pool.max_wait_s:.3f} s")
    return lines


def _replication_lines(report) -> list[str]:
    from celora_cli.ops.health.findings import describe_size

    lines = []
    replication = report.replication
    for standby in replication.standbys if replication is not None else []:
        lag = f"{standby.replay_lag_s:.1f} s" if standby.replay_lag_s is not None else "n/a"
        behind = describe_size(standby.bytes_behind) if standby.bytes_behind is not None else "?"
        lines.append(f"standby {safe(standby.name or standby.client)}: {safe(standby.state)}, replay lag {lag}, "
                     f"{behind} behind")
    for slot in replication.slots if replication is not None else []:
        retained = describe_size(slot.retained_bytes) if slot.retained_bytes is not None else "?"
        lag = ""
        if slot.lag_bytes is not None:
            lag = f", {describe_size(slot.lag_bytes)} behind" + (
                f" ({slot.lag_seconds:.1f} s flush lag)" if slot.lag_seconds is not None else "")
        lines.append(f"slot {safe(slot.name)} ({slot.slot_type}): {'active' if slot.active else 'inactive'}, "
                     f"retains {retained}{lag}")
    for replica in report.replicas:
        if not replica.ok:
            lines.append(f"{replica.name}: [red]down[/]  {safe(replica.url)}")
            continue
        lag = f"lag {replica.lag_s:.1f} s" if replica.lag_s is not None else "not in recovery"
        behind = f", {describe_size(replica.bytes_behind)} behind" if replica.bytes_behind is not None else ""
        paused = ", replay paused" if replica.replay_paused else ""
        lines.append(f"{replica.name}: ok, {lag}{behind}{paused}  {safe(replica.url)}")
    return lines
