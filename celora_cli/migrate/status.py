"""Current vs head: which migrations are applied, which are pending, and what the journal says about them.

The one implementation, for every caller: `celora db status` and `db health` (a plain psycopg connection, the
history read by `celora_cli.migrate.history`) and deploy and rollback (their SQLAlchemy migration connection and the
ScriptDirectory the run loaded, `status_on`). `celora db status` and `db health` answer many times a day and when
paged; Alembic's import alone costs more than the answer, so this module imports neither Alembic nor SQLAlchemy
(the history falls back to Alembic's ScriptDirectory only for files it cannot read literally).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from psycopg import errors

from celora_cli.config.settings import Settings, setting_name
from celora_cli.db.connect import connect, resolve_urls
from celora_cli.db.errors import translating
from celora_cli.errors import ExitCode, MigrationFailed, MigrationHistoryError
from celora_cli.migrate import journal
from celora_cli.migrate.history import History, NotLiteral, RevisionFile, read_history
from celora_cli.migrate.scripts import MigrationInfo, find_migrations_dir, path_of, read_heads, revisions_of
from celora_cli.results import fields_json

# pg_class read with this statement's snapshot: fresh even in a transaction that began before another runner
# created the table (to_regclass could answer from a stale catalog cache), in the schemas of the search_path.
_VERSION_TABLE_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
    " ON n.oid = c.relnamespace WHERE c.relname = 'alembic_version'"
    " AND n.nspname = ANY (current_schemas(false)))")


@dataclass(frozen=True)
class AppliedState:
    """An applied migration as the journal (celora_migrations) records it."""

    revision: str
    name: str
    applied_at: str | None  # ISO 8601 (UTC) when its run started (a resolve: when it was recorded); None: a
    # baseline, or not in the journal
    duration_ms: float | None
    status: str  # applied, resolved_applied, or "unrecorded" (no journal row: applied before the journal existed)
    baseline: bool
    modified: bool  # the file's SHA-256 differs from the one recorded when it was applied
    applied_by: str | None  # os_user@host


@dataclass(frozen=True)
class FailedState:
    revision: str
    name: str
    failed_at: str | None
    error: str | None


@dataclass(frozen=True)
class SquashState:
    """A revision written by `celora db squash`: it stands for the revisions it replaces (whose files are gone)."""

    revision: str
    name: str
    replaces: tuple[str, ...]


@dataclass(frozen=True)
class MigrationStatus:
    current: tuple[str, ...]  # revisions recorded in alembic_version (empty: never migrated)
    head: str | None
    pending: tuple[MigrationInfo, ...]
    # From the journal (filled by `celora db status`; empty when it was not read or does not exist yet):
    applied: tuple[AppliedState, ...] = ()
    failed: tuple[FailedState, ...] = ()  # newest run failed and no `db resolve` since
    modified: tuple[str, ...] = ()  # names of applied migrations whose file changed since
    missing: tuple[str, ...] = ()  # names of migrations the journal says are applied that have no local file
    journal: bool = False  # whether the database has the journal table
    squashes: tuple[SquashState, ...] = ()  # squashed revisions of the history, oldest first
    # The database is at the last revision a squash replaced (alembic_version names a file that is gone): it holds
    # what the squash creates, and the next migrate-deploy records it as at this squash (celora_cli.migrate.squash).
    recorded_as: str | None = None

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    @property
    def files_changed(self) -> bool:
        """migrate-deploy would refuse (exit 14)."""
        return bool(self.modified or self.missing)

    @property
    def exit_code(self) -> int:
        return ExitCode.MIGRATION_HISTORY if self.files_changed else ExitCode.PENDING if self.pending else ExitCode.OK

    def to_json(self) -> dict:
        return {**fields_json(self), "up_to_date": self.up_to_date, "files_changed": self.files_changed}


def read_current(conn, *, maybe_missing: bool = True) -> tuple[str, ...]:
    """alembic_version's revisions, sorted; () when the table does not exist (never migrated).

    `conn`: a psycopg connection (status, health) or a SQLAlchemy Connection (the migration runtime, whose
    statements go to its driver as they are)."""
    execute = getattr(conn, "exec_driver_sql", None) or conn.execute
    if maybe_missing and not execute(_VERSION_TABLE_EXISTS).fetchone()[0]:
        return ()
    return tuple(sorted(row[0] for row in execute("SELECT version_num FROM alembic_version").fetchall()))


def load_history(migrations_dir: Path) -> History:
    """The history from the files; Alembic's reading of it when a file is not plain literals."""
    try:
        return read_history(migrations_dir / "versions")
    except NotLiteral:
        return _history_from_alembic(migrations_dir)


def _history_from_alembic(migrations_dir: Path) -> History:
    # on demand: only a history whose files are not plain literals needs Alembic
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    try:
        return history_from_script(ScriptDirectory.from_config(config), migrations_dir)
    except MigrationHistoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Alembic raises KeyError, CommandError, SyntaxError... for bad files
        raise MigrationHistoryError(
            f"The migration history in {migrations_dir} can't be loaded: {type(exc).__name__}: {exc}.",
            "Fix the migration file it names (`alembic history` shows the same error), then run again.",
        ) from None


