"""`celora db reset`: confirmation through the one guard, then the core (celora_cli.migrate.reset). Core
modules are imported inside the command, so `celora --help` stays light."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, confirmation, force_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.options import lock_timeout_option, seconds_flag
from celora_cli.cli.output import safe
from celora_cli.cli.progress import migration_progress


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
    output.emit(result, as_json)


@output.renders("celora_cli.migrate.reset.ResetResult")
def render_reset(result) -> None:
    dropped = ", ".join(f"{count} {kind}" for kind, count in result.dropped.items()) or "nothing (it was empty)"
    output.out.print(f"Reset {safe(result.database)} (schema {safe(result.schema)}): dropped {safe(dropped)}.")
    output.out.print(f"{len(result.applied)} migration(s) applied; database is at "
                     f"{safe(result.head or '(no migrations)')} (head); environment stamp "
                     f"{safe(result.environment or 'none')}.")
    if result.seed == "done" and result.seed_result is not None:
        counts = result.seed_result.get("tables", {})
        created = sum(c.get("created", 0) for c in counts.values())
        output.out.print(f"Seed: done ({created} row(s) created from the fixtures).")
    elif result.seed == "skipped":
        output.out.print("Seed: skipped (--skip-seed).")
    else:
        output.out.print(f"Seed: {safe(result.seed)}.")
