"""Current vs head on a plain psycopg connection, without importing Alembic or SQLAlchemy.

`celora db status` and `celora db health` answer "which migrations are applied, which are pending" many times
a day and when paged; Alembic's import alone costs more than the answer. This reads `alembic_version` with
psycopg and the history with `celora_cli.migrate.history` (which agrees with Alembic, tested), and falls back to
Alembic's ScriptDirectory only for a history it cannot read literally.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import MigrationFailed, MigrationHistoryError
from celora_cli.migrate import journal
from celora_cli.migrate.deploy import (
    AppliedState,
    FailedState,
    MigrationInfo,
    MigrationStatus,
    find_migrations_dir,
)
from celora_cli.migrate.history import History, NotLiteral, RevisionFile, read_history


def load_history(migrations_dir: Path) -> History:
    """The history from the files; Alembic's reading of it when a file is not plain literals."""
    try:
        return read_history(migrations_dir / "versions")
    except NotLiteral:
        return _history_from_alembic(migrations_dir)


def _history_from_alembic(migrations_dir: Path) -> History:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from celora_cli.migrate.runtime import read_heads

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    try:
        script = ScriptDirectory.from_config(config)
        heads = read_heads(script, migrations_dir)
        scripts = list(script.walk_revisions())
    except MigrationHistoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Alembic raises KeyError, CommandError, SyntaxError... for bad files
        raise MigrationHistoryError(
            f"The migration history in {migrations_dir} can't be loaded: {type(exc).__name__}: {exc}.",
            "Fix the migration file it names (`alembic history` shows the same error), then run again.",
        ) from None
    revisions = {
        s.revision: RevisionFile(s.revision, tuple(s._versioned_down_revisions),
                                 tuple(r for r in s._all_down_revisions if r not in s._versioned_down_revisions),
                                 tuple(s.branch_labels), Path(s.path), (s.doc or "").strip())
        for s in scripts
    }
    return History(revisions, heads)


def read_current(conn) -> tuple[str, ...]:
    """The revisions in alembic_version (empty when the table does not exist yet: never migrated)."""
    exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return ()
    rows = conn.execute("SELECT version_num FROM alembic_version ORDER BY version_num").fetchall()
    return tuple(row[0] for row in rows)


def status_from(current: tuple[str, ...], history: History, migrations_dir: Path) -> MigrationStatus:
    if len(history.heads) > 1:
        raise MigrationHistoryError(
            f"The migration history in {migrations_dir} has {len(history.heads)} heads "
            f"({', '.join(sorted(history.heads))}).",
            "Merge them into one (`alembic merge heads -m merge`) before deploying.",
        )
    head = history.heads[0] if history.heads else None
    unknown = history.unknown(current)
    if unknown:
        raise MigrationFailed(
            f"The database is at revision {', '.join(unknown)}, which is not in this project's migration history "
            f"({migrations_dir}; head {head}). The database is ahead of, or diverged from, the code.",
            "Deploy the code that contains that migration, or check DATABASE_URL points at the right database.",
            revision=unknown[0],
        )
    pending = tuple(MigrationInfo(r.revision, r.name, r.doc) for r in history.pending(current))
    return MigrationStatus(current=current, head=head, pending=pending)


def migration_state(conn, settings: Settings, history: History | None = None) -> MigrationStatus:
    """Current vs head on an open psycopg connection (autocommit, or the caller ends the transaction).
    `history`: already loaded (callers load it before connecting, so broken files fail first)."""
    migrations_dir = find_migrations_dir(settings)
    history = history or load_history(migrations_dir)
    return status_from(read_current(conn), history, migrations_dir)


def migration_status(settings: Settings) -> MigrationStatus:
    """`celora db status`: read-only, so it may use the pooled URL when there is no direct one."""
    from celora_cli.db.connect import connect, resolve_urls
    from celora_cli.db.errors import translating
    from celora_cli.migrate.deploy import setting_name

    migrations_dir = find_migrations_dir(settings)
    history = load_history(migrations_dir)  # a broken history is reported before anything connects
    urls = resolve_urls(settings)
    url = urls.direct or urls.pooled
    setting = setting_name(settings) if urls.direct else "DATABASE_URL"
    with translating(url, setting), connect(url, settings, application_name="celora db status",
                                            watch_silence=True) as conn:
        status = status_from(read_current(conn), history, migrations_dir)
        return with_journal(status, history, *_read_journal(conn))


def _read_journal(conn) -> tuple[list[journal.JournalEntry], bool]:
    """The journal's rows and whether it could be read. A role that may read alembic_version but not the journal
    (created by the migration role) still gets current vs pending, with a notice instead of the journal."""
    import logging

    from psycopg import errors

    try:
        return journal.read_entries(conn), journal.journal_exists(conn)
    except errors.InsufficientPrivilege as exc:
        logging.getLogger("celora.notice").info(
            f"Can't read the migration journal {journal.JOURNAL_TABLE} ({str(exc).splitlines()[0]}); showing "
            f"alembic_version only. Grant this role SELECT on {journal.JOURNAL_TABLE} to see when each migration "
            "was applied.")
        return [], False


def with_journal(status: MigrationStatus, history: History, entries: list[journal.JournalEntry],
                 exists: bool) -> MigrationStatus:
    """`status` with what the journal says: when each applied migration ran, failures, changed or missing files."""
    applied_revisions = history._in_order(history._ancestors(status.current))  # oldest first
    applied = [journal.LocalFile(r.revision, r.name, r.path) for r in applied_revisions]
    assessment = journal.assess(entries, applied, set(history.revisions))
    modified = {local.revision for local, _entry in assessment.modified}
    states = []
    for local in applied:
        entry = assessment.latest.get(local.revision)
        recorded = entry is not None and entry.applied
        states.append(AppliedState(
            revision=local.revision, name=local.name,
            # a resolve has no start: the time it was recorded; a baseline has no known time at all
            applied_at=_iso(entry.started_at or entry.finished_at) if recorded and entry and not entry.baseline
            else None,
            duration_ms=entry.duration_ms if recorded and entry else None,
            status=entry.status if recorded and entry else "unrecorded",
            baseline=bool(recorded and entry and entry.baseline),
            modified=local.revision in modified,
            applied_by=_by(entry) if recorded and entry else None))
    failed = tuple(FailedState(e.revision, e.name, _iso(e.started_at or e.finished_at), e.error)
                   for e in assessment.failed)
    return dataclasses.replace(
        status, applied=tuple(states), failed=failed,
        modified=tuple(local.name for local, _entry in assessment.modified),
        missing=tuple(e.name for e in assessment.missing), journal=exists)


def _iso(moment) -> str | None:
    return None if moment is None else moment.astimezone(datetime.UTC).isoformat(timespec="seconds")


def _by(entry: journal.JournalEntry) -> str | None:
    if not entry.os_user and not entry.host:
        return None
    return f"{entry.os_user or '?'}@{entry.host or '?'}"
