"""`celora db reset`: every object of the migration schema dropped, every migration re-applied, the fixtures seeded.

It goes through the one migration runtime (celora_cli.migrate.connection, .lock): the direct URL, a refusal when a
pooler answers on it, no app statement timeout, and the migration lock taken by every transaction. It reads first
(what will be lost, the database's environment stamp), hands that plan to `confirm` (the CLI passes the guard,
celora_cli.safety.guard.confirm_destructive), and changes nothing unless it returns.

Reset drops every object of the migration schema one by one rather than `DROP SCHEMA ... CASCADE`: the schema
itself keeps its owner, grants, default privileges and comment, which a re-created schema would lose (and
`public` belongs to pg_database_owner since PostgreSQL 15, which the app's role may not be able to recreate).
Extensions installed in the schema are dropped with it, as a dropped schema would, so that a migration that
creates one runs again cleanly. Everything is dropped in one transaction: a failure leaves the database as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError, DatabaseError
from celora_cli.migrate.connection import migration_connection, unparsed
from celora_cli.migrate.deploy import deploy
from celora_cli.migrate.lock import MigrationLock, ProgressCallback, checked_lock_timeout
from celora_cli.migrate.scripts import script_directory
from celora_cli.results import to_json
from celora_cli.safety.stamp import database_environment, stamp_environment

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


Confirm = Callable[[ResetPlan], None]  # raises Refused to stop


def reset(settings: Settings, *, confirm: Confirm, lock_timeout: float | None = None,
          progress: ProgressCallback | None = None, run_seed: bool = True,
          allow_production: bool = False) -> ResetResult:
    """Drop every object of the migration schema, re-apply every migration, then seed (when available).

    The migration history is loaded first: a broken history fails before anything is dropped."""
    timeout = checked_lock_timeout(settings, lock_timeout, "lock_timeout")
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
    with migration_connection(settings, "db reset") as (conn, _url):
        stamp = database_environment(conn)
        conn.rollback()
        return stamp


def _seed(settings: Settings, *, allow_production: bool) -> tuple[str, dict | None]:
    """The fixtures of <project root>/fixtures, loaded by `celora db seed`'s core (celora_cli.data.seed.apply)."""
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


__all__ = ["ResetPlan", "ResetResult", "TableRows", "reset"]
