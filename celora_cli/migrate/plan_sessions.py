"""What is running now that a deploy would wait behind: for `celora db migrate-deploy --plan`.

Read from pg_locks and pg_stat_activity on a connection the caller has in a READ ONLY transaction. Neither view
takes a lock on a user table. What a role can see:

- pg_locks is readable by every role, so every session's locks on the tables (and the migration lock) are seen,
  whoever owns the session.
- pg_stat_activity shows a session's pid, user and application to everyone, but its state, query and transaction
  start only to superusers, members of pg_read_all_stats, and the session's own role. For other sessions those are
  unknown here (state None): a blocker is still named, but its age is not, and a long transaction of another role
  is not listed. `Visibility` says which case applies and how many sessions were hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celora_cli.migrate.lock import MIGRATION_LOCK_KEY
from celora_cli.migrate.plan_statements import mode_from_pg_locks

_LOCKS = """
SELECT l.pid, l.relation, l.mode, l.granted
FROM pg_catalog.pg_locks l
WHERE l.locktype = 'relation'
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
  AND l.relation = ANY(%s::oid[])
  AND l.pid IS DISTINCT FROM pg_backend_pid()
"""

_MIGRATION_LOCK = """
SELECT l.pid, l.granted
FROM pg_catalog.pg_locks l
WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = %s
  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())
  AND l.pid IS DISTINCT FROM pg_backend_pid()
"""

# The sessions named by pid, and every transaction of this database open longer than the setting.
_SESSIONS = """
SELECT a.pid, a.application_name, a.usename, a.state,
       EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8 AS transaction_age,
       a.wait_event_type, a.wait_event,
       a.query = '<insufficient privilege>' AS hidden
FROM pg_catalog.pg_stat_activity a
WHERE a.pid = ANY(%s::int[])
   OR (a.datname = current_database() AND a.pid <> pg_backend_pid()
       AND a.xact_start < clock_timestamp() - make_interval(secs => %s))
"""

_VISIBILITY = """
SELECT COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false)
       OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       (SELECT count(*) FROM pg_catalog.pg_stat_activity a
        WHERE a.datname = current_database() AND a.query = '<insufficient privilege>')
"""


@dataclass(frozen=True)
class LiveSession:
    """A session of the database, as much of it as this role may see."""

    pid: int | None  # None: a prepared transaction (it holds locks but has no session)
    application: str | None
    user: str | None
    state: str | None  # active, idle in transaction, ...; None when hidden from this role
    transaction_age_s: float | None  # None: no transaction open, or hidden from this role
    waiting_on: str | None  # pg_stat_activity's wait event, e.g. "Lock:relation"
    hidden: bool = False  # another role's session: state, query and age are not shown to this role


@dataclass(frozen=True)
class TableLock:
    """A lock another session holds (granted) or is queued for on a table."""

    pid: int | None
    table_oid: int
    mode: str  # ACCESS SHARE ... ACCESS EXCLUSIVE
    granted: bool


@dataclass(frozen=True)
class Visibility:
    full: bool  # superuser or pg_read_all_stats: every session's state and age are seen
    hidden_sessions: int  # sessions of this database whose state and age this role can't see
    note: str


@dataclass
class LiveActivity:
    locks: list[TableLock] = field(default_factory=list)
    migration_lock: list[tuple[int | None, bool]] = field(default_factory=list)  # (pid, granted)
    sessions: dict[int, LiveSession] = field(default_factory=dict)
    long_transactions: list[LiveSession] = field(default_factory=list)
    visibility: Visibility = field(default_factory=lambda: Visibility(True, 0, ""))


def read_activity(conn, table_oids: list[int], long_transaction_s: float) -> LiveActivity:
    """Locks on `table_oids` held or awaited by other sessions, the migration lock's holder or waiters, those
    sessions, and the transactions open longer than `long_transaction_s`. `conn`: psycopg, in a transaction."""
    activity = LiveActivity()
    for pid, relation, mode, granted in conn.execute(_LOCKS, (table_oids,)).fetchall():
        activity.locks.append(TableLock(pid, int(relation), mode_from_pg_locks(mode), bool(granted)))
    activity.migration_lock = [(pid, bool(granted)) for pid, granted
                               in conn.execute(_MIGRATION_LOCK, (MIGRATION_LOCK_KEY,)).fetchall()]
    pids = sorted({lock.pid for lock in activity.locks if lock.pid is not None}
                  | {pid for pid, _ in activity.migration_lock if pid is not None})
    for row in conn.execute(_SESSIONS, (pids, long_transaction_s)).fetchall():
        pid, application, user, state, age, wait_type, wait_event, hidden = row
        session = LiveSession(pid, application, user, state, age,
                              f"{wait_type}:{wait_event}" if wait_type else None, bool(hidden))
        activity.sessions[pid] = session
        if age is not None and age >= long_transaction_s:
            activity.long_transactions.append(session)
    activity.long_transactions.sort(key=lambda s: -(s.transaction_age_s or 0))
    full, hidden_count = conn.execute(_VISIBILITY).fetchone()
    if full:
        note = "every session's state and transaction age are visible (superuser or pg_read_all_stats)"
    else:
        note = (f"this role sees the state and transaction age of its own sessions only: {hidden_count} other "
                "session(s) of this database are hidden (their locks are still seen, through pg_locks, but not "
                "their age, and a long transaction of theirs is not listed). Grant the role pg_read_all_stats "
                "to see them.")
    activity.visibility = Visibility(bool(full), int(hidden_count), note)
    return activity


def own_locks(conn) -> list[str]:
    """The locks this transaction holds now, as "AccessShareLock on pg_class" (a read-only plan's evidence)."""
    rows = conn.execute(
        "SELECT l.locktype, l.relation::regclass::text, l.mode FROM pg_catalog.pg_locks l"
        " WHERE l.pid = pg_backend_pid() ORDER BY 1, 2, 3").fetchall()
    return [f"{mode} on {relation}" if relation else f"{mode} ({locktype})" for locktype, relation, mode in rows]
