"""The migration journal: one row per migration run, so the database says what ran, when, from which file, and how.

Prisma's `_prisma_migrations`, with what it lacks: who ran it (OS user, host, celora version, the database role and
the application name of the connection), rolled-back migrations, and checksums that `migrate-deploy` verifies before
it runs anything (Flyway's validate).

`celora_migrations` is created on demand (IF NOT EXISTS) by the migration runtime in the migration schema (the URL's
?schema=, else the first schema of the search_path), outside the Alembic history, like celora_metadata: every
database gets it, whatever its revision, and autogenerate, drift and schema comparisons ignore it.

Rows, one per event (newest id wins for a revision):
- `applied`: written by the runtime in the migration's own transaction, so it commits or rolls back with it;
- `failed`: written after the failed migration's transaction was rolled back, in a short transaction of its own,
  with the (masked) error, so the failure is on record although the migration left nothing behind;
- `rolled_back`: a downgrade (`celora db rollback`, `alembic downgrade`), in the downgrade's transaction;
- `resolved_applied` / `resolved_rolled_back`: a human's verdict recorded by `celora db resolve`;
- `baseline` = true on an `applied` row: the migration was applied before the journal existed (or outside celora);
  `migrate-deploy` records the checksum of the file as it is now and has no start time or duration for it.

Functions take an open connection: a SQLAlchemy Connection (the migration runtime's, so statements go through its
events and take the migration lock) or a plain psycopg one (`celora db status`). No SQLAlchemy import here.
"""

from __future__ import annotations

import datetime
import functools
import getpass
import hashlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from celora_cli import __version__
from celora_cli.config.settings import mask_url

JOURNAL_TABLE = "celora_migrations"
APPLIED = "applied"
FAILED = "failed"
ROLLED_BACK = "rolled_back"
RESOLVED_APPLIED = "resolved_applied"
RESOLVED_ROLLED_BACK = "resolved_rolled_back"
STATUSES = (APPLIED, FAILED, ROLLED_BACK, RESOLVED_APPLIED, RESOLVED_ROLLED_BACK)
# Statuses that leave the migration applied (its changes are in the database).
APPLIED_STATUSES = (APPLIED, RESOLVED_APPLIED)
_ERROR_LIMIT = 4000

_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} ("
    " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " revision text NOT NULL,"
    " name text NOT NULL,"
    " checksum text,"  # SHA-256 (hex) of the migration file's bytes; NULL when the file was not at hand
    f" status text NOT NULL CHECK (status IN ({', '.join(repr(s) for s in STATUSES)})),"
    " baseline boolean NOT NULL DEFAULT false,"
    " started_at timestamptz,"
    " finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    " duration_ms double precision,"
    " error text,"
    " os_user text,"
    " host text,"
    " celora_version text,"
    " db_user text NOT NULL DEFAULT current_user,"
    " application_name text DEFAULT current_setting('application_name'))"
)
_INDEX = f"CREATE INDEX IF NOT EXISTS {JOURNAL_TABLE}_revision_idx ON {JOURNAL_TABLE} (revision, id)"
_COMMENT = (f"COMMENT ON TABLE {JOURNAL_TABLE} IS 'celora migration journal (not a model; outside the migration "
            "history): one row per migration run, with the SHA-256 of its file.'")
_EXISTS = (
    # pg_class read with this statement's snapshot (as celora_cli.migrate.status.read_current does), in the
    # schemas of the search_path: the table the unqualified name resolves to, if there is one.
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    f" WHERE c.relname = '{JOURNAL_TABLE}' AND c.relkind = 'r' AND n.nspname = ANY (current_schemas(false)))"
)
_COLUMNS = ("id", "revision", "name", "checksum", "status", "baseline", "started_at", "finished_at", "duration_ms",
            "error", "os_user", "host", "celora_version", "db_user", "application_name")
