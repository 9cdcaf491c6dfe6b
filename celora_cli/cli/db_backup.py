"""`celora db backup` and `celora db restore`: verified backups (celora_cli.ops.backup). Core modules are imported
inside the commands, so `celora --help` stays light."""

from __future__ import annotations

from pathlib import Path

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, confirmation, force_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("backup")
def backup(
    ctx: typer.Context,
    target: Path | None = typer.Option(
        None, "--output", "-o", metavar="FILE",
        help="Where to write the dump (default: backups/<database>-<UTC time>.dump under the project root). "
        "Never overwritten; FILE.manifest.json is written beside it."),
    verify: bool = typer.Option(False, "--verify", help="Then restore it into a scratch database and compare tables "
                                "and row counts with the manifest (needs CREATEDB)."),
    as_json: bool = json_option(),
) -> None:
    """Back up the database with pg_dump and a manifest.

    pg_dump (custom format) of the database over the direct connection, with a manifest: time, size, SHA-256,
    schema revision, server version, each table's exact row count.

    Example: celora db backup --output backups/before-deploy.dump --verify
    """
    from celora_cli.ops.backup import backup as run_backup

    result = run_backup(load_settings_from(ctx), target, verify=verify)
    if as_json:
        output.print_json(result)
        return
    rows = sum(result.tables.values())
    output.out.print(f"Backed up {safe(result.database)} to {safe(result.file)}")
    output.out.print(f"{result.size_bytes:,} bytes, sha256 {result.sha256}; {len(result.tables)} table(s), "
                      f"{rows:,} row(s); schema revision {safe(result.schema_revision or 'none')}; "
                      f"PostgreSQL {safe(result.server_version)} with {safe(result.pg_dump)}")
    output.out.print(f"manifest: {safe(result.manifest_file)}")
    if result.verified is not None:
        output.out.print(f"[green]verified[/]: restored into a scratch database, {len(result.verified['tables'])} "
                          "table(s) with the manifest's exact row counts.")


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
        verified = verify_backup(settings, file)
        if as_json:
            output.print_json(verified)
            return
        output.out.print(f"[green]Verified[/] {safe(verified.file)} (backup of {safe(verified.backup_created_at)}): "
                          f"restored into a scratch database, {len(verified.tables)} table(s), "
                          f"{sum(verified.tables.values()):,} row(s), exactly as in the manifest.")
        return

    confirm = confirmation(
        lambda plan: f"replace the whole database with the backup {plan.file} (of {plan.backup_created_at})",
        f"celora db restore {file}", settings, force=yes, allow_production=allow_production, force_flag="--yes")

    result = run_restore(settings, file, confirm=confirm)
    if as_json:
        output.print_json(result)
        return
    output.out.print(f"Restored {safe(result.file)} (backup of {safe(result.backup_created_at)}) into "
                      f"{safe(result.database)}: {len(result.tables)} table(s), {sum(result.tables.values()):,} "
                      f"row(s), checked against the manifest; schema revision "
                      f"{safe(result.schema_revision or 'none')}.")
