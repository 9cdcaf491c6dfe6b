"""`celora db resolve`: record a human's fix of a failed (or knowingly edited) migration in the journal.
The core is celora_cli.migrate.resolve; it is imported inside the command, so `celora --help` stays light."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.options import lock_timeout_option, seconds_flag
from celora_cli.cli.output import safe


@app.command("resolve")
def resolve(
    ctx: typer.Context,
    applied: str | None = typer.Option(
        None, "--applied", metavar="NAME", help="Record NAME as applied by hand: the next pending migration (moves "
        "alembic_version to it), or an applied one whose file changed (accepts the new checksum)."),
    rolled_back: str | None = typer.Option(
        None, "--rolled-back", metavar="NAME", help="Record that failed migration NAME left nothing behind; it stays "
        "pending and the next migrate-deploy runs it again."),
    allow_production: bool = allow_production_option(),
    lock_timeout: float | None = lock_timeout_option(),
    as_json: bool = json_option(),
) -> None:
    """Record a hand fix of a failed or edited migration.

    Record a human's fix of a migration in the journal (celora_migrations), as Prisma's migrate resolve.

    Changes only the journal, and alembic_version for --applied on the next pending migration; never runs SQL of
    the migration.
    Example: celora db resolve --rolled-back 20261127000000_add_x
    """
    from celora_cli.config.settings import LOCK_TIMEOUT_LIMITS
    from celora_cli.migrate.resolve import resolve as resolve_migration

    settings = load_settings_from(ctx, lock_timeout=seconds_flag(lock_timeout, "--lock-timeout", LOCK_TIMEOUT_LIMITS))
    result = resolve_migration(settings, applied=applied, rolled_back=rolled_back,
                               allow_production=allow_production)
    output.emit(result, as_json)


@output.renders("celora_cli.migrate.resolve.ResolveResult")
def render_resolve(result) -> None:
    output.out.print(f"Recorded {safe(result.name)} as [bold]{safe(result.recorded)}[/] in celora_migrations on "
                     f"{safe(result.database)} (its newest row was {safe(result.previous or 'none')}).")
    if result.stamped:
        output.out.print(f"alembic_version moved from {safe(', '.join(result.version_from) or 'empty')} to "
                         f"{safe(', '.join(result.version_to))}; migrate-deploy will not run this migration.")
    elif result.recorded == "resolved_rolled_back":
        output.out.print("alembic_version unchanged: the migration is pending and the next migrate-deploy runs it.")
    else:
        output.out.print("alembic_version unchanged: the file's current checksum is now the accepted one.")
