"""`celora db migrate-deploy`: apply pending migrations (CI and deploys; never asks). The core is
celora_cli.migrate.deploy, imported inside the command so `celora --help` stays light."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.options import lock_timeout_option, seconds_flag
from celora_cli.cli.output import safe
from celora_cli.cli.progress import migration_progress


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
    plan: bool = typer.Option(False, "--plan", help="Apply nothing: show what a deploy would do now, read-only and "
                              "taking no lock: each pending statement's table, lock, rewrite or scan and the table's "
                              "size; the live sessions it would wait behind; lint findings; drift. Exit 0 nothing "
                              "pending, 1 pending and safe, 33 a rewrite over CELORA_PLAN_REWRITE_THRESHOLD, 34 a "
                              "live blocker, 15 drift."),
    allow_drift: bool = typer.Option(False, "--allow-drift", help="Apply even when the database differs from "
                                     "the schema the history builds at its revision (the drift gate, exit 15)."),
    as_json: bool = json_option(),
) -> None:
    """Apply pending migrations (CI and deploys; never asks).

    Apply all pending migrations (CI/deploy): never prompts, serialised by an advisory lock.

    Exit 10 when another runner holds the migration lock past --lock-timeout, or when a migration's DDL hit the
    DDL lock timeout on every try (the error names the blocking sessions). Exit 15 when the database drifted from
    the history at its revision (each difference named, nothing applied) unless --allow-drift; the expected schema
    comes from migrations/snapshots/ (`celora db snapshots`).
    Example: celora db migrate-deploy --lock-timeout 120 --ddl-lock-timeout 3
    Example: celora db migrate-deploy --plan --json
    """
    from celora_cli.config.settings import DDL_LOCK_TIMEOUT_LIMITS, LOCK_TIMEOUT_LIMITS
    from celora_cli.migrate.deploy import deploy

    settings = load_settings_from(
        ctx, lock_timeout=seconds_flag(lock_timeout, "--lock-timeout", LOCK_TIMEOUT_LIMITS),
        ddl_lock_timeout=seconds_flag(ddl_lock_timeout, "--ddl-lock-timeout", DDL_LOCK_TIMEOUT_LIMITS),
        ddl_lock_retries=ddl_lock_retries)
    if plan:  # read-only, so allowed on production; the plan includes the lint findings
        from celora_cli.cli import plan_render  # rich's tables: loaded only for a plan, not on every deploy

        plan_render.run_plan(settings, as_json)
        return
    if lint:
        from celora_cli.migrate.lint import findings_error, pending_revisions
        from celora_cli.migrate.lint import lint as lint_migrations

        linted = lint_migrations(settings, revisions=pending_revisions(settings))
        if linted.findings:
            if not as_json:  # with --json the error object lists them
                from celora_cli.cli.lint_findings import render_findings

                render_findings(linted.findings)
            raise findings_error(linted, "migrate-deploy --lint (nothing was applied)")
    gate = None
    if not allow_drift:
        from celora_cli.schema.deploy_gate import drift_gate

        gate = drift_gate(settings)
    output.emit(deploy(settings, progress=migration_progress(as_json), before_apply=gate), as_json)


@output.renders("celora_cli.migrate.deploy.DeployResult")
def render_deploy(result) -> None:
    head = result.head or "(no migrations)"
    if result.applied:
        output.out.print(f"{len(result.applied)} migration(s) applied to {safe(result.database)}; "
                         f"database is at {safe(head)} (head).")
    else:
        output.out.print(f"No pending migrations: {safe(result.database)} is at {safe(head)} (head).")
