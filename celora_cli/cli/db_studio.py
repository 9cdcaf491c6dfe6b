"""`celora db studio`: the local web browser and editor for the Celora data (celora_cli.data.studio).
The studio's modules (Starlette, starlette-admin, uvicorn) are imported inside the command: `celora --help`
stays light."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, force_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("studio")
def studio(
    ctx: typer.Context,
    port: int = typer.Option(5555, "--port", help="TCP port to listen on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Only this machine by default; "
                             "another address exposes the data to the network (the token still guards it)."),
    read_only: bool | None = typer.Option(None, "--read-only/--writable", help="Refuse every write, or allow "
                                          "edits. Default: read-only on a production database (CELORA_ENV="
                                          "production or the database's stamp), writable elsewhere."),
    allow_production: bool = allow_production_option("With --writable: allow edits on a PRODUCTION database"),
    force: bool = force_option("With --writable --allow-production: no confirmation prompt"),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser (one is opened only when "
                                    "a display exists)."),
) -> None:
    """Browse and edit the data in a local web page.

    Browse and edit the data in a local web page (like Prisma Studio), until Ctrl-C (exit 130) or SIGTERM (0).

    Binds 127.0.0.1:5555; the printed URL carries a random access token, required on every request.
    Example: celora db studio --read-only --no-browser
    """
    from celora_cli.data.studio.server import prepare

    settings = load_settings_from(ctx)
    prepared = prepare(settings, host=host, port=port, read_only=read_only, allow_production=allow_production,
                       force=force, ask=output.confirm)
    output.out.print(f"celora studio for {safe(prepared.database)}, {safe(prepared.read_only_reason)}")
    output.out.print(f"Open: {safe(prepared.url)}", soft_wrap=True)
    output.out.print("Press Ctrl-C to stop.")
    try:
        if not no_browser:
            prepared.open_browser()
        prepared.run()
    finally:
        prepared.close()  # also when Ctrl-C comes before the server runs: the browser's redirect file goes
