"""The protected-environment record: the database says which environment it belongs to (Rails' ar_internal_metadata).

`celora_metadata` is a key/value table created on demand in the migration schema (the URL's ?schema=, else
the first schema of the search_path), outside the Alembic history, so every database gets it, whatever its
revision. `migrate-deploy` (and `migrate`) write CELORA_ENV into it after a successful run; the guard of the
destructive commands (celora_cli.safety.guard) reads it, so a developer whose CELORA_ENV says "development" is still
stopped on a database that was deployed as production.

A production stamp is sticky: a later deploy with another CELORA_ENV keeps it (and says so on the
`celora.notice` logger). A developer laptop with the default CELORA_ENV=development that deploys to production
must not turn production's protection off. To re-purpose such a database on purpose (a production dump
restored as staging), delete the row: `DELETE FROM celora_metadata WHERE key = 'environment'`.

Reading it for the guard (`database_environment`): the stamp describes the database, not a schema, so it is
read in every schema that holds a celora_metadata table, whatever the URL's ?schema= or search_path says, and
the strictest answer wins: production if any schema says so. A URL that points its search path elsewhere must
not turn the answer into "not stamped" (issue 16: `db restore` replaces the whole database, `db changes --drop`
a cluster-wide slot, on that answer). The per-schema commands (reset, rollback, push, seed, resolve, studio,
audit --prune, migrate) read it the same way, on purpose: they act on one schema, but a schema of a production
database holds production data too, and a developer's scratch schema inside a production database is the
exception worth one `--allow-production`, not the rule. Only the writer (`stamp_environment`) works per schema:
it keeps the stamp of the schema it migrates.

A celora_metadata table this role may not read (no USAGE on its schema, no SELECT on it) could say production:
the database is then treated as production (fail closed), and a notice names the schema.

Functions take an open connection: a SQLAlchemy Connection (the migration runtime's) or a plain psycopg one.
Writes are committed by the caller (a SQLAlchemy Connection) or by the psycopg connection's own mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from celora_cli.safety.production import PRODUCTION

METADATA_TABLE = "celora_metadata"
ENVIRONMENT_KEY = "environment"

# written_at, not updated_at: the schema's rule that every updated_at column has the trigger is for app tables.
_COLUMNS = " (key text PRIMARY KEY, value text NOT NULL, written_at timestamptz NOT NULL DEFAULT now())"
_CREATE = f"CREATE TABLE IF NOT EXISTS {METADATA_TABLE}{_COLUMNS}"
_COMMENT = (f"COMMENT ON TABLE {METADATA_TABLE} IS 'celora bookkeeping (not a model; outside the migration "
            "history): environment = the CELORA_ENV this database was deployed as.'")
_UPSERT = (
    f"INSERT INTO {METADATA_TABLE} (key, value) VALUES (%s, %s)"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, written_at = now()"
    f" WHERE {METADATA_TABLE}.value IS DISTINCT FROM EXCLUDED.value"
)
_EXISTS = (
    # pg_class read with this statement's snapshot (as migration_runtime.read_current does), in the schemas
    # of the search_path: the table celora_metadata resolves to, if there is one.
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    f" WHERE c.relname = '{METADATA_TABLE}' AND c.relkind = 'r' AND n.nspname = ANY (current_schemas(false)))"
)

# Every schema's celora_metadata (temporary tables aside: another session's, or this one's, say nothing about the
# database), with whether this role may read it, the schemas of the search path first, in its order.
_EVERY_TABLE = (
    "SELECT n.nspname, has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT'),"
    " array_position(current_schemas(false), n.nspname::text)"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    f" WHERE c.relname = '{METADATA_TABLE}' AND c.relkind IN ('r', 'p') AND c.relpersistence <> 't'"
    " ORDER BY 3 NULLS LAST, 1"
)
# The statement reading one schema's stamp, quoted by the server (format %I): a name holding '%' or a quote is
# never pasted into SQL by celora. Run without parameters, so that no driver reads a '%' in it as a placeholder.
_READ_ONE = (f"SELECT format('SELECT value FROM %%I.{METADATA_TABLE} WHERE key = %%L', %s::text, "
             f"'{ENVIRONMENT_KEY}')")

notice = logging.getLogger("celora.notice")


@dataclass(frozen=True)
class StampReading:
    """Every environment stamp in the database, as the guard reads it."""

    stamps: dict[str, str | None] = field(default_factory=dict)  # schema -> its value (None: table, no row)
    unreadable: tuple[str, ...] = ()  # schemas whose celora_metadata this role may not read
    search_path: tuple[str, ...] = ()  # the schemas above that are on the connection's search path

    @property
    def environment(self) -> str | None:
        """Production if any schema says so, or a stamp could not be read; else the search path's stamp (the
        first schema of the path that has one), else any other schema's."""
        values = [value for value in self.stamps.values() if value is not None]
        if PRODUCTION in values or self.unreadable:
            return PRODUCTION
        for schema in self.search_path:
            if self.stamps.get(schema) is not None:
                return self.stamps[schema]
        return values[0] if values else None

    def explanation(self) -> str | None:
        """Why the answer is not simply the search path's stamp (for a notice), or None."""
        if self.unreadable:
            names = ", ".join(self.unreadable)
            return (f"{METADATA_TABLE} in schema {names} exists but this role may not read it (no USAGE on the "
                    f"schema or no SELECT on the table), so it may say '{PRODUCTION}': the database is treated as "
                    f"'{PRODUCTION}'. Grant SELECT on it to this role, or run as the role that migrates.")
        elsewhere = [s for s, v in self.stamps.items() if v == PRODUCTION and s not in self.search_path]
        if elsewhere:
            return (f"{METADATA_TABLE} in schema {', '.join(elsewhere)} (outside this connection's search path) "
                    f"says '{PRODUCTION}': the whole database is treated as '{PRODUCTION}'.")
        return None


