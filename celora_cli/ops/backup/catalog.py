"""What a backup describes and a verified restore compares: the tables and their exact row counts."""

from __future__ import annotations

from celora_cli.config.settings import DatabaseURL
from celora_cli.db.connect import STARTUP_MARKER, sends_startup_options, startup_options_applied
from celora_cli.errors import ConfigError

# Tables pg_dump dumps the data of: ordinary and partitioned tables (a partition's rows are counted once, in
# its root), outside the system schemas, not created by an extension (CREATE EXTENSION brings those back).
_TABLES = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def table_counts(conn) -> dict[str, int]:
    """{"schema.table": exact rows} in the connection's current snapshot."""
    from psycopg import sql

    counts: dict[str, int] = {}
    for schema, table in conn.execute(_TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        counts[f"{schema}.{table}"] = conn.execute(query).fetchone()[0]
    return counts


def schema_revision(conn) -> str | None:
    """The Alembic revision(s) in alembic_version (the search_path's), or None when the table is absent."""
    if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
        return None
    revisions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version ORDER BY 1").fetchall()]
    return ", ".join(revisions) or None


def server_version(conn) -> tuple[str, int]:
    """('18.6', 18)."""
    version, number = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int").fetchone()
    return version.split(" ")[0], number // 10000


def refuse_pooler(conn, url: DatabaseURL, setting: str, what: str) -> None:
    """pg_dump's snapshot and pg_restore's session need PostgreSQL itself: refuse when a transaction pooler
    answers on the direct URL (celora's startup marker did not arrive)."""
    if sends_startup_options(url) and not startup_options_applied(conn):
        raise ConfigError(
            f"{setting} ({url.masked}) is answered by a connection pooler, not PostgreSQL itself: celora's startup "
            f"marker ({STARTUP_MARKER}) did not reach the server session. {what} needs a direct session.",
            "Point DIRECT_DATABASE_URL at the PostgreSQL server (usually port 5432, not PgBouncer's 6432).")


def direct_setting(settings) -> str:
    if settings.uses_local_server:
        return "the local database"
    return "DIRECT_DATABASE_URL" if settings.direct_database_url is not None else "DATABASE_URL"
