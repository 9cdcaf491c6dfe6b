"""`celora local ...`: the PostgreSQL celora manages under .celora/ when no DATABASE_URL is set."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import CeloraGroup, force_option, json_option, load_settings_from
from celora_cli.cli.lazy import PanelledGroup
from celora_cli.cli.output import safe
from celora_cli.safety.interaction import is_interactive


class _LocalCommands(PanelledGroup):
    panels = {"Server": ("start", "stop", "url", "status", "destroy"), "Pooler": ("pgbouncer",)}


app = typer.Typer(cls=_LocalCommands, help=CeloraGroup.summaries["local"], no_args_is_help=True)


def _server(ctx: typer.Context):
    from celora_cli.local.server import LocalServer

    return LocalServer.from_settings(load_settings_from(ctx))


@app.command("start")
def start(ctx: typer.Context) -> None:
    """Initialise and start the local PostgreSQL.

    Initialise (first time) and start the local PostgreSQL; prints its URL.

    Example: celora local start
    """
    server = _server(ctx)
    url = server.ensure_running()
    output.err.print(f"Local PostgreSQL running in {safe(server.data_dir)}")
    output.out.print(safe(url))


@app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the local PostgreSQL (its data stays).

    Stop the local PostgreSQL (its data stays in .celora/).

    Example: celora local stop
    """
    server = _server(ctx)
    if server.stop():
        output.out.print("Local PostgreSQL stopped.")
    else:
        output.out.print("Local PostgreSQL was not running.")


@app.command("url")
def url(ctx: typer.Context) -> None:
    """Print the local database URL.

    Print the local database URL (starting the server if needed), e.g. for DATABASE_URL=$(celora local url).

    Example: psql "$(celora local url)"
    """
    output.out.print(safe(_server(ctx).ensure_running()))


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: bool = json_option("Print the status as one JSON object (README: JSON output)."),
) -> None:
    """Say whether the local PostgreSQL is running.

    Say whether the local PostgreSQL is initialised and running (exit 32 when it is not running).

    Example: celora local status --json
    """
    output.emit(_server(ctx).status(), as_json)


@output.renders("celora_cli.local.server.LocalServerStatus")
def render_status(result) -> None:
    state = "[green]running[/]" if result.running else ("[yellow]stopped[/]" if result.initialised
                                                         else "[dim]not initialised[/]")
    output.out.print(f"Local PostgreSQL: {state}")
    output.out.print(f"data: {safe(result.data_dir)}")
    if result.url:
        output.out.print(f"url: {safe(result.url)}")
    if result.bin_dir:
        output.out.print(f"binaries: PostgreSQL {safe(result.binaries_version or '?')} from "
                         f"{safe(result.binaries_source or '?')}: {safe(result.bin_dir)}")
    elif result.binaries_error:
        output.out.print(f"binaries: none usable. {safe(result.binaries_error)}")
    if result.version:
        output.out.print(f"cluster: created by PostgreSQL {safe(result.version)}")
    if result.run_as:
        output.out.print(f"runs as OS user: {safe(result.run_as)}")


@app.command("destroy")
def destroy(
    ctx: typer.Context,
    yes: bool = force_option("Delete without asking"),
) -> None:
    """Stop the local PostgreSQL and delete its data.

    Stop the local PostgreSQL and delete its data, wherever it lives (.celora/, /var/tmp/celora-<hash>,
    CELORA_LOCAL_DIR). Refuses without --yes when it cannot ask (exit 12).

    Example: celora local destroy --yes
    """

    from celora_cli.errors import Refused
    from celora_cli.local.server import LocalServer

    servers = [s for s in LocalServer.all_for(load_settings_from(ctx)) if s.has_files]
    if not servers:
        output.out.print("No local PostgreSQL to delete.")
        return
    places = ", ".join(str(s.base_dir) for s in servers)
    if not yes:
        if not is_interactive():
            raise Refused(f"Not deleting the local PostgreSQL in {places}: this deletes its data, and celora "
                          "cannot ask for confirmation here (stdin is not a terminal, or CI is set).",
                          "Run `celora local destroy --yes` to delete it.")
        if not typer.confirm(f"Stop the local PostgreSQL and delete all its data in {places}?", default=False):
            raise Refused("Nothing deleted: the deletion was not confirmed.",
                          "Run `celora local destroy` again and answer y, or pass --yes.")
    from celora_cli.local.pgbouncer import LocalPgBouncer

    for server in servers:
        if LocalPgBouncer(server).destroy():  # `celora local pgbouncer`'s, in front of this server
            output.out.print(f"Stopped and deleted the local PgBouncer in {safe(server.base_dir / 'pgbouncer')}.")
        if server.destroy():
            output.out.print(f"Deleted the local PostgreSQL in {safe(server.base_dir)}.")


def _register_pgbouncer() -> None:
    from celora_cli.cli import local_pgbouncer

    app.add_typer(local_pgbouncer.app, name="pgbouncer")


_register_pgbouncer()


def _register_on_root() -> None:
    from celora_cli.cli.app import app as root

    root.add_typer(app, name="local")


_register_on_root()
