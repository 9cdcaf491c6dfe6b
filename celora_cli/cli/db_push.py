"""`celora db push`: the models onto the database without a migration (Prisma's `db push`). Data loss and
production go through the one guard; the core (celora_cli.schema.push) is imported inside the command."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe

ACCEPT_FLAG = "--accept-data-loss"


def _guard(settings, *, accept_data_loss: bool, allow_production: bool):
    """The confirmation the core calls with its plan, before it changes anything: asked when the push loses
    data, and on production (a push makes a database drift from its migration history) unless overridden."""
    from celora_cli.errors import Refused
    from celora_cli.safety.guard import confirm_destructive, production_verdict

    def confirm(plan) -> None:
        production = production_verdict(settings.env, plan.database_env).production
        if not plan.data_loss and not production:
            return
        action = ("drop every object of the schema and create it from the models" if plan.force_reset
                  else f"push the models ({len(plan.operations)} operation(s))")
        command = "celora db push --force-reset" if plan.force_reset else "celora db push"
        try:
            confirm_destructive(action, target=plan.database, losses=plan.data_loss, force_flag=ACCEPT_FLAG,
                                forced=accept_data_loss or not plan.data_loss, settings=settings,
                                database_env=plan.database_env, production_override=allow_production,
                                command=command, ask=output.confirm)
        except Refused as refusal:  # the prompt lists the losses; a refusal without one must name them too
            if not plan.data_loss:
                raise
            raise Refused(f"{refusal.message} It would lose: {'; '.join(plan.data_loss)}.", refusal.hint) from None

    return confirm


@app.command("push")
def push(
    ctx: typer.Context,
    accept_data_loss: bool = typer.Option(False, ACCEPT_FLAG, help="Apply changes that lose data (dropped tables "
                                          "or columns, narrowed types) without a prompt (required when stdin is "
                                          "not a terminal or CI is set)."),
    force_reset: bool = typer.Option(False, "--force-reset", help="Drop every object of the schema first, then "
                                     "create it from the models (all data lost; asks, or needs "
                                     f"{ACCEPT_FLAG})."),
    allow_production: bool = allow_production_option(),
    as_json: bool = json_option(),
) -> None:
    """Make the database match the models, without a migration.

    Prototyping: make the database match the models without writing a migration, in one transaction.
    Changes that lose data are listed and need a confirmation or --accept-data-loss. alembic_version is not
    touched, so the database then drifts from the migration history.

    Example: celora db push --accept-data-loss
    """
    from celora_cli.schema.push import push as push_models

    settings = load_settings_from(ctx)
    result = push_models(settings, force_reset=force_reset,
                         confirm=_guard(settings, accept_data_loss=accept_data_loss,
                                        allow_production=allow_production))
    output.emit(result, as_json)


@output.renders("celora_cli.schema.push.PushResult")
def render_push(result) -> None:
    for warning in result.warnings:
        output.err.print(f"[yellow]warning:[/] {safe(warning)}")
    if result.in_sync:
        output.out.print(f"Already in sync: {safe(result.database)} (schema {safe(result.schema)}) matches the "
                         "models; nothing changed.")
        return
    if result.force_reset:
        dropped = ", ".join(f"{count} {kind}" for kind, count in result.reset_dropped.items()) or "nothing"
        output.out.print(f"Reset schema {safe(result.schema)}: dropped {safe(dropped)}.")
    for statement in result.enum_labels_committed_first:
        output.out.print(f"[green]Applied[/] {safe(statement)} [dim](committed first: PostgreSQL can't use a new "
                         "enum label in the transaction that adds it)[/]")
    for operation in result.operations:
        output.out.print(f"[green]Applied[/] {safe(operation)}")
    count = len(result.operations) + len(result.enum_labels_committed_first)
    output.out.print(f"Pushed the models to {safe(result.database)}: {count} operation(s); no migration written "
                     "(the database now differs from the migration history).")