def _execute(conn, sql: str, params: tuple = ()):
    """One statement on a SQLAlchemy Connection (through its events, so the migration lock is taken) or on a
    psycopg connection. Both speak psycopg's %s placeholders here."""
    if hasattr(conn, "exec_driver_sql"):
        return conn.exec_driver_sql(sql, params) if params else conn.exec_driver_sql(sql)
    return conn.execute(sql, params) if params else conn.execute(sql)


def _unparsed(conn, sql: str):
    """A statement sent without parameters: psycopg then reads no '%' in it as a placeholder (a SQLAlchemy
    Connection is told so with no_parameters)."""
    if hasattr(conn, "exec_driver_sql"):
        return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
    return conn.execute(sql)


def read_stamps(conn) -> StampReading:
    """Every schema's environment stamp (see the module docstring), read schema-qualified."""
    stamps: dict[str, str | None] = {}
    unreadable: list[str] = []
    search_path: list[str] = []
    for schema, readable, position in _execute(conn, _EVERY_TABLE).fetchall():
        if position is not None:
            search_path.append(schema)
        if not readable:
            unreadable.append(schema)
            continue
        statement = _execute(conn, _READ_ONE, (schema,)).fetchone()[0]
        row = _unparsed(conn, statement).fetchone()
        stamps[schema] = row[0] if row else None
    return StampReading(stamps, tuple(unreadable), tuple(search_path))


def database_environment(conn) -> str | None:
    """The environment the guard must assume for this database: 'production' when any schema's celora_metadata
    says so (or one cannot be read), else the stamp found, else None (never stamped). A notice says why when the
    answer does not come from the search path's own stamp."""
    reading = read_stamps(conn)
    explanation = reading.explanation()
    if explanation:
        notice.info(explanation)
    return reading.environment


def schema_environment(conn) -> str | None:
    """The stamp of the search path's celora_metadata only (the table `stamp_environment` writes), or None."""
    if not _execute(conn, _EXISTS).fetchone()[0]:
        return None
    row = _execute(conn, f"SELECT value FROM {METADATA_TABLE} WHERE key = %s", (ENVIRONMENT_KEY,)).fetchone()
    return row[0] if row else None


def stamp_environment(conn, environment: str) -> str:
    """Record `environment` (CELORA_ENV) as the database's; returns the stamp now in force.

    A production stamp is kept when `environment` is another one (see the module docstring). The caller commits
    (a SQLAlchemy Connection); on the migration connection the statements run under the migration lock."""
    current = schema_environment(conn)
    if current == PRODUCTION and environment != PRODUCTION:
        notice.info(f"The database stays stamped '{PRODUCTION}' ({METADATA_TABLE}.{ENVIRONMENT_KEY}); "
                    f"CELORA_ENV is '{environment}'. A production stamp is only removed by hand.")
        return current
    if current == environment:
        return current
    if current is None:
        _execute(conn, _CREATE)
        _execute(conn, _COMMENT)
    _execute(conn, _UPSERT, (ENVIRONMENT_KEY, environment))
    return environment


def write_stamp(conn, schema: str, environment: str) -> None:
    """Set `schema`.celora_metadata's environment (creating the table), schema-qualified: for a psycopg
    connection to a database whose search path is not the one the stamp belongs to (a restored copy)."""
    from psycopg import sql

    table = sql.Identifier(schema, METADATA_TABLE)
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}" + _COLUMNS).format(table))
    conn.execute(sql.SQL("INSERT INTO {} (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE"
                         " SET value = EXCLUDED.value, written_at = now()").format(table),
                 (ENVIRONMENT_KEY, environment))


def include_name(name, type_, parent_names) -> bool:
    """Alembic's include_name hook: celora's bookkeeping table is not a model, so autogenerate and model-vs-
    database comparisons neither drop it nor report it."""
    return not (type_ == "table" and name == METADATA_TABLE)


# PRODUCTION is re-exported: the stamp is where callers look for it.
__all__ = ["ENVIRONMENT_KEY", "METADATA_TABLE", "PRODUCTION", "StampReading", "database_environment",
           "include_name", "read_stamps", "schema_environment", "stamp_environment", "write_stamp"]
