"""One connection path checked in its worker thread: SELECT 1, then the server's facts (version, port, TLS,
whether celora's startup marker arrived) and, on the path that gives the details, connections in use, the
migration state and the server's pressure and replication views.

Plain psycopg, not an Engine: health is what on-call runs when paged, and SQLAlchemy's import would cost more
than the whole check."""

from __future__ import annotations

import dataclasses
import time

import psycopg

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import STARTUP_MARKER, connect, sends_startup_options, startup_options_applied
from celora_cli.db.errors import postgres_message, root_cause, sqlstate_of, translate
from celora_cli.errors import CeloraError
from celora_cli.migrate.status import migration_state
from celora_cli.ops.health.report import ConnectionCheck, ConnectionUsage, MigrationState
from celora_cli.ops.health.server import read_pressure, read_replication


def check_path(check: ConnectionCheck, url: DatabaseURL, settings: Settings, extras: dict, timeout: float) -> None:
    """Fill `check` in place (the thread may be abandoned, so it never raises)."""
    # Connect exactly as the app does (same startup options), only with timeouts capped by ours.
    statement_timeout = min(settings.statement_timeout, timeout) if settings.statement_timeout else 0
    quick = dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, timeout),
                                statement_timeout=statement_timeout)
    conn = None
    try:
        started = time.perf_counter()
        # autocommit: every query stands alone, so no transaction is left open on the server or a pooler.
        conn = connect(url, quick, application_name="celora health")
        with conn:
            check.connect_ms = round((time.perf_counter() - started) * 1000, 1)
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            check.latency_ms = round((time.perf_counter() - started) * 1000, 1)
            check.ok = True  # the path works; what follows only describes it
            try:
                _facts(check, conn, url)
                if extras.get("want_details"):
                    _details(conn, settings, extras, url, check.setting)
            except Exception as exc:  # noqa: BLE001 - a fact we could not read is a warning, not an outage
                extras["warning"] = (f"The {check.name} path answered SELECT 1, but reading the server's "
                                     f"details failed: {translate(exc, url, check.setting).message}")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a line of the report
        error = translate(exc, url, check.setting)  # a CeloraError comes back as it is
        check.error, check.hint = error.message, error.hint
        if _pooler_rejected_options(exc):
            check.pooler_detected = True
            check.pooler_evidence = f"it rejected celora's startup options ({_server_message(exc)})"
    finally:
        if conn is not None:
            conn.close()


def _facts(check: ConnectionCheck, conn, url: DatabaseURL) -> None:
    """Server version and port, and whether celora's startup marker reached the server session."""
    version, port = conn.execute("SELECT current_setting('server_version'), inet_server_port()").fetchone()
    check.server_version = version
    check.server_port = int(port) if port is not None else None
    check.ssl = bool(conn.pgconn.ssl_in_use)
    if sends_startup_options(url):
        applied = startup_options_applied(conn)
        check.pooler_detected = not applied
        if not applied:
            check.pooler_evidence = (f"celora's startup marker ({STARTUP_MARKER}, sent in the startup options) "
                                     "did not reach the server session: something in between dropped it, "
                                     "as a transaction pooler does")


def _pooler_rejected_options(exc: BaseException) -> bool:
    """PgBouncer's own answer to startup options it does not pass on."""
    return "unsupported startup parameter" in str(root_cause(exc)).lower()


def _server_message(exc: BaseException) -> str:
    return postgres_message(exc)


def _details(conn, settings: Settings, extras: dict, url: DatabaseURL, setting: str) -> None:
    """Connections in use vs max_connections, and migration state (on one connection)."""
    in_use, max_conn = conn.execute(
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        "       current_setting('max_connections')::int").fetchone()
    extras["connections"] = ConnectionUsage(int(in_use), int(max_conn))
    _server_views(conn, extras)
    try:
        status = migration_state(conn, settings)
    except (CeloraError, psycopg.Error) as exc:
        database_error = exc.__cause__ if isinstance(exc, CeloraError) else exc
        if not isinstance(database_error, psycopg.Error):
            extras["migration_error"] = str(exc)  # a CeloraError's message: e.g. the database is ahead of the code
            return
        # The app role may lack SELECT on alembic_version: the app still works, we just cannot tell.
        role = url.username or "the connecting role"
        fix = ("Grant that role SELECT on alembic_version, or set DIRECT_DATABASE_URL to the migration role so "
               "health can read it." if sqlstate_of(database_error) == "42501" else "Run `celora db status`.")
        extras["migration_unknown"] = (f"Migration state unknown: {setting} as role {role!r} could not read "
                                       f"alembic_version ({postgres_message(database_error)}). {fix}")
        return
    extras["migrations"] = MigrationState(
        current=list(status.current), head=status.head, pending=len(status.pending),
        pending_names=[m.name for m in status.pending], up_to_date=status.up_to_date)


def _server_views(conn, extras: dict) -> None:
    """Pressure and replication: a view the role may not read is a warning, the rest of the report stands."""
    for key, read in (("pressure", read_pressure), ("replication", read_replication)):
        try:
            extras[key] = read(conn)
        except Exception as exc:  # noqa: BLE001 - e.g. a role without pg_monitor on a locked-down server
            extras.setdefault("view_warnings", []).append(
                f"Could not read the server's {key} views: {postgres_message(exc)}. Grant the role pg_monitor.")

