"""The migration connection: the direct URL, no app statement timeout, and a refusal when a pooler answers on it.

Every migration run (deploy, rollback, reset, resolve, push, `db migrate`'s shadow, a hand-run `alembic`) opens its
connection here, so each one gets the same set-up. SQLAlchemy is imported inside the functions that need it, so
importing this module stays cheap for the light paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket

from celora_cli.config.settings import DatabaseURL, Settings, setting_name
from celora_cli.db.connect import answer_within, no_answer, start_watch
from celora_cli.db.errors import translating
from celora_cli.errors import Refused


def migration_settings(settings: Settings) -> Settings:
    """DDL may legitimately run longer than an app query: no statement timeout on the migration connection."""
    return dataclasses.replace(settings, statement_timeout=0)


def migration_engine(settings: Settings, application_name: str):
    """(engine, url, setting name) on the direct URL with no statement timeout; no connection made yet."""
    from celora_cli.db.engine import build_engine, direct_url  # SQLAlchemy, on demand (see the module docstring)

    url = direct_url(settings)
    engine = build_engine(url, migration_settings(settings), pooled=False, application_name=application_name[:63])
    return engine, url, setting_name(settings)


def _pooler_refusal(url: DatabaseURL, setting: str, evidence: str) -> Refused:
    return Refused(
        f"{setting} ({url.masked}) reaches PostgreSQL through a connection pooler, so migrations were not run "
        f"and nothing was locked or changed. Checked: {evidence}. Migrations need a server session of their own "
        "(the migration lock and each migration's transaction must stay on one PostgreSQL connection).",
        f"Point {setting} at PostgreSQL itself (usually port 5432 on the database host), not at PgBouncer; keep "
        "the PgBouncer URL in DATABASE_URL with ?pgbouncer=true.",
    )


def open_migration_connection(engine, url: DatabaseURL, setting: str,
                              bound: tuple[float, DatabaseURL, str] | None = None):
    """Connect and prove the connection is a PostgreSQL session of its own before anything is locked.

    celora's startup options carry a marker (db/engine.py). PgBouncer either rejects them ("unsupported
    startup parameter") or, with ignore_startup_parameters=options, drops them: either is proof of a pooler.
    A differing port is not (Docker -p 5433:5432, SSH tunnels and port-forwards reach PostgreSQL directly).
    """
    # SQLAlchemy, on demand (see the module docstring)
    from sqlalchemy.exc import DBAPIError

    from celora_cli.db.engine import sends_startup_options, startup_options_applied

    try:
        with _bounded_connect(engine, bound):  # SQLAlchemy's first connect asks the server questions of its own
            conn = engine.connect()
    except DBAPIError as exc:
        if "unsupported startup parameter" in str(getattr(exc, "orig", exc)).lower():
            raise _pooler_refusal(url, setting, "the server rejected celora's startup options with "
                                  "'unsupported startup parameter', which is PgBouncer's answer") from None
        raise
    try:
        with bookkeeping(conn, bound):
            if sends_startup_options(url) and not startup_options_applied(conn):
                raise _pooler_refusal(url, setting, "celora's startup marker (options=-c celora.direct_session=on) "
                                      "did not reach the server session, so something in between dropped it")
            conn.rollback()
    except BaseException:
        conn.close()
        raise
    return conn


def bookkeeping(conn, bound: tuple[float, DatabaseURL, str] | None):
    """celora's own bookkeeping statements on the migration connection (a SQLAlchemy Connection), bounded in
    time when `bound` is given (connect.answer_within)."""
    if bound is None:
        return contextlib.nullcontext()
    seconds, url, made_of = bound
    return answer_within(conn.connection.dbapi_connection, seconds, url, made_of)


@contextlib.contextmanager
def _bounded_connect(engine, bound: tuple[float, DatabaseURL, str] | None):
    """engine.connect() within `bound`: each new DBAPI connection is watched from the moment the pool makes it
    (before SQLAlchemy's own first queries: server version, encoding) until connect() returns."""
    if bound is None:
        yield
        return
    from sqlalchemy import event  # on demand (see the module docstring)

    seconds, url, made_of = bound
    watches = []

    def watch(dbapi_conn, _record) -> None:
        watches.append(start_watch(dbapi_conn, seconds))

    event.listen(engine, "connect", watch, insert=True)  # before SQLAlchemy's first_connect listener
    try:
        yield
    except Exception as exc:
        if any(w.fired for w in watches):
            raise no_answer(url, seconds, made_of) from exc
        raise
    finally:
        for each in watches:
            each.done = True
        event.remove(engine, "connect", watch)


def bookkeeping_bound(settings: Settings, url: DatabaseURL, *, lock_wait: float = 0.0) -> tuple[float, DatabaseURL,
                                                                                                 str]:
    """How long celora's own statements on the migration connection may go unanswered: the app's statement
    timeout (30 s when it is 0, none) plus the connect timeout, plus any wait for the migration lock."""
    seconds = (settings.statement_timeout or 30.0) + settings.connect_timeout + lock_wait
    made_of = "CELORA_STATEMENT_TIMEOUT plus CELORA_CONNECT_TIMEOUT" + (" plus the migration lock's wait"
                                                                         if lock_wait else "")
    return seconds, url, made_of


@contextlib.contextmanager
def migration_connection(settings: Settings, command: str):
    """The migration runtime's connection (direct URL, pooler refusal), database errors translated."""
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


def unparsed(conn, sql: str):
    """A statement holding quoted identifiers, on the transaction the SQLAlchemy Connection has open, sent to
    psycopg without parameters so that nothing reads a '%' in a name as a placeholder; its first row, if any."""
    assert conn.in_transaction()  # begun by SQLAlchemy, so the migration lock is held
    cursor = conn.connection.driver_connection.execute(sql)
    return cursor.fetchone() if cursor.description else None
