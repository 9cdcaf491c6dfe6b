"""Alembic driven from code: migration status and `migrate-deploy` (serialised by the migration lock).

Migrations always run on the direct (non-pooled) connection, through the runtime they share with a
hand-run `alembic` (celora_cli.migrate.runtime): no app statement timeout, a refusal when a pooler answers
on the direct URL, and a transaction-level advisory lock re-taken by every transaction of the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import CeloraError, ConfigError, ExitCode, MigrationFailed
from celora_cli.migrate.runtime import (  # noqa: F401 - LockHolder and the key are part of this module's API
    FILE_TEMPLATE,
    MIGRATION_LOCK_KEY,
    LockHolder,
    MigrationLock,
    RevisionMoved,
    bookkeeping,
    bookkeeping_bound,
    load_script_directory,
    migration_engine,
    open_migration_connection,
    read_current,
    setting_name,
)
from celora_cli.results import fields_json

_PACKAGED = Path(__file__).parent.parent / "_migrations"
# Each re-plan means another runner applied at least one migration meanwhile, so this is never reached in
# practice; it only bounds a loop that depends on other processes.
_MAX_REPLANS = 1000


@dataclass(frozen=True)
class MigrationInfo:
    revision: str
    name: str  # the file name without .py, e.g. 20261126090000_init
    description: str


@dataclass(frozen=True)
class AppliedState:
    """An applied migration as the journal (celora_migrations) records it."""

    revision: str
    name: str
    applied_at: str | None  # ISO 8601 (UTC) when its run started (a resolve: when it was recorded); None: a
    # baseline, or not in the journal
    duration_ms: float | None
    status: str  # applied, resolved_applied, or "unrecorded" (no journal row: applied before the journal existed)
    baseline: bool
    modified: bool  # the file's SHA-256 differs from the one recorded when it was applied
    applied_by: str | None  # os_user@host


@dataclass(frozen=True)
class FailedState:
    revision: str
    name: str
    failed_at: str | None
    error: str | None


@dataclass(frozen=True)
class MigrationStatus:
    current: tuple[str, ...]  # revisions recorded in alembic_version (empty: never migrated)
    head: str | None
    pending: tuple[MigrationInfo, ...]
    # From the journal (filled by `celora db status`; empty when it was not read or does not exist yet):
    applied: tuple[AppliedState, ...] = ()
    failed: tuple[FailedState, ...] = ()  # newest run failed and no `db resolve` since
    modified: tuple[str, ...] = ()  # names of applied migrations whose file changed since
    missing: tuple[str, ...] = ()  # names of migrations the journal says are applied that have no local file
    journal: bool = False  # whether the database has the journal table

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    @property
    def files_changed(self) -> bool:
        """migrate-deploy would refuse (exit 14)."""
        return bool(self.modified or self.missing)

    @property
    def exit_code(self) -> int:
        return ExitCode.MIGRATION_HISTORY if self.files_changed else ExitCode.PENDING if self.pending else ExitCode.OK

    def to_json(self) -> dict:
        return {**fields_json(self), "up_to_date": self.up_to_date, "files_changed": self.files_changed}


@dataclass(frozen=True)
class AppliedMigration:
    revision: str
    name: str
    duration_ms: float


@dataclass
class DeployResult:
    database: str  # masked URL
    applied: list[AppliedMigration] = field(default_factory=list)
    head: str | None = None
    current: tuple[str, ...] = ()
    waited_for_lock_s: float = 0.0
    lock_holder: LockHolder | None = None
    # migrations found applied with no journal row (applied before the journal existed): recorded as a baseline
    baseline: list[str] = field(default_factory=list)


# Progress events for a live view: ("lock_wait", LockHolder), ("lock_acquired", seconds waited),
# ("applied", AppliedMigration), ("replan", RevisionMoved). The core reports; the caller decides how to show it.
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


# A migration's name becomes its file name (Alembic's slug of the words) and the first line of its docstring,
# so a quote, a backslash (`C:\Users` is a unicode escape in a docstring) or a line break would write a file
# Python cannot import. Words, spaces, '-' and '.' are enough for a name.
_NAME_PATTERN = re.compile(r"[\w][\w .-]*")
MAX_NAME_LENGTH = 100


def check_migration_name(name: str) -> str:
    """The name, stripped; ConfigError when it could not become a migration file (checked before any work)."""
    stripped = name.strip()
    if not stripped or len(stripped) > MAX_NAME_LENGTH or not _NAME_PATTERN.fullmatch(stripped):
        odd = sorted({c for c in stripped if not (c.isalnum() or c in "_ .-")})
        what = (f"has characters a migration file name and docstring can't hold: {' '.join(map(repr, odd))}"
                if odd else f"must be 1 to {MAX_NAME_LENGTH} characters and start with a letter or digit")
        raise ConfigError(f"The migration name {stripped[:120]!r} {what}.",
                          "Use letters, digits, spaces, '_', '-' or '.', e.g. --name add_wallet_label")
    return stripped


def alembic_config(settings: Settings, connection=None):
    """The Alembic Config celora runs with: the same script location, file names and time zone as
    [tool.alembic] in pyproject.toml gives a hand-run `alembic`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(find_migrations_dir(settings)))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("timezone", "UTC")
    config.attributes["celora_settings"] = settings
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory(settings: Settings, config=None):
    """The migration history (Alembic's ScriptDirectory, revision map loaded); MigrationHistoryError if broken."""
    return load_script_directory(find_migrations_dir(settings), config or alembic_config(settings))


