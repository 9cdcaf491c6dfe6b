"""The one migration runtime, shared by `celora db migrate-deploy` and a hand-run `alembic` (via env.py).

Both go through the same set-up, so a migration behaves the same whichever way it is run:
- the direct URL (DIRECT_DATABASE_URL, else a non-PgBouncer DATABASE_URL), never PgBouncer, and a refusal
  when the evidence says a connection pooler answers on it anyway (see `open_migration_connection`);
- no app statement timeout (DDL on a large table may legitimately take longer than an app query);
- the migration lock: a transaction-level advisory lock taken at the start of every transaction on the
  migration connection, with the revision re-read under it (see `MigrationLock`);
- the same file names: YYYYMMDDHHMMSS_slug.py, and the same timestamp as the revision id.

Why a transaction-level lock: a session-level advisory lock lives on the server session. Behind a
transaction pooler that session is a pooled server connection that outlives the client, so the lock stayed
held after the run and the next deploy waited for a pid that no longer existed. A transaction-level lock
ends with its transaction whatever sits in between. Alembic runs each migration in its own transaction
(`transaction_per_migration`), so the lock is re-taken per transaction, and because another runner may get
in between two of them, the revision is re-read under the lock and compared with what this run expects.

DDL lock safety: every transaction on the migration connection sets `lock_timeout` locally (CELORA_DDL_LOCK_TIMEOUT,
in the same round trip as the advisory lock). A migration whose ALTER TABLE queues behind a long transaction would
otherwise make every later query on that table queue behind it; with the timeout it fails fast (55P03), its
transaction rolls back, and the runtime re-runs it after a backoff, up to CELORA_DDL_LOCK_RETRIES times (see
`_run_with_retries`). While a statement waits, a watcher on a second connection reads who blocks it
(pg_blocking_pids), so the final LockTimeout names the blocking sessions (see `BlockerWatch`).

`autocommit_block()` (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE): Alembic commits the migration's
transaction before the block and begins a new one after it, which would drop the transaction-level lock in
between. The runtime takes the same key as a session-level advisory lock while the transaction still holds it
(so there is no gap), keeps it through the block and releases it once the next transaction has re-taken the
transaction-level lock (see `_guard_autocommit_blocks`). Another runner therefore waits, as for any migration.
The block runs without the DDL lock_timeout (a CONCURRENTLY build legitimately waits for older transactions
and blocks no reads or writes while it does) and such a migration is not retried on a lock timeout: what ran
before its block is committed, so re-running it from the start is not safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.errors import LockTimeout, MigrationHistoryError, Refused
from celora_cli.migrate.history import duplicate_revision_error

# Advisory lock key: "celo" as a 32-bit integer, so pg_locks shows it as classid=0, objid=1667591279
# and anyone can find the holder.
MIGRATION_LOCK_KEY = 0x63656C6F
# Alembic's file_template (in Config.set_main_option form, % doubled); [tool.alembic] in pyproject.toml
# holds the same template for a hand-run `alembic revision` (a test checks they agree). The file is named by
# its revision id, which celora makes a timestamp (next_revision_id): 20261126090000_init.py. Naming it by the
# clock instead would part name and id whenever the id has to move past a head stamped in the future.
FILE_TEMPLATE = "%%(rev)s_%%(slug)s"
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
_POLL_S = 0.25
_LOCK_ATTRIBUTE = "celora_migration_lock"

# A retried migration waits this long before its next try, doubling each time up to the cap.
_RETRY_BACKOFF_S = 0.5
_RETRY_BACKOFF_CAP_S = 8.0
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_SHOWN = 200  # characters of a blocker's query kept in the error

# Progress events for a live view: ("lock_wait", LockHolder), ("lock_acquired", seconds waited),
# ("applied", AppliedMigration), ("replan", RevisionMoved). The core reports; the caller shows it.
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


class RevisionMoved(Exception):
    """Another runner changed alembic_version between two of this run's transactions."""

    def __init__(self, expected: tuple[str, ...], found: tuple[str, ...]) -> None:
        super().__init__(f"the database moved from {', '.join(expected) or 'empty'} to "
                         f"{', '.join(found) or 'empty'} while this run waited for the migration lock")
        self.expected = expected
        self.found = found


