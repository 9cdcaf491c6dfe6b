"""`celora db migrate` and `celora db generate`: the developer loop (models -> migration -> artifacts)."""

from __future__ import annotations

import typer

from celora_cli.cli import console
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.console import safe
from celora_cli.cli.db import app
from celora_cli.errors import ExitCode


@app.command("generate")
def generate(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 when an artifact is stale (for CI)."),
    as_json: bool = json_option(),
) -> None:
    """Render the models into migrations/schema.sql (DDL) and docs/schema.md (Mermaid ER diagram).

    With --check: exit 1 when a file is stale, 3 when the models fail to import. No database needed.
    Example: celora db generate --check
    """
    from celora_cli.generate import generate as run_generate

    result = run_generate(load_settings_from(ctx), check=check)
    if as_json:
        console.print_json(result.as_dict())
    else:
        for path in result.written:
            console.out.print(f"[green]Wrote[/] {safe(path)}")
        for path in result.stale:
            console.out.print(f"[yellow]Stale[/] {safe(path)}: it does not match the models.")
            console.out.print(safe(result.diffs[path]))
        if result.stale:
            console.err.print("Run `celora db generate` and commit the files.")
        elif not result.written:
            console.out.print(f"Up to date: {safe(', '.join(result.unchanged))}.")
    if not result.up_to_date:
        raise typer.Exit(ExitCode.PENDING)
