"""Turn psycopg / SQLAlchemy exceptions into CeloraErrors that say the cause, what was checked and the fix."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from celora_cli.config.settings import DatabaseURL, redact
from celora_cli.errors import (
    AuthenticationFailed,
    CeloraError,
    ConfigError,
    DatabaseError,
    DatabaseNotFound,
    DatabaseUnreachable,
    SchemaNotMigrated,
    TooManyConnections,
)

_UNREACHABLE = ("connection refused", "could not connect", "timeout expired", "no route to host",
                "could not translate host name", "name or service not known", "network is unreachable",
                "connection timed out", "server closed the connection", "connection reset",
                "consuming input failed", "connection is lost", "the connection is closed",
                "terminating connection", "server conn crashed", "is the server running")
_AUTH = ("password authentication failed", "no password supplied", "no pg_hba.conf entry",
         "authentication failed", "role \"", "sasl authentication")
_TOO_MANY = ("too many connections", "remaining connection slots", "no more connections allowed",
             "sorry, too many clients")
# Checked after "database ... does not exist" and "too many connections for role", so a remaining 'role "x"'
# message is about authentication.


# libpq refuses the connection string itself (no server contacted); psycopg does the same for connect_timeout
# ("bad value for connect_timeout") and, resolving the host itself, for a port that is not a number
# ("Servname not supported": getaddrinfo given port=abc).
_BAD_CONNINFO = re.compile(r"invalid connection option|invalid uri query parameter|invalid \w+ value"
                           r"|invalid integer value|invalid port number|missing \"=\" after"
                           r"|bad value for \w+|servname not supported")


def root_cause(exc: BaseException) -> BaseException:
    """The DBAPI (psycopg) exception behind a SQLAlchemy wrapper, if any."""
    return getattr(exc, "orig", None) or exc


def sqlstate_of(exc: BaseException) -> str | None:
    return getattr(root_cause(exc), "sqlstate", None)


def postgres_message(exc: BaseException) -> str:
    """The server's primary message (first line), without SQLAlchemy's statement dump."""
    cause = root_cause(exc)
    diag = getattr(cause, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(cause)
    return " ".join(text.strip().splitlines()[:1]) if not primary else primary


def migration_failure(exc: BaseException) -> tuple[str | None, str]:
    """(SQLSTATE, one-line detail) of an exception raised inside a migration's upgrade() or downgrade()."""
    state = sqlstate_of(exc)
    if connection_lost(exc):
        return state, f"the connection to the database server was lost ({postgres_message(exc)})"
    if state is not None or hasattr(exc, "orig"):
        return state, f"PostgreSQL error{f' {state}' if state else ''}: {postgres_message(exc)}"
    return None, f"{type(exc).__name__}: {exc}"


def connection_lost(exc: BaseException) -> bool:
    """The server went away under a running statement (crash, restart, network), as opposed to an error the
    statement itself caused: the migration file is not at fault and may be fine."""
    state = sqlstate_of(exc)
    if state is not None:
        return state.startswith("08") or state in ("57P01", "57P02", "57P03")
    lowered = str(root_cause(exc)).lower()
    return any(m in lowered for m in ("server closed the connection", "consuming input failed",
                                      "connection is lost", "connection reset", "no connection to the server",
                                      "terminating connection", "the connection is closed"))


def _sslmode(url: DatabaseURL | None) -> str:
    return dict(url.libpq_params).get("sslmode", "require") if url else "require"


