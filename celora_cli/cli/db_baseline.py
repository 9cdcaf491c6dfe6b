"""`celora db baseline`: adopt a database whose schema was made another way (celora_cli.schema.baseline)."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, confirmation, force_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("baseline")
def baseline(
    ctx: typer.Context,
    to: str | None = typer.Option(None, "--to", metavar="REV",
                                  help="The revision the database's schema is at (default: head)."),
    force: bool = force_option("On production: record without a confirmation prompt"),
    allow_production: bool = allow_production_option("Allow adopting a PRODUCTION database"),
    as_json: bool = json_option(),
) -> None:
    """Adopt a database made another way: record REV as applied.

    For a database whose schema was made by hand, by another tool or by a restore. It must have no migration
    history (no alembic_version or journal rows; else exit 12). The history up to REV (head by default) is
    replayed into a temporary shadow database and compared with it; when they match, REV goes into
    alembic_version and REV and its ancestors into the journal as baseline rows, under the migration lock;
    when they differ, each difference is named and nothing is changed (exit 15). On production it asks first
    (or needs --allow-production --force when not at a terminal); elsewhere the comparison is the proof.

    Example: celora db baseline --to 20261126170000
    """
    from celora_cli.schema.baseline import baseline as adopt

    settings = load_settings_from(ctx)
    confirm = confirmation(lambda plan: f"record {plan.revision} and its {len(plan.migrations)} migration(s) as "
                           "already applied (bookkeeping only; the schema was compared and matches)",
                           "celora db baseline", settings, force=force, allow_production=allow_production)
    output.emit(adopt(settings, to=to, confirm=confirm), as_json)


@output.renders("celora_cli.schema.baseline.BaselineResult")
def render_baseline(result) -> None:
    compared = ", ".join(f"{count} {kind}(s)" for kind, count in result.compared.items() if count)
    output.out.print(f"The schema of {safe(result.database)} matches the migration history at "
                     f"{safe(result.revision)} ({safe(compared)}).")
    output.out.print(f"[green]Recorded[/] {len(result.recorded)} migration(s) as a baseline: "
                     f"{safe(', '.join(result.recorded))}.")
    output.out.print("`celora db migrate-deploy` applies only the migrations after it from now on.")