# -- the connection --------------------------------------------------------------------------------------

def migration_settings(settings: Settings) -> Settings:
    """DDL may legitimately run longer than an app query: no statement timeout on the migration connection."""
    return dataclasses.replace(settings, statement_timeout=0)


def setting_name(settings: Settings) -> str:
    return "DIRECT_DATABASE_URL" if settings.direct_database_url else "DATABASE_URL"


def migration_engine(settings: Settings, application_name: str):
    """(engine, url, setting name) on the direct URL with no statement timeout; no connection made yet."""
    from celora_cli.db.engine import build_engine, direct_url

    url = direct_url(settings)
    engine = build_engine(url, migration_settings(settings), pooled=False, application_name=application_name[:63])
    return engine, url, setting_name(settings)


def _pooler_refusal(url: DatabaseURL, setting: str, evidence: str) -> Refused:
    return Refused(
        f"{setting} ({url.masked}) reaches PostgreSQL through a connection pooler, so migrations were not run "
        f"and nothing was locked or changed. Checked: {evidence}. Migrations need a server session of their own "
        "(the migration lock and each migration's transaction must stay on one PostgreSQL connection).",
        f"Point {setting} at PostgreSQL itself (usually port 5432 on the database host), not at PgBouncer; keep "
        "the PgBouncer URL in DATABASE_URL with ?pgbouncer=true.",
    )


def open_migration_connection(engine, url: DatabaseURL, setting: str,
                              bound: tuple[float, DatabaseURL, str] | None = None):
    """Connect and prove the connection is a PostgreSQL session of its own before anything is locked.

    celora's startup options carry a marker (db/engine.py). PgBouncer either rejects them ("unsupported
    startup parameter") or, with ignore_startup_parameters=options, drops them: either is proof of a pooler.
    A differing port is not (Docker -p 5433:5432, SSH tunnels and port-forwards reach PostgreSQL directly).
    """
    from sqlalchemy.exc import DBAPIError

    from celora_cli.db.engine import sends_startup_options, startup_options_applied

    try:
        with _bounded_connect(engine, bound):  # SQLAlchemy's first connect asks the server questions of its own
            conn = engine.connect()
    except DBAPIError as exc:
        if "unsupported startup parameter" in str(getattr(exc, "orig", exc)).lower():
            raise _pooler_refusal(url, setting, "the server rejected celora's startup options with "
                                  "'unsupported startup parameter', which is PgBouncer's answer") from None
        raise
    try:
        with bookkeeping(conn, bound):
            if sends_startup_options(url) and not startup_options_applied(conn):
                raise _pooler_refusal(url, setting, "celora's startup marker (options=-c celora.direct_session=on) "
                                      "did not reach the server session, so something in between dropped it")
            conn.rollback()
    except BaseException:
        conn.close()
        raise
    return conn


def bookkeeping(conn, bound: tuple[float, DatabaseURL, str] | None):
    """celora's own bookkeeping statements on the migration connection (a SQLAlchemy Connection), bounded in
    time when `bound` is given (connect.answer_within)."""
    import contextlib

    if bound is None:
        return contextlib.nullcontext()
    from celora_cli.db.connect import answer_within

    seconds, url, made_of = bound
    return answer_within(conn.connection.dbapi_connection, seconds, url, made_of)


@contextlib.contextmanager
def _bounded_connect(engine, bound: tuple[float, DatabaseURL, str] | None):
    """engine.connect() within `bound`: each new DBAPI connection is watched from the moment the pool makes it
    (before SQLAlchemy's own first queries: server version, encoding) until connect() returns."""
    if bound is None:
        yield
        return
    from sqlalchemy import event

    from celora_cli.db.connect import no_answer, start_watch

    seconds, url, made_of = bound
    watches = []

    def watch(dbapi_conn, _record) -> None:
        watches.append(start_watch(dbapi_conn, seconds))

    event.listen(engine, "connect", watch, insert=True)  # before SQLAlchemy's first_connect listener
    try:
        yield
    except Exception as exc:
        if any(w.fired for w in watches):
            raise no_answer(url, seconds, made_of) from exc
        raise
    finally:
        for each in watches:
            each.done = True
        event.remove(engine, "connect", watch)


