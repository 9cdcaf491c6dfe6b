"""The one engine factory: pooled (app traffic, maybe via PgBouncer) and direct (migrations, DDL, locks).

PgBouncer in transaction-pooling mode hands each transaction to whichever server connection is free, so
anything that lives on a server session breaks: server-side prepared statements (psycopg prepares a query
after 5 runs by default) and SET without LOCAL. With `?pgbouncer=true` the pooled engine therefore
disables prepared statements (`prepare_threshold=None`), sends no startup `options` (PgBouncer rejects
them) and applies timeouts/search_path per transaction with SET LOCAL.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from celora_cli.errors import ConfigError
from celora_cli.settings import DatabaseURL, Settings, parse_database_url

query_log = logging.getLogger("celora.sql")

# A custom setting celora sends in the startup `options` of every non-PgBouncer connection. PostgreSQL
# applies it; a transaction pooler either rejects `options` ("unsupported startup parameter") or drops it.
# Reading it back is therefore real evidence of what sits behind a URL, where a differing port is not.
STARTUP_MARKER = "celora.direct_session"


@dataclass(frozen=True)
class ResolvedURLs:
    """The URLs celora connects to, after falling back to the local server when none is configured."""

    pooled: DatabaseURL
    direct: DatabaseURL | None  # None: DATABASE_URL is pooled and there is no direct URL


def resolve_urls(settings: Settings, *, start: bool = True) -> ResolvedURLs:
    """DATABASE_URL / DIRECT_DATABASE_URL, or the celora-managed local PostgreSQL.

    start=True (commands that use the database) initialises and starts the local server when it is not
    running, announcing it on the `celora.notice` logger. start=False (health, which reports and must not
    change what it reports on) raises LocalServerError when the local server is not running."""
    if settings.uses_local_server:
        from celora_cli.local_server import LocalServer

        if settings.env in ("staging", "production"):
            # A deploy with a missing DATABASE_URL must fail, not migrate a fresh local database and pass.
            raise ConfigError(
                f"DATABASE_URL is not set (CELORA_ENV={settings.env}). celora starts its own local PostgreSQL "
                "only for development and test.",
                "Set DATABASE_URL (and DIRECT_DATABASE_URL when it goes through PgBouncer) in the environment "
                "or pass --env-file.",
            )
        server = LocalServer.from_settings(settings)  # validates CELORA_PG_USER / CELORA_LOCAL_DIR first
        raw = server.ensure_running() if start else server.running_url()
        url = parse_database_url(raw, "local database")
        return ResolvedURLs(pooled=url, direct=settings.direct_database_url or url)
    pooled = settings.database_url
    assert pooled is not None  # uses_local_server is exactly "no DATABASE_URL"
    direct = settings.direct_database_url
    if direct is None and not pooled.pgbouncer:
        direct = pooled
    return ResolvedURLs(pooled=pooled, direct=direct)


def direct_url(settings: Settings, *, start: bool = True) -> DatabaseURL:
    """The URL for DDL: raises ConfigError for a PgBouncer DATABASE_URL with no DIRECT_DATABASE_URL."""
    if settings.uses_local_server:
        local = resolve_urls(settings, start=start).direct
        assert local is not None  # the local server is always reachable directly
        return local
    url = settings.ddl_url()  # raises rather than return None when there is a DATABASE_URL
    assert url is not None
    return url


def connect_args(url: DatabaseURL, settings: Settings, *, application_name: str) -> dict:
    """psycopg connect() keywords for one URL (libpq parameters in the URL itself win)."""
    args: dict = {}
    if url.libpq_param("connect_timeout") is None and settings.connect_timeout:
        args["connect_timeout"] = max(2, math.ceil(settings.connect_timeout))  # libpq's minimum is 2 s
    if url.libpq_param("application_name") is None:
        args["application_name"] = application_name
    # Detect a dead peer (dropped packets) instead of waiting for the kernel's 15-minute default.
    if url.libpq_param("keepalives") is None:
        args.update(keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
    if url.pgbouncer:
        args["prepare_threshold"] = None  # no server-side prepared statements in transaction pooling
    else:
        options = [_startup_option(STARTUP_MARKER, "on")]
        if settings.statement_timeout:
            options.append(_startup_option("statement_timeout", str(int(settings.statement_timeout * 1000))))
        if url.schema:
            # search_path is a list of identifiers: quoted, a schema named "my schema" or "App" is one name.
            options.append(_startup_option("search_path", '"' + url.schema.replace('"', '""') + '"'))
        if options and url.libpq_param("options") is None:
            args["options"] = " ".join(options)
    return args


def _startup_option(name: str, value: str) -> str:
    """`-c name=value` for libpq's `options`: the server splits that string at whitespace unless a backslash
    escapes it, and reads a backslash as escaping the next character (so a literal one is written \\)."""
    return "-c " + re.sub(r"([\\\s])", r"\\\1", f"{name}={value}")


def sends_startup_options(url: DatabaseURL) -> bool:
    """Whether connections to `url` carry celora's startup options (and so the marker)."""
    return not url.pgbouncer and url.libpq_param("options") is None