def _info(script) -> MigrationInfo:
    return MigrationInfo(revision=script.revision, name=Path(script.path).stem,
                         description=(script.doc or "").strip())


def _known(script, revision: str) -> bool:
    from alembic.util.exc import CommandError

    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def status_on(connection, settings: Settings, *, script=None) -> MigrationStatus:
    """Current vs head on an open connection (leaves no transaction open).

    `script`: the already loaded history, so one run loads it once."""
    script = script or script_directory(settings)
    current = read_current(connection)
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
    """Current vs head (read-only; through the pooled URL when there is no direct one). Answered with plain
    psycopg and the ast-read history: no Alembic or SQLAlchemy import (celora_cli.migrate.status)."""
    from celora_cli.migrate import status as migration_state

    return migration_state.migration_status(settings)


def deploy(settings: Settings, *, lock_timeout: float | None = None,
           progress: ProgressCallback | None = None) -> DeployResult:
    """Apply every pending migration, each in its own transaction, under the migration lock.

    On failure the failing migration is rolled back, earlier ones stay applied (the database is at the
    last good revision), and MigrationFailed names the migration and the PostgreSQL error. When another
    runner applied migrations between two of this run's transactions, the run re-reads the database and
    goes on from there (each migration is applied once, by whichever runner holds the lock).
    """
    from celora_cli.db.errors import translating

    progress = progress or (lambda kind, data: None)
    if lock_timeout is None:
        lock_timeout = settings.lock_timeout
    else:  # a library caller's value gets the same check as --lock-timeout and CELORA_LOCK_TIMEOUT
        from celora_cli.config.settings import LOCK_TIMEOUT_LIMITS, validate_seconds

        lock_timeout = validate_seconds(lock_timeout, "deploy(lock_timeout=...)", minimum=LOCK_TIMEOUT_LIMITS[0],
                                        maximum=LOCK_TIMEOUT_LIMITS[1])
    config = alembic_config(settings)
    script = script_directory(settings, config)  # loaded once per run; broken files fail before connecting
    engine, url, setting = migration_engine(
        settings, f"celora migrate-deploy {socket.gethostname()}:{os.getpid()}")
    result = DeployResult(database=url.masked)
    try:
        with translating(url, setting):
            for _attempt in range(_MAX_REPLANS):
                # celora's own statements end even on a network path gone silent; a migration's need not
                conn = open_migration_connection(engine, url, setting, bookkeeping_bound(settings, url))
                lock = MigrationLock(lock_timeout, progress).install(conn)
                lock.answer_bound = bookkeeping_bound(settings, url, lock_wait=lock_timeout)
                try:
                    _deploy_on(conn, lock, config, script, settings, result, progress)
                    stamp_after_deploy(conn, settings)
                    return result
                except RevisionMoved as moved:
                    progress("replan", moved)
                finally:
                    conn.close()  # also ends any transaction, and with it the lock
                    result.waited_for_lock_s = round(result.waited_for_lock_s + lock.waited_s, 3)
                    result.lock_holder = result.lock_holder or lock.holder
            raise RuntimeError(f"migrate-deploy re-planned {_MAX_REPLANS} times")
    finally:
        engine.dispose()


def stamp_after_deploy(conn, settings: Settings) -> None:
    """Record CELORA_ENV in celora_metadata (the protected-environment stamp, celora_cli.safety.stamp),
    in a transaction of its own on the migration connection, so under the migration lock."""
    from celora_cli.safety.stamp import stamp_environment

    stamp_environment(conn, settings.env)
    conn.commit()


