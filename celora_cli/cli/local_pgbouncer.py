"""`celora local pgbouncer start|stop|status`: the shipped pgbouncer.ini in front of the local PostgreSQL."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.lazy import PanelledGroup
from celora_cli.cli.output import safe

app = typer.Typer(cls=PanelledGroup, help="PgBouncer in front of the local PostgreSQL.\n\nThe shipped pgbouncer.ini "
                  "(SCRAM auth; its files in a private folder beside the cluster).", no_args_is_help=True)


def _bouncer(ctx: typer.Context, port: int | None = None):
    from celora_cli.local.pgbouncer import LocalPgBouncer

    return LocalPgBouncer.from_settings(load_settings_from(ctx), port=port)


@output.renders("celora_cli.local.pgbouncer.PgBouncerStatus")
def render_status(status) -> None:
    state = "[green]running[/]" if status.running else "[yellow]not running[/]"
    output.out.print(f"PgBouncer: {state}" + (f" on 127.0.0.1:{status.port} (pid {status.pid})" if status.running
                                                else ""))
    if status.running:
        output.out.print(f"DATABASE_URL={safe(status.database_url)}")
        output.out.print(f"DIRECT_DATABASE_URL={safe(status.direct_url)}")
        output.out.print(f"Use them: celora --env-file {safe(status.env_file)} db health   (the password is only "
                         "in that file, mode 0600)")
    output.out.print(f"[dim]config {safe(status.config_file)}; log {safe(status.log_file)}[/]")


@app.command("start")
def start(
    ctx: typer.Context,
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="Port on 127.0.0.1 (default 6432, or "
                                    "the previous one, else a free one)."),
    as_json: bool = json_option(),
) -> None:
    """Start PgBouncer in front of the local PostgreSQL.

    Start the local PostgreSQL (if needed) and PgBouncer in front of it; prints DATABASE_URL (pooled,
    ?pgbouncer=true, password masked) and DIRECT_DATABASE_URL, both written to a 0600 env file.

    Example: celora local pgbouncer start
    """
    output.emit(_bouncer(ctx, port).start(), as_json)


@app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the local PgBouncer.

    Stop the local PgBouncer (the local PostgreSQL keeps running).

    Example: celora local pgbouncer stop
    """
    stopped = _bouncer(ctx).stop()
    output.out.print("PgBouncer stopped." if stopped else "PgBouncer was not running.")


@app.command("status")
def status(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Say whether the local PgBouncer is running.

    Say whether the local PgBouncer runs, and its URLs (exit 32 when it does not run).

    Example: celora local pgbouncer status --json
    """
    output.emit(_bouncer(ctx).status(), as_json)