def startup_options_applied(conn) -> bool:
    """On a connection to a URL for which `sends_startup_options` is true: did the server session get them?
    False means something between celora and PostgreSQL (a transaction pooler) dropped them."""
    from sqlalchemy import text

    value = conn.execute(text("SELECT current_setting(:name, true)"), {"name": STARTUP_MARKER}).scalar()
    return value == "on"


def _install_transaction_settings(engine: Engine, url: DatabaseURL, settings: Settings) -> None:
    """PgBouncer mode: session settings would leak to other clients, so set them per transaction."""
    statements = []
    if settings.statement_timeout:
        statements.append(f"SET LOCAL statement_timeout = {int(settings.statement_timeout * 1000)}")
    if url.schema:
        quoted = '"' + url.schema.replace('"', '""') + '"'  # an identifier, exactly as written
        statements.append(f"SET LOCAL search_path TO {quoted}")
    if not statements:
        return

    @event.listens_for(engine, "begin")
    def _set_local(conn):  # runs inside the transaction that just began
        for statement in statements:
            conn.exec_driver_sql(statement)


def _install_query_log(engine: Engine) -> None:
    """CELORA_LOG_QUERIES: each statement with its duration; parameters are never logged."""

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("celora_query_start", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _end(conn, cursor, statement, parameters, context, executemany):
        started = conn.info["celora_query_start"].pop()
        rows = parameters if executemany and isinstance(parameters, (list, tuple)) else [parameters]
        count = len(rows[0]) if rows and isinstance(rows[0], (list, tuple, dict)) else 0
        hidden = f" [{count} parameter(s) hidden]" if count else ""
        if executemany:
            hidden += f" x {len(rows)} rows"
        query_log.info("%.1f ms  %s%s", (time.perf_counter() - started) * 1000,
                       " ".join(statement.split()), hidden)


def build_engine(url: DatabaseURL, settings: Settings, *, pooled: bool = True,
                 application_name: str = "celora") -> Engine:
    """A new Engine for `url`: pooled engines keep connections, direct ones (DDL, CLI) do not."""
    pool_kwargs: dict = {"poolclass": NullPool}
    if pooled:
        pool_kwargs = {"pool_size": url.connection_limit or 5, "max_overflow": 0 if url.connection_limit else 5,
                       "pool_pre_ping": True}
        if url.pool_timeout is not None:
            pool_kwargs["pool_timeout"] = url.pool_timeout
    engine = create_engine(url.sqlalchemy_url(), connect_args=connect_args(url, settings,
                           application_name=application_name), hide_parameters=True, **pool_kwargs)
    if url.pgbouncer:
        _install_transaction_settings(engine, url, settings)
    if settings.log_queries:
        _install_query_log(engine)
    return engine


_engines: dict[Settings, Engine] = {}


def get_engine(settings: Settings | None = None) -> Engine:
    """The shared pooled engine for app traffic (DATABASE_URL, or the local server), one per Settings."""
    from celora_cli.settings import load_settings

    settings = settings or load_settings()
    engine = _engines.get(settings)
    if engine is None:  # resolve only once: for the local server that means starting it
        engine = _engines[settings] = build_engine(resolve_urls(settings).pooled, settings, pooled=True)
    return engine


def get_direct_engine(settings: Settings | None = None, application_name: str = "celora") -> Engine:
    """A non-pooled engine on the direct URL, for migrations, DDL and advisory locks."""
    from celora_cli.settings import load_settings

    settings = settings or load_settings()
    return build_engine(direct_url(settings), settings, pooled=False, application_name=application_name)


@contextlib.contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A Session on the pooled engine that commits on success and rolls back on error."""
    engine = get_engine(settings)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
