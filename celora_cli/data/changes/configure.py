"""`celora db changes --setup-only`: the publication and slot for celora's stream or Debezium's PostgreSQL
connector, the role a consumer needs and the connector's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from celora_cli.config.settings import Settings
from celora_cli.data.changes.connection import (
    DEFAULT_SLOT,
    PLUGIN,
    check_prerequisites,
    check_slot_name,
    open_direct,
    schema_tables,
    where,
)
from celora_cli.data.changes.publication import COLUMN_LISTS_LIMITS, ensure_publication
from celora_cli.data.changes.slots import ensure_slot
from celora_cli.db.errors import translating


@dataclass
class SetupResult:
    database: str
    slot: str
    publication: str
    tables: list[str]
    excluded_columns: dict[str, list[str]]
    created_slot: bool
    created_publication: bool
    column_lists: bool  # the server leaves every secret column out (checked column by column)
    role_hint: str = ""
    debezium: dict[str, str] = field(default_factory=dict)
    # secret columns the publication sends anyway (accepted with --allow-secret-columns): {table: [column]}
    secret_columns_published: dict[str, list[str]] = field(default_factory=dict)
    limits: str = COLUMN_LISTS_LIMITS



def role_hint(database: str, tables: list[str], excluded: dict[str, tuple[str, ...]],
              columns: dict[str, list[str]], role: str = "debezium") -> str:
    grants = []
    for table in tables:
        if excluded.get(table):
            kept = ", ".join(c for c in columns[table] if c not in excluded[table])
            grants.append(f"GRANT SELECT ({kept}) ON {table} TO {role};")
        else:
            grants.append(f"GRANT SELECT ON {table} TO {role};")
    return "\n".join([f"CREATE ROLE {role} WITH LOGIN REPLICATION PASSWORD '<choose one>';",
                      f'GRANT CONNECT ON DATABASE "{database}" TO {role};',
                      f"GRANT USAGE ON SCHEMA public TO {role};", *grants])


def setup(settings: Settings, *, slot: str = DEFAULT_SLOT, allow_secret_columns: bool = False) -> SetupResult:
    """Publication + slot for celora's stream or Debezium's PostgreSQL connector, and the role it needs.

    A publication (existing, or new on PostgreSQL < 15) that sends a secret column is refused unless
    `allow_secret_columns`: Debezium receives whatever the publication sends."""
    check_slot_name(slot)
    tables, excluded, columns = schema_tables()
    conn, url, setting = open_direct(settings)
    server = where(url)
    try:
        with translating(url, setting):
            check_prerequisites(conn, server, creating_slot=False)
            created_pub, check = ensure_publication(conn, slot, tables, excluded, columns, where=server,
                                                    refuse_secrets=not allow_secret_columns)
            created_slot = ensure_slot(conn, slot, server)
            database = conn.info.dbname
    finally:
        conn.close()
    exclude_list = ",".join(f"public.{t}.{c}" for t in tables for c in excluded.get(t, ()))
    return SetupResult(
        database=url.masked, slot=slot, publication=slot, tables=tables,
        excluded_columns={t: list(c) for t, c in excluded.items()}, created_slot=created_slot,
        created_publication=created_pub, column_lists=not check.secrets,
        secret_columns_published=check.secrets,
        role_hint=role_hint(database, tables, excluded, columns),
        debezium={"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "plugin.name": PLUGIN,
                  "slot.name": slot, "publication.name": slot, "publication.autocreate.mode": "disabled",
                  "database.dbname": database,
                  "table.include.list": ",".join(f"public.{t}" for t in tables),
                  "column.exclude.list": exclude_list})