def _deploy_on(conn, lock: MigrationLock, config, script, settings: Settings, result: DeployResult,
               progress: ProgressCallback) -> None:

    from celora_cli.db.errors import connection_lost, migration_failure

    with bookkeeping(conn, lock.answer_bound):
        result.baseline = verify_journal(conn, script, settings)  # its transaction takes the lock first
        before = status_on(conn, settings, script=script)
    result.head = before.head
    result.current = before.current
    if before.up_to_date:
        return
    lock.expected = before.current  # what every later transaction must find under the lock
    pending = {m.revision: m for m in before.pending}
    last = [time.perf_counter()]

    def on_applied(*, ctx, step, heads, run_args):
        now = time.perf_counter()
        info = pending[step.up_revision_id]
        applied = AppliedMigration(info.revision, info.name, round((now - last[0]) * 1000, 1))
        last[0] = now
        result.applied.append(applied)
        progress("applied", applied)

    config.attributes["connection"] = conn
    config.attributes["on_version_apply"] = on_applied
    try:
        _upgrade(config, script)
    except (CeloraError, RevisionMoved):
        raise
    except Exception as exc:  # any failure inside a migration is reported the same way
        with contextlib.suppress(Exception):  # a lost connection is rolled back by the server
            conn.rollback()
        done = {m.revision for m in result.applied}
        failed = next((m for m in before.pending if m.revision not in done), before.pending[-1])
        good = ", ".join(lock.expected or ()) or "an empty schema (no migration applied)"
        state, detail = migration_failure(exc)
        message = f"Migration {failed.name} failed: {detail}. It was rolled back; the database is at {good}."
        hint = (f"Fix {find_migrations_dir(settings) / 'versions' / failed.name}.py and run "
                "`celora db migrate-deploy` again.")
        if connection_lost(exc):  # nobody could roll back or check: say what PostgreSQL guarantees, no more
            message = (f"Migration {failed.name} was interrupted: {detail}. PostgreSQL rolls back a transaction "
                       f"that did not commit, so the database is at {good}, unless the connection broke during "
                       "the commit itself (`celora db status` shows where it is).")
            hint = ("The migration file is not at fault: check that the database server is up (it may have "
                    "crashed or restarted), then run `celora db migrate-deploy` again.")
        raise MigrationFailed(message, hint, revision=failed.revision, sqlstate=state,
                              applied=list(result.applied)) from exc
    finally:
        config.attributes.pop("connection", None)
        config.attributes.pop("on_version_apply", None)
    result.current = lock.expected or ()


def applied_files(script, current: tuple[str, ...]):
    """The local files of the revisions `current` (alembic_version) says are applied, oldest first."""
    from celora_cli.migrate.journal import LocalFile

    seen: dict[str, LocalFile] = {}
    for head in current:
        for revision in script.iterate_revisions(head, "base"):
            seen.setdefault(revision.revision, LocalFile(revision.revision, Path(revision.path).stem,
                                                         Path(revision.path)))
    return list(reversed(seen.values()))


def verify_journal(conn, script, settings: Settings) -> list[str]:
    """Flyway's validate, before anything runs: every applied migration's file must still be the one that was
    applied (same SHA-256) and still exist. Refuses with MigrationHistoryError (exit 14) naming the files.

    Migrations applied before the journal existed (no row saying applied) are recorded as a baseline with the
    checksum of their file as it is now; returns their names. Runs in a transaction of its own (under the
    migration lock, which its first statement takes) and commits it."""
    import logging

    from celora_cli.errors import MigrationHistoryError
    from celora_cli.migrate import journal

    current = read_current(conn)
    known = {s.revision for s in script.walk_revisions()}
    applied = applied_files(script, current) if all(r in known for r in current) else []
    assessment = journal.assess(journal.read_entries(conn), applied, known)
    problem = journal.changed_files_message(assessment)
    if problem:
        conn.rollback()
        raise MigrationHistoryError(
            f"{problem} migrate-deploy ran nothing: the database holds what the file said when it was applied, so "
            f"an edited or deleted file no longer describes it (checked against {journal.JOURNAL_TABLE}).",
            "Restore the file as it was applied (`git log -p -- <file>` shows the change) and put the change in a "
            "new migration. If the database really matches the file as it is now, accept it with "
            "`celora db resolve --applied NAME`.")
    names = journal.record_baseline(conn, assessment.unrecorded) if assessment.unrecorded else []
    conn.commit()
    if names:
        logging.getLogger("celora.notice").info(
            f"Recorded {len(names)} migration(s) applied before the migration journal existed as a baseline in "
            f"{journal.JOURNAL_TABLE} (checksums of the files as they are now): {', '.join(names)}.")
    return names


def _upgrade(config, script, destination: str = "head") -> None:
    """alembic.command.upgrade, with the ScriptDirectory this run already loaded (command.upgrade would
    build a second one and import every revision file again)."""
    from alembic.runtime.environment import EnvironmentContext

    def upgrade(rev, context):
        return script._upgrade_revs(destination, rev)  # what command.upgrade passes as fn

    with EnvironmentContext(config, script, fn=upgrade, as_sql=False, starting_rev=None,
                            destination_rev=destination, tag=None):
        script.run_env()