_INSERT = (f"INSERT INTO {JOURNAL_TABLE} (revision, name, checksum, status, baseline, started_at, duration_ms,"
           " error, os_user, host, celora_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


@dataclass(frozen=True)
class JournalEntry:
    id: int
    revision: str
    name: str
    checksum: str | None
    status: str
    baseline: bool
    started_at: datetime.datetime | None
    finished_at: datetime.datetime
    duration_ms: float | None
    error: str | None
    os_user: str | None
    host: str | None
    celora_version: str | None
    db_user: str | None
    application_name: str | None

    @property
    def applied(self) -> bool:
        return self.status in APPLIED_STATUSES


@dataclass(frozen=True)
class LocalFile:
    """A migration of the local history: what the journal's rows are checked against."""

    revision: str
    name: str
    path: Path


@dataclass
class Assessment:
    """The journal read against the local files and alembic_version."""

    latest: dict[str, JournalEntry] = field(default_factory=dict)  # revision -> its newest row
    modified: list[tuple[LocalFile, JournalEntry]] = field(default_factory=list)  # applied, file changed since
    missing: list[JournalEntry] = field(default_factory=list)  # applied per the journal, no local file
    unrecorded: list[LocalFile] = field(default_factory=list)  # applied per alembic_version, no applied row
    failed: list[JournalEntry] = field(default_factory=list)  # newest row 'failed' (not resolved since)


# One process asks for the same files' checksums several times (`db migrate`: the drift check's snapshot key, two
# deploys' journal checks, the new snapshot's key): a long history was hashed again each time. Keyed by the file's
# size and modification time, so an edited file is hashed again.
_CHECKSUMS: dict[tuple[str, int, int], str] = {}


def remember_checksum(path: Path, stat: os.stat_result, digest: str) -> None:
    """The SHA-256 of a file a caller has just read (celora_cli.migrate.script_loader reads every revision file),
    so checksum() does not read it again; `stat` taken before the read, so a later change misses the memo."""
    _CHECKSUMS[(str(path), stat.st_mtime_ns, stat.st_size)] = digest


def checksum(path: Path) -> str | None:
    """SHA-256 of the file's bytes (hex), None when it can't be read."""
    try:
        stat = os.stat(path)
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in _CHECKSUMS:
            _CHECKSUMS[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        return _CHECKSUMS[key]
    except OSError:
        return None


def _execute(conn, sql: str, params: tuple = ()):
    """One statement on a SQLAlchemy Connection (through its events) or on a psycopg connection (%s placeholders)."""
    if hasattr(conn, "exec_driver_sql"):
        return conn.exec_driver_sql(sql, params) if params else conn.exec_driver_sql(sql)
    return conn.execute(sql, params) if params else conn.execute(sql)


def journal_exists(conn) -> bool:
    return bool(_execute(conn, _EXISTS).fetchone()[0])


def ensure_journal(conn) -> None:
    """Create the journal when it is missing (in the caller's transaction; on the migration connection the
    migration lock serialises creators, so IF NOT EXISTS never races)."""
    if journal_exists(conn):
        return
    _execute(conn, _CREATE)
    _execute(conn, _INDEX)
    _execute(conn, _COMMENT)


@functools.cache
def who() -> tuple[str | None, str | None, str]:
    """(OS user, host, celora version) of this process (looked up once: a long deploy writes many rows)."""
    try:
        user: str | None = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in the environment nor in the password database (containers)
        user = None
    try:
        host: str | None = socket.gethostname()
    except OSError:
        host = None
    return user, host, __version__


def record(conn, *, revision: str, name: str, status: str, checksum: str | None,
           started_at: datetime.datetime | None = None, duration_ms: float | None = None,
           error: str | None = None, baseline: bool = False, ensure: bool = True) -> None:
    """Append one row (creating the journal if needed) in the caller's transaction; the caller commits.

    `ensure=False`: the caller knows the journal exists (one catalog query less per migration of a long run)."""
    if status not in STATUSES:
        raise ValueError(f"unknown journal status {status!r}")
    if ensure:
        ensure_journal(conn)
    user, host, version = who()
    if error is not None:
        error = mask_url(error)[:_ERROR_LIMIT]
    duration = None if duration_ms is None else round(duration_ms, 1)
    _execute(conn, _INSERT, (revision, name, checksum, status, baseline, started_at, duration, error, user, host,
                             version))


def read_entries(conn) -> list[JournalEntry]:
    """Every row, oldest first; [] when the journal does not exist yet (a database older than it)."""
    if not journal_exists(conn):
        return []
    rows = _execute(conn, f"SELECT {', '.join(_COLUMNS)} FROM {JOURNAL_TABLE} ORDER BY id").fetchall()
    return [JournalEntry(*row) for row in rows]


def latest_by_revision(entries: Iterable[JournalEntry]) -> dict[str, JournalEntry]:
    latest: dict[str, JournalEntry] = {}
    for entry in entries:  # oldest first: the newest row of a revision wins
        latest[entry.revision] = entry
    return latest


def assess(entries: list[JournalEntry], applied: Iterable[LocalFile], known: set[str],
           repointed: dict[str, tuple[str, str]] | None = None) -> Assessment:
    """Compare the journal with the local history.

    `applied`: the local files of the revisions alembic_version says are applied; `known`: every revision of the
    local history (and those a squash replaced). A file is modified when its checksum differs from the one recorded
    when it was applied (or resolved), unless `celora db squash` re-pointed it (`repointed`: revision -> its
    SHA-256 before and after the squash edited its down_revision) and it is still both; a journal row saying
    applied for a revision with no local file is missing."""
    latest = latest_by_revision(entries)
    result = Assessment(latest=latest)
    repointed = repointed or {}
    for local in applied:
        entry = latest.get(local.revision)
        if entry is None or not entry.applied:
            result.unrecorded.append(local)
        elif entry.checksum is not None and entry.checksum != (now := checksum(local.path)) and \
                repointed.get(local.revision) != (entry.checksum, now):
            result.modified.append((local, entry))
    result.missing = [e for e in latest.values() if e.applied and e.revision not in known]
    result.failed = [e for e in latest.values() if e.status == FAILED]
    return result


def record_baseline(conn, unrecorded: Iterable[LocalFile]) -> list[str]:
    """Record migrations applied before the journal existed: status applied, baseline, no start time; the
    checksum of the file as it is now. Returns their names."""
    names = []
    for local in unrecorded:
        record(conn, revision=local.revision, name=local.name, status=APPLIED, checksum=checksum(local.path),
               baseline=True)
        names.append(local.name)
    return names


def changed_files_message(assessment: Assessment) -> str | None:
    """Why deploy refuses (modified or missing applied migrations), or None when the files match the journal."""
    parts = []
    for local, entry in assessment.modified:
        parts.append(f"{local.path} (applied {_when(entry)} with SHA-256 {(entry.checksum or '')[:12]}..., the file "
                     f"now has {(checksum(local.path) or 'no readable content')[:12]}...)")
    for entry in assessment.missing:
        parts.append(f"{entry.name} (applied {_when(entry)}, no such file in the local history)")
    if not parts:
        return None
    kinds = []
    if assessment.modified:
        kinds.append("changed since it was applied" if len(assessment.modified) == 1 else "changed since applied")
    if assessment.missing:
        kinds.append("missing locally")
    return f"Applied migration file(s) {' and '.join(kinds)}: {'; '.join(parts)}."


def _when(entry: JournalEntry) -> str:
    stamp = entry.started_at or entry.finished_at
    return f"{'as a baseline ' if entry.baseline else ''}on {stamp:%Y-%m-%d %H:%M:%S %Z}".strip()


__all__ = ["APPLIED", "APPLIED_STATUSES", "FAILED", "JOURNAL_TABLE", "RESOLVED_APPLIED", "RESOLVED_ROLLED_BACK",
           "ROLLED_BACK", "STATUSES", "Assessment", "JournalEntry", "LocalFile", "assess", "changed_files_message",
           "checksum", "ensure_journal", "journal_exists", "read_entries", "record", "record_baseline"]