def bookkeeping_bound(settings: Settings, url: DatabaseURL, *, lock_wait: float = 0.0) -> tuple[float, DatabaseURL,
                                                                                                 str]:
    """How long celora's own statements on the migration connection may go unanswered: the app's statement
    timeout (30 s when it is 0, none) plus the connect timeout, plus any wait for the migration lock."""
    seconds = (settings.statement_timeout or 30.0) + settings.connect_timeout + lock_wait
    made_of = "CELORA_STATEMENT_TIMEOUT plus CELORA_CONNECT_TIMEOUT" + (" plus the migration lock's wait"
                                                                         if lock_wait else "")
    return seconds, url, made_of


# -- the lock --------------------------------------------------------------------------------------------

def lock_holder(conn) -> LockHolder | None:
    """Who holds the migration lock in this database (session- or transaction-level), if anyone."""
    from sqlalchemy import text

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
        from sqlalchemy import event

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
        from sqlalchemy import text

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


# -- DDL lock safety ------------------------------------------------------------------------------------

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
        from sqlalchemy import event

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


class _AutocommitGuard:
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
            from sqlalchemy import text

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


def _retry_delay(attempt: int) -> float:
    return min(_RETRY_BACKOFF_CAP_S, _RETRY_BACKOFF_S * 2 ** (attempt - 1))


def _ddl_lock_timeout_error(step, settings: Settings, attempts: int, blockers: tuple[Blocker, ...],
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


def read_current(conn, *, maybe_missing: bool = True) -> tuple[str, ...]:
    """alembic_version's revisions, sorted; () when the table does not exist (never migrated)."""
    from sqlalchemy import text

    if maybe_missing:
        # pg_class read with this statement's snapshot: fresh even in a transaction that began before
        # another runner created the table (to_regclass could answer from a stale catalog cache).
        exists = conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.relname = 'alembic_version'"
            " AND n.nspname = ANY (current_schemas(false)))")).scalar()
        if not exists:
            return ()
    return tuple(sorted(r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))))


# -- the journal -----------------------------------------------------------------------------------------

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

    def _revision_step(self):
        from alembic.runtime.migration import RevisionStep

        return self.step if isinstance(self.step, RevisionStep) else None  # stamps are not migration runs

    def on_version_apply(self, *, ctx, step, heads, run_args) -> None:
        from celora_cli.migrate import journal

        current = self._revision_step()
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
        import contextlib

        from celora_cli.migrate import journal

        current = self._revision_step()
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
    from sqlalchemy.exc import DBAPIError

    from celora_cli.db.errors import postgres_message, sqlstate_of

    if isinstance(exc, DBAPIError):
        return f"PostgreSQL error {sqlstate_of(exc)}: {postgres_message(exc)}"
    return f"{type(exc).__name__}: {exc}"


# -- the history -----------------------------------------------------------------------------------------

def load_script_directory(migrations_dir: Path, config=None):
    """Alembic's ScriptDirectory with its revision map loaded, once per run.

    Loading imports every revision file; a broken one (syntax error, a down_revision that does not exist,
    an import that fails) becomes MigrationHistoryError naming the file, and so do several heads.
    """
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    if config is None:
        config = Config()
        config.set_main_option("script_location", str(migrations_dir))
    script = ScriptDirectory.from_config(config)
    heads = read_heads(script, migrations_dir)
    if len(heads) > 1:
        raise MigrationHistoryError(
            f"The migration history in {migrations_dir} has {len(heads)} heads ({', '.join(sorted(heads))}): "
            "two migrations name the same down_revision.",
            "Merge them into one (`alembic merge heads -m merge`) before deploying.",
        )
    return script


