"""The one engine factory: pooled (app traffic, maybe via PgBouncer) and direct (migrations, DDL, locks).

PgBouncer in transaction-pooling mode hands each transaction to whichever server connection is free, so
anything that lives on a server session breaks: server-side prepared statements (psycopg prepares a query
after 5 runs by default) and SET without LOCAL. With `?pgbouncer=true` the pooled engine therefore
disables prepared statements (`prepare_threshold=None`), sends no startup `options` (PgBouncer rejects
them) and applies timeouts/search_path per transaction with SET LOCAL.

Read-only work (`read_only=True`) goes to the replicas in CELORA_REPLICA_URLS, chosen by celora_cli.db.replicas;
each replica's engine is built here too, so a replica URL with ?pgbouncer=true gets the same treatment.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from celora_cli.config.settings import DatabaseURL, Settings

# Re-exported: callers and the public API import these from here.
from celora_cli.db.connect import (  # noqa: F401
    STARTUP_MARKER,
    ResolvedURLs,
    connect_args,
    direct_url,
    resolve_urls,
    sends_startup_options,
    startup_options_applied,
)

if TYPE_CHECKING:
    from celora_cli.db.replicas import ReadRouter

query_log = logging.getLogger("celora.sql")


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
_routers: dict[Settings, ReadRouter] = {}


def get_engine(settings: Settings | None = None, *, read_only: bool = False) -> Engine:
    """The shared pooled engine for app traffic (DATABASE_URL, or the local server), one per Settings.

    read_only=True: the engine for the next piece of read-only work, whose transactions run READ ONLY: a fit
    replica of CELORA_REPLICA_URLS (round-robin), else the primary. It is chosen at each call, so call it for
    each unit of work rather than keeping it (a kept one stays on its replica when that one falls behind)."""
    from celora_cli.config.settings import load_settings
    from celora_cli.local.startup import allowing_start

    settings = settings or allowing_start(load_settings())  # the library call is the command
    if read_only:
        return get_read_router(settings).route().engine
    engine = _engines.get(settings)
    if engine is None:  # resolve only once: for the local server that may mean starting it
        engine = _engines[settings] = build_engine(resolve_urls(settings).pooled, settings, pooled=True)
    return engine


def get_read_router(settings: Settings | None = None) -> ReadRouter:
    """The router behind read_only=True, one per Settings: `.status()` reports each replica's lag and fitness."""
    from celora_cli.config.settings import load_settings
    from celora_cli.db.replicas import ReadRouter
    from celora_cli.local.startup import allowing_start

    settings = settings or allowing_start(load_settings())  # the library call is the command
    router = _routers.get(settings)
    if router is None:
        router = _routers[settings] = ReadRouter(settings, get_engine(settings))
    return router


def get_direct_engine(settings: Settings | None = None, application_name: str = "celora") -> Engine:
    """A non-pooled engine on the direct URL, for migrations, DDL and advisory locks."""
    from celora_cli.config.settings import load_settings
    from celora_cli.local.startup import allowing_start

    settings = settings or allowing_start(load_settings())  # the library call is the command
    return build_engine(direct_url(settings), settings, pooled=False, application_name=application_name)


@contextlib.contextmanager
def session_scope(settings: Settings | None = None, *, read_only: bool = False) -> Iterator[Session]:
    """A Session on the pooled engine that commits on success and rolls back on error.

    read_only=True: a Session for reads, on a fit replica of CELORA_REPLICA_URLS (round-robin) or else the
    primary, in READ ONLY transactions either way: a write raises ReadOnlySessionError. `session.info["celora_route"]`
    names where it went ("replica 1", ..., or "primary")."""
    if read_only:
        session = get_read_router(settings).session()
    else:
        session = sessionmaker(get_engine(settings), expire_on_commit=False, info={"celora_route": "primary"})()
    with session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
