"""`celora db status`: applied, pending, failed and modified migrations, and with --drift the schema's drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe
from celora_cli.errors import ExitCode
from celora_cli.results import to_json


@dataclass
class StatusReport:
    """What `db status` found: the migration status and, with --drift, the drift report (None without)."""

    status: Any  # celora_cli.migrate.deploy.MigrationStatus (typed loosely: the core loads on first use)
    drift: Any = None  # celora_cli.schema.autogenerate.DriftReport

    def to_json(self) -> dict:
        return {**to_json(self.status), "drift": to_json(self.drift)}

    @property
    def exit_code(self) -> int:
        """Drift (15) first, then changed files (14), then pending (1)."""
        if self.drift is not None and self.drift.drifted:
            return ExitCode.DRIFT
        return self.status.exit_code


@app.command("status")
def status(
    ctx: typer.Context,
    drift: bool = typer.Option(False, "--drift", help="Also compare the database with what the migration history "
                               "builds at its revision (the schema snapshot in migrations/snapshots/, else cached, "
                               "else built once in a temporary shadow database); exit 15 when it drifted."),
    as_json: bool = json_option(),
) -> None:
    """Show applied, pending, failed and modified migrations.

    Show applied (when, how long, by whom), pending, failed and modified migrations.

    Exit 1 when some are pending; 14 when an applied migration's file changed or disappeared since it was
    applied (migrate-deploy would refuse); with --drift, 15 on drift.
    Example: celora db status --json
    """
    from celora_cli.migrate.status import migration_status

    settings = load_settings_from(ctx)
    report = StatusReport(migration_status(settings))
    if drift:
        from celora_cli.schema.autogenerate import database_drift

        report.drift = database_drift(settings)
    output.emit(report, as_json)


@output.renders(f"{__name__}.StatusReport")
def render_status(report: StatusReport) -> None:
    result, drift = report.status, report.drift
    current = ", ".join(result.current) or "(nothing applied)"
    output.out.print(f"Current: {safe(current)}    Head: {safe(result.head or '(no migrations)')}")
    for squashed in result.squashes:
        output.out.print(f"[cyan]Squash[/]  {safe(squashed.name)} replaces {len(squashed.replaces)} revision(s): "
                         f"{safe(', '.join(squashed.replaces))}")
    if result.recorded_as:
        output.out.print(f"The database is at {safe(current)}, the last revision squashed into "
                         f"{safe(result.recorded_as)}: the next migrate-deploy records it as at the squash.")
    _render_journal(result)
    if result.up_to_date:
        output.out.print("[green]Database is up to date.[/]")
    for migration in result.pending:
        output.out.print(f"[yellow]Pending[/] {safe(migration.name)}")
    if drift is not None and not drift.drifted:
        output.out.print("[green]No drift:[/] the schema matches the migration history.")
    for difference in drift.differences if drift is not None else []:
        output.out.print(f"[red]Drift[/] {safe(difference.describe('the database'))}")
    if drift is not None and drift.drifted:
        output.err.print("Reset it with `celora db reset` (loses the data), or write a migration making the "
                         "same change.")


def _render_journal(result) -> None:
    """The applied migrations as the journal (celora_migrations) recorded them, then failures and changed files."""
    for migration in result.applied:
        if migration.applied_at:
            duration = f", {migration.duration_ms:.0f} ms" if migration.duration_ms is not None else ""
            by = f", by {migration.applied_by}" if migration.applied_by else ""
            resolved = " (resolved by hand)" if migration.status == "resolved_applied" else ""
            when = f"{migration.applied_at}{duration}{by}{resolved}"
        elif migration.baseline:
            when = "before the journal existed (baseline)"
        else:
            when = "not in the journal yet (the next migrate-deploy records a baseline)"
        label = "[red]Modified[/]" if migration.modified else "[green]Applied[/] "
        output.out.print(f"{label} {safe(migration.name)} [dim]{safe(when)}[/]")
    for name in result.modified:
        output.out.print(f"[red]Modified[/] {safe(name)}: the file changed since it was applied; migrate-deploy "
                         "refuses until it is restored (or accepted with `celora db resolve --applied`).")
    for name in result.missing:
        output.out.print(f"[red]Missing[/]  {safe(name)}: applied (per the journal) but no such file locally; "
                         "migrate-deploy refuses until it is restored.")
    for failed in result.failed:
        output.out.print(f"[red]Failed[/]   {safe(failed.name)} [dim]at {safe(failed.failed_at or '?')}[/]: "
                         f"{safe(failed.error or 'no error recorded')}")
