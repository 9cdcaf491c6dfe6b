"""`celora db migrate`: the developer loop (models -> a new migration, applied -> artifacts regenerated)."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--name", "-n", metavar="NAME",
                                    help="Name of the new migration (asked for when interactive)."),
    create_only: bool = typer.Option(False, "--create-only", help="Write the new migration but do not apply it."),
    as_json: bool = json_option(),
) -> None:
    """Write and apply a new migration from the models.

    Development: check drift against the history's schema snapshot (built once in a shadow database when none
    matches), apply pending migrations, write and apply a new migration from the models, regenerate the schema
    artifacts and the new revision's snapshot.

    Exit 15 when the database drifted from the history (nothing is changed; `celora db reset` resets it).
    Example: celora db migrate --name add_wallet_label
    """
    from celora_cli.schema.autogenerate import migrate_dev

    settings = load_settings_from(ctx)
    output.emit(migrate_dev(settings, name=name, create_only=create_only, ask_name=_name_prompt()), as_json)


@output.renders("celora_cli.schema.autogenerate.MigrateResult")
def render_migrate(result) -> None:
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
    from celora_cli.safety.interaction import is_interactive

    if not is_interactive():
        return None

    def ask() -> str:
        from rich.prompt import Prompt

        return Prompt.ask("Name of the new migration", console=output.err)

    return ask
