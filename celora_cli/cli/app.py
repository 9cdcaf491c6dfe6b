"""The root Typer app and the one place failures become messages, JSON error objects and exit codes.

Command modules import the core lazily inside their functions, so `celora --help` loads neither
SQLAlchemy, Alembic, psycopg nor Faker.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import NoReturn

import typer

from celora_cli.cli import output
from celora_cli.cli.lazy import LazyCommandGroup
from celora_cli.errors import (
    CeloraError,
    InternalError,
    Interrupted,
    OutputError,
    UsageError,
)
from celora_cli.safety.production import OVERRIDE_FLAG, PRODUCTION

# ctx.meta is shared by every context of one invocation (root, group, command).
JSON_REQUESTED = "celora.json"
JSON_FAILURE_FIELDS = "celora.json_failure_fields"


def _debug_enabled(ctx: typer.Context | None) -> bool:
    root = ctx.find_root() if ctx is not None else None
    obj = root.obj if root is not None and isinstance(root.obj, dict) else {}
    return bool(obj.get("debug")) or os.environ.get("CELORA_DEBUG", "").lower() in ("1", "true", "yes")


class CeloraGroup(LazyCommandGroup):
    """Every exception from every command (and from parsing the root options) ends in `_fail`, and nothing
    else maps exceptions to exit codes.

    The command groups load lazily (cli/lazy.py): `celora db health` never imports `celora local`'s module.
    Each group's module registers it on `app` when imported."""

    command_modules = {"db": "celora_cli.cli.db_group", "local": "celora_cli.cli.local"}
    # `celora --help` lists the groups from these lines without importing them; db.py and local.py use the same
    # lines as their groups' help.
    summaries = {
        "db": "Migrations, data and operations on the database.\n\nMigrations (migrate-deploy, status, migrate, "
              "lint, rollback, ...), data (seed, studio, audit, changes), operations (health, metrics, backup, "
              "restore, roles).",
        "local": "The local PostgreSQL, used when DATABASE_URL is unset.\n\ncelora manages it in .celora/ (or "
                 "CELORA_LOCAL_DIR): start, stop, url, status, destroy, and a PgBouncer in front of it.",
    }

    def make_context(self, info_name, args, parent=None, **extra):
        # The root options are parsed here, before invoke: a bad root flag, no command, --help, --version.
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except OSError as exc:
            # Parsing writes nothing but the help or the version, to stdout: a failed write is stdout's.
            _fail(None, output.output_error(exc) if exc.errno in OUTPUT_ERRNOS else exc)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - see _fail
            _fail(None, exc)

    def invoke(self, ctx):
        # Decided from the raw arguments, so that even a failure before the command's own options are
        # parsed (an unknown flag, a malformed setting) still answers with one JSON object.
        ctx.meta[JSON_REQUESTED] = "--json" in _command_args(ctx)
        try:
            try:
                return super().invoke(ctx)
            finally:
                _flush_stdout()  # a full disk must fail here, where it is reported, not at interpreter exit
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - see _fail
            _fail(ctx, exc)


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        raise output.output_error(exc) from exc


def _command_args(ctx: typer.Context) -> list[str]:
    args = [*getattr(ctx, "_protected_args", ()), *ctx.args]
    return args[: args.index("--")] if "--" in args else args


def _fail(ctx: typer.Context | None, exc: BaseException) -> NoReturn:
    """The one mapping: exception -> (JSON error object on stdout with --json) + message on stderr + exit code.

    Only a failed write to stdout itself (OutputError.stdout) skips the JSON object: a file the command could
    not write (a read-only folder, a full disk under a backup) is an error like any other, and stdout still
    answers with one object. An output errno that reaches here unmarked may be either: the object is tried,
    and if stdout is what failed, that write fails too and says so."""
    if isinstance(exc, typer.Exit):  # a command's own exit status; Exit(0) is success
        raise exc
    if _is_click_error(exc):
        _fail_usage(ctx, exc)
    error = _as_celora_error(exc)
    if _debug_enabled(ctx):
        _to_stderr(lambda: output.err.print(output.safe("".join(traceback.format_exception(exc)))))
    if isinstance(error, OutputError) and error.stdout_gone:
        _fail_output(error)
    if ctx is not None and ctx.meta.get(JSON_REQUESTED):
        _json_error(error, **ctx.meta.get(JSON_FAILURE_FIELDS, {}))
    _to_stderr(lambda: output.error(error.message, error.hint))
    if isinstance(error, OutputError):  # perhaps stdout after all: the interpreter's last flush must not retry
        _silence_stdout()
    raise typer.Exit(error.exit_code)


def _fail_usage(ctx: typer.Context | None, exc) -> NoReturn:
    """Click's usage errors keep Click's own rendering (usage line, "Try --help"), with exit 64 (not 2)."""
    from typer.exceptions import Abort

    if isinstance(exc, Abort):  # a prompt answered with Ctrl-C or end of input
        _fail(ctx, KeyboardInterrupt())
    if not hasattr(exc, "format_message"):  # some other control flow of Click's: not ours to judge
        raise exc
    error = UsageError(exc.format_message(), "Run the command with --help for its options.")
    if ctx is not None and ctx.meta.get(JSON_REQUESTED):
        _json_error(error)
    exc.exit_code = error.exit_code
    raise exc


def _json_error(error: CeloraError, **fields) -> None:
    try:
        output.print_json_error(error, **fields)
        _flush_stdout()
    except OutputError as write_error:
        # Nothing reaches stdout: the error itself still goes to stderr, then the output failure (exit 74).
        _to_stderr(lambda: output.error(error.message, error.hint))
        _fail_output(write_error)


