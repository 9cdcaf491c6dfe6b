"""`celora db reset` and `celora db rollback`: confirmation through the one guard, then the core
(celora_cli.migrate.reset, celora_cli.migrate.rollback). Core modules are imported inside the commands, so
`celora --help` stays light."""

from __future__ import annotations

import typer

from celora_cli.cli import console
from celora_cli.cli.app import allow_production_option, confirmation, force_option, json_option, load_settings_from
from celora_cli.cli.console import safe
from celora_cli.cli.db import app, lock_timeout_option, migration_progress, seconds_flag


@app.command("reset")
def reset(
    ctx: typer.Context,
    force: bool = force_option(),
    skip_seed: bool = typer.Option(False, "--skip-seed", help="Do not run the seed after re-applying migrations."),
    allow_production: bool = allow_production_option(),
    lock_timeout: float | None = lock_timeout_option(),
    as_json: bool = json_option(),
) -> None:
    """Drop the schema, re-apply migrations, seed (asks first).

    Drop every object of the schema (tables, types, sequences, functions, migration bookkeeping), re-apply all
    migrations, then seed. Asks first, naming the database and each table's rows; refused on production.

    Example: celora db reset --force --skip-seed
    """
    from celora_cli.config.settings import LOCK_TIMEOUT_LIMITS
    from celora_cli.migrate.reset import reset as reset_database

    settings = load_settings_from(ctx, lock_timeout=seconds_flag(lock_timeout, "--lock-timeout", LOCK_TIMEOUT_LIMITS))
    confirm = confirmation("drop every object in the schema and re-apply all migrations", "celora db reset", settings,
                           force=force, allow_production=allow_production)
    result = reset_database(settings, confirm=confirm, progress=migration_progress(as_json), run_seed=not skip_seed,
                            allow_production=allow_production)
    if as_json:
        console.print_json(result.as_dict())
        return
    dropped = ", ".join(f"{count} {kind}" for kind, count in result.dropped.items()) or "nothing (it was empty)"
    console.out.print(f"Reset {safe(result.database)} (schema {safe(result.schema)}): dropped {safe(dropped)}.")
    console.out.print(f"{len(result.applied)} migration(s) applied; database is at "
                      f"{safe(result.head or '(no migrations)')} (head); environment stamp "
                      f"{safe(result.environment or 'none')}.")
    if result.seed == "done" and result.seed_result is not None:
        counts = result.seed_result.get("tables", {})
        created = sum(c.get("created", 0) for c in counts.values())
        console.out.print(f"Seed: done ({created} row(s) created from the fixtures).")
    elif result.seed == "skipped":
        console.out.print("Seed: skipped (--skip-seed).")
    else:
        console.out.print(f"Seed: {safe(result.seed)}.")


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
    if as_json:
        console.print_json(result.as_dict())
        return
    current = ", ".join(result.current) or "base (no migration applied)"
    if not result.undone:
        console.out.print(f"Nothing to undo: {safe(result.database)} is already at {safe(current)}.")
    else:
        console.out.print(f"{len(result.undone)} migration(s) undone on {safe(result.database)}; database is at "
                          f"{safe(current)}.")
