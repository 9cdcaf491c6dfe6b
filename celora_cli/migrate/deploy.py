"""`celora db migrate-deploy`: every pending migration applied, each in its own transaction, under the migration lock.

Migrations always run on the direct (non-pooled) connection, through the runtime they share with a
hand-run `alembic` (celora_cli.migrate.runtime): no app statement timeout, a refusal when a pooler answers
on the direct URL, and a transaction-level advisory lock re-taken by every transaction of the run.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from celora_cli.config.settings import Settings
from celora_cli.db.errors import translating
from celora_cli.errors import MigrationHistoryError
from celora_cli.migrate import journal
from celora_cli.migrate.connection import bookkeeping, bookkeeping_bound, migration_engine, open_migration_connection
from celora_cli.migrate.lock import (
    LockHolder,
    MigrationLock,
    ProgressCallback,
    RevisionMoved,
    checked_lock_timeout,
)
from celora_cli.migrate.scripts import (
    alembic_config,
    applied_files,
    find_migrations_dir,
    revisions_of,
    script_directory,
)
from celora_cli.migrate.squash import record_squash_position, squash_bookkeeping
from celora_cli.migrate.status import read_current, status_on
from celora_cli.migrate.steps import UPGRADE, drive
from celora_cli.safety.stamp import stamp_environment

# Each re-plan means another runner applied at least one migration meanwhile, so this is never reached in
# practice; it only bounds a loop that depends on other processes.
_MAX_REPLANS = 1000

# Called under the migration lock, after the journal check and before the first pending migration runs, with the
# migration connection, the loaded ScriptDirectory and the revisions the database is at; raising stops the run
# with nothing applied. `migrate-deploy`'s drift gate (celora_cli.schema.deploy_gate) is one: migrate must not
# import schema, so the CLI composes them.
BeforeApply = Callable[[object, object, tuple[str, ...]], None]


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


def deploy(settings: Settings, *, lock_timeout: float | None = None,
           progress: ProgressCallback | None = None, before_apply: BeforeApply | None = None,
           script=None) -> DeployResult:
    """Apply every pending migration, each in its own transaction, under the migration lock.

    On failure the failing migration is rolled back, earlier ones stay applied (the database is at the
    last good revision), and MigrationFailed names the migration and the PostgreSQL error. When another
    runner applied migrations between two of this run's transactions, the run re-reads the database and
    goes on from there (each migration is applied once, by whichever runner holds the lock).
    `before_apply` (see BeforeApply) runs only when something is pending, again after a re-plan. `script`: the
    ScriptDirectory the caller already loaded (`db migrate`), instead of reading every revision file again.
    """
    progress = progress or (lambda kind, data: None)
    lock_timeout = checked_lock_timeout(settings, lock_timeout, "deploy(lock_timeout=...)")
    config = alembic_config(settings)
    if script is None:
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
                    _deploy_on(conn, lock, config, script, settings, result, progress, before_apply)
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
    stamp_environment(conn, settings.env)
    conn.commit()


def _deploy_on(conn, lock: MigrationLock, config, script, settings: Settings, result: DeployResult,
               progress: ProgressCallback, before_apply: BeforeApply | None = None) -> None:
    with bookkeeping(conn, lock.answer_bound):
        # At the last revision a squash replaced: recorded as at the squash, in verify_journal's transaction.
        record_squash_position(conn, script, find_migrations_dir(settings))
        result.baseline = verify_journal(conn, script, settings)  # its transaction takes the lock first
        before = status_on(conn, settings, script)
    result.head = before.head
    result.current = before.current
    if before.up_to_date:
        return
    lock.expected = before.current  # what every later transaction must find under the lock
    # The history was loaded without executing its files (celora_cli.migrate.script_loader): the pending ones
    # are imported now, so a file that cannot be imported stops the run before anything ran.
    import_modules = getattr(script, "import_modules", None)
    if import_modules is not None:
        import_modules(m.revision for m in before.pending)
    if before_apply is not None:
        # status_on left no transaction open: the hook's first statement begins one, which takes the lock and
        # finds the database still at before.current (MigrationLock._on_begin), or re-plans
        before_apply(conn, script, before.current)
        conn.rollback()  # it only reads; each migration's transaction takes the lock again
    drive(conn, lock, config, script, direction=UPGRADE, destination="head", planned=before.pending,
          done=result.applied, record=AppliedMigration, progress=progress,
          versions_dir=find_migrations_dir(settings) / "versions")
    result.current = lock.expected or ()


def verify_journal(conn, script, settings: Settings) -> list[str]:
    """Flyway's validate, before anything runs: every applied migration's file must still be the one that was
    applied (same SHA-256) and still exist. Refuses with MigrationHistoryError (exit 14) naming the files.

    Migrations applied before the journal existed (no row saying applied) are recorded as a baseline with the
    checksum of their file as it is now; returns their names. Runs in a transaction of its own (under the
    migration lock, which its first statement takes) and commits it."""
    current = read_current(conn)
    known = {s.revision for s in revisions_of(script)}
    applied = applied_files(script, current) if all(r in known for r in current) else []
    # A squash stands for the revisions it replaced: their rows are no missing files (celora_cli.migrate.squash).
    replaced, repointed = squash_bookkeeping(script)
    assessment = journal.assess(journal.read_entries(conn), applied, known | replaced, repointed)
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
