"""`celora db ...`: migrations and health."""

from __future__ import annotations

import typer

from celora_cli.cli import console
from celora_cli.cli.app import CeloraGroup, json_option, load_settings_from
from celora_cli.cli.console import safe
from celora_cli.cli.lazy import LazyCommandGroup
from celora_cli.errors import ExitCode


class _DbCommands(LazyCommandGroup):
    # Every `celora db` command and the module that defines it (None: this one), in the order `celora db
    # --help` lists them. A command's module is imported only when that command runs (celora_cli/cli/lazy.py);
    # each imports its core modules inside its functions, so `celora --help` stays light. A new command module
    # adds its commands here (tests/unit/test_unit_lazy_commands.py checks this table against the modules).
    command_modules = {
        "migrate": "celora_cli.cli.db_dev",
        "migrate-deploy": None,
        "status": None,
        "lint": "celora_cli.cli.db_lint",
        "generate": "celora_cli.cli.db_dev",
        "push": "celora_cli.cli.db_push",
        "resolve": "celora_cli.cli.db_resolve",
        "rollback": "celora_cli.cli.db_destructive",
        "reset": "celora_cli.cli.db_destructive",
        "seed": "celora_cli.cli.db_seed",
        "studio": "celora_cli.cli.db_studio",
        "audit": "celora_cli.cli.db_audit",
        "changes": "celora_cli.cli.db_changes",
        "health": "celora_cli.cli.db_health",
        "metrics": "celora_cli.cli.db_metrics",
        "backup": "celora_cli.cli.db_backup",
        "restore": "celora_cli.cli.db_backup",
        "roles": "celora_cli.cli.db_roles",
    }
    # `celora db --help` lists the commands in these panels (tests/unit/test_unit_help_listing.py checks that
    # every command is in exactly one).
    panels = {
        "Migrations": ("migrate", "migrate-deploy", "status", "lint", "generate", "push", "resolve", "rollback",
                       "reset"),
        "Data": ("seed", "studio", "audit", "changes"),
        "Operations": ("health", "metrics", "backup", "restore", "roles"),
    }


app = typer.Typer(cls=_DbCommands, no_args_is_help=True, help=CeloraGroup.summaries["db"])
_DbCommands.typer_app = app


def lock_timeout_option():
    """--lock-timeout of every command that takes the migration lock."""
    return typer.Option(None, "--lock-timeout", metavar="SECONDS", help="Seconds to wait for another runner's "
                        "migration lock (0 to 86400; default CELORA_LOCK_TIMEOUT or 60).")


@app.command("migrate-deploy")
def migrate_deploy(
    ctx: typer.Context,
    lock_timeout: float | None = lock_timeout_option(),
    ddl_lock_timeout: float | None = typer.Option(
        None, "--ddl-lock-timeout", metavar="SECONDS", help="PostgreSQL lock_timeout for each migration's "
        "transaction: DDL that waits longer for a table lock is rolled back and retried instead of making every "
        "query on the table queue behind it (0.1 to 3600; default CELORA_DDL_LOCK_TIMEOUT or 5)."),
    ddl_lock_retries: int | None = typer.Option(
        None, "--ddl-lock-retries", min=0, max=100, metavar="N", help="Re-runs of a migration that hit the DDL "
        "lock timeout, with a growing pause between them (default CELORA_DDL_LOCK_RETRIES or 3)."),
    lint: bool = typer.Option(False, "--lint", help="First lint the pending migrations as `celora db lint` does; "
                              "with any finding, apply nothing and exit 16."),
    as_json: bool = json_option(),
) -> None:
    """Apply pending migrations (CI and deploys; never asks).

    Apply all pending migrations (CI/deploy): never prompts, serialised by an advisory lock.

    Exit 10 when another runner holds the migration lock past --lock-timeout, or when a migration's DDL hit the
    DDL lock timeout on every try (the error names the blocking sessions).
    Example: celora db migrate-deploy --lock-timeout 120 --ddl-lock-timeout 3
    """
    from celora_cli.config.settings import DDL_LOCK_TIMEOUT_LIMITS, LOCK_TIMEOUT_LIMITS
    from celora_cli.migrate.deploy import deploy

    settings = load_settings_from(
        ctx, lock_timeout=seconds_flag(lock_timeout, "--lock-timeout", LOCK_TIMEOUT_LIMITS),
        ddl_lock_timeout=seconds_flag(ddl_lock_timeout, "--ddl-lock-timeout", DDL_LOCK_TIMEOUT_LIMITS),
        ddl_lock_retries=ddl_lock_retries)
    if lint:
        from celora_cli.migrate.lint import findings_error, pending_revisions
        from celora_cli.migrate.lint import lint as lint_migrations

        linted = lint_migrations(settings, revisions=pending_revisions(settings))
        if linted.findings:
            if not as_json:  # with --json the error object lists them
                from celora_cli.cli.db_lint import render_findings

                render_findings(linted.findings)
            raise findings_error(linted, "migrate-deploy --lint (nothing was applied)")
    result = deploy(settings, progress=migration_progress(as_json))
    if as_json:
        console.print_json(result.as_dict())
        return
    head = result.head or "(no migrations)"
    if result.applied:
        console.out.print(f"{len(result.applied)} migration(s) applied to {safe(result.database)}; "
                          f"database is at {safe(head)} (head).")
    else:
        console.out.print(f"No pending migrations: {safe(result.database)} is at {safe(head)} (head).")


