"""Building one Engine for one URL: pooled (app traffic, maybe via PgBouncer) or direct (migrations, DDL, locks).

PgBouncer in transaction-pooling mode hands each transaction to whichever server connection is free, so
anything that lives on a server session breaks: server-side prepared statements (psycopg prepares a query
after 5 runs by default) and SET without LOCAL. With `?pgbouncer=true` the pooled engine therefore
disables prepared statements (`prepare_threshold=None`), sends no startup `options` (PgBouncer rejects
them) and applies timeouts/search_path per transaction with SET LOCAL.

Each replica's engine (celora_cli.db.replicas) is built here too, so a replica URL with ?pgbouncer=true gets the
same treatment. The shared engines, one per Settings, are celora_cli.db.engine's.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import connect_args

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
