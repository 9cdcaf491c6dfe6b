"""`celora db audit`: read the audit log the database keeps (triggers from migration 20261126170000), and prune it.

The log is written by the database (celora_cli/db/models/audit_log.py says how); this module only reads it and
deletes old rows. Plain psycopg, no SQLAlchemy: a history lookup is one indexed query.

Pruning deletes in batches of at most `batch_size` rows, each in its own short transaction, oldest first by id
(ids grow with time), so the table is never locked for long and concurrent writers are not held up.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celora_cli.errors import ConfigError, UsageError
from celora_cli.settings import DatabaseURL, Settings

APPLICATION_NAME = "celora db audit"
DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000
PRUNE_BATCH = 5_000
MAX_PRUNE_DAYS = 36_500


@dataclass(frozen=True)
class AuditEntry:
    id: int
    changed_at: dt.datetime
    table: str
    operation: str
    key: dict[str, Any]
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    actor: str
    db_role: str
    application_name: str | None
    transaction_id: int

    def changes(self) -> list[tuple[str, Any, Any]]:
        """(column, old, new) per column: every recorded column on INSERT/DELETE, the changed ones on UPDATE."""
        old, new = self.old or {}, self.new or {}
        columns = list(new) + [c for c in old if c not in new]
        return [(c, old.get(c), new.get(c)) for c in columns]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "changed_at": self.changed_at.isoformat(), "table": self.table,
                "operation": self.operation, "key": self.key, "old": self.old, "new": self.new,
                "actor": self.actor, "db_role": self.db_role, "application_name": self.application_name,
                "transaction_id": self.transaction_id}


@dataclass
class AuditResult:
    database: str  # masked URL
    filters: dict[str, Any]
    entries: list[AuditEntry] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT

    @property
    def truncated(self) -> bool:
        return len(self.entries) >= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {"database": self.database, "filters": self.filters, "limit": self.limit,
                "count": len(self.entries), "truncated": self.truncated,
                "entries": [e.as_dict() for e in self.entries]}


@dataclass(frozen=True)
class PrunePlan:
    database: str
    cutoff: dt.datetime
    older_than_days: float
    rows: int  # rows older than the cutoff when counted
    database_env: str | None  # the database's environment stamp, for the guard

    def losses(self) -> list[str]:
        return [f"audit_log ({self.rows} row(s) changed before {self.cutoff.isoformat(timespec='seconds')})"]


@dataclass
class PruneResult:
    database: str
    cutoff: dt.datetime
    older_than_days: float
    deleted: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"database": self.database, "cutoff": self.cutoff.isoformat(), "older_than_days": self.older_than_days,
                "deleted": self.deleted, "batches": self.batches}


# -- inputs ----------------------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO date/time (a time without zone is UTC) or a duration back from now: 30m, 12h, 7d, 2w."""
    now = now or dt.datetime.now(dt.UTC)
    match = _RELATIVE.match(value)
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {value!r} is neither an ISO date/time nor a duration.",
                         "Use e.g. --since 2026-11-26, --since '2026-11-26 14:00+01:00', or --since 12h (s, m, h, d, "
                         "w).") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be a whole number from 1 to {MAX_LIMIT} (got {limit!r}).",
                         "Narrow the history with --table, --id, --since or --actor instead of a huger limit.")


def _check_days(days: float) -> None:
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 <= days <= MAX_PRUNE_DAYS:
        raise UsageError(f"--prune-older-than must be a number of days from 0 to {MAX_PRUNE_DAYS} (got {days!r}).",
                         "e.g. --prune-older-than 90 keeps the last 90 days.")


def _row_key(row_id: str) -> dict[str, Any]:
    # Every audited table's primary key is one column named id (a UUID): the key is {"id": "<uuid>"}.
    return {"id": row_id.strip().lower()}


# -- connection --------------------------------------------------------------------------------------------------

def _open(settings: Settings, *, direct: bool):
    """(connection, url, setting). Reads may use the pooled URL; pruning (several transactions of one session's
    work, no state across them) works through either, but uses the direct URL when there is one."""
    from celora_cli.db.connect import connect, resolve_urls
    from celora_cli.db.errors import translating
    from celora_cli.migration_runtime import setting_name

    urls = resolve_urls(settings)
    url: DatabaseURL = urls.pooled
    setting = "DATABASE_URL"
    if direct and urls.direct is not None:
        url, setting = urls.direct, setting_name(settings)
    with translating(url, setting):
        conn = connect(url, settings, application_name=APPLICATION_NAME, autocommit=True)
    return conn, url, setting


