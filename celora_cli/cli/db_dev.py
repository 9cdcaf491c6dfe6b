"""`celora db migrate` and `celora db generate`: the developer loop (models -> migration -> artifacts)."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db import app
from celora_cli.cli.output import safe
from celora_cli.errors import ExitCode


@app.command("generate")
def generate(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 when an artifact is stale (for CI)."),
    as_json: bool = json_option(),
) -> None:
    """Render the models into schema.sql and an ER diagram.

    Render the models into migrations/schema.sql (DDL) and docs/schema.md (Mermaid ER diagram).

    With --check: exit 1 when a file is stale, 3 when the models fail to import. Exit 74 when a file cannot be
    written (a read-only folder, a file in the way). No database needed.
    Example: celora db generate --check
    """
    from celora_cli.schema.generate import generate as run_generate

    result = run_generate(load_settings_from(ctx), check=check)
    if as_json:
        output.print_json(result.as_dict())
    else:
        for path in result.written:
            output.out.print(f"[green]Wrote[/] {safe(path)}")
        for path in result.stale:
            output.out.print(f"[yellow]Stale[/] {safe(path)}: it does not match the models.")
            output.out.print(safe(result.diffs[path]))
        if result.stale:
            output.err.print("Run `celora db generate` and commit the files.")
        elif not result.written:
            output.out.print(f"Up to date: {safe(', '.join(result.unchanged))}.")
    if not result.up_to_date:
        raise typer.Exit(ExitCode.PENDING)


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--name", "-n", metavar="NAME",
                                    help="Name of the new migration (asked for when interactive)."),
    create_only: bool = typer.Option(False, "--create-only", help="Write the new migration but do not apply it."),
    as_json: bool = json_option(),
) -> None:
    """Write and apply a new migration from the models.

    Development: check drift against a shadow database, apply pending migrations, write and apply a new
    migration from the models, regenerate the schema artifacts.

    Exit 15 when the database drifted from the history (nothing is changed; `celora db reset` resets it).
    Example: celora db migrate --name add_wallet_label
    """
    from celora_cli.schema.autogenerate import migrate_dev

    settings = load_settings_from(ctx)
    result = migrate_dev(settings, name=name, create_only=create_only, ask_name=_name_prompt())
    if as_json:
        output.print_json(result.as_dict())
        return
    for applied in result.applied:
        output.out.print(f"[green]Applied[/] {safe(applied)}")
    for warning in result.warnings:
        output.err.print(f"[yellow]warning:[/] {safe(warning)}")
    if result.in_sync:
        output.out.print(f"Already in sync: the models match the migration history ({safe(result.database)}); "
                          "no migration written.")
    elif result.revision_file:
        state = "applied" if result.revision_applied else "not applied (--create-only)"
        output.out.print(f"[green]Wrote[/] {safe(result.revision_file)}, {state}.")
    for path in result.artifacts_written:
        output.out.print(f"[green]Regenerated[/] {safe(path)}")


def _name_prompt():
    """A prompt for the migration name when a person is at a terminal and not in CI; None otherwise."""
    import os
    import sys

    if not sys.stdin.isatty() or os.environ.get("CI"):
        return None

    def ask() -> str:
        from rich.prompt import Prompt

        return Prompt.ask("Name of the new migration", console=output.err)

    return ask
