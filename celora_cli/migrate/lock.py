"""The migration lock: a transaction-level advisory lock taken at the start of every transaction on the migration
connection, with the revision re-read under it.

Why a transaction-level lock: a session-level advisory lock lives on the server session. Behind a
transaction pooler that session is a pooled server connection that outlives the client, so the lock stayed
held after the run and the next deploy waited for a pid that no longer existed. A transaction-level lock
ends with its transaction whatever sits in between. Alembic runs each migration in its own transaction
(`transaction_per_migration`), so the lock is re-taken per transaction, and because another runner may get
in between two of them, the revision is re-read under the lock and compared with what this run expects.

`autocommit_block()` (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE): Alembic commits the migration's
transaction before the block and begins a new one after it, which would drop the transaction-level lock in
between. The same key is taken as a session-level advisory lock while the transaction still holds it (so there is
no gap), kept through the block and released once the next transaction has re-taken the transaction-level lock
(see `AutocommitGuard`). Another runner therefore waits, as for any migration.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event, text

from celora_cli.config.settings import LOCK_TIMEOUT_LIMITS, DatabaseURL, Settings, validate_seconds
from celora_cli.errors import LockTimeout, Refused
from celora_cli.migrate.connection import bookkeeping
from celora_cli.migrate.status import read_current

# Advisory lock key: "celo" as a 32-bit integer, so pg_locks shows it as classid=0, objid=1667591279
# and anyone can find the holder.
MIGRATION_LOCK_KEY = 0x63656C6F
_POLL_S = 0.25
_LOCK_ATTRIBUTE = "celora_migration_lock"

# Progress events for a live view: ("lock_wait", LockHolder), ("lock_acquired", seconds waited),
# ("applied", AppliedMigration), ("undone", UndoneMigration), ("replan", RevisionMoved). The core reports; the
# caller shows it.
ProgressCallback = Callable[[str, object], None]


@dataclass(frozen=True)
class LockHolder:
    pid: int
    application_name: str
    client: str
    connection_age_s: float  # how long the holder's connection has been open (not how long it held the lock)

    def describe(self) -> str:
        return (f"pid {self.pid} ({self.application_name or 'unknown application'} from {self.client}, "
                f"connected {self.connection_age_s:.0f} s ago)")


class RevisionMoved(Exception):
    """Another runner changed alembic_version between two of this run's transactions."""

    def __init__(self, expected: tuple[str, ...], found: tuple[str, ...]) -> None:
        super().__init__(f"the database moved from {', '.join(expected) or 'empty'} to "
                         f"{', '.join(found) or 'empty'} while this run waited for the migration lock")
        self.expected = expected
        self.found = found


def moved_refusal(exc: RevisionMoved, command: str) -> Refused:
    return Refused(f"Stopped before changing anything: {exc}.",
                   f"Another runner changed the database after the plan was made; run `celora db {command}` again.")


def checked_lock_timeout(settings: Settings, lock_timeout: float | None, what: str) -> float:
    """How long to wait for the migration lock: the setting, or a library caller's value given the same check as
    --lock-timeout and CELORA_LOCK_TIMEOUT (`what` names it in the error)."""
    if lock_timeout is None:
        return settings.lock_timeout
    return validate_seconds(lock_timeout, what, minimum=LOCK_TIMEOUT_LIMITS[0], maximum=LOCK_TIMEOUT_LIMITS[1])


