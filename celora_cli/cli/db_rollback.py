"""`celora db rollback`: confirmation through the one guard, then the core (celora_cli.migrate.rollback). Core
modules are imported inside the command, so `celora --help` stays light."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, confirmation, force_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.options import lock_timeout_option, seconds_flag
from celora_cli.cli.output import safe
from celora_cli.cli.progress import migration_progress


def _not_blank(value: str | None) -> str | None:
    """`--to ""` (an unset shell variable) is a usage error, before anything connects."""
    if value is not None and not value.strip():
        raise typer.BadParameter("is empty; give a revision id or file name from `celora db status`, or base.")
    return value


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    steps: int | None = typer.Option(None, "--steps", metavar="N", help="Undo the last N applied migrations."),
    to: str | None = typer.Option(None, "--to", metavar="REVISION", callback=_not_blank,
                                  help="Undo down to this revision (kept applied); 'base' undoes all."),
    force: bool = force_option(),
    allow_production: bool = allow_production_option(),
    lock_timeout: float | None = lock_timeout_option(),
    as_json: bool = json_option(),
) -> None:
    """Undo applied migrations (asks first).

    Undo applied migrations (Alembic downgrade) under the migration lock. Asks first, naming the database and
    the migrations to undo; refused on production.

    Example: celora db rollback --steps 1 --force
    """
    from celora_cli.config.settings import LOCK_TIMEOUT_LIMITS
    from celora_cli.migrate.rollback import rollback as rollback_database

    settings = load_settings_from(ctx, lock_timeout=seconds_flag(lock_timeout, "--lock-timeout", LOCK_TIMEOUT_LIMITS))
    confirm = confirmation("undo migrations", "celora db rollback", settings, force=force,
                           allow_production=allow_production)
    result = rollback_database(settings, steps=steps, to=to, confirm=confirm, progress=migration_progress(as_json))
    output.emit(result, as_json)


@output.renders("celora_cli.migrate.rollback.RollbackResult")
def render_rollback(result) -> None:
    current = ", ".join(result.current) or "base (no migration applied)"
    if not result.undone:
        output.out.print(f"Nothing to undo: {safe(result.database)} is already at {safe(current)}.")
    else:
        output.out.print(f"{len(result.undone)} migration(s) undone on {safe(result.database)}; database is at "
                         f"{safe(current)}.")
