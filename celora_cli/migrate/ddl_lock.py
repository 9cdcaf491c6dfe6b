"""DDL lock safety: a migration whose ALTER TABLE queues behind a long transaction fails fast instead of making every
later query on that table queue behind it.

Every transaction on the migration connection sets `lock_timeout` locally (CELORA_DDL_LOCK_TIMEOUT, in the same
round trip as the advisory lock, celora_cli.migrate.lock). A statement that waits longer fails (55P03), its
transaction rolls back, and the runtime re-runs it after a backoff (`retry_delay`), up to CELORA_DDL_LOCK_RETRIES
times. While a statement waits, a watcher on a second connection reads who blocks it (pg_blocking_pids), so the
final LockTimeout names the blocking sessions (`BlockerWatch`, `ddl_lock_timeout_error`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event

from celora_cli.config.settings import Settings
from celora_cli.errors import LockTimeout

# A retried migration waits this long before its next try, doubling each time up to the cap.
_RETRY_BACKOFF_S = 0.5
_RETRY_BACKOFF_CAP_S = 8.0
LOCK_NOT_AVAILABLE = "55P03"
_QUERY_SHOWN = 200  # characters of a blocker's query kept in the error


@dataclass(frozen=True)
class Blocker:
    """A session a migration's statement queued behind (pg_blocking_pids), as seen while it waited."""

    pid: int
    application_name: str
    client: str
    state: str  # pg_stat_activity.state: "idle in transaction" is the usual culprit
    transaction_age_s: float | None  # how long its transaction has been open
    query: str  # its current or last query, truncated

    def describe(self) -> str:
        age = f"transaction open {self.transaction_age_s:.1f} s" if self.transaction_age_s is not None \
            else "no open transaction"
        return (f"pid {self.pid} ({self.application_name or 'unknown application'} from {self.client}, "
                f"{self.state or 'unknown state'}, {age}, query: {self.query!r})")


_BLOCKERS_SQL = (
    "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),"
    "       coalesce(a.state, ''), extract(epoch FROM now() - a.xact_start), left(coalesce(a.query, ''), %s)"
    "  FROM pg_stat_activity a WHERE a.pid = ANY (pg_blocking_pids(%s)) ORDER BY a.xact_start NULLS LAST")


class BlockerWatch:
    """Who a migration's statement queues behind, read on a second connection while it waits.

    Once the migration's statement has run for `after` seconds, a thread opens a connection from the same engine
    (same URL, credentials and startup options) and polls pg_blocking_pids for the migration's backend until the
    statement ends. The blockers must be read while the statement waits: once the lock timeout rolled it back,
    nothing is blocked any more. A migration that runs through quickly never opens the second connection.
    """

    def __init__(self, conn, after: float) -> None:
        self._engine = conn.engine
        self._pid = conn.connection.driver_connection.info.backend_pid  # psycopg: no round trip
        self._after = after
        self._poll_s = max(0.05, min(0.5, after / 2))
        self._since: float | None = None  # when the running statement started
        self._seen: tuple[Blocker, ...] = ()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="celora-blocker-watch", daemon=True)

    @classmethod
    def start(cls, conn, after: float) -> BlockerWatch | None:
        try:
            watch = cls(conn, after)
        except AttributeError:  # not a psycopg connection: the error will not name the blockers
            return None
        event.listen(conn, "before_cursor_execute", watch._statement_started)
        event.listen(conn, "after_cursor_execute", watch._statement_ended)
        event.listen(conn, "rollback", watch._statement_failed)  # a failed statement ends in a rollback
        watch._thread.start()
        return watch

    def take(self) -> tuple[Blocker, ...]:
        """The blockers seen since the last take()."""
        seen, self._seen, self._since = self._seen, (), None
        return seen

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _statement_started(self, *args) -> None:
        self._since = time.monotonic()

    def _statement_ended(self, *args) -> None:
        self._since = None

    def _statement_failed(self, conn) -> None:
        self._since = None

    def _run(self) -> None:
        raw = None
        try:
            while not self._stopped.wait(self._poll_s):
                since = self._since
                if since is None or time.monotonic() - since < self._after:
                    continue
                if raw is None:
                    raw = self._engine.raw_connection()
                    raw.driver_connection.autocommit = True
                blockers = self._read(raw.driver_connection)
                if blockers:
                    self._seen = blockers
        except Exception:  # noqa: BLE001 - best effort: without it the error only lacks the blockers' names
            pass
        finally:
            if raw is not None:
                with contextlib.suppress(Exception):
                    raw.close()

    def _read(self, driver) -> tuple[Blocker, ...]:
        rows = driver.execute(_BLOCKERS_SQL, (_QUERY_SHOWN, self._pid)).fetchall()
        return tuple(Blocker(int(pid), app, client, state, None if age is None else round(float(age), 3),
                             " ".join(query.split())) for pid, app, client, state, age, query in rows)


def retry_delay(attempt: int) -> float:
    return min(_RETRY_BACKOFF_CAP_S, _RETRY_BACKOFF_S * 2 ** (attempt - 1))


def ddl_lock_timeout_error(step, settings: Settings, attempts: int, blockers: tuple[Blocker, ...],
                            applied: list[dict], at: tuple[str, ...] | None, non_atomic: bool) -> LockTimeout:
    name = Path(step.revision.path).stem if step is not None else "a migration"
    revision = step.revision.revision if step is not None else None
    who = "; ".join(b.describe() for b in blockers) if blockers else \
        "a session no longer visible when the lock was checked (its transaction may have ended meanwhile)"
    where = ", ".join(at or ()) or "an empty schema (no migration applied)"
    tries = f"{attempts} tr{'y' if attempts == 1 else 'ies'}"
    why = (" It was not retried: it ran an autocommit_block(), so what came before the block is committed."
           if non_atomic else f" It was rolled back each time; the database is at {where}.")
    pids = ", ".join(str(b.pid) for b in blockers) or "<pid>"
    return LockTimeout(
        f"Migration {name} waited longer than the DDL lock timeout ({settings.ddl_lock_timeout:g} s, "
        f"CELORA_DDL_LOCK_TIMEOUT) for a table lock on {tries}, so it gave up instead of making every query on "
        f"that table queue behind it.{why} Blocked by: {who}.",
        f"Finish or end the blocking transaction (`SELECT pg_terminate_backend({pids})` ends it), then run "
        "`celora db migrate-deploy` again; an 'idle in transaction' session is usually a client that forgot to "
        "commit. Raise --ddl-lock-timeout or CELORA_DDL_LOCK_RETRIES only if the table may stay blocked longer.",
        revision=revision, attempts=attempts, blockers=list(blockers), applied=applied)
