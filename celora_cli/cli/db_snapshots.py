"""`celora db snapshots`: the committed schema snapshots (migrations/snapshots/<revision>.json) that the drift
checks and the deploy gate compare with: listed, checked (CI) or written."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("snapshots")
def snapshots(
    ctx: typer.Context,
    write: bool = typer.Option(False, "--write", help="Replay the history once into a shadow database and write "
                               "every missing or stale snapshot (then commit the folder)."),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 30 when a snapshot is missing or stale "
                               "(for CI)."),
    as_json: bool = json_option(),
) -> None:
    """List, check or write the schema snapshot of each migration.

    Each revision's expected schema, keyed by the SHA-256 of the migration files up to it, so `migrate-deploy`'s
    drift gate and `db status --drift` find it in the checkout instead of replaying the history. `celora db
    migrate` writes the snapshot of each revision it writes; --write backfills the whole history (it needs a
    database server for the shadow: DATABASE_URL, or the local one).

    Without --write no database is needed. Exit 30 with --check when one is missing or stale.
    Example: celora db snapshots --write && git add migrations/snapshots
    """
    from celora_cli.errors import ConfigError
    from celora_cli.migrate.scripts import alembic_config, script_directory
    from celora_cli.schema import snapshots as core

    if write and check:
        raise ConfigError("--write and --check exclude each other: --check writes nothing.",
                          "Pass one of them: celora db snapshots --check")
    settings = load_settings_from(ctx)
    config = alembic_config(settings)
    script = script_directory(settings, config)
    if write:
        from celora_cli.db.connect import direct_url
        from celora_cli.schema.autogenerate import shadow_for

        shadow = shadow_for(settings, direct_url(settings), settings.shadow_database_url)
        result = core.write_snapshots(settings, config, script, shadow=shadow)
    else:
        result = core.snapshot_files(settings, script)
        result.checking = check
    output.emit(result, as_json)


@output.renders("celora_cli.schema.snapshots.SnapshotsResult")
def render_snapshots(result) -> None:
    for entry in result.files:
        colour = {"current": "green", "written": "green", "stale": "yellow", "missing": "yellow"}[entry.state]
        output.out.print(f"[{colour}]{entry.state:<8}[/] {safe(entry.path)}")
    written = sum(entry.state == "written" for entry in result.files)
    if written:
        output.out.print(f"Wrote {written} snapshot(s); commit {safe(result.directory)}.")
    elif result.outdated:
        output.err.print(f"{len(result.outdated)} snapshot(s) missing or stale: run `celora db snapshots --write` "
                         "and commit them.")
    else:
        output.out.print(f"All {len(result.files)} snapshot(s) match the migration history.")