# -- history -----------------------------------------------------------------------------------------------------

def history(settings: Settings, *, table: str | None = None, row_id: str | None = None, since: str | None = None,
            actor: str | None = None, limit: int = DEFAULT_LIMIT) -> AuditResult:
    """The audit rows matching every filter given, newest first."""
    from psycopg.types.json import Jsonb

    from celora_cli.db.errors import translating

    _check_limit(limit)
    since_at = parse_since(since) if since else None
    where: list[str] = []
    params: list[Any] = []
    if table:
        where.append("table_name = %s")
        params.append(table)
    if row_id:
        where.append("row_key = %s")
        params.append(Jsonb(_row_key(row_id)))
    if since_at:
        where.append("changed_at >= %s")
        params.append(since_at)
    if actor:
        where.append("actor = %s")
        params.append(actor)
    sql = ("SELECT id, changed_at, table_name, operation, row_key, old_values, new_values, actor, db_role, "
           "application_name, transaction_id FROM audit_log"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY id DESC LIMIT %s")
    conn, url, setting = _open(settings, direct=False)
    filters = {"table": table, "id": row_id, "since": since_at.isoformat() if since_at else None, "actor": actor}
    result = AuditResult(url.masked, filters, limit=limit)
    try:
        with translating(url, setting):
            if table:
                _check_table(conn, table)
            for row in conn.execute(sql, [*params, limit]):
                result.entries.append(AuditEntry(*row))
    finally:
        conn.close()
    return result


def _check_table(conn, table: str) -> None:
    audited = [r[0] for r in conn.execute(
        "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = 'celora_audit_row' AND c.relnamespace = "
        "ANY (current_schemas(false)::regnamespace[]) ORDER BY 1")]
    if table not in audited:
        raise ConfigError(f"--table {table!r} is not an audited table (audited: {', '.join(audited) or 'none'}).",
                          "Pick one of the audited tables; rate_limits is deliberately not audited.")


# -- retention ---------------------------------------------------------------------------------------------------

def prune(settings: Settings, *, older_than_days: float, confirm: Callable[[PrunePlan], None] | None = None,
          batch_size: int = PRUNE_BATCH) -> PruneResult:
    """Delete audit rows changed more than `older_than_days` ago, `batch_size` rows per transaction.

    `confirm(plan)` is called with the count before anything is deleted; it raises to stop (the CLI passes the
    destructive-action guard)."""
    from celora_cli.db.errors import translating
    from celora_cli.environment_stamp import database_environment

    _check_days(older_than_days)
    conn, url, setting = _open(settings, direct=True)
    try:
        with translating(url, setting):
            cutoff = conn.execute("SELECT now() - make_interval(secs => %s)",
                                  (older_than_days * 86400,)).fetchone()[0]
            # The newest id to delete: ids grow with time, so "id <= last" is the same set, and each batch is
            # a range of the primary key (no sort of the whole old part per batch).
            last = conn.execute("SELECT max(id) FROM audit_log WHERE changed_at < %s", (cutoff,)).fetchone()[0]
            count = 0 if last is None else conn.execute(
                "SELECT count(*) FROM audit_log WHERE id <= %s AND changed_at < %s", (last, cutoff)).fetchone()[0]
            plan = PrunePlan(url.masked, cutoff, older_than_days, count, _environment(conn, database_environment))
            if confirm is not None:
                confirm(plan)
            result = PruneResult(url.masked, cutoff, older_than_days)
            while last is not None:
                with conn.transaction():
                    deleted = conn.execute(
                        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE id <= %s AND "
                        "changed_at < %s ORDER BY id LIMIT %s)", (last, cutoff, batch_size)).rowcount
                if deleted == 0:
                    break
                result.deleted += deleted
                result.batches += 1
    finally:
        conn.close()
    return result


def _environment(conn, database_environment) -> str | None:
    try:
        return database_environment(conn)
    except Exception:  # noqa: BLE001 - no stamp table readable: treated as unstamped, CELORA_ENV still decides
        return None


__all__ = ["AuditEntry", "AuditResult", "PrunePlan", "PruneResult", "history", "parse_since", "prune"]
