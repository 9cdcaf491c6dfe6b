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

from celora_cli.config.settings import DatabaseURL, Settings, setting_name
from celora_cli.data.audit_seal import record_prune
from celora_cli.db.connect import connect, resolve_urls
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError, DatabaseError, UsageError
from celora_cli.safety.stamp import database_environment

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

    def to_json(self) -> dict[str, Any]:
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

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "filters": self.filters, "limit": self.limit,
                "count": len(self.entries), "truncated": self.truncated,
                "entries": [e.to_json() for e in self.entries]}


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

    def to_json(self) -> dict[str, Any]:
        return {"database": self.database, "cutoff": self.cutoff.isoformat(), "older_than_days": self.older_than_days,
                "deleted": self.deleted, "batches": self.batches}


# -- inputs ----------------------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A duration back from now reaches at most year 1 (Python's and PostgreSQL's common range starts there); 100,000
# days (about 273 years) is far beyond any audit log and well inside it.
MAX_SINCE_DAYS = 100_000
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")


def parse_since(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO date/time (a time without zone is UTC) or a duration back from now: 30m, 12h, 7d, 2w."""
    now = now or dt.datetime.now(dt.UTC)
    match = _RELATIVE.match(value)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        if seconds > MAX_SINCE_DAYS * 86400:
            raise UsageError(f"--since {value.strip()!r} reaches back more than {MAX_SINCE_DAYS:,} days, the limit.",
                             "Use a shorter duration, or an ISO date such as --since 2020-01-01; leave --since out "
                             "for the whole log.")
        return now - dt.timedelta(seconds=seconds)
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
    # Every audited table's primary key is one column named id (a UUID): the key is {"id": "<uuid>"}, written as
    # PostgreSQL prints a uuid (lower case, hyphenated), whatever form was typed.
    import uuid

    text = row_id.strip().lower()
    if not _UUID.match(text.strip("{}")):
        raise UsageError(f"--id {row_id!r} is not a UUID; every audited table's id is one.",
                         "Pass the row's id as PostgreSQL shows it, e.g. --id 5f0c2a4e-8d1b-4c3e-9a57-0d2a3b4c5d6e.")
    return {"id": str(uuid.UUID(text))}


# -- connection --------------------------------------------------------------------------------------------------

def _open(settings: Settings, *, direct: bool):
    """(connection, url, setting). The direct URL when there is one: the app's role (DATABASE_URL behind
    PgBouncer, in the role model of `celora db roles`) holds no privilege on audit_log at all; the migration role
    owns it. Both reading and pruning work through PgBouncer too (no session state), when that is all there is."""
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
    import psycopg
    from psycopg.types.json import Jsonb

    _check_limit(limit)
    since_at = parse_since(since) if since else None
    key = _row_key(row_id) if row_id else None
    where: list[str] = []
    params: list[Any] = []
    if table:
        where.append("table_name = %s")
        params.append(table)
    if row_id:
        where.append("row_key = %s")
        params.append(Jsonb(key))
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
    conn, url, setting = _open(settings, direct=True)
    filters = {"table": table, "id": key["id"] if key else None,
               "since": since_at.isoformat() if since_at else None, "actor": actor}
    result = AuditResult(url.masked, filters, limit=limit)
    try:
        with translating(url, setting):
            if table:
                _check_table(conn, table)
            try:
                for row in conn.execute(sql, [*params, limit]):
                    result.entries.append(AuditEntry(*row))
            except psycopg.errors.InsufficientPrivilege as exc:
                raise DatabaseError(
                    f"The role of {setting} ({url.username or 'default'}) may not read audit_log: {exc}.",
                    "By design the app's role holds no privilege on the audit log. Read it as the migration role "
                    "(set DIRECT_DATABASE_URL) or a member of the readonly group (`celora db roles "
                    "--grant-readonly LOGIN`).", sqlstate="42501") from exc
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
            pruned_through = 0
            while last is not None:
                with conn.transaction():
                    deleted = conn.execute(
                        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE id <= %s AND "
                        "changed_at < %s ORDER BY id LIMIT %s)", (last, cutoff, batch_size)).rowcount
                if deleted == 0:
                    break
                result.deleted += deleted
                result.batches += 1
                pruned_through = last
            if result.deleted:
                with conn.transaction():  # the chain says entries up to here may be gone (--verify reads it)
                    record_prune(conn, pruned_through, result.deleted)
    finally:
        conn.close()
    return result


def _environment(conn, database_environment) -> str | None:
    try:
        return database_environment(conn)
    except Exception:  # noqa: BLE001 - no stamp table readable: treated as unstamped, CELORA_ENV still decides
        return None


__all__ = ["AuditEntry", "AuditResult", "PrunePlan", "PruneResult", "history", "parse_since", "prune"]
