"""`celora db reset` and `celora db rollback`: the destructive migration operations.

Both go through the one migration runtime (celora_cli.migrate.runtime): the direct URL, a refusal when a
pooler answers on it, no app statement timeout, and the migration lock taken by every transaction. Both read
first (what will be lost, the database's environment stamp), hand that plan to `confirm` (the CLI passes the
guard, celora_cli.safety.guard.confirm_destructive), and change nothing unless it returns.

Reset drops every object of the migration schema one by one rather than `DROP SCHEMA ... CASCADE`: the schema
itself keeps its owner, grants, default privileges and comment, which a re-created schema would lose (and
`public` belongs to pg_database_owner since PostgreSQL 15, which the app's role may not be able to recreate).
Extensions installed in the schema are dropped with it, as a dropped schema would, so that a migration that
creates one runs again cleanly. Everything is dropped in one transaction: a failure leaves the database as it was.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import CeloraError, ConfigError, DatabaseError, MigrationFailed, Refused
from celora_cli.migrate.runtime import ProgressCallback, RevisionMoved
from celora_cli.results import to_json

# Counting stops here: a confirmation needs "a lot", not the exact size of a large table.
_COUNT_CAP = 1_000_000


@dataclass(frozen=True)
class TableRows:
    name: str
    rows: int  # _COUNT_CAP + 1 means "more than _COUNT_CAP"

    def describe(self) -> str:
        rows = f"more than {_COUNT_CAP:,}" if self.rows > _COUNT_CAP else f"{self.rows:,}"
        return f"{self.name} ({rows} row{'' if self.rows == 1 else 's'})"


@dataclass(frozen=True)
class ResetPlan:
    database: str  # masked URL
    schema: str
    tables: tuple[TableRows, ...]
    database_env: str | None  # the celora_metadata stamp

    def losses(self) -> list[str]:
        return [f"table {t.describe()}" for t in self.tables]


@dataclass
class ResetResult:
    database: str
    schema: str
    dropped: dict[str, int] = field(default_factory=dict)  # kind -> how many
    tables: list[TableRows] = field(default_factory=list)  # what they held before the reset
    applied: list = field(default_factory=list)  # AppliedMigration, re-applied after the drop
    head: str | None = None
    environment: str | None = None  # the stamp after the reset
    seed: str = "skipped"  # "skipped", "done", "no fixtures folder (<path>)" or "not available yet"
    seed_result: dict | None = None


@dataclass(frozen=True)
class MigrationRef:
    revision: str
    name: str


@dataclass(frozen=True)
class RollbackPlan:
    database: str
    current: tuple[str, ...]
    target: str  # a revision id, or "base"
    undo: tuple[MigrationRef, ...]  # newest first, the order they are undone
    database_env: str | None

    def losses(self) -> list[str]:
        return [f"migration {m.name} is undone (what it created, and the data in it, is dropped)" for m in self.undo]


@dataclass(frozen=True)
class UndoneMigration:
    revision: str
    name: str
    duration_ms: float


@dataclass
class RollbackResult:
    database: str
    target: str
    undone: list[UndoneMigration] = field(default_factory=list)
    current: tuple[str, ...] = ()
    waited_for_lock_s: float = 0.0


Confirm = Callable[[object], None]  # receives the ResetPlan / RollbackPlan; raises Refused to stop


# -- shared set-up ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def migration_connection(settings: Settings, command: str):
    """The migration runtime's connection (direct URL, pooler refusal), database errors translated."""
    from celora_cli.db.errors import translating
    from celora_cli.migrate.runtime import migration_engine, open_migration_connection

    engine, url, setting = migration_engine(settings, f"celora {command} {socket.gethostname()}:{os.getpid()}")
    try:
        with translating(url, setting):
            conn = open_migration_connection(engine, url, setting)
            try:
                yield conn, url
            finally:
                conn.close()  # ends any transaction, and with it the migration lock
    finally:
        engine.dispose()