def _fail_output(error: CeloraError) -> NoReturn:
    """stdout is gone: point it at /dev/null (so the interpreter's last flush cannot fail again) and say so
    in one line on stderr."""
    _silence_stdout()
    _to_stderr(lambda: output.error(error.message))
    raise typer.Exit(error.exit_code)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests' in-memory streams)
        pass


def _to_stderr(write) -> None:
    try:
        write()
    except OSError:  # stderr is gone as well: the exit code is all that is left
        pass


def _is_click_error(exc: BaseException) -> bool:
    # Abort and usage errors belong to Typer (which vendors Click in newer releases) or Click.
    return type(exc).__module__.split(".")[0] in ("typer", "click")


OUTPUT_ERRNOS = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _as_celora_error(exc: BaseException) -> CeloraError:
    if isinstance(exc, CeloraError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted("Interrupted.")
    if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS:
        # A write that failed outside output.out (Click printing a command's help, or a file the core did not
        # translate): which stream is not known here, so this is no proof that stdout is gone (see _fail).
        what = exc.filename or "its output"
        return OutputError(f"celora could not write {what}: {exc.strerror or exc}.")
    error = _translate_database_error(exc) if isinstance(exc, Exception) else None
    if error is not None:
        return error
    return InternalError(
        f"celora hit an unexpected internal error ({type(exc).__name__}: {exc}) (exit 70).",
        "This is a bug in celora, not in your input. Run again with --debug and report the traceback.")


def _translate_database_error(exc: Exception) -> CeloraError | None:
    """A database exception that escaped the core's own translation (only if psycopg is loaded)."""
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
    no_args_is_help=True,  # `celora` alone prints help and exits 64: no command was given
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,  # Typer's own --install-completion / --show-completion
)
CeloraGroup.typer_app = app


def _show_version(value: bool) -> None:
    if value:
        output.out.print(f"celora {_version()}", markup=False)
        raise typer.Exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("celora-cli")
    except PackageNotFoundError:  # run from a checkout that was never installed
        from celora_cli import __version__

        return __version__


@app.callback()
def root(
    ctx: typer.Context,
    env_file: str | None = typer.Option(
        None, "--env-file", metavar="FILE",
        help="Read settings from this dotenv file (beats the environment and .env)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors (or CELORA_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                 help="Print celora's version and exit."),
) -> None:
    """celora: the Celora app's database toolkit."""
    ctx.obj = {"env_file": env_file, "debug": debug}


def force_option(what: str = "Proceed without a confirmation prompt"):
    """The flag that skips a destructive command's confirmation: the same names everywhere (Prisma users type
    --force, others --yes or -y)."""
    return typer.Option(False, "--force", "--yes", "-y",
                        help=f"{what} (required when stdin is not a terminal or CI is set).")


def allow_production_option(what: str = "Allow this on a PRODUCTION database"):
    """The loudly named flag that lifts the production protection of the guard (celora_cli.safety.guard)."""
    return typer.Option(False, OVERRIDE_FLAG, help=f"{what} (stamped '{PRODUCTION}' by migrate-deploy, or "
                        f"CELORA_ENV={PRODUCTION}). Refused without it.")


def confirmation(action, command: str, settings, *, force: bool, allow_production: bool, force_flag: str = "--force"):
    """The callback a destructive core function calls with its plan before it changes anything: the guard's
    question (or refusal) for `action`, a text or a function of the plan."""

    def confirm(plan) -> None:
        from celora_cli.safety.guard import confirm_destructive

        confirm_destructive(action(plan) if callable(action) else action, target=plan.database,
                            losses=plan.losses(), force_flag=force_flag, forced=force, settings=settings,
                            database_env=plan.database_env, production_override=allow_production, command=command,
                            ask=output.confirm)

    return confirm


def json_option(help: str = "Print the result as one JSON object (README: JSON output).", **failure_fields):
    """The `--json` flag every command shares. `failure_fields` join the top level of the error object, e.g.
    `db health` keeps its promise of a `status` even when the check could not run."""

    def remember(ctx: typer.Context, value: bool) -> bool:
        if value:
            ctx.meta[JSON_REQUESTED] = True
            ctx.meta[JSON_FAILURE_FIELDS] = failure_fields
        return value

    return typer.Option(False, "--json", help=help, callback=remember)


def load_settings_from(ctx: typer.Context, **flags):
    """Settings for a command: flags > --env-file > environment > .env > defaults."""
    from celora_cli.config.settings import allowing_start, load_settings

    output.show_notices()
    root_obj = ctx.find_root().obj or {}
    # A command may start the local server on first use (announced); `db health` and `db metrics` veto it.
    settings = allowing_start(load_settings(env_file=root_obj.get("env_file"), **flags))
    output.register_secrets(settings.secrets())
    if settings.debug:
        root_obj["debug"] = True
    if settings.log_queries:
        _enable_query_log()
    return settings


def _enable_query_log() -> None:
    import logging

    logger = logging.getLogger("celora.sql")
    if any(isinstance(h, output.StderrHandler) for h in logger.handlers):
        return  # once per process (the tests invoke the app many times in one)
    handler = output.StderrHandler()  # stderr, so stdout stays clean for --json
    handler.setFormatter(logging.Formatter("celora.sql %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False




def main() -> None:
    app(prog_name="celora")
