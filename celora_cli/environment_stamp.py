"""The protected-environment record: the database says which environment it belongs to (Rails' ar_internal_metadata).

`celora_metadata` is a key/value table created on demand in the migration schema (the URL's ?schema=, else
the first schema of the search_path), outside the Alembic history, so every database gets it, whatever its
revision. `migrate-deploy` (and `migrate`) write CELORA_ENV into it after a successful run; the guard of the
destructive commands (celora_cli.guard) reads it, so a developer whose CELORA_ENV says "development" is still
stopped on a database that was deployed as production.

A production stamp is sticky: a later deploy with another CELORA_ENV keeps it (and says so on the
`celora.notice` logger). A developer laptop with the default CELORA_ENV=development that deploys to production
must not turn production's protection off. To re-purpose such a database on purpose (a production dump
restored as staging), delete the row: `DELETE FROM celora_metadata WHERE key = 'environment'`.

Functions take an open connection: a SQLAlchemy Connection (the migration runtime's) or a plain psycopg one.
Writes are committed by the caller (a SQLAlchemy Connection) or by the psycopg connection's own mode.
"""

from __future__ import annotations

import logging

METADATA_TABLE = "celora_metadata"
ENVIRONMENT_KEY = "environment"
PRODUCTION = "production"

# written_at, not updated_at: the schema's rule that every updated_at column has the trigger is for app tables.
_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {METADATA_TABLE} ("
    " key text PRIMARY KEY,"
    " value text NOT NULL,"
    " written_at timestamptz NOT NULL DEFAULT now())"
)
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

notice = logging.getLogger("celora.notice")


def _execute(conn, sql: str, params: tuple = ()):
    """One statement on a SQLAlchemy Connection (through its events, so the migration lock is taken) or on a
    psycopg connection. Both speak psycopg's %s placeholders here."""
    if hasattr(conn, "exec_driver_sql"):
        return conn.exec_driver_sql(sql, params) if params else conn.exec_driver_sql(sql)
    return conn.execute(sql, params) if params else conn.execute(sql)


def database_environment(conn) -> str | None:
    """The environment the database is stamped with, or None (never stamped, or no celora_metadata table)."""
    if not _execute(conn, _EXISTS).fetchone()[0]:
        return None
    row = _execute(conn, f"SELECT value FROM {METADATA_TABLE} WHERE key = %s", (ENVIRONMENT_KEY,)).fetchone()
    return row[0] if row else None


def stamp_environment(conn, environment: str) -> str:
    """Record `environment` (CELORA_ENV) as the database's; returns the stamp now in force.

    A production stamp is kept when `environment` is another one (see the module docstring). The caller commits
    (a SQLAlchemy Connection); on the migration connection the statements run under the migration lock."""
    current = database_environment(conn)
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


def include_name(name, type_, parent_names) -> bool:
    """Alembic's include_name hook: celora's bookkeeping table is not a model, so autogenerate and model-vs-
    database comparisons neither drop it nor report it."""
    return not (type_ == "table" and name == METADATA_TABLE)


__all__ = ["ENVIRONMENT_KEY", "METADATA_TABLE", "PRODUCTION", "database_environment", "include_name",
           "stamp_environment"]
