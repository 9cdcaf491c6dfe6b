"""The session logical decoding runs in: the direct connection, the server's prerequisites, the tables streamed.

A slot belongs to a server session, so everything here goes to PostgreSQL itself (DIRECT_DATABASE_URL), never
through PgBouncer, and is proven to be a session of its own before it is used.
"""

from __future__ import annotations

import re

from celora_cli.config.settings import DatabaseURL, Settings, setting_name
from celora_cli.db.connect import connect, direct_url, sends_startup_options, startup_options_applied
from celora_cli.db.errors import translating
from celora_cli.db.models import Base
from celora_cli.db.models.audit_log import audited_tables, sensitive_columns
from celora_cli.errors import ConfigError, UsageError

PLUGIN = "pgoutput"
DEFAULT_SLOT = "celora_changes"
APPLICATION_NAME = "celora db changes"
_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")

PROVIDERS_HINT = (
    "On your own server: `ALTER SYSTEM SET wal_level = logical;` then restart PostgreSQL. Managed services: AWS "
    "RDS/Aurora: set rds.logical_replication = 1 in the DB parameter group and reboot; Google Cloud SQL: set the "
    "flag cloudsql.logical_decoding = on (restarts the instance); Azure Database for PostgreSQL: set the server "
    "parameter wal_level = logical and restart. The local server celora manages starts with it (one started by an "
    "older celora gets it at its next start: `celora local stop`, then `celora local start`).")


def check_slot_name(slot: str, flag: str = "--slot") -> str:
    """`flag`: the option the name came from, named in the error (--slot, or --drop)."""
    if not _SLOT_NAME.match(slot or ""):
        raise UsageError(f"{flag} {slot!r} is not a valid replication slot name.",
                         f"Use 1 to 63 lowercase letters, digits and underscores, e.g. {flag} celora_changes.")
    return slot


def check_prerequisites(conn, where: str, *, creating_slot: bool) -> None:
    """wal_level, the REPLICATION privilege and, when a slot is to be created, a free slot: each named with the fix."""
    wal_level = conn.execute("SHOW wal_level").fetchone()[0]
    if wal_level != "logical":
        raise ConfigError(
            f"Logical decoding needs wal_level = logical; the server at {where} has wal_level = {wal_level} "
            "(checked with SHOW wal_level). wal_level only changes with a server restart.", PROVIDERS_HINT)
    allowed = conn.execute("""
        SELECT r.rolsuper OR r.rolreplication
               OR EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication'
                                                     AND pg_has_role(current_user, g.oid, 'MEMBER')),
               current_user
          FROM pg_roles r WHERE r.rolname = current_user""").fetchone()
    if not allowed[0]:
        raise ConfigError(
            f"Role {allowed[1]!r} may not use replication slots on {where}: it has neither REPLICATION nor "
            "superuser (checked pg_roles, and rds_replication membership).",
            f"As an administrator: `ALTER ROLE {allowed[1]} WITH REPLICATION;` (AWS RDS: `GRANT rds_replication TO "
            f"{allowed[1]};`), or point DIRECT_DATABASE_URL at a role that has it.")
    if creating_slot:
        used, maximum = conn.execute("SELECT (SELECT count(*) FROM pg_replication_slots), "
                                     "current_setting('max_replication_slots')::int").fetchone()
        if used >= maximum:
            raise ConfigError(
                f"No free replication slot on {where}: {used} of max_replication_slots = {maximum} are in use.",
                "Drop an abandoned slot (`celora db changes --list`, then `--drop SLOT`), or raise "
                "max_replication_slots (needs a restart).")


def schema_tables() -> tuple[list[str], dict[str, tuple[str, ...]], dict[str, list[str]]]:
    """(tables streamed, their sensitive columns, every column per table) from the models."""
    tables = audited_tables(Base.metadata)
    columns = {t: [c.name for c in Base.metadata.tables[t].columns] for t in tables}
    return tables, sensitive_columns(Base.metadata), columns


def where(url: DatabaseURL) -> str:
    return url.display_host  # host:port, or the unix socket file


def open_direct(settings: Settings):
    """(connection, url, setting name): the direct connection, proven to be a server session of its own (a slot's
    functions through a transaction pooler could land on another server connection each time)."""
    url = direct_url(settings)
    setting = setting_name(settings)
    with translating(url, setting):
        conn = connect(url, settings, application_name=APPLICATION_NAME, autocommit=True)
        if sends_startup_options(url) and not startup_options_applied(conn):
            conn.close()
            raise ConfigError(
                f"{setting} ({url.masked}) goes through a connection pooler (celora's startup marker did not "
                "arrive): logical decoding needs a PostgreSQL session of its own.",
                f"Point {setting} at PostgreSQL itself (DIRECT_DATABASE_URL), not at PgBouncer.")
        # Decoding a large transaction can take longer than the app's statement timeout; it is not app traffic.
        conn.execute("SET statement_timeout = 0")
    return conn, url, setting
