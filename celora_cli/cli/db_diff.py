"""`celora db diff`: what differs between two schema sources, and the SQL from one to the other
(celora_cli.schema.diff)."""

from __future__ import annotations

import typer
from rich.text import Text

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe

_SOURCES = ("models, migrations (head), migrations@REV, database (the configured one), a postgresql:// URL, or a "
            "schema .sql file")


@app.command("diff")
def diff(
    ctx: typer.Context,
    source: str = typer.Option(..., "--from", metavar="SOURCE", help=f"What to start from: {_SOURCES}."),
    target: str = typer.Option(..., "--to", metavar="SOURCE", help=f"What to arrive at: {_SOURCES}."),
    sql: bool = typer.Option(False, "--sql", help="Print the SQL statements that turn --from into --to."),
    summary: bool = typer.Option(False, "--summary", help="Name each difference (the default)."),
    exit_code: bool = typer.Option(False, "--exit-code", help="Exit 1 when the sources differ (like git diff)."),
    as_json: bool = json_option(),
) -> None:
    """Compare two schema sources, or print the SQL between them.

    A source is `models`, `migrations` or `migrations@REV`, `database`, a postgresql:// URL (read-only), or a
    schema SQL file. Models, migrations and SQL files are made into temporary shadow databases on the configured
    server (or SHADOW_DATABASE_URL), always dropped afterwards. Exit 0 (1 with --exit-code when they differ);
    a bad source: 3 (unknown spelling, missing file, unknown revision, a SQL file PostgreSQL refuses), 4 to 6 (a
    URL that can't be reached, refuses the login, or names no database).

    Example: celora db diff --from migrations --to models --sql
    """
    from celora_cli.errors import UsageError
    from celora_cli.schema.diff import diff as compare

    if sql and summary:
        raise UsageError("--sql and --summary are two views of the result: choose one.",
                         "Drop one of them (--summary is the default).")
    settings = load_settings_from(ctx)
    output.emit(compare(settings, source, target, sql=sql, exit_on_difference=exit_code), as_json)


@output.renders("celora_cli.schema.diff.DiffResult")
def render_diff(result) -> None:
    if result.statements is not None:
        if not result.statements:
            output.out.print(Text.from_markup(f"-- {safe(result.source)} and {safe(result.target)}: nothing "
                                              "to change."))
        for statement in result.statements:
            output.out.print(Text.from_markup(safe(statement)))  # masked, printed literally
        return
    if not result.differences:
        output.out.print(f"No differences: {safe(result.source)} and {safe(result.target)} have the same schema.")
        return
    output.out.print(f"{len(result.differences)} difference(s) from {safe(result.source)} to "
                     f"{safe(result.target)}:")
    for difference in result.differences:
        output.out.print(f"  - {safe(result.describe(difference))}")