def _lock_timeout(settings: Settings, lock_timeout: float | None) -> float:
    if lock_timeout is None:
        return settings.lock_timeout
    from celora_cli.config.settings import LOCK_TIMEOUT_LIMITS, validate_seconds

    return validate_seconds(lock_timeout, "lock_timeout", minimum=LOCK_TIMEOUT_LIMITS[0],
                            maximum=LOCK_TIMEOUT_LIMITS[1])


def _moved(exc: RevisionMoved, command: str) -> Refused:
    return Refused(f"Stopped before changing anything: {exc}.",
                   f"Another runner changed the database after the plan was made; run `celora db {command}` again.")


# -- reset -----------------------------------------------------------------------------------------------

def reset(settings: Settings, *, confirm: Confirm, lock_timeout: float | None = None,
          progress: ProgressCallback | None = None, run_seed: bool = True,
          allow_production: bool = False) -> ResetResult:
    """Drop every object of the migration schema, re-apply every migration, then seed (when available).

    The migration history is loaded first: a broken history fails before anything is dropped."""
    from celora_cli.migrate.deploy import deploy, script_directory
    from celora_cli.migrate.runtime import MigrationLock
    from celora_cli.safety.stamp import stamp_environment

    timeout = _lock_timeout(settings, lock_timeout)
    script_directory(settings)  # MigrationHistoryError now, not after the drop
    with migration_connection(settings, "db reset") as (conn, url):
        plan = reset_plan(conn, url.masked)
        conn.rollback()
        confirm(plan)
        MigrationLock(timeout, progress).install(conn)  # the next transaction (the drop) takes the lock
        dropped = drop_schema_objects(conn, plan.schema)
        # The stamp went with the tables: put it back at once (same transaction), so a failure in the
        # migrations below cannot leave a production database unprotected.
        stamp_environment(conn, plan.database_env or settings.env)
        conn.commit()
    result = ResetResult(database=plan.database, schema=plan.schema, dropped=dropped, tables=list(plan.tables))
    deployed = deploy(settings, lock_timeout=timeout, progress=progress)
    result.applied = list(deployed.applied)
    result.head = deployed.head
    result.environment = _read_stamp(settings)
    if run_seed:
        result.seed, result.seed_result = _seed(settings, allow_production=allow_production)
    return result


