"""`celora db squash --to REV`: the history up to REV as one generated migration. The plan and the refusals come
from the core (celora_cli.schema.squash, celora_cli.migrate.squash); rewriting the files goes through the one
guard (asks at a terminal, `--yes` otherwise). Core modules are imported inside the command."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import confirmation, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("squash")
def squash(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", metavar="REVISION",
                           help="The last revision to squash (an id or file name from `celora db status`)."),
    name: str | None = typer.Option(None, "--name", help="The squashed migration's name (default: squashed)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Rewrite the files without asking (needed without a "
                             "terminal)."),
    as_json: bool = json_option(),
) -> None:
    """Replace the history up to a revision with one migration.

    Replays the history up to --to in a shadow database and writes its schema (pg_dump --schema-only) as one
    migration marked as replacing those revisions; the revision after it is re-pointed, the replaced files are
    deleted (git keeps them). A fresh database applies the one file; a database past the revision needs nothing;
    one at it is recorded as at the squash by the next migrate-deploy. Asks first.

    Example: celora db squash --to 20261207023000 --yes
    """
    from celora_cli.ops.backup.schema_dump import schema_sql
    from celora_cli.schema.squash import squash as squash_history

    settings = load_settings_from(ctx)
    confirm = confirmation(lambda plan: f"replace {len(plan.replaced)} migration files with one squashed migration "
                           f"({plan.path.name})", "celora db squash", settings, force=yes,
                           allow_production=False, force_flag="--yes")
    result = squash_history(settings, to, name=name, dump=schema_sql, confirm=confirm)
    output.emit(result, as_json)


@output.renders("celora_cli.migrate.squash.SquashResult")
def render_squash(result) -> None:
    output.out.print(f"Wrote {safe(result.file)} ({result.statements} statements), replacing "
                     f"{len(result.replaces)} revision(s) up to {safe(result.target)}.")
    if result.repointed:
        output.out.print(f"{safe(result.repointed)} now follows it (down_revision = {safe(result.revision)}).")
    output.out.print("Commit the new file, the deletions and that edit together. Databases already past "
                     f"{safe(result.target)} need nothing; one at it is recorded as at the squash by the next "
                     "`celora db migrate-deploy`.")
