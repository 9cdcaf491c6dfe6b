"""`celora db migrate-deploy --plan`: what a deploy would do to the live database, found out without doing it.

For each pending migration, each statement as Alembic renders it offline (the renderer `celora db lint` uses,
celora_cli.migrate.lint_render), with the tables it touches, the lock it takes, whether it rewrites or fully scans
the table (celora_cli.migrate.plan_statements) and that table's size and row estimate; the live sessions a deploy
would queue behind (celora_cli.migrate.plan_sessions); the lint findings; the drift the caller found; a verdict.

Read-only and before any lock: the plan runs in READ ONLY transactions, takes no advisory lock, and reads only the
catalogs, pg_locks, pg_stat_activity, alembic_version and the journal. Sizes come from pg_class (relpages and
reltuples, as of the last VACUUM or ANALYZE), not pg_total_relation_size(), which opens the table with a lock and
so would queue behind the very session the plan is meant to report. lock_timeout bounds any wait anyway.
`locks_taken` lists what the plan's own transactions held, as evidence.

Drift is an input (`differences`): migrate must not import schema, which knows how to find it; the CLI passes it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from psycopg import errors

from celora_cli.config.settings import Settings, setting_name
from celora_cli.db.connect import connect, resolve_urls
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError, ExitCode
from celora_cli.migrate import journal
from celora_cli.migrate.lint_rules import UNRENDERABLE, Finding, RenderedMigration
from celora_cli.migrate.plan_markdown import count_text as _count
from celora_cli.migrate.plan_markdown import markdown
from celora_cli.migrate.plan_markdown import size_text as _size
from celora_cli.migrate.plan_sessions import LiveActivity, LiveSession, Visibility, own_locks, read_activity
from celora_cli.migrate.plan_statements import BLOCKS, Catalog, TableEffect, classify, conflicts
from celora_cli.migrate.scripts import find_migrations_dir
from celora_cli.migrate.status import MigrationStatus, load_history, migration_state, with_journal
from celora_cli.results import fields_json

# The plan never waits long for anything: a catalog row locked by someone's DDL is the only thing it could meet.
_PLAN_LOCK_TIMEOUT_MS = 2000

_TABLES = """
SELECT t.wanted, c.oid, c.relkind, c.relname, n.nspname,
       CASE WHEN c.reltuples >= 0 THEN c.reltuples::float8 END,
       (c.relpages::bigint + COALESCE(toast.relpages, 0)
        + COALESCE((SELECT sum(i.relpages) FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i
                    ON i.oid = x.indexrelid WHERE x.indrelid = c.oid), 0))
       * current_setting('block_size')::bigint
FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(wanted, schema_name, table_name)
LEFT JOIN pg_catalog.pg_class c ON c.oid = to_regclass(
    CASE WHEN t.schema_name IS NULL THEN quote_ident(t.table_name)
         ELSE quote_ident(t.schema_name) || '.' || quote_ident(t.table_name) END)
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class toast ON toast.oid = c.reltoastrelid
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
"""

_FUNCTIONS = """
SELECT p.proname, max(p.provolatile::text) FROM pg_catalog.pg_proc p WHERE p.proname = ANY(%s::text[])
GROUP BY p.proname
"""  # 'v' > 's' > 'i': any volatile overload counts as volatile

_INDEXES = """
SELECT i.relname, n.nspname, t.relname, tn.nspname
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace
JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
WHERE i.relname = ANY(%s::text[])
"""


@dataclass(frozen=True)
class TableInfo:
    name: str  # as the migrations name it
    exists: bool  # False: not in the database yet (created by an earlier pending statement) or a typo
    oid: int | None = None
    kind: str | None = None  # pg_class.relkind: r table, p partitioned, m materialized view
    rows: int | None = None  # pg_class.reltuples; None: never vacuumed or analyzed
    size_bytes: int | None = None  # heap, TOAST and indexes, from pg_class.relpages


@dataclass(frozen=True)
class Blocker:
    """A live session a pending statement would wait behind (and with it every query that comes after)."""

    pid: int | None
    application: str | None
    user: str | None
    state: str | None
    transaction_age_s: float | None
    table: str  # or "(migration lock)": another migrate-deploy holds or awaits celora's advisory lock
    holds: str  # the lock it holds or is queued for, e.g. "ACCESS SHARE"
    granted: bool  # False: it is itself queued, ahead of the deploy
    needed: str  # the lock the pending statement needs, e.g. "ACCESS EXCLUSIVE"
    migration: str  # the first pending migration that needs it
    hidden: bool = False  # another role's session: its state and age are not visible to this role


@dataclass(frozen=True)
class PlannedEffect:
    table: str
    lock: str
    blocks: str  # what waits while the lock is held
    rewrite: bool
    scan: bool
    reason: str
    created: bool
    rows: int | None
    size_bytes: int | None
    over_threshold: bool  # a rewrite or write-blocking scan of a table over CELORA_PLAN_REWRITE_THRESHOLD
    blocked_by: list[int | None] = field(default_factory=list)  # pids


@dataclass(frozen=True)
class PlannedStatement:
    sql: str
    line: int | None  # the line of the migration file that emitted it
    outside_transaction: bool  # in autocommit_block(): runs without the migration's transaction
    action: str
    understood: bool
    effects: list[PlannedEffect] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedMigration:
    revision: str
    name: str
    statements: list[PlannedStatement] = field(default_factory=list)


@dataclass
class DeployPlan:
    database: str  # masked URL
    current: tuple[str, ...]
    head: str | None
    migrations: list[PlannedMigration] = field(default_factory=list)
    tables: list[TableInfo] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)
    long_transactions: list[LiveSession] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    lint_note: str | None = None  # why the migrations were not linted (squawk missing)
    drift: list | None = None  # differences at the current revision; None: not checked
    drift_note: str | None = None  # why drift was not checked
    files_changed: tuple[str, ...] = ()  # applied migrations whose file changed or is missing: deploy refuses
    visibility: Visibility = field(default_factory=lambda: Visibility(True, 0, ""))
    rewrite_threshold_bytes: int = 0
    long_transaction_s: float = 0.0
    locks_taken: list[str] = field(default_factory=list)
    not_analysed: int = 0  # statements whose locks are unknown (DO blocks, function calls...)

    @property
    def pending(self) -> bool:
        return bool(self.migrations)

    @property
    def heavy(self) -> list[tuple[PlannedMigration, PlannedEffect]]:
        return [(m, e) for m in self.migrations for s in m.statements for e in s.effects if e.over_threshold]

    @property
    def exit_code(self) -> int:
        if self.files_changed:
            return ExitCode.MIGRATION_HISTORY
        if self.drift:
            return ExitCode.DRIFT
        if self.blockers:
            return ExitCode.PLAN_BLOCKED
        if self.heavy:
            return ExitCode.PLAN_REWRITE
        return ExitCode.PENDING if self.pending else ExitCode.OK

    @property
    def verdict(self) -> str:
        """One line: what a deploy now would do, and every reason not to (the exit code follows the first)."""
        problems = []
        if self.files_changed:
            problems.append(f"refused: applied migration file(s) changed or missing ({', '.join(self.files_changed)})"
                            "; migrate-deploy would apply nothing")
        if self.drift:
            problems.append(f"drift: the database differs from the history at its revision in {len(self.drift)} "
                            "place(s); migrate-deploy's drift gate would refuse")
        if self.blockers:
            who = ", ".join(dict.fromkeys(
                f"pid {b.pid} ({b.application or 'no application_name'}) on {b.table}" for b in self.blockers))
            problems.append(f"would wait: live session(s) hold or await conflicting locks: {who}")
        if self.heavy:
            locks: dict[str, list[str]] = {}
            for _, e in self.heavy:
                locks.setdefault(e.table, []).append(e.lock)
            sizes = {e.table: e for _, e in self.heavy}
            what = ", ".join(f"{t} ({_size(sizes[t].size_bytes)}, ~{_count(sizes[t].rows)} rows, under "
                             f"{' then '.join(dict.fromkeys(each))})" for t, each in locks.items())
            problems.append(f"would rewrite or scan, blocking writes, table(s) over "
                            f"{_size(self.rewrite_threshold_bytes)}: {what}")
        if problems:
            return "; ".join(problems)
        if self.pending:
            unknown = [f"{self.not_analysed} statement(s) not analysed (their locks are unknown)"] \
                if self.not_analysed else []
            if any(f.rule == UNRENDERABLE.name for f in self.findings):
                unknown.append("a migration could not be rendered offline, so it and the ones after it were not "
                               "analysed")
            if unknown:
                return f"{len(self.migrations)} migration(s) pending; nothing found against deploying, but " + \
                    "; ".join(unknown)
            return f"{len(self.migrations)} migration(s) pending, safe to deploy now"
        return "nothing pending: the database is at head"

    def to_json(self) -> dict:
        return {**fields_json(self), "pending": self.pending, "verdict": self.verdict,
                "exit_code": int(self.exit_code), "markdown": markdown(self)}


def plan_deploy(settings: Settings, *, differences: list | None = None, drift_note: str | None = None) -> DeployPlan:
    """The plan for `migrate-deploy` now. `differences`: the drift at the current revision as the caller found it
    (None with `drift_note` saying why when it was not checked)."""
    from celora_cli.migrate.lint import lint
    from celora_cli.migrate.lint_render import render_revisions

    migrations_dir = find_migrations_dir(settings)
    history = load_history(migrations_dir)  # a broken history is reported before anything connects
    urls = resolve_urls(settings)
    url = urls.direct or urls.pooled
    setting = setting_name(settings) if urls.direct else "DATABASE_URL"
    with translating(url, setting), connect(url, settings, application_name="celora migrate-deploy --plan",
                                            autocommit=False, watch_silence=True) as conn:
        conn.read_only = True  # every transaction of this connection: BEGIN READ ONLY
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (str(_PLAN_LOCK_TIMEOUT_MS),))
        status = _status(conn, settings, history)
        plan = DeployPlan(database=url.masked, current=status.current, head=status.head, drift=differences,
                          drift_note=drift_note, files_changed=(*status.modified, *status.missing),
                          rewrite_threshold_bytes=settings.plan_rewrite_threshold,
                          long_transaction_s=settings.plan_long_transaction)
        plan.locks_taken = own_locks(conn)
        conn.commit()
        pending = [m.revision for m in status.pending]
        rendered: list[RenderedMigration] = []
        if pending:
            rendered, problem = render_revisions(settings, pending)
            try:
                plan.findings = lint(settings, rendered=(rendered, problem)).findings
            except ConfigError as exc:  # squawk missing: the plan stands without its findings, and says so
                plan.lint_note = f"The pending migrations were not linted: {exc.message}"
                if problem is not None:
                    plan.findings = [problem]
        _analyse(conn, plan, rendered, settings)
        plan.locks_taken = sorted({*plan.locks_taken, *own_locks(conn)})
        conn.commit()
    return plan


def _status(conn, settings: Settings, history) -> MigrationStatus:
    status = migration_state(conn, settings, history)
    try:
        with conn.transaction():  # a savepoint: a role that can't read the journal still gets the plan
            entries, exists = journal.read_entries(conn), journal.journal_exists(conn)
    except errors.InsufficientPrivilege as exc:
        logging.getLogger("celora.notice").info(
            f"Can't read the migration journal {journal.JOURNAL_TABLE} ({str(exc).splitlines()[0]}); the plan "
            "does not check that applied migration files are unchanged.")
        return status
    return with_journal(status, history, entries, exists)


def _analyse(conn, plan: DeployPlan, rendered: list[RenderedMigration], settings: Settings) -> None:
    """Classify every statement with what the catalogs say, then look at who is running now."""
    texts = [s.sql for m in rendered for s in m.statements]
    # First pass without the catalogs: which tables, functions and indexes the statements name.
    names = sorted({e.table for sql in texts for st in classify(sql) for e in st.effects})
    tables = _tables(conn, names)
    by_oid = {t.oid: t for t in tables.values() if t.oid is not None}
    catalog = Catalog(column_types=_column_types(conn, tables), volatility=_volatility(conn, texts),
                      index_tables=_index_tables(conn, texts))
    extra = sorted({t for t in catalog.index_tables.values() if t not in tables})
    tables.update(_tables(conn, extra))
    by_oid.update({t.oid: t for t in tables.values() if t.oid is not None})
    activity = read_activity(conn, sorted(by_oid), settings.plan_long_transaction)
    plan.visibility = activity.visibility
    plan.long_transactions = activity.long_transactions
    touched: set[str] = set()
    for migration in rendered:
        statements = []
        for statement in migration.statements:
            for effect in classify(statement.sql, catalog):
                planned = [_planned(e, tables, activity, plan, migration) for e in effect.effects]
                touched.update(e.table for e in effect.effects)
                plan.not_analysed += not effect.understood
                statements.append(PlannedStatement(effect.sql, statement.line, statement.outside_transaction,
                                                   effect.action, effect.understood, planned))
        plan.migrations.append(PlannedMigration(migration.revision, migration.name, statements))
    plan.tables = [tables[name] for name in sorted(touched) if name in tables]
    _migration_lock_blockers(plan, activity)


def _names_after(sql: str, keyword: str) -> list[str]:
    """Candidate index names (DROP INDEX x, REINDEX INDEX x): the identifiers after `keyword`."""
    found = re.findall(rf"\b{keyword}\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?([A-Za-z_][\w$]*|\"[^\"]+\")", sql,
                       re.IGNORECASE)
    return [n[1:-1] if n.startswith('"') else n.lower() for n in found
            if n.upper() not in ("IF", "CONCURRENTLY", "ONLY")]


def _tables(conn, names: list[str]) -> dict[str, TableInfo]:
    if not names:
        return {}
    split = [name.rsplit(".", 1) if "." in name else [None, name] for name in names]
    rows = conn.execute(_TABLES, (names, [s[0] for s in split], [s[1] for s in split])).fetchall()
    found = {}
    for wanted, oid, kind, _relname, _schema, rows_estimate, size in rows:
        if oid is None or kind not in ("r", "p", "m", "f"):
            found[wanted] = TableInfo(wanted, False)
            continue
        found[wanted] = TableInfo(wanted, True, int(oid), kind,
                                  None if rows_estimate is None else int(rows_estimate),
                                  int(size) if size is not None else None)
    return found


def _column_types(conn, tables: dict[str, TableInfo]) -> dict[str, str]:
    oids = {t.oid: name for name, t in tables.items() if t.oid is not None}
    if not oids:
        return {}
    return {f"{oids[oid]}.{column}": type_ for oid, column, type_
            in conn.execute(_COLUMNS, (sorted(oids),)).fetchall()}


def _volatility(conn, texts: list[str]) -> dict[str, str]:
    called = sorted({name.lower() for sql in texts for name in re.findall(r"([A-Za-z_][\w$]*)\s*\(", sql)})
    if not called:
        return {}
    return dict(conn.execute(_FUNCTIONS, (called,)).fetchall())


def _index_tables(conn, texts: list[str]) -> dict[str, str]:
    wanted = sorted({n for sql in texts for n in _names_after(sql, "INDEX")})
    if not wanted:
        return {}
    found: dict[str, str] = {}
    for index, schema, table, table_schema in conn.execute(_INDEXES, (wanted,)).fetchall():
        target = table if table_schema == "public" else f"{table_schema}.{table}"
        found.setdefault(index, target)
        found.setdefault(f"{schema}.{index}", target)
    return found


def _planned(effect: TableEffect, tables: dict[str, TableInfo], activity: LiveActivity, plan: DeployPlan,
             migration: RenderedMigration) -> PlannedEffect:
    table = tables.get(effect.table)
    exists = table is not None and table.exists and not effect.created
    rows = table.rows if exists and table else None
    size = table.size_bytes if exists and table else None
    heavy = bool(exists and effect.stalls_writes and size is not None and size > plan.rewrite_threshold_bytes)
    blocked_by: list[int | None] = []
    if exists and table is not None:
        for lock in activity.locks:
            if lock.table_oid != table.oid or not conflicts(effect.lock, lock.mode):
                continue
            blocked_by.append(lock.pid)
            if not any(b.pid == lock.pid and b.table == effect.table and b.needed == effect.lock
                       for b in plan.blockers):
                session = activity.sessions.get(lock.pid) if lock.pid is not None else None
                plan.blockers.append(_blocker(lock.pid, session, effect.table, lock.mode, lock.granted,
                                              effect.lock, migration.name))
    return PlannedEffect(effect.table, effect.lock, BLOCKS[effect.lock], effect.rewrite, effect.scan or effect.rewrite,
                         effect.reason, effect.created or (table is not None and not table.exists), rows, size,
                         heavy, blocked_by)


def _blocker(pid: int | None, session: LiveSession | None, table: str, holds: str, granted: bool, needed: str,
             migration: str) -> Blocker:
    if session is None:  # a prepared transaction, or a session that ended between the two reads
        return Blocker(pid, None, None, None, None, table, holds, granted, needed, migration)
    return Blocker(pid, session.application, session.user, session.state, session.transaction_age_s, table, holds,
                   granted, needed, migration, session.hidden)


def _migration_lock_blockers(plan: DeployPlan, activity: LiveActivity) -> None:
    """Another migrate-deploy holding (or queued for) the migration lock: this deploy would wait for it first."""
    if not plan.migrations:
        return
    for pid, granted in activity.migration_lock:
        session = activity.sessions.get(pid) if pid is not None else None
        plan.blockers.append(_blocker(pid, session, "(migration lock)", "advisory", granted, "advisory",
                                      plan.migrations[0].name))