def read_heads(script, migrations_dir: Path) -> tuple[str, ...]:
    """script.get_heads(), which builds (and memoizes) the revision map: every file is imported here. A broken
    file, or two files with one revision id, becomes MigrationHistoryError naming the files."""
    import warnings

    try:
        with warnings.catch_warnings():
            # Alembic only warns about a duplicate id and keeps whichever file it read last: which migration
            # would run then depends on the order of a directory listing. Stop there instead.
            warnings.filterwarnings("error", message=_DUPLICATE_WARNING.pattern, category=UserWarning)
            return tuple(script.get_heads())
    except Exception as exc:  # Alembic lets SyntaxError, KeyError, ImportError... from the files through
        raise _history_error(script, migrations_dir, exc) from exc


_DUPLICATE_WARNING = re.compile(r"Revision (.+) is present more than once")


def _history_error(script, migrations_dir: Path, exc: Exception) -> MigrationHistoryError:
    import traceback

    versions = migrations_dir / "versions"
    duplicate = _DUPLICATE_WARNING.fullmatch(str(exc)) if isinstance(exc, UserWarning) else None
    if duplicate:
        revision = duplicate.group(1)
        return duplicate_revision_error(revision, _files_of(script, revision) or [versions])
    if isinstance(exc, SyntaxError):
        return MigrationHistoryError(
            f"Migration {exc.filename} has a syntax error at line {exc.lineno}: {exc.msg}.",
            "Fix the file (`python3 -m py_compile` on it shows the error), then run the command again.")
    if isinstance(exc, KeyError):
        missing = exc.args[0] if exc.args else "?"
        culprit = _file_naming(script, missing)
        where = f"Migration {culprit}" if culprit else f"A migration in {versions}"
        return MigrationHistoryError(
            f"{where} names down_revision {missing!r}, which is not in {versions}.",
            "Fix its down_revision to the revision id of the migration it follows (`alembic history` lists "
            "them), or restore the missing file.")
    frames = [f.filename for f in traceback.extract_tb(exc.__traceback__)
              if Path(f.filename).resolve().parent == versions.resolve()]
    where = f"Migration {frames[-1]}" if frames else f"The migration history in {migrations_dir}"
    return MigrationHistoryError(f"{where} can't be loaded: {type(exc).__name__}: {exc}.",
                                 "Fix that file, then run the command again.")


def _files_of(script, revision: str) -> list[str]:
    """Every file whose `revision` is `revision` (read without building the revision map)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [candidate.path for candidate in script._load_revisions() if candidate.revision == revision]
    except Exception:  # noqa: BLE001 - best effort: the message still names the revision
        return []


def _file_naming(script, revision: str) -> str | None:
    """The file whose down_revision names `revision` (read without building the revision map)."""
    try:
        for candidate in script._load_revisions():  # Alembic's own file loader, as the revision map uses it
            downs = candidate.down_revision
            if downs == revision or (isinstance(downs, (tuple, list)) and revision in downs):
                return candidate.path
    except Exception:  # noqa: BLE001 - best effort: the message still names the missing revision
        return None
    return None


def timestamp_revision_id(now: datetime.datetime | None = None) -> str:
    """Revision ids are the file's timestamp (UTC), as in 20261126090000_init.py."""
    return (now or datetime.datetime.now(datetime.UTC)).strftime(TIMESTAMP_FORMAT)


def next_revision_id(existing: Iterable[str], now: datetime.datetime | None = None) -> str:
    """The id of a new revision: the current UTC timestamp, unless the history already holds a timestamp-like
    id (14 digits) at or past it (a clock that was ahead, a hand-picked `--rev-id 29990101000199`, even one
    that is no valid time): then the first valid timestamp after the highest of them, so the files keep
    sorting in the order they were written. Ids of any other form (Alembic's hex `ae1027a6acf`) say nothing
    about time and leave the current timestamp as it is. Never an id the history already holds."""
    taken = set(existing)
    candidate = timestamp_revision_id(now)
    stamps = [rev for rev in taken if len(rev) == 14 and rev.isascii() and rev.isdigit()]
    latest = max(stamps, default="")
    if latest >= candidate:
        candidate = _first_timestamp_after(latest)
    while candidate in taken:  # e.g. a 14-digit id that was no timestamp, between the head and now
        candidate = _first_timestamp_after(candidate)
    return candidate


