"""The one migration runtime: the body of migrations/env.py, shared by celora's commands and a hand-run `alembic`.

Both go through the same set-up, so a migration behaves the same whichever way it is run:
- the migration connection (celora_cli.migrate.connection): the direct URL, never PgBouncer, a refusal when a
  pooler answers on it anyway, no app statement timeout;
- the migration lock (celora_cli.migrate.lock), taken at the start of every transaction, the revision re-read under
  it, and held through an autocommit_block();
- DDL lock safety (celora_cli.migrate.ddl_lock): a local lock_timeout in every transaction, a migration that hit it
  rolled back and retried after a backoff (`_run_with_retries`), the blockers named when it gives up;
- the journal (celora_cli.migrate.recorder), written in each migration's own transaction;
- the same file names and revision ids (celora_cli.migrate.scripts, celora_cli.migrate.revision_ids).

celora hands over its own connection in config.attributes["connection"]; a hand-run `alembic` gets the same
connection set-up from celora's settings (`_run_by_hand`). The core never renders: a hand run's notices go to the
`celora.notice` logger, and migrations/env.py hands `run_env` the CLI's handler for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from celora_cli.config.settings import Settings, allowing_start, load_settings
from celora_cli.db.errors import sqlstate_of, translating
from celora_cli.errors import CeloraError
from celora_cli.migrate.connection import migration_engine, open_migration_connection
from celora_cli.migrate.ddl_lock import (
    LOCK_NOT_AVAILABLE,
    BlockerWatch,
    ddl_lock_timeout_error,
    retry_delay,
)
from celora_cli.migrate.journal import JOURNAL_TABLE
from celora_cli.migrate.lock import AutocommitGuard, MigrationLock, ProgressCallback, RevisionMoved
from celora_cli.migrate.recorder import JournalRecorder
from celora_cli.migrate.revision_ids import timestamp_rev_ids
from celora_cli.safety.stamp import include_name as outside_environment_stamp

_READ_ONLY_COMMANDS = {"current", "history", "heads", "branches", "show", "check", "revision"}


def include_name(name, type_, parent_names) -> bool:
    """celora's bookkeeping tables (celora_metadata, the journal celora_migrations) are no models: autogenerate
    must neither drop nor report them."""
    if type_ == "table" and name == JOURNAL_TABLE:
        return False
    return outside_environment_stamp(name, type_, parent_names)


def run_env(context, target_metadata, *, show_notices: Callable[[], None] | None = None) -> None:
    """The body of migrations/env.py, for celora (config.attributes["connection"]) and a hand-run alembic.

    `show_notices`: called once a hand run starts. A hand run is a command-line invocation too (Alembic's):
    env.py passes the CLI's stderr handler for the `celora.notice` logger, so the lock wait, a local server being
    started or a baseline recorded are shown as `celora` shows them, masked. The runtime itself renders nothing."""
    config = context.config
    opts = {
        "target_metadata": target_metadata,
        "transaction_per_migration": True,  # a failing migration rolls back alone; earlier ones stay
        "compare_type": True,
        "compare_server_default": True,
        "process_revision_directives": timestamp_rev_ids,
        "include_name": include_name,
    }
    if context.is_offline_mode():
        # --sql writes SQL for a DBA to run; it needs PostgreSQL's dialect, not a connection (nor a local server).
        context.configure(dialect_name="postgresql", literal_binds=True, **opts)
        with context.begin_transaction():
            context.run_migrations()
        return
    if _command_name(config) == "revision" and not getattr(config.cmd_opts, "autogenerate", False):
        # `alembic revision -m x` writes a file: no database needed, only the revision id hook.
        context.configure(dialect_name="postgresql", as_sql=True, **opts)
        context.run_migrations()
        return
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        _run_online(context, connectable, opts, _settings(config), owned=False)
    elif isinstance(connectable, Engine):  # pytest-alembic and Alembic's cookbook hand over an Engine
        with connectable.connect() as conn:
            _run_online(context, conn, opts, _settings(config), owned=True)
    elif connectable is None:
        if show_notices is not None:
            show_notices()
        _run_by_hand(context, opts, config)
    else:
        raise TypeError(f"config.attributes['connection'] must be a SQLAlchemy Connection or Engine, "
                        f"not {type(connectable).__name__}")


def _command_name(config) -> str | None:
    cmd = getattr(getattr(config, "cmd_opts", None), "cmd", None)
    if isinstance(cmd, (tuple, list)) and cmd:
        return getattr(cmd[0], "__name__", None)
    return None


def _settings(config) -> Settings:
    settings = config.attributes.get("celora_settings")
    if settings is None:  # a hand-run `alembic`: the command, so it may start the local server
        settings = config.attributes["celora_settings"] = allowing_start(load_settings())
    return settings


def _run_online(context, conn, opts: dict, settings: Settings, *, owned: bool,
                progress: ProgressCallback | None = None) -> None:

    config = context.config
    callbacks = [config.attributes["on_version_apply"]] if config.attributes.get("on_version_apply") else []
    lock = MigrationLock.installed_on(conn)
    if lock is None and _command_name(config) not in _READ_ONLY_COMMANDS:
        lock = MigrationLock(settings.lock_timeout, progress).install(conn)
    if lock is not None:
        callbacks.insert(0, lock.on_version_apply)  # first, so the caller's callback sees the lock up to date
    if lock is not None and lock.ddl_lock_timeout is None:
        lock.ddl_lock_timeout = settings.ddl_lock_timeout
    recorder = JournalRecorder()
    callbacks.insert(1 if lock is not None else 0, recorder.on_version_apply)  # in the migration's transaction
    context.configure(connection=conn, on_version_apply=callbacks, **opts)
    migration_context = context.get_context()
    recorder.install(migration_context)
    guard = AutocommitGuard(migration_context, locked=lock is not None)
    # Read the blockers once a statement has waited most of the lock timeout (a fast migration never looks).
    watch = BlockerWatch.start(conn, after=lock.ddl_lock_timeout * 0.5) if lock is not None and \
        lock.ddl_lock_timeout else None
    try:
        _run_with_retries(context, migration_context, conn, recorder, guard, watch, lock, settings)
    finally:
        if watch is not None:
            watch.stop()
    if owned and conn.in_transaction():
        conn.commit()


def _run_with_retries(context, migration_context, conn, recorder: JournalRecorder, guard: AutocommitGuard,
                      watch: BlockerWatch | None, lock: MigrationLock | None, settings: Settings) -> None:
    """Run the migrations; a migration that hit the DDL lock timeout (55P03) was rolled back by its transaction
    and is run again after a backoff, at most CELORA_DDL_LOCK_RETRIES times. Each try's failure is journalled.
    Re-running run_migrations() goes on from the database's revision: migrations that committed stay applied."""
    external = migration_context._in_external_transaction  # the caller's transaction is the caller's to end
    attempt = 1
    while True:
        guard.entered = False
        try:
            with context.begin_transaction():
                context.run_migrations()
            return
        except (RevisionMoved, CeloraError):
            raise  # not a migration's failure: nothing of it ran
        except Exception as exc:
            blocked = lock is not None and sqlstate_of(exc) == LOCK_NOT_AVAILABLE and not external
            blockers = watch.take() if blocked and watch is not None else ()
            step = recorder.revision_step()
            if not external:
                recorder.record_failure(conn, exc, blockers)
            if not blocked:
                raise
            if attempt > settings.ddl_lock_retries or guard.entered:
                raise ddl_lock_timeout_error(step, settings, attempt, blockers, recorder.applied,
                                              lock.expected if lock is not None else None, guard.entered) from exc
            delay = retry_delay(attempt)
            name = Path(step.revision.path).stem if step is not None else "a migration"
            who = f" behind {blockers[0].describe()}" if blockers else ""
            logging.getLogger("celora.notice").info(
                f"Migration {name} waited longer than the DDL lock timeout ({settings.ddl_lock_timeout:g} s){who}; "
                f"rolled back, retrying in {delay:g} s (retry {attempt} of {settings.ddl_lock_retries}).")
            attempt += 1
            time.sleep(delay)


def _run_by_hand(context, opts: dict, config) -> None:
    """`alembic upgrade head` etc. from a shell: celora's settings, the direct URL, celora's refusal and lock."""
    notice = logging.getLogger("celora.notice")

    def progress(kind: str, data) -> None:
        if kind == "lock_wait":
            notice.info(f"Waiting for the migration lock held by {data.describe()} ...")
        elif kind == "lock_acquired":
            notice.info(f"Got the migration lock after {data:.1f} s.")

    try:
        settings = _settings(config)
        engine, url, setting = migration_engine(settings, f"alembic {_command_name(config) or ''}".strip())
        try:
            with translating(url, setting):
                conn = open_migration_connection(engine, url, setting)
                try:
                    _run_online(context, conn, opts, settings, owned=True, progress=progress)
                finally:
                    conn.close()
        finally:
            engine.dispose()
    except CeloraError as exc:  # Alembic's CLI prints a CommandError as one line instead of a traceback
        raise CommandError(f"{exc.message}{f' Hint: {exc.hint}' if exc.hint else ''}") from exc
    except RevisionMoved as exc:
        raise CommandError(f"Stopped: {exc}. Nothing of this step was applied; run the command again.") from exc
