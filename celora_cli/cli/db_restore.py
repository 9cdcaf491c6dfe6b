"""`celora db restore`: a backup restored into a new database, checked against its manifest, then swapped in
(celora_cli.ops.backup). Core modules are imported inside the command, so `celora --help` stays light."""

from __future__ import annotations

from pathlib import Path

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, confirmation, force_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("restore")
def restore(
    ctx: typer.Context,
    file: Path = typer.Argument(..., metavar="FILE", help="A file written by `celora db backup` (its "
                                ".manifest.json must be beside it)."),
    verify: bool = typer.Option(False, "--verify", help="Only check: restore into a scratch database, compare tables "
                                "and row counts with the manifest, drop it. The database is not touched."),
    yes: bool = force_option("Replace the database without asking"),
    allow_production: bool = allow_production_option("Allow replacing a PRODUCTION database"),
    as_json: bool = json_option(),
) -> None:
    """Restore a backup into a new database, then swap it in.

    Check the file against its manifest (size, SHA-256), restore it into a new database, compare tables and row
    counts with the manifest, then swap it in place of the database. Asks first; refused on production.

    Example: celora db restore backups/celora-20261126T120000Z.dump --verify
    """
    from celora_cli.ops.backup import restore as run_restore
    from celora_cli.ops.backup import verify_backup

    settings = load_settings_from(ctx)
    if verify:
        output.emit(verify_backup(settings, file), as_json)
        return

    confirm = confirmation(
        lambda plan: f"replace the whole database with the backup {plan.file} (of {plan.backup_created_at})",
        f"celora db restore {file}", settings, force=yes, allow_production=allow_production, force_flag="--yes")

    output.emit(run_restore(settings, file, confirm=confirm), as_json)


@output.renders("celora_cli.ops.backup.restore.VerifyResult")
def render_verify(verified) -> None:
    output.out.print(f"[green]Verified[/] {safe(verified.file)} (backup of {safe(verified.backup_created_at)}): "
                     f"restored into a scratch database, {len(verified.tables)} table(s), "
                     f"{sum(verified.tables.values()):,} row(s), exactly as in the manifest.")


@output.renders("celora_cli.ops.backup.restore.RestoreResult")
def render_restore(result) -> None:
    output.out.print(f"Restored {safe(result.file)} (backup of {safe(result.backup_created_at)}) into "
                     f"{safe(result.database)}: {len(result.tables)} table(s), {sum(result.tables.values()):,} "
                     f"row(s), checked against the manifest; schema revision "
                     f"{safe(result.schema_revision or 'none')}.")