def lock_holder(conn) -> LockHolder | None:
    """Who holds the migration lock in this database (session- or transaction-level), if anyone."""
    row = conn.execute(text(
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),"
        "       extract(epoch FROM now() - a.backend_start)"
        "  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :key"
        "   AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ), {"key": MIGRATION_LOCK_KEY}).first()
    return LockHolder(int(row[0]), row[1], row[2], round(float(row[3] or 0), 3)) if row else None


class MigrationLock:
    """The migration lock on one connection: taken at the start of every transaction it begins.

    `expected` is the revision set this run believes the database is at (None: not known yet, the next
    transaction reads it); each applied migration moves it (`on_version_apply`). A transaction that finds
    alembic_version elsewhere raises RevisionMoved: the caller closes the connection and re-plans or stops.
    An exception raised in a "begin" listener leaves the SQLAlchemy Connection unusable, so on LockTimeout
    and RevisionMoved the connection must be closed (closing rolls back and so releases the lock).
    """

    def __init__(self, timeout: float, progress: ProgressCallback | None = None,
                 ddl_lock_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.progress = progress or (lambda kind, data: None)
        # PostgreSQL lock_timeout set locally in each transaction this lock begins (None: the server's).
        self.ddl_lock_timeout = ddl_lock_timeout
        self.expected: tuple[str, ...] | None = None
        self.holder: LockHolder | None = None
        self.waited_s = 0.0
        self._reported = False
        # (seconds, url, what they are made of): when set, taking the lock and reading alembic_version at the
        # start of each transaction must end within that, even on a network path gone silent (a migration
        # itself has no such bound: it may rightly run for hours).
        self.answer_bound: tuple[float, DatabaseURL, str] | None = None

    def install(self, conn) -> MigrationLock:
        event.listen(conn, "begin", self._on_begin)
        conn.info[_LOCK_ATTRIBUTE] = self
        return self

    @staticmethod
    def installed_on(conn) -> MigrationLock | None:
        return conn.info.get(_LOCK_ATTRIBUTE)

    def on_version_apply(self, *, ctx, step, heads, run_args) -> None:
        self.expected = tuple(sorted(heads))

    def _on_begin(self, conn) -> None:  # runs inside the transaction that just began
        with bookkeeping(conn, self.answer_bound):
            self._acquire(conn)
            if self.expected is not None:
                found = read_current(conn, maybe_missing=not self.expected)
                if found != self.expected:
                    raise RevisionMoved(self.expected, found)

    def _acquire(self, conn) -> None:
        started = time.monotonic()
        busy = False
        params: dict[str, object] = {"key": MIGRATION_LOCK_KEY}
        if self.ddl_lock_timeout is None:
            query = text("SELECT pg_try_advisory_xact_lock(:key)")
        else:  # set_config(..., true) is SET LOCAL: it ends with this transaction; same round trip as the lock
            query = text("SELECT pg_try_advisory_xact_lock(:key), set_config('lock_timeout', :ms, true)")
            params["ms"] = f"{max(1, round(self.ddl_lock_timeout * 1000))}ms"
        while True:
            # A failed try takes nothing, so polling inside the open transaction holds nothing either.
            if conn.execute(query, params).scalar():
                if busy:
                    waited = time.monotonic() - started
                    self.waited_s = round(self.waited_s + waited, 3)
                    self.progress("lock_acquired", round(waited, 3))
                return
            busy = True
            holder = lock_holder(conn)
            if holder is not None and not self._reported:
                self.holder = holder
                self.progress("lock_wait", holder)
                self._reported = True
            if time.monotonic() - started >= self.timeout:
                who = holder.describe() if holder else "another session"
                raise LockTimeout(
                    f"Another migration run holds the migration lock (advisory lock {MIGRATION_LOCK_KEY}): {who}. "
                    f"Waited {self.timeout:g} s.",
                    "Wait for it to finish and run again, raise --lock-timeout (CELORA_LOCK_TIMEOUT), or, if it is "
                    "stuck, end it with `SELECT pg_terminate_backend(<pid>)`.",
                )
            time.sleep(min(_POLL_S, max(0.0, self.timeout - (time.monotonic() - started))))


class AutocommitGuard:
    """Keeps the migration lock held through Alembic's autocommit_block() (see the module docstring).

    Alembic commits the migration's transaction before the block, which releases the transaction-level lock. The
    same key taken as a session-level lock while that transaction still holds it (re-entrant: immediate) bridges
    the gap; it is released once the transaction after the block began, which re-took the transaction-level lock.
    `entered` says whether the current try ran such a block (then it is not retried).
    """

    def __init__(self, migration_context, locked: bool) -> None:
        self.entered = False
        original = migration_context.autocommit_block

        @contextlib.contextmanager
        def autocommit_block():
            self.entered = True
            if migration_context.as_sql or not locked:
                with original():
                    yield
                return
            key = {"key": MIGRATION_LOCK_KEY}
            migration_context.connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
            try:
                with original():
                    yield
            finally:
                # The connection Alembic restored after the block; closing it would release the lock anyway.
                with contextlib.suppress(Exception):
                    migration_context.connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)

        migration_context.autocommit_block = autocommit_block
