"""The journal's writer: each migration run recorded in celora_migrations (celora_cli.migrate.journal), whoever
drives Alembic (deploy, rollback, reset, a hand-run `alembic`)."""

from __future__ import annotations

import contextlib
import datetime
import time
from pathlib import Path

from alembic.runtime.migration import RevisionStep
from sqlalchemy.exc import DBAPIError

from celora_cli.db.errors import postgres_message, sqlstate_of
from celora_cli.migrate import journal
from celora_cli.migrate.ddl_lock import Blocker


class JournalRecorder:
    """Writes each migration run into the journal (celora_cli.migrate.journal), whoever drives Alembic.

    The step being run is known by wrapping the MigrationContext's work function (a step is taken from it just
    before its transaction begins); the success row goes in through `on_version_apply`, which Alembic calls inside
    the migration's own transaction, so the row commits or rolls back with the migration. A failure is recorded
    by `record_failure` after that transaction was rolled back, in a short transaction of its own.
    """

    def __init__(self) -> None:
        self.step = None
        self.started_at: datetime.datetime | None = None
        self._started = 0.0
        # Set once a success row went in: later steps of the run need not look the journal up again (if that
        # transaction failed after all, the run stops there and the failure row re-checks).
        self._journal_known = False
        self.applied: list[dict] = []  # the upgrades this run applied: revision, name, duration_ms

    def install(self, migration_context) -> JournalRecorder:
        work = migration_context._migrations_fn  # Alembic's "fn": the steps of upgrade/downgrade
        if work is None:
            return self

        def steps(heads, ctx):
            for step in work(heads, ctx):
                self.step = step
                self.started_at = datetime.datetime.now(datetime.UTC)
                self._started = time.perf_counter()
                yield step
            self.step = None

        migration_context._migrations_fn = steps
        return self

    def revision_step(self):
        return self.step if isinstance(self.step, RevisionStep) else None  # stamps are not migration runs

    def on_version_apply(self, *, ctx, step, heads, run_args) -> None:
        current = self.revision_step()
        if current is None or ctx.as_sql:
            return
        script = current.revision
        # Straight to psycopg, inside the transaction SQLAlchemy began (so under the migration lock): the row is
        # one round trip, without SQLAlchemy's per-statement work, which a 200-migration deploy would feel.
        conn = ctx.connection.connection.driver_connection if ctx.connection.in_transaction() else ctx.connection
        duration_ms = (time.perf_counter() - self._started) * 1000
        journal.record(conn, revision=script.revision, name=Path(script.path).stem,
                       status=journal.APPLIED if current.is_upgrade else journal.ROLLED_BACK,
                       checksum=journal.checksum(Path(script.path)), started_at=self.started_at,
                       duration_ms=duration_ms, ensure=not self._journal_known)
        self._journal_known = True
        if current.is_upgrade:
            self.applied.append({"revision": script.revision, "name": Path(script.path).stem,
                                 "duration_ms": round(duration_ms, 1)})
        self.step = None

    def record_failure(self, conn, exc: BaseException, blockers: tuple[Blocker, ...] = ()) -> None:
        """After the failed migration's transaction was rolled back: its 'failed' row, committed on its own.
        Best effort: when the connection itself is gone (the server died) there is nowhere to write."""
        current = self.revision_step()
        if current is None or not current.is_upgrade:
            return  # a failed downgrade leaves the migration applied: its applied row still tells the truth
        script = current.revision
        with contextlib.suppress(Exception):
            conn.rollback()
            journal.record(conn, revision=script.revision, name=Path(script.path).stem, status=journal.FAILED,
                           checksum=journal.checksum(Path(script.path)), started_at=self.started_at,
                           duration_ms=(time.perf_counter() - self._started) * 1000,
                           error=_error_text(exc) + "".join(f"; blocked by {b.describe()}" for b in blockers))
            conn.commit()


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError):
        return f"PostgreSQL error {sqlstate_of(exc)}: {postgres_message(exc)}"
    return f"{type(exc).__name__}: {exc}"
