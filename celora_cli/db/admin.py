"""Database administration on any PostgreSQL server: create, drop, clone from a template, end other sessions.

Works on the server a URL points at (not only celora's local one), through a plain psycopg autocommit
connection to the server's maintenance database `postgres` (CREATE/DROP DATABASE can't run in a
transaction, nor while connected to the database itself). Names are always quoted as identifiers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

from celora_cli.config.settings import DatabaseURL, Settings, parse_database_url
from celora_cli.db.connect import connect
from celora_cli.db.errors import translating
from celora_cli.errors import DatabaseError

MAINTENANCE_DATABASE = "postgres"
notice = logging.getLogger("celora.notice")


def with_database(url: DatabaseURL, database: str, setting: str | None = None) -> DatabaseURL:
    """The same server, credentials and parameters, another database."""
    parts = urlsplit(url.original)
    # Put together by hand: urlunsplit drops the empty authority of postgresql:///db?host=/socket/dir.
    original = f"{parts.scheme}://{parts.netloc}/{quote(database, safe='')}"
    if parts.query:
        original += f"?{parts.query}"
    # Labels name the server by host:port, not by URL: a label is printed as `label=URL`, and a URL in it would
    # run into the next one for the masking.
    return parse_database_url(original, setting or f"database {database} on {url.display_host}")


@contextlib.contextmanager
def maintenance_connection(url: DatabaseURL, settings: Settings, *, application_name: str = "celora admin") \
        -> Iterator:
    """An autocommit psycopg connection to the maintenance database of `url`'s server."""
    admin_url = with_database(url, MAINTENANCE_DATABASE)
    with translating(admin_url, f"the maintenance database ({MAINTENANCE_DATABASE}) on {url.display_host}"):
        conn = connect(admin_url, settings, application_name=application_name, autocommit=True)
        try:
            yield conn
        finally:
            conn.close()


def database_exists(conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def create_database(conn, name: str, *, template: str | None = None, if_missing: bool = False) -> bool:
    """CREATE DATABASE name [TEMPLATE template]; returns False when if_missing and it already exists."""
    from psycopg import sql

    if if_missing and database_exists(conn, name):
        return False
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    conn.execute(statement)
    return True


def clone_database(conn, source: str, name: str) -> None:
    """A copy of `source` (CREATE DATABASE ... TEMPLATE): other sessions on `source` are ended first,
    because PostgreSQL refuses to copy a database anyone else is connected to."""
    terminate_sessions(conn, source)
    create_database(conn, name, template=source)


def drop_database(conn, name: str, *, if_exists: bool = True, force: bool = True) -> None:
    """DROP DATABASE; force ends the other sessions on it (PostgreSQL 13+ WITH (FORCE))."""
    from psycopg import sql

    statement = sql.SQL("DROP DATABASE {}{}").format(sql.SQL("IF EXISTS ") if if_exists else sql.SQL(""),
                                                     sql.Identifier(name))
    if force:
        statement += sql.SQL(" WITH (FORCE)")
    conn.execute(statement)


def terminate_sessions(conn, database: str) -> int:
    """End every other session connected to `database`; returns how many were ended."""
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,)).fetchall()
    return sum(1 for row in rows if row[0])


@contextlib.contextmanager
def creating(url: DatabaseURL, what: str, alternative: str) -> Iterator[None]:
    """CREATE DATABASE refused for lack of the CREATEDB privilege: say so, and what else works."""
    import psycopg

    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise DatabaseError(
            f"The role {url.username or '(default)'} may not create databases on {url.display_host}, so {what} "
            f"could not be created ({exc.diag.message_primary or exc}).",
            f"Grant it (`ALTER ROLE {url.username or 'your_role'} CREATEDB`) or {alternative}.",
            sqlstate=exc.sqlstate,
        ) from None


def ensure_database(url: DatabaseURL, settings: Settings) -> bool:
    """Create the database `url` names when it does not exist (announced); True when it was created."""
    assert url.database is not None
    with maintenance_connection(url, settings) as conn, \
            creating(url, f"the database {url.database}", "ask an administrator to create it"):
        created = create_database(conn, url.database, if_missing=True)
    if created:
        notice.info(f"Created database {url.database} ({url.masked}).")
    return created