def reset_plan(conn, masked: str) -> ResetPlan:
    from celora_cli.safety.stamp import database_environment

    schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
    if schema is None:
        raise ConfigError(
            "No schema of the search_path exists in this database, so there is nothing to reset "
            "(current_schema() is NULL).",
            "Check the URL's ?schema= parameter, or create the schema first.")
    rows = conn.exec_driver_sql(
        "SELECT format('%%I.%%I', n.nspname, c.relname), c.relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        + _not_extension_member("pg_class", "c.oid") + " ORDER BY c.relname", (schema,)).fetchall()
    tables = []
    for qualified, name in rows:
        count = unparsed(conn, f"SELECT count(*) FROM (SELECT 1 FROM {qualified} LIMIT {_COUNT_CAP + 1}) t")[0]
        tables.append(TableRows(name, int(count)))
    return ResetPlan(database=masked, schema=schema, tables=tuple(tables), database_env=database_environment(conn))


def unparsed(conn, sql: str):
    """A statement holding quoted identifiers, on the transaction the SQLAlchemy Connection has open, sent to
    psycopg without parameters so that nothing reads a '%' in a name as a placeholder; its first row, if any."""
    assert conn.in_transaction()  # begun by SQLAlchemy, so the migration lock is held
    cursor = conn.connection.driver_connection.execute(sql)
    return cursor.fetchone() if cursor.description else None


def _not_extension_member(catalog: str, oid: str) -> str:
    """Objects that belong to an extension go with the extension, never one by one."""
    return (f" AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_catalog.{catalog}'::regclass"
            f" AND d.objid = {oid} AND d.deptype = 'e')")


# (kind, statement template, query listing the objects' identities in schema %s)
_DROPS: tuple[tuple[str, str, str], ...] = (
    ("extensions", "DROP EXTENSION IF EXISTS {} CASCADE",
     "SELECT format('%%I', e.extname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
     " WHERE n.nspname = %s"),
    ("views", "DROP VIEW IF EXISTS {} CASCADE",
     "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
     " WHERE n.nspname = %s AND c.relkind = 'v'" + _not_extension_member("pg_class", "c.oid")),
    ("materialized views", "DROP MATERIALIZED VIEW IF EXISTS {} CASCADE",
     "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
     " WHERE n.nspname = %s AND c.relkind = 'm'" + _not_extension_member("pg_class", "c.oid")),
    ("tables", "DROP TABLE IF EXISTS {} CASCADE",
     "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
     " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
     + _not_extension_member("pg_class", "c.oid")),
    ("foreign tables", "DROP FOREIGN TABLE IF EXISTS {} CASCADE",
     "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
     " WHERE n.nspname = %s AND c.relkind = 'f'" + _not_extension_member("pg_class", "c.oid")),
    ("sequences", "DROP SEQUENCE IF EXISTS {} CASCADE",
     "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
     " WHERE n.nspname = %s AND c.relkind = 'S'" + _not_extension_member("pg_class", "c.oid")),
    ("routines", "DROP ROUTINE IF EXISTS {} CASCADE",
     "SELECT format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))"
     " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
     " WHERE n.nspname = %s" + _not_extension_member("pg_proc", "p.oid")),
    ("domains", "DROP DOMAIN IF EXISTS {} CASCADE",
     "SELECT format('%%I.%%I', n.nspname, t.typname) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
     " WHERE n.nspname = %s AND t.typtype = 'd'" + _not_extension_member("pg_type", "t.oid")),
    # enum, range and stand-alone composite types (a table's row type goes with its table)
    ("types", "DROP TYPE IF EXISTS {} CASCADE",
     "SELECT format('%%I.%%I', n.nspname, t.typname) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
     " WHERE n.nspname = %s AND (t.typtype IN ('e', 'r')"
     "  OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))"
     + _not_extension_member("pg_type", "t.oid")),
)

# What may be left in the schema after the drops: anything here makes the reset stop (rolled back).
_LEFTOVERS = (
    "SELECT 'relation ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = %(schema)s" + _not_extension_member("pg_class", "c.oid") +
    " UNION ALL SELECT 'type ' || t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
    " WHERE n.nspname = %(schema)s" + _not_extension_member("pg_type", "t.oid") +
    " UNION ALL SELECT 'routine ' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname = %(schema)s" + _not_extension_member("pg_proc", "p.oid") +
    " UNION ALL SELECT 'operator ' || o.oprname FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace"
    " WHERE n.nspname = %(schema)s" + _not_extension_member("pg_operator", "o.oid") +
    " UNION ALL SELECT 'collation ' || k.collname FROM pg_collation k JOIN pg_namespace n ON n.oid = k.collnamespace"
    " WHERE n.nspname = %(schema)s" + _not_extension_member("pg_collation", "k.oid") +
    " UNION ALL SELECT 'text search configuration ' || f.cfgname FROM pg_ts_config f"
    " JOIN pg_namespace n ON n.oid = f.cfgnamespace WHERE n.nspname = %(schema)s"
    + _not_extension_member("pg_ts_config", "f.oid") +
    " ORDER BY 1 LIMIT 20"
)


def drop_schema_objects(conn, schema: str) -> dict[str, int]:
    """Drop every object of `schema` in the current transaction (the caller commits); {kind: count}."""
    dropped: dict[str, int] = {}
    for kind, statement, listing in _DROPS:
        names = [row[0] for row in conn.exec_driver_sql(listing, (schema,)).fetchall()]
        for name in names:
            unparsed(conn, statement.format(name))
        if names:
            dropped[kind] = len(names)
    leftovers = [row[0] for row in conn.exec_driver_sql(_LEFTOVERS, {"schema": schema}).fetchall()]
    if leftovers:
        conn.rollback()
        raise DatabaseError(
            f"The reset stopped and was rolled back (nothing was dropped): schema {schema} still holds objects "
            f"celora does not know how to drop ({', '.join(leftovers)}).",
            "Drop those by hand (they were not created by the migrations), then run `celora db reset` again.")
    return dropped


def _read_stamp(settings: Settings) -> str | None:
    from celora_cli.safety.stamp import database_environment

    with migration_connection(settings, "db reset") as (conn, _url):
        stamp = database_environment(conn)
        conn.rollback()
        return stamp


def _seed(settings: Settings, *, allow_production: bool) -> tuple[str, dict | None]:
    """The fixtures of <project root>/fixtures, loaded by `celora db seed`'s core (celora_cli.data.seed.apply)."""
    import logging

    try:
        from celora_cli.data.seed.apply import seed
    except ImportError:  # a build without the seed package
        return "not available yet", None
    fixtures = settings.project_root / "fixtures"
    if not fixtures.is_dir():
        return f"no fixtures folder ({fixtures})", None
    logging.getLogger("celora.notice").info(f"Reset done; seeding the fixtures from {fixtures}.")
    # The reset has passed the guard already (production included): the seed must not ask again.
    return "done", to_json(seed(settings, fixtures, allow_production=allow_production))


# -- rollback --------------------------------------------------------------------------------------------

def rollback(settings: Settings, *, steps: int | None = None, to: str | None = None, confirm: Confirm,
             lock_timeout: float | None = None, progress: ProgressCallback | None = None) -> RollbackResult:
    """Undo the last `steps` migrations, or down to revision `to` ("base": all), under the migration lock."""
    from celora_cli.migrate.deploy import alembic_config, script_directory, status_on
    from celora_cli.migrate.runtime import MigrationLock
    from celora_cli.safety.stamp import database_environment

    if (steps is None) == (to is None):
        raise ConfigError("Give either --steps N or --to REVISION (not both, not neither).",
                          "e.g. `celora db rollback --steps 1` or `celora db rollback --to 20261126090000`.")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be 1 or more (got {steps}).", "e.g. `celora db rollback --steps 1`.")
    timeout = _lock_timeout(settings, lock_timeout)
    progress = progress or (lambda kind, data: None)
    config = alembic_config(settings)
    script = script_directory(settings, config)
    with migration_connection(settings, "db rollback") as (conn, url):
        status = status_on(conn, settings, script=script)
        plan = _rollback_plan(script, status.current, steps, to, url.masked, database_environment(conn))
        conn.rollback()
        result = RollbackResult(database=plan.database, target=plan.target, current=status.current)
        if not plan.undo:
            return result
        confirm(plan)
        lock = MigrationLock(timeout, progress).install(conn)
        lock.expected = status.current  # the first transaction re-reads it under the lock
        try:
            _downgrade_on(conn, lock, config, script, settings, plan, result, progress)
        except RevisionMoved as exc:
            raise _moved(exc, "rollback") from exc
        finally:
            result.waited_for_lock_s = round(lock.waited_s, 3)
    return result


def _rollback_plan(script, current: tuple[str, ...], steps: int | None, to: str | None, masked: str,
                   database_env: str | None) -> RollbackPlan:
    if not current:
        raise ConfigError(f"Nothing to roll back: no migration is applied to {masked}.",
                              "Apply migrations first with `celora db migrate-deploy`.")
    if len(current) > 1:
        raise MigrationFailed(f"The database is at several revisions ({', '.join(current)}); celora rolls back "
                              "one line of history only.", "Roll back by hand with `alembic downgrade`.")
    applied = [MigrationRef(s.revision, Path(s.path).stem) for s in script.iterate_revisions(current[0], "base")]
    if steps is not None:
        if steps > len(applied):
            raise ConfigError(
                f"--steps {steps}: can't roll back {steps} migration(s): only {len(applied)} are applied to {masked} "
                f"({', '.join(m.name for m in applied)}).",
                f"Use --steps {len(applied)} (or --to base) to undo all of them.")
        undo = applied[:steps]
        target = applied[steps].revision if steps < len(applied) else "base"
        return RollbackPlan(masked, current, target, tuple(undo), database_env)
    assert to is not None
    target = _resolve_target(script, to)
    if target == "base":
        return RollbackPlan(masked, current, "base", tuple(applied), database_env)
    position = next((i for i, m in enumerate(applied) if m.revision == target), None)
    if position is None:
        raise ConfigError(
            f"--to {to}: revision {target} is not below the database's current revision {current[0]}, so "
            "rolling back to it would be an upgrade.",
            "Use `celora db migrate-deploy` to go forward; `celora db status` shows where the database is.")
    return RollbackPlan(masked, current, target, tuple(applied[:position]), database_env)


def _resolve_target(script, to: str) -> str:
    """A revision id, a unique prefix, a file name as `db status` shows it (20261126090000_init), or base."""
    from alembic.util.exc import CommandError

    wanted = to.strip()
    if not wanted:
        raise ConfigError("--to is empty: it needs a revision to roll back to.",
                          "Pass a revision id or file name from `celora db status`, or base.")
    if wanted == "base":
        return "base"
    by_name = [s.revision for s in script.walk_revisions() if Path(s.path).stem == wanted.removesuffix(".py")]
    if by_name:  # the file name wins: it holds the id whatever its form (a timestamp, Alembic's hex)
        return by_name[0]
    candidates = [wanted, wanted.split("_", 1)[0]] if "_" in wanted else [wanted]
    for candidate in candidates:
        try:
            found = script.get_revision(candidate)
        except (CommandError, AssertionError):  # Alembic asserts on some non-ids ("@")
            found = None
        if found is not None:
            return found.revision
    known = ", ".join(Path(s.path).stem for s in script.walk_revisions())
    raise ConfigError(f"--to {to!r}: no such revision in the migration history (known: {known}).",
                      "Pass a revision id or file name from `celora db status` or `alembic history`, or base.")


def _downgrade_on(conn, lock, config, script, settings: Settings, plan: RollbackPlan, result: RollbackResult,
                  progress: ProgressCallback) -> None:
    from alembic.runtime.environment import EnvironmentContext

    from celora_cli.db.errors import connection_lost, migration_failure
    from celora_cli.migrate.deploy import find_migrations_dir

    names = {m.revision: m.name for m in plan.undo}
    last = [time.perf_counter()]

    def on_undone(*, ctx, step, heads, run_args):
        now = time.perf_counter()
        undone = UndoneMigration(step.up_revision_id, names.get(step.up_revision_id, step.up_revision_id),
                                 round((now - last[0]) * 1000, 1))
        last[0] = now
        result.undone.append(undone)
        progress("undone", undone)

    def downgrade(rev, context):
        return script._downgrade_revs(plan.target, rev)  # what command.downgrade passes as fn

    config.attributes["connection"] = conn
    config.attributes["on_version_apply"] = on_undone
    try:
        with EnvironmentContext(config, script, fn=downgrade, as_sql=False, starting_rev=None,
                                destination_rev=plan.target, tag=None):
            script.run_env()
    except (CeloraError, RevisionMoved):
        raise
    except Exception as exc:  # any failure inside a downgrade is reported the same way
        with contextlib.suppress(Exception):
            conn.rollback()
        done = {m.revision for m in result.undone}
        failed = next((m for m in plan.undo if m.revision not in done), plan.undo[-1])
        at = ", ".join(lock.expected or ()) or "base"
        state, detail = migration_failure(exc)
        message = (f"Undoing migration {failed.name} failed: {detail}. Its downgrade was rolled back; the database "
                   f"is at {at}.")
        hint = (f"Fix downgrade() in {find_migrations_dir(settings) / 'versions' / failed.name}.py and run "
                "`celora db rollback` again.")
        if connection_lost(exc):  # nobody could roll back or check: say what PostgreSQL guarantees, no more
            message = (f"Undoing migration {failed.name} was interrupted: {detail}. PostgreSQL rolls back a "
                       f"transaction that did not commit, so the database is at {at}, unless the connection broke "
                       "during the commit itself (`celora db status` shows where it is).")
            hint = ("The downgrade is not at fault: check that the database server is up (it may have crashed or "
                    "restarted), then run `celora db rollback` again.")
        raise MigrationFailed(message, hint, revision=failed.revision, sqlstate=state,
                              applied=list(result.undone)) from exc
    finally:
        config.attributes.pop("connection", None)
        config.attributes.pop("on_version_apply", None)
    result.current = lock.expected or ()


__all__ = ["ResetPlan", "ResetResult", "RollbackPlan", "RollbackResult", "TableRows", "UndoneMigration", "reset",
           "rollback"]
