"""`celora db migrate`: the developer loop (models -> a new migration, applied -> artifacts regenerated)."""

from __future__ import annotations

import typer

from celora_cli.cli import (
    migrate_check,  # noqa: F401 - registers the renderer of --check
    output,
)
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--name", "-n", metavar="NAME",
                                    help="Name of the new migration (asked for when interactive)."),
    create_only: bool = typer.Option(False, "--create-only", help="Write the new migration but do not apply it."),
    check: bool = typer.Option(False, "--check", help=(
        "Only check (for CI): exit 1 naming each operation when the models differ from the history's head, 0 "
        "when they match. Writes no file and nothing to the development database; the history is replayed into "
        "a temporary shadow database on the same server (or SHADOW_DATABASE_URL), dropped afterwards.")),
    rename: list[str] = typer.Option([], "--rename", metavar="TABLE.OLD:NEW",
                                     help="A column (table.old:new) or table (old:new) the models renamed: written "
                                     "as a rename that keeps the data instead of drop + add. Repeatable."),
    accept_data_loss: bool = typer.Option(False, "--accept-data-loss", help="Apply a new migration that drops "
                                          "data (a table with rows, a column with values, a narrowed type) without "
                                          "a prompt (required when stdin is not a terminal or CI is set)."),
    from_drift: bool = typer.Option(False, "--from-drift", help="When the database drifted from the history, write "
                                    "a migration from the drift and mark it applied there (the data stays) "
                                    "instead of stopping (asked at a terminal)."),
    as_json: bool = json_option(),
) -> None:
    """Write and apply a new migration from the models.

    Development: check drift against the history's schema snapshot (built once in a shadow database when none
    matches), apply pending migrations, write and apply a new migration from the models, regenerate the schema
    artifacts and the new revision's snapshot.

    `--check`: exit 1 when the models need a migration (each operation named), 0 when they match.
    Exit 15 when the database drifted from the history (nothing is changed; `--from-drift` turns the drift into
    a migration, `celora db reset` resets it). Exit 12 when the new migration would drop data and neither a
    `--rename` nor `--accept-data-loss` (nor a yes at a terminal) says what to do.
    Example: celora db migrate --name add_wallet_label
    Example: celora db migrate --name rename_memo --rename transactions.memo:note
    Example: celora db migrate --from-drift
    """
    from celora_cli.safety.interaction import is_interactive
    from celora_cli.schema.autogenerate import migrate_dev

    settings = load_settings_from(ctx)
    if check:
        from celora_cli.errors import UsageError
        from celora_cli.schema.check import check_models

        if name is not None or create_only or rename or accept_data_loss or from_drift:
            raise UsageError("--check writes nothing, so it takes none of --name, --create-only, --rename, "
                             "--accept-data-loss, --from-drift.", "Run `celora db migrate --check` alone.")

        output.emit(check_models(settings), as_json)
        return
    output.emit(migrate_dev(settings, name=name, create_only=create_only, ask_name=_name_prompt(), renames=rename,
                            accept_data_loss=accept_data_loss, from_drift=from_drift,
                            ask=output.confirm if is_interactive() else None), as_json)


@output.renders("celora_cli.schema.autogenerate.MigrateResult")
def render_migrate(result) -> None:
    for applied in result.applied:
        output.out.print(f"[green]Applied[/] {safe(applied)}")
    if result.drift_file:
        output.out.print(f"[green]Wrote[/] {safe(result.drift_file)} from the drift, marked applied (nothing ran).")
    for renamed in result.renamed:
        output.out.print(f"[green]Renamed[/] {safe(renamed)} (the data stays)")
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
