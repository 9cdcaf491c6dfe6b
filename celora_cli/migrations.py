"""Alembic driven from code: migration status and `migrate-deploy` (serialised by an advisory lock).

Migrations always run on the direct (non-pooled) connection: a session advisory lock and per-migration
transactions need one server session for the whole run, which PgBouncer's transaction pooling cannot give.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from celora_cli.errors import ConfigError, LockTimeout, MigrationFailed
from celora_cli.settings import DatabaseURL, Settings

# pg_advisory_lock key for migrate-deploy: "celo" as a 32-bit integer, so pg_locks shows it as
# classid=0, objid=1667591279 and anyone can find the holder.
MIGRATION_LOCK_KEY = 0x63656C6F
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d%%(hour).2d%%(minute).2d%%(second).2d_%%(slug)s"
_PACKAGED = Path(__file__).parent / "_migrations"


@dataclass(frozen=True)
class MigrationInfo:
    revision: str
    name: str  # the file name without .py, e.g. 20261126090000_init
    description: str


@dataclass(frozen=True)
class MigrationStatus:
    current: tuple[str, ...]  # revisions recorded in alembic_version (empty: never migrated)
    head: str | None
    pending: tuple[MigrationInfo, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending


@dataclass(frozen=True)
class AppliedMigration:
    revision: str
    name: str
    duration_ms: float


@dataclass(frozen=True)
class LockHolder:
    pid: int
    application_name: str
    client: str
    held_for_s: float

    def describe(self) -> str:
        return (f"pid {self.pid} ({self.application_name or 'unknown application'} from {self.client}, "
                f"connected {self.held_for_s:.0f} s ago)")


@dataclass
class DeployResult:
    database: str  # masked URL
    applied: list[AppliedMigration] = field(default_factory=list)
    head: str | None = None
    current: tuple[str, ...] = ()
    waited_for_lock_s: float = 0.0
    lock_holder: LockHolder | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Progress events for a live view: ("lock_wait", LockHolder), ("lock_acquired", seconds waited),
# ("applied", AppliedMigration). The core reports; the caller decides how to show it.
ProgressCallback = Callable[[str, object], None]


def find_migrations_dir(settings: Settings) -> Path:
    candidates = [settings.migrations_dir] if settings.migrations_dir else [
        settings.project_root / "migrations", _PACKAGED]
    for directory in candidates:
        if directory is not None and (directory / "env.py").is_file():
            return directory
    raise ConfigError(
        f"No Alembic migrations found (looked for env.py in {', '.join(str(c) for c in candidates if c)}).",
        "Run celora from the project root, or set CELORA_MIGRATIONS_DIR to the migrations folder.",
    )


def alembic_config(settings: Settings, connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(find_migrations_dir(settings)))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("timezone", "UTC")
    config.attributes["celora_settings"] = settings
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _script_directory(settings: Settings):
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(settings))
    heads = script.get_heads()
    if len(heads) > 1:
        raise ConfigError(f"The migration history has {len(heads)} heads ({', '.join(heads)}).",
                          "Merge them into one (a merge migration) before deploying.")
    return script


def _info(script) -> MigrationInfo:
    return MigrationInfo(revision=script.revision, name=Path(script.path).stem,
                         description=(script.doc or "").strip())


def _known(script, revision: str) -> bool:
    from alembic.util.exc import CommandError

    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def status_on(connection, settings: Settings) -> MigrationStatus:
    """Current vs head on an open connection (leaves no transaction open)."""
    from alembic.runtime.migration import MigrationContext

    script = _script_directory(settings)
    current = tuple(MigrationContext.configure(connection).get_current_heads())
    connection.rollback()
    head = script.get_current_head()
    unknown = [revision for revision in current if not _known(script, revision)]
    if unknown:
        raise MigrationFailed(
            f"The database is at revision {', '.join(unknown)}, which is not in this project's migration history "
            f"({find_migrations_dir(settings)}; head {head}). The database is ahead of, or diverged from, the code.",
            "Deploy the code that contains that migration, or check DATABASE_URL points at the right database.",
            revision=unknown[0],
        )
    pending: list[MigrationInfo] = []
    if head is not None:
        # iterate_revisions walks from head down to (excluding) current; oldest first is what we apply.
        revisions = script.iterate_revisions(head, current[0] if current else None)
        pending = [_info(s) for s in reversed(list(revisions))]
    return MigrationStatus(current=current, head=head, pending=tuple(pending))


def migration_status(settings: Settings) -> MigrationStatus:
    """Read-only, so it may use the pooled URL when there is no direct one (a plain SELECT is pool-safe)."""
    from celora_cli.db.engine import build_engine, resolve_urls
    from celora_cli.db.errors import translating

    urls = resolve_urls(settings)
    url = urls.direct or urls.pooled
    setting = _setting_name(settings) if urls.direct else "DATABASE_URL"
    engine = build_engine(url, settings, pooled=False, application_name="celora db status")
    try:
        with translating(url, setting), engine.connect() as conn:
            return status_on(conn, settings)
    finally:
        engine.dispose()


def _setting_name(settings: Settings) -> str:
    return "DIRECT_DATABASE_URL" if settings.direct_database_url else "DATABASE_URL"


def _lock_holder(conn) -> LockHolder | None:
    from sqlalchemy import text

    row = conn.execute(text(
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),"
        "       extract(epoch FROM now() - a.backend_start)"
        "  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :key"
        "   AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ), {"key": MIGRATION_LOCK_KEY}).first()
    return LockHolder(int(row[0]), row[1], row[2], float(row[3] or 0)) if row else None


def _acquire_lock(conn, timeout: float, progress: ProgressCallback, result: DeployResult) -> None:
    from sqlalchemy import text

    started = time.monotonic()
    reported = False
    while True:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}).scalar()
        conn.commit()  # the lock is session-level; leave no transaction open for Alembic
        if got:
            result.waited_for_lock_s = time.monotonic() - started
            if reported:
                progress("lock_acquired", result.waited_for_lock_s)
            return
        holder = _lock_holder(conn)
        conn.commit()
        if holder is not None and not reported:
            result.lock_holder = holder
            progress("lock_wait", holder)
            reported = True
        if time.monotonic() - started >= timeout:
            who = holder.describe() if holder else "another session"
            raise LockTimeout(
                f"Another migrate-deploy holds the migration lock (advisory lock {MIGRATION_LOCK_KEY}): {who}. "
                f"Waited {timeout:g} s.",
                "Wait for it to finish and run again, raise --lock-timeout (CELORA_LOCK_TIMEOUT), or, if it is "
                "stuck, end it with `SELECT pg_terminate_backend(<pid>)`.",
            )
        time.sleep(min(0.25, max(0.0, timeout - (time.monotonic() - started))))


def deploy(settings: Settings, *, lock_timeout: float | None = None,
           progress: ProgressCallback | None = None) -> DeployResult:
    """Apply every pending migration, each in its own transaction, holding the migration lock.

    On failure the failing migration is rolled back, earlier ones stay applied (the database is at the
    last good revision), and MigrationFailed names the migration and the PostgreSQL error.
    """
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    from celora_cli.db.engine import build_engine, direct_url
    from celora_cli.db.errors import postgres_message, sqlstate_of, translating

    progress = progress or (lambda kind, data: None)
    url: DatabaseURL = direct_url(settings)
    setting = _setting_name(settings)
    # DDL on a large table may legitimately run longer than an app query: no statement timeout here.
    ddl_settings = dataclasses.replace(settings, statement_timeout=0)
    app_name = f"celora migrate-deploy {socket.gethostname()}:{os.getpid()}"[:63]
    engine = build_engine(url, ddl_settings, pooled=False, application_name=app_name)
    result = DeployResult(database=url.masked)
    lock_timeout = settings.lock_timeout if lock_timeout is None else lock_timeout
    try:
        with translating(url, setting), engine.connect() as conn:
            _acquire_lock(conn, lock_timeout, progress, result)
            before = status_on(conn, settings)
            result.head = before.head
            if before.up_to_date:
                result.current = before.current
                return result

            last = [time.perf_counter()]

            def on_applied(*, ctx, step, heads, run_args):
                now = time.perf_counter()
                info = before.pending[len(result.applied)]
                applied = AppliedMigration(info.revision, info.name, round((now - last[0]) * 1000, 1))
                last[0] = now
                result.applied.append(applied)
                progress("applied", applied)

            config = alembic_config(settings, connection=conn)
            config.attributes["on_version_apply"] = on_applied
            try:
                command.upgrade(config, "head")
            except Exception as exc:  # noqa: BLE001 - any failure inside a migration is reported the same way
                with contextlib.suppress(Exception):  # a lost connection is rolled back by the server
                    conn.rollback()
                failed = before.pending[min(len(result.applied), len(before.pending) - 1)]
                good = result.applied[-1].revision if result.applied else (
                    before.current[0] if before.current else "an empty schema (no migration applied)")
                if isinstance(exc, DBAPIError):
                    state = sqlstate_of(exc)
                    detail = f"PostgreSQL error {state}: {postgres_message(exc)}"
                else:
                    state = None
                    detail = f"{type(exc).__name__}: {exc}"
                raise MigrationFailed(
                    f"Migration {failed.name} failed: {detail}. It was rolled back; the database is at {good}.",
                    f"Fix {find_migrations_dir(settings) / 'versions' / failed.name}.py and run "
                    "`celora db migrate-deploy` again.",
                    revision=failed.revision, sqlstate=state, applied=list(result.applied),
                ) from exc
            result.current = status_on(conn, settings).current
            return result
    finally:
        engine.dispose()  # closing the session also releases the advisory lock