# The units of a 14-digit stamp, year to second: (where in the stamp, the smallest valid value).
_STAMP_FIELDS = ((slice(0, 4), 1), (slice(4, 6), 1), (slice(6, 8), 1), (slice(8, 10), 0), (slice(10, 12), 0),
                 (slice(12, 14), 0))


def _first_timestamp_after(stamp: str) -> str:
    """The earliest valid YYYYMMDDHHMMSS that sorts after `stamp` (14 digits, maybe an impossible time such as
    second 99 or month 13)."""
    values = [int(stamp[part]) for part, _ in _STAMP_FIELDS]
    lowest = [low for _, low in _STAMP_FIELDS]
    for unit in range(len(values)):
        head = values[: unit + 1] + lowest[unit + 1:]
        if _valid(head):
            continue
        if values[unit] < lowest[unit]:  # e.g. month 00: the smallest valid value there already sorts after
            return _stamp(values[:unit] + lowest[unit:])
        # Too large for its unit (second 99, month 13, 31 February): carry into the unit on its left.
        return _stamp_or_fail(_carry(values[:unit] + lowest[unit:], unit - 1), stamp)
    return _stamp_or_fail(_carry(values, len(values) - 1), stamp)


def _valid(fields: list[int]) -> bool:
    try:
        _moment(fields)
    except ValueError:
        return False
    return True


def _moment(fields: list[int]) -> datetime.datetime:
    year, month, day, hour, minute, second = fields
    return datetime.datetime(year, month, day, hour, minute, second)


def _carry(fields: list[int], unit: int) -> datetime.datetime | None:
    """fields (valid) plus one of `unit` (0 = year ... 5 = second), the units right of it at their lowest."""
    moment = _moment(fields)
    try:
        if unit == 0:
            return moment.replace(year=moment.year + 1)
        if unit == 1:
            return (moment.replace(day=1) + datetime.timedelta(days=32)).replace(day=1)
        return moment + datetime.timedelta(**{("days", "hours", "minutes", "seconds")[unit - 2]: 1})
    except (ValueError, OverflowError):  # past 9999-12-31 23:59:59
        return None


def _stamp(fields: list[int]) -> str:
    return _digits(_moment(fields))


def _digits(moment: datetime.datetime) -> str:
    # Not strftime: glibc's %Y does not pad a year below 1000 to four digits.
    return (f"{moment.year:04d}{moment.month:02d}{moment.day:02d}{moment.hour:02d}{moment.minute:02d}"
            f"{moment.second:02d}")


def _stamp_or_fail(moment: datetime.datetime | None, stamp: str) -> str:
    if moment is None or moment.year > 9999:
        raise MigrationHistoryError(
            f"The migration history holds revision {stamp}, and no 14-digit timestamp comes after it, so celora "
            "cannot give a new revision an id that sorts after the history's.",
            "Give the new revision an id yourself (`alembic revision --rev-id ...`).")
    return _digits(moment)


def _timestamp_rev_ids(context, revision, directives) -> None:
    """process_revision_directives: `alembic revision` gets a timestamp id (after every timestamp in the
    history, next_revision_id) unless --rev-id was given."""
    cmd_opts = getattr(context.config, "cmd_opts", None)
    if cmd_opts is not None and getattr(cmd_opts, "rev_id", None):
        return
    script = getattr(context, "script", None)
    existing = [s.revision for s in script.walk_revisions()] if script is not None else []
    for directive in directives:
        if getattr(directive, "rev_id", None) is not None:
            directive.rev_id = next_revision_id(existing)
            existing.append(directive.rev_id)


# -- env.py ----------------------------------------------------------------------------------------------

# Alembic commands that only read (`revision --autogenerate` compares, it writes a file, not the database):
# they neither wait for nor take the migration lock.
_READ_ONLY_COMMANDS = {"current", "history", "heads", "branches", "show", "check", "revision"}