def translate(exc: BaseException, url: DatabaseURL | None, setting: str | None = None) -> CeloraError:
    """Map a database exception to the CeloraError a user can act on. Passwords never survive.

    `setting` names where the URL came from in the message; by default the URL's own (`url.setting`)."""
    if isinstance(exc, CeloraError):
        return exc
    setting = setting or (url.setting if url else "DATABASE_URL")
    cause = root_cause(exc)
    state = sqlstate_of(exc) or ""
    secrets = list(url.secrets) if url else []  # the password and secret parameters (sslpassword=, ...)
    full = redact(str(cause), secrets)
    lowered = full.lower()
    message = redact(postgres_message(exc), secrets)
    where = url.display_host if url else "the database server"
    shown = url.masked if url else setting
    dbname = url.database if url and url.database else "(default)"
    user = url.username if url and url.username else "(default)"

    if not state and _BAD_CONNINFO.search(lowered):  # libpq refusing a parameter: no SQLSTATE, no server
        return ConfigError(
            f"{setting} has a connection parameter libpq rejects ({shown}): {message}",
            f"Fix or remove that parameter in {setting}; see the libpq connection parameters "
            "(sslmode: disable, allow, prefer, require, verify-ca, verify-full).",
        )
    if "does not support ssl" in lowered:  # sslmode=require (or stricter) against a server without SSL
        return ConfigError(
            f"{setting} asks for SSL (sslmode={_sslmode(url)}) but the server at {where} does not support SSL "
            f"({shown}): {message}",
            f"Enable SSL on the server (ssl = on in postgresql.conf), or, on a trusted network only, use "
            f"sslmode=prefer or sslmode=disable in {setting}.",
        )
    if "unsupported startup parameter" in lowered:
        return ConfigError(
            f"The server at {where} ({setting}={shown}) is a connection pooler that rejected celora's "
            f"startup options ({message}): the URL goes through PgBouncer but does not say so.",
            f"Add ?pgbouncer=true to {setting} (and set DIRECT_DATABASE_URL for migrations).",
        )
    if state == "3D000" or ("database \"" in lowered and "does not exist" in lowered):
        return DatabaseNotFound(
            f"Database {dbname!r} does not exist on {where} ({setting}={shown}).",
            f"Create it (`createdb -h {url.host if url else 'HOST'} -p {url.port or 5432 if url else 5432} {dbname}`) "
            f"or fix the database name in {setting}.",
        )
    if state == "53300" or any(m in lowered for m in _TOO_MANY):
        return TooManyConnections(
            f"The database server at {where} has no connection slots left ({message}).",
            "Use the PgBouncer URL for app traffic (DATABASE_URL with ?pgbouncer=true), lower connection_limit, "
            "or close idle clients (see `celora db health`).",
        )
    if state in ("28P01", "28000") or any(m in lowered for m in _AUTH):
        return AuthenticationFailed(
            f"Authentication failed for user {user!r} at {where} ({setting}={shown}): {message}",
            f"Check the user name and password in {setting}; percent-encode special characters in the password.",
        )
    if state == "42P01":
        return SchemaNotMigrated(
            f"A table celora needs does not exist on {where}: {message}.",
            "Apply the migrations: `celora db migrate-deploy`.",
        )
    if state.startswith("08") or state in ("57P01", "57P02", "57P03") or any(m in lowered for m in _UNREACHABLE):
        return DatabaseUnreachable(
            f"Can't reach database server at {where} ({setting}={shown}): {message}",
            (f"Is {'PgBouncer' if url.pgbouncer else 'PostgreSQL'} running and accepting "
             f"{'connections on its unix socket' if url.host is None or url.is_socket else 'TCP connections'}? "
             f"Try `{url.pg_isready}`.") if url
            else "Is PostgreSQL running?",
        )
    return DatabaseError(
        f"PostgreSQL error{f' {state}' if state else ''} at {where}: {message}",
        "Run with --debug for the full error.",
        sqlstate=state or None,
    )


@contextlib.contextmanager
def translating(url: DatabaseURL | None, setting: str | None = None) -> Iterator[None]:
    """Re-raise database exceptions as CeloraErrors (keeping the original as __cause__ for --debug).

    SQLAlchemy's errors are caught only when SQLAlchemy is loaded: the plain-psycopg paths never import it."""
    import sys

    import psycopg

    errors: tuple[type[BaseException], ...] = (psycopg.Error,)
    if "sqlalchemy" in sys.modules:
        import sqlalchemy.exc

        errors += (sqlalchemy.exc.DBAPIError,)
    try:
        yield
    except errors as exc:
        raise translate(exc, url, setting) from exc
