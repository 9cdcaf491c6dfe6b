"""The one engine factory's shared engines: one pooled engine per Settings for app traffic (DATABASE_URL, maybe
via PgBouncer), direct engines for migrations, DDL and locks, and the router that sends read-only work
(`read_only=True`) to the replicas in CELORA_REPLICA_URLS (celora_cli.db.replicas). How one engine is built,
PgBouncer's transaction mode included, is celora_cli.db.factory's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from celora_cli.config.settings import Settings, allowing_start, load_settings

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
from celora_cli.db.factory import build_engine, query_log  # noqa: F401
from celora_cli.db.replicas import ReadRouter

_engines: dict[Settings, Engine] = {}
_routers: dict[Settings, ReadRouter] = {}


def get_engine(settings: Settings | None = None, *, read_only: bool = False) -> Engine:
    """The shared pooled engine for app traffic (DATABASE_URL, or the local server), one per Settings.

    read_only=True: the engine for the next piece of read-only work, whose transactions run READ ONLY: a fit
    replica of CELORA_REPLICA_URLS (round-robin), else the primary. It is chosen at each call, so call it for
    each unit of work rather than keeping it (a kept one stays on its replica when that one falls behind)."""
    settings = settings or allowing_start(load_settings())  # the library call is the command
    if read_only:
        return get_read_router(settings).route().engine
    engine = _engines.get(settings)
    if engine is None:  # resolve only once: for the local server that may mean starting it
        engine = _engines[settings] = build_engine(resolve_urls(settings).pooled, settings, pooled=True)
    return engine


def get_read_router(settings: Settings | None = None) -> ReadRouter:
    """The router behind read_only=True, one per Settings: `.status()` reports each replica's lag and fitness."""
    settings = settings or allowing_start(load_settings())  # the library call is the command
    router = _routers.get(settings)
    if router is None:
        router = _routers[settings] = ReadRouter(settings, get_engine(settings))
    return router


def get_direct_engine(settings: Settings | None = None, application_name: str = "celora") -> Engine:
    """A non-pooled engine on the direct URL, for migrations, DDL and advisory locks."""
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
