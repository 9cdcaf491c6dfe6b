"""The root Typer app and the one place errors become messages and exit codes.

Command modules import the core lazily inside their functions, so `celora --help` loads neither
SQLAlchemy, Alembic, psycopg nor Faker.
"""

from __future__ import annotations

import os
import traceback
from typing import Optional

import typer
from typer.core import TyperGroup

from celora_cli.cli import console
from celora_cli.errors import CeloraError, ExitCode


def _debug_enabled(ctx: typer.Context | None) -> bool:
    obj = ctx.obj if ctx is not None and isinstance(ctx.obj, dict) else {}
    return bool(obj.get("debug")) or os.environ.get("CELORA_DEBUG", "").lower() in ("1", "true", "yes")


class CeloraGroup(TyperGroup):
    """Maps every exception from every command to a message and an exit code (and nothing else does)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            console.error("Interrupted.")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - every failure ends here: a message, never a raw traceback
            if _is_cli_control_flow(exc):
                raise
            error = exc if isinstance(exc, CeloraError) else _translate_database_error(exc)
            if error is None:  # a bug or an unforeseen failure
                error = CeloraError(f"Unexpected error: {type(exc).__name__}: {exc}",
                                    "This is a bug in celora. Run again with --debug and report the traceback.")
            if _debug_enabled(ctx):
                console.err.print(console.safe(traceback.format_exc()))
            console.error(error.message, error.hint)
            raise typer.Exit(error.exit_code) from None


def _is_cli_control_flow(exc: Exception) -> bool:
    # Exit, Abort and usage errors belong to Typer (which vendors Click in newer releases) or Click.
    return type(exc).__module__.split(".")[0] in ("typer", "click")


def _translate_database_error(exc: Exception) -> CeloraError | None:
    """A database exception that escaped the core's own translation (only if psycopg is loaded)."""
    import sys

    if "psycopg" not in sys.modules:
        return None
    import psycopg
    import sqlalchemy.exc

    if isinstance(exc, (psycopg.Error, sqlalchemy.exc.DBAPIError)):
        from celora_cli.db.errors import translate

        return translate(exc, None)
    return None


app = typer.Typer(
    cls=CeloraGroup,
    name="celora",
    help="celora: the Celora app's database toolkit (migrations, health, local PostgreSQL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    env_file: Optional[str] = typer.Option(
        None, "--env-file", help="Read settings from this dotenv file (beats the environment and .env)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors (or CELORA_DEBUG=1)."),
) -> None:
    """celora: the Celora app's database toolkit."""
    ctx.obj = {"env_file": env_file, "debug": debug}


def load_settings_from(ctx: typer.Context, **flags):
    """Settings for a command: flags > --env-file > environment > .env > defaults."""
    from celora_cli.settings import load_settings

    root_obj = ctx.find_root().obj or {}
    settings = load_settings(env_file=root_obj.get("env_file"), **flags)
    console.register_secrets(settings.secrets())
    if settings.debug:
        root_obj["debug"] = True
    if settings.log_queries:
        _enable_query_log()
    return settings


def _enable_query_log() -> None:
    import logging

    handler = logging.StreamHandler()  # stderr, so stdout stays clean for --json
    handler.setFormatter(logging.Formatter("celora.sql %(message)s"))
    logger = logging.getLogger("celora.sql")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _register_commands() -> None:
    from celora_cli.cli import db, local

    app.add_typer(db.app, name="db")
    app.add_typer(local.app, name="local")


_register_commands()


def main() -> None:
    app(prog_name="celora")