def include_name(name, type_, parent_names) -> bool:
    """celora's bookkeeping tables (celora_metadata, the journal celora_migrations) are no models: autogenerate
    must neither drop nor report them."""
    from celora_cli.migrate.journal import JOURNAL_TABLE
    from celora_cli.safety.stamp import include_name as outside_environment_stamp

    if type_ == "table" and name == JOURNAL_TABLE:
        return False
    return outside_environment_stamp(name, type_, parent_names)


_include_name = include_name


def run_env(context, target_metadata) -> None:
    """The body of migrations/env.py, for celora (config.attributes["connection"]) and a hand-run alembic."""
    config = context.config
    opts = {
        "target_metadata": target_metadata,
        "transaction_per_migration": True,  # a failing migration rolls back alone; earlier ones stay
        "compare_type": True,
        "compare_server_default": True,
        "process_revision_directives": _timestamp_rev_ids,
        "include_name": _include_name,
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

    from sqlalchemy.engine import Connection, Engine

    connectable = config.attributes.get("connection")
    if isinstance(connectable, Connection):
        _run_online(context, connectable, opts, _settings(config), owned=False)
    elif isinstance(connectable, Engine):  # pytest-alembic and Alembic's cookbook hand over an Engine
        with connectable.connect() as conn:
            _run_online(context, conn, opts, _settings(config), owned=True)
    elif connectable is None:
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
    from celora_cli.config.settings import allowing_start, load_settings

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
    guard = _AutocommitGuard(migration_context, locked=lock is not None)
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


def _run_with_retries(context, migration_context, conn, recorder: JournalRecorder, guard: _AutocommitGuard,
                      watch: BlockerWatch | None, lock: MigrationLock | None, settings: Settings) -> None:
    """Run the migrations; a migration that hit the DDL lock timeout (55P03) was rolled back by its transaction
    and is run again after a backoff, at most CELORA_DDL_LOCK_RETRIES times. Each try's failure is journalled.
    Re-running run_migrations() goes on from the database's revision: migrations that committed stay applied."""
    from celora_cli.db.errors import sqlstate_of
    from celora_cli.errors import CeloraError

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
            blocked = lock is not None and sqlstate_of(exc) == _LOCK_NOT_AVAILABLE and not external
            blockers = watch.take() if blocked and watch is not None else ()
            step = recorder._revision_step()
            if not external:
                recorder.record_failure(conn, exc, blockers)
            if not blocked:
                raise
            if attempt > settings.ddl_lock_retries or guard.entered:
                raise _ddl_lock_timeout_error(step, settings, attempt, blockers, recorder.applied,
                                              lock.expected if lock is not None else None, guard.entered) from exc
            delay = _retry_delay(attempt)
            name = Path(step.revision.path).stem if step is not None else "a migration"
            who = f" behind {blockers[0].describe()}" if blockers else ""
            logging.getLogger("celora.notice").info(
                f"Migration {name} waited longer than the DDL lock timeout ({settings.ddl_lock_timeout:g} s){who}; "
                f"rolled back, retrying in {delay:g} s (retry {attempt} of {settings.ddl_lock_retries}).")
            attempt += 1
            time.sleep(delay)


def _run_by_hand(context, opts: dict, config) -> None:
    """`alembic upgrade head` etc. from a shell: celora's settings, the direct URL, celora's refusal and lock."""
    import logging

    from alembic.util import CommandError

    from celora_cli.cli.output import show_notices
    from celora_cli.db.errors import translating
    from celora_cli.errors import CeloraError

    # A hand run is a command-line invocation too (Alembic's): celora's notices (the lock wait, a local server
    # being started, a baseline recorded) go to stderr through the same handler as `celora`'s, masked.
    show_notices()
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


__all__ = [
    "Blocker",
    "BlockerWatch",
    "FILE_TEMPLATE",
    "MIGRATION_LOCK_KEY",
    "JournalRecorder",
    "LockHolder",
    "MigrationLock",
    "RevisionMoved",
    "include_name",
    "load_script_directory",
    "lock_holder",
    "migration_engine",
    "open_migration_connection",
    "read_current",
    "run_env",
    "next_revision_id",
    "timestamp_revision_id",
]
