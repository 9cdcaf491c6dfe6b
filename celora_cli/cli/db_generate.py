"""`celora db generate`: the models rendered into migrations/schema.sql and docs/schema.md (no database needed)."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("generate")
def generate(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 30 when an artifact is stale (for CI)."),
    as_json: bool = json_option(),
) -> None:
    """Render the models into schema.sql and an ER diagram.

    Render the models into migrations/schema.sql (DDL) and docs/schema.md (Mermaid ER diagram).

    With --check: exit 30 when a file is stale, 3 when the models fail to import. Exit 74 when a file cannot be
    written (a read-only folder, a file in the way). No database needed.
    Example: celora db generate --check
    """
    from celora_cli.schema.generate import generate as run_generate

    output.emit(run_generate(load_settings_from(ctx), check=check), as_json)


@output.renders("celora_cli.schema.generate.GenerateResult")
def render_generate(result) -> None:
    for path in result.written:
        output.out.print(f"[green]Wrote[/] {safe(path)}")
    for path in result.stale:
        output.out.print(f"[yellow]Stale[/] {safe(path)}: it does not match the models.")
        output.out.print(safe(result.diffs[path]))
    if result.stale:
        output.err.print("Run `celora db generate` and commit the files.")
    elif not result.written:
        output.out.print(f"Up to date: {safe(', '.join(result.unchanged))}.")