def history_from_script(script, migrations_dir: Path) -> History:
    """The History of an Alembic ScriptDirectory (its revision map loaded, or loaded here). Built once per state of
    the map (kept on the script until a revision is added to it): status, deploy and squash ask it several times
    a run."""
    heads = read_heads(script, migrations_dir)
    scripts = revisions_of(script)
    memo = getattr(script, "_celora_history", None)
    if memo is not None and memo[0] == (len(scripts), heads):
        return memo[1]
    revisions = {
        s.revision: RevisionFile(s.revision, tuple(s._versioned_down_revisions),
                                 tuple(r for r in s._all_down_revisions if r not in s._versioned_down_revisions),
                                 tuple(s.branch_labels), path_of(s), (s.doc or "").strip(), replaces_of(s),
                                 repointed_of(s))
        for s in scripts
    }
    history = History(revisions, heads)
    script._celora_history = ((len(scripts), heads), history)
    return history


def replaces_of(script) -> tuple[str, ...]:
    """An Alembic Script's `replaces` (celora db squash's module attribute), as a tuple of ids. Read from the
    file's literals when the script has them (celora_cli.migrate.script_loader), without importing it."""
    value = _attribute(script, "replaces")
    if isinstance(value, str):
        return (value,)
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, (tuple, list)) else ()


def repointed_of(script) -> tuple[tuple[str, str, str], ...]:
    """An Alembic Script's `repointed` (celora db squash's module attribute)."""
    value = _attribute(script, "repointed") or ()
    return tuple((v[0], v[1], v[2]) for v in value if isinstance(v, (tuple, list)) and len(v) == 3
                 and all(isinstance(x, str) for x in v)) if isinstance(value, (tuple, list)) else ()


def _attribute(script, name: str):
    literal = getattr(script, "literal", None)  # a LazyScript: what the file assigns, its module not imported
    return literal.get(name) if literal is not None else getattr(script.module, name, None)


def squashed_position(current: tuple[str, ...], history: History, migrations_dir: Path) -> str | None:
    """The squash a database at a replaced revision is recorded as, or None when alembic_version names no replaced
    revision. Only the last revision of a squash's range can be recorded so (it holds what the squash creates);
    a database inside the range is refused: the squash alone cannot bring it forward."""
    replaced = history.replaced
    at_replaced = [revision for revision in current if revision in replaced]
    if not at_replaced:
        return None
    if len(current) == 1:
        squash = history.revisions[replaced[current[0]]]
        if squash.replaces[-1] == current[0]:
            return squash.revision
    revision = at_replaced[0]
    squash = history.revisions[replaced[revision]]
    raise MigrationHistoryError(
        f"The database is at revision {revision}, inside the range squashed into {squash.name} ({squash.replaces[0]} "
        f"to {squash.replaces[-1]}); this history no longer has the files that bring it to {squash.replaces[-1]}, "
        "and the squashed migration would create what the database already has. Nothing was run.",
        f"Deploy the history as it was before the squash (a checkout from before it: `git log -- "
        f"{migrations_dir / 'versions'}`) to bring this database past {squash.replaces[-1]}, then this one. Keep "
        "the old migration files until every database has passed the squashed range.")


def status_from(current: tuple[str, ...], history: History, migrations_dir: Path) -> MigrationStatus:
    if len(history.heads) > 1:
        raise MigrationHistoryError(
            f"The migration history in {migrations_dir} has {len(history.heads)} heads "
            f"({', '.join(sorted(history.heads))}).",
            "Merge them into one (`alembic merge heads -m merge`) before deploying.",
        )
    head = history.heads[0] if history.heads else None
    squashes = tuple(SquashState(r.revision, r.name, r.replaces) for r in history.applied(history.heads)
                     if r.replaces) if any(r.replaces for r in history.revisions.values()) else ()
    recorded_as = squashed_position(current, history, migrations_dir)
    effective = (recorded_as,) if recorded_as else current
    unknown = history.unknown(effective)
    if unknown:
        raise MigrationFailed(
            f"The database is at revision {', '.join(unknown)}, which is not in this project's migration history "
            f"({migrations_dir}; head {head}). The database is ahead of, or diverged from, the code.",
            "Deploy the code that contains that migration, or check DATABASE_URL points at the right database.",
            revision=unknown[0],
        )
    pending = tuple(MigrationInfo(r.revision, r.name, r.doc) for r in history.pending(effective))
    return MigrationStatus(current=current, head=head, pending=pending, squashes=squashes, recorded_as=recorded_as)


def status_on(conn, settings: Settings, script) -> MigrationStatus:
    """Current vs head on the migration connection (a SQLAlchemy Connection; leaves no transaction open), with
    the ScriptDirectory the run already loaded."""
    current = read_current(conn)
    conn.rollback()
    migrations_dir = find_migrations_dir(settings)
    return status_from(current, history_from_script(script, migrations_dir), migrations_dir)


def migration_state(conn, settings: Settings, history: History | None = None) -> MigrationStatus:
    """Current vs head on an open psycopg connection (autocommit, or the caller ends the transaction).
    `history`: already loaded (callers load it before connecting, so broken files fail first)."""
    migrations_dir = find_migrations_dir(settings)
    history = history or load_history(migrations_dir)
    return status_from(read_current(conn), history, migrations_dir)


def migration_status(settings: Settings) -> MigrationStatus:
    """`celora db status`: read-only, so it may use the pooled URL when there is no direct one."""
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
    applied = [journal.LocalFile(r.revision, r.name, r.path)
               for r in history.applied((status.recorded_as,) if status.recorded_as else status.current)]
    # A replaced revision's rows are no missing file: the squash that replaced it stands for it.
    assessment = journal.assess(entries, applied, set(history.revisions) | set(history.replaced),
                                history.repointed)
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
