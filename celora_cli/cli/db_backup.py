"""`celora db backup`: a verified pg_dump with its manifest (celora_cli.ops.backup). Core modules are imported
inside the command, so `celora --help` stays light."""

from __future__ import annotations

from pathlib import Path

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
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
    output.emit(result, as_json)


@output.renders("celora_cli.ops.backup.dump.BackupResult")
def render_backup(result) -> None:
    rows = sum(result.tables.values())
    output.out.print(f"Backed up {safe(result.database)} to {safe(result.file)}")
    output.out.print(f"{result.size_bytes:,} bytes, sha256 {result.sha256}; {len(result.tables)} table(s), "
                     f"{rows:,} row(s); schema revision {safe(result.schema_revision or 'none')}; "
                     f"PostgreSQL {safe(result.server_version)} with {safe(result.pg_dump)}")
    output.out.print(f"manifest: {safe(result.manifest_file)}")
    if result.verified is not None:
        output.out.print(f"[green]verified[/]: restored into a scratch database, {len(result.verified['tables'])} "
                         "table(s) with the manifest's exact row counts.")