@app.command("status")
def status(
    ctx: typer.Context,
    drift: bool = typer.Option(False, "--drift", help="Also compare the database with what the migration history "
                               "builds (replayed into a temporary shadow database); exit 15 when it drifted."),
    as_json: bool = json_option(),
) -> None:
    """Show applied, pending, failed and modified migrations.

    Show applied (when, how long, by whom), pending, failed and modified migrations.

    Exit 1 when some are pending; 14 when an applied migration's file changed or disappeared since it was
    applied (migrate-deploy would refuse); with --drift, 15 on drift.
    Example: celora db status --json
    """
    import dataclasses

    from celora_cli.migrate.status import migration_status

    settings = load_settings_from(ctx)
    result = migration_status(settings)
    report = None
    if drift:
        from celora_cli.schema.autogenerate import database_drift

        report = database_drift(settings)
    if as_json:
        data = dataclasses.asdict(result)
        data["up_to_date"] = result.up_to_date
        data["files_changed"] = result.files_changed
        data["drift"] = report.as_dict() if report is not None else None
        console.print_json(data)
    else:
        current = ", ".join(result.current) or "(nothing applied)"
        console.out.print(f"Current: {safe(current)}    Head: {safe(result.head or '(no migrations)')}")
        _render_journal(result)
        if result.up_to_date:
            console.out.print("[green]Database is up to date.[/]")
        for migration in result.pending:
            console.out.print(f"[yellow]Pending[/] {safe(migration.name)}")
        if report is not None and not report.drifted:
            console.out.print("[green]No drift:[/] the schema matches the migration history.")
        for difference in report.differences if report is not None else []:
            console.out.print(f"[red]Drift[/] {safe(difference.describe('the database'))}")
        if report is not None and report.drifted:
            console.err.print("Reset it with `celora db reset` (loses the data), or write a migration making the "
                              "same change.")
    if report is not None and report.drifted:
        raise typer.Exit(ExitCode.DRIFT)
    if result.files_changed:
        raise typer.Exit(ExitCode.MIGRATION_HISTORY)
    if not result.up_to_date:
        raise typer.Exit(ExitCode.PENDING)


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
        console.out.print(f"{label} {safe(migration.name)} [dim]{safe(when)}[/]")
    for name in result.modified:
        console.out.print(f"[red]Modified[/] {safe(name)}: the file changed since it was applied; migrate-deploy "
                          "refuses until it is restored (or accepted with `celora db resolve --applied`).")
    for name in result.missing:
        console.out.print(f"[red]Missing[/]  {safe(name)}: applied (per the journal) but no such file locally; "
                          "migrate-deploy refuses until it is restored.")
    for failed in result.failed:
        console.out.print(f"[red]Failed[/]   {safe(failed.name)} [dim]at {safe(failed.failed_at or '?')}[/]: "
                          f"{safe(failed.error or 'no error recorded')}")


def migration_progress(as_json: bool):
    """Progress of a run of the migration runtime (deploy, reset, rollback): waits on stderr, steps on stdout
    (not with --json, where stdout is the one result object)."""

    def progress(kind: str, data) -> None:
        if kind == "lock_wait":
            console.err.print(f"Waiting for the migration lock held by {safe(data.describe())} ...")
        elif kind == "lock_acquired":
            console.err.print(f"Got the migration lock after {data:.1f} s.")
        elif kind == "replan":
            console.err.print(f"Another runner applied migrations meanwhile ({safe(data)}); re-reading the database.")
        elif kind == "applied" and not as_json:
            console.print_step("Applied", "green", data.name, f"({data.duration_ms:.0f} ms)")
        elif kind == "undone" and not as_json:
            console.print_step("Undone", "yellow", data.name, f"({data.duration_ms:.0f} ms)")

    return progress


def seconds_flag(value: float | None, flag: str, limits: tuple[float, float]) -> float | None:
    """A seconds flag through the one validator settings uses for its environment (exit 3, naming the flag)."""
    from celora_cli.config.settings import validate_seconds

    return None if value is None else validate_seconds(value, flag, minimum=limits[0], maximum=limits[1])


def _register_on_root() -> None:
    from celora_cli.cli.app import app as root

    root.add_typer(app, name="db")


_register_on_root()
