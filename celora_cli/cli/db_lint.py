"""`celora db lint`: the zero-downtime lint of the migrations' SQL (core: celora_cli.migrate.lint, imported inside the
command so `celora --help` stays light)."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.lint_findings import render_findings
from celora_cli.cli.output import safe


@app.command("lint")
def lint(
    ctx: typer.Context,
    revision_range: str | None = typer.Argument(
        None, metavar="[REVISION_RANGE]", help="REV (one migration), FROM:TO (after FROM up to TO, base and head "
        "allowed) or nothing for the whole history."),
    as_json: bool = json_option(),
) -> None:
    """Flag migration SQL that locks tables or breaks code.

    Flag migration statements that lock tables or break running code, from the SQL rendered offline
    (no database needed): NOT NULL without default, index without CONCURRENTLY, constraint without NOT VALID,
    column type change, dropped or renamed column or table, DDL without the lock timeout.

    Exit 0 clean, 16 with findings (each: file and line, statement, why, the safe alternative), 14 when a
    migration file is broken. Silence one with its reason: `# celora: allow <rule> -- <why>` above the statement.
    Example: celora db lint 20261126150000:head
    """
    from celora_cli.migrate.lint import findings_error
    from celora_cli.migrate.lint import lint as run_lint

    result = run_lint(load_settings_from(ctx), revision_range)
    if result.findings:
        if not as_json:  # with --json the error object lists them (details)
            render_findings(result.findings)
        raise findings_error(result)  # the one error path prints the summary and the hint; exit 16
    output.emit(result, as_json)


@output.renders("celora_cli.migrate.lint_rules.LintResult")
def render_clean(result) -> None:
    output.out.print(f"[green]Clean:[/] {len(result.migrations)} migration(s) linted ({safe(result.linter)}), "
                     f"{len(result.silenced)} finding(s) silenced with a reason (--json lists them).")

