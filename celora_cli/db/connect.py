"""Where celora connects and with what arguments, without importing SQLAlchemy.

The engine factory (celora_cli.db.engine) builds on this; `db status` and `db health` use `connect()` directly,
because they answer in a few queries and SQLAlchemy's import alone costs more than that.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.errors import DatabaseUnreachable

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
    """DATABASE_URL / DIRECT_DATABASE_URL, or the celora-managed local PostgreSQL; each URL knows its setting.

    Working out the local server's URL starts it only when the command allowed that (`settings.start_local_server`,
    celora_cli.local.startup) and the caller does not veto it: start=False (health, which reports and must not
    change what it reports on) raises LocalServerError when the local server is not running."""
    if settings.uses_local_server:
        url = settings.local_database_url
        if url is None:
            # db sits below local in the layers; only a run with no DATABASE_URL needs the local server.
            from celora_cli.local.startup import local_database_url

            url = local_database_url(settings, start=start and settings.start_local_server)
        return ResolvedURLs(pooled=url, direct=settings.direct_database_url or url)
    pooled = settings.database_url
    assert pooled is not None  # uses_local_server is exactly "no DATABASE_URL"
    direct = settings.direct_database_url
    if direct is None and not pooled.pgbouncer:
        direct = pooled
    return ResolvedURLs(pooled=pooled, direct=direct)


def direct_url(settings: Settings, *, start: bool = True) -> DatabaseURL:
    """The URL for DDL, knowing its setting (`.setting`, for messages): raises ConfigError for a PgBouncer
    DATABASE_URL with no DIRECT_DATABASE_URL."""
    url = settings.ddl_url()  # raises rather than return None when there is a DATABASE_URL
    if url is None:  # the local server, not yet resolved
        local = resolve_urls(settings, start=start).direct
        assert local is not None  # the local server is always reachable directly
        return local
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


_MARKER_QUERY = f"SELECT current_setting('{STARTUP_MARKER}', true)"


def startup_options_applied(conn) -> bool:
    """On a connection to a URL for which `sends_startup_options` is true: did the server session get them?
    False means something between celora and PostgreSQL (a transaction pooler) dropped them.
    `conn` is a psycopg Connection or a SQLAlchemy one."""
    if hasattr(conn, "exec_driver_sql"):
        return conn.exec_driver_sql(_MARKER_QUERY).scalar() == "on"
    return conn.execute(_MARKER_QUERY).fetchone()[0] == "on"


def libpq_params(url: DatabaseURL) -> dict:
    """libpq keywords for `url` (celora's own parameters removed). Keywords, not a URL: no second round of
    URL encoding can change a socket path, a database name or a password on the way."""
    params: dict = dict(url.libpq_params)
    if url.host and not url.host_in_query:
        params["host"] = url.host
    if url.port:
        params["port"] = url.port
    if url.database:
        params["dbname"] = url.database
    if url.username:
        params["user"] = url.username
    if url.password is not None:
        params["password"] = url.password
    return params


def connect(url: DatabaseURL, settings: Settings, *, application_name: str, autocommit: bool = True,
            watch_silence: bool = False):
    """A plain psycopg connection with the same connect arguments as the engines (startup options, timeouts,
    keepalives). For commands that answer a question in a few queries, where SQLAlchemy's import would cost
    more than the answer: `db status`, `db health`.

    watch_silence=True (short questions only: a caller that lifts statement_timeout for long work must not ask
    for it) also ends each statement on the client side after CELORA_STATEMENT_TIMEOUT + CELORA_CONNECT_TIMEOUT,
    for when the path to the server goes silent and the server's own timeout can't answer."""
    import psycopg

    kwargs = {**libpq_params(url), **connect_args(url, settings, application_name=application_name)}
    cursor = _logging_cursor() if settings.log_queries else psycopg.Cursor
    if watch_silence and settings.statement_timeout:
        cursor = _watched_cursor(cursor, settings.statement_timeout + settings.connect_timeout, url)
    return psycopg.connect("", autocommit=autocommit, cursor_factory=cursor, **kwargs)


def _watched_cursor(base, seconds: float, url: DatabaseURL):
    """Cursors whose statements end within `seconds` even when the path to the server goes silent.

    The server enforces statement_timeout, but only a server that is still talking can: through a proxy, tunnel
    or pooler that accepted the connection and then stopped forwarding, the kernel keeps acknowledging and libpq
    waits forever. Past the statement timeout plus the connect timeout, the watchdog shuts the socket down,
    which wakes libpq, and the error says what happened instead of "server closed the connection"."""
    import psycopg

    class WatchedCursor(base):
        def execute(self, query, params=None, **kwargs):
            watch = _WATCHDOG.watch(seconds, self.connection)
            try:
                return super().execute(query, params, **kwargs)
            except psycopg.OperationalError as exc:
                if not watch.fired:
                    raise
                raise no_answer(url, seconds, "CELORA_STATEMENT_TIMEOUT plus CELORA_CONNECT_TIMEOUT") from exc
            finally:
                watch.done = True

    return WatchedCursor


def no_answer(url: DatabaseURL, seconds: float, made_of: str):
    return DatabaseUnreachable(
        f"No answer from the database server at {url.display_host} ({url.masked}) within {seconds:g} s "
        f"({made_of}): the connection was open but nothing came back, as through a proxy, tunnel or pooler that "
        "stopped forwarding, or a stopped server.",
        f"Check the path to the server and that it answers: `{url.pg_isready}`.")


@contextlib.contextmanager
def answer_within(dbapi_conn, seconds: float, url: DatabaseURL, made_of: str):
    """celora's own short statements on a connection whose other statements may rightly run for hours (the
    migration connection: a migration has no statement timeout). Whatever runs inside ends within `seconds`
    even when the path to the server goes silent (see _watched_cursor); `made_of` names the settings that
    make up `seconds`, for the message."""
    watch = start_watch(dbapi_conn, seconds)
    try:
        yield
    except DatabaseUnreachable:  # already said (by a bound nested in this one)
        raise
    except Exception as exc:
        if watch.fired:
            raise no_answer(url, seconds, made_of) from exc
        raise
    finally:
        watch.done = True


def start_watch(dbapi_conn, seconds: float) -> _Watch:
    """Break `dbapi_conn`'s socket unless the watch is marked done (`.done = True`) within `seconds`; `.fired`
    says whether it was broken. For code that cannot use answer_within (a connection made inside a pool)."""
    return _WATCHDOG.watch(seconds, dbapi_conn)


class _Watch:
    __slots__ = ("conn", "done", "fired")

    def __init__(self, conn) -> None:
        self.conn, self.done, self.fired = conn, False, False


class _Watchdog:
    """One thread for the whole process, holding every running statement's deadline: a statement costs a heap
    push, not a thread of its own (a timer thread per statement tripled the cost of a `SELECT 1`)."""

    def __init__(self) -> None:
        import threading

        self._cond = threading.Condition()
        self._heap: list = []
        self._count = 0
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float, conn) -> _Watch:
        import heapq
        import threading
        import time

        watch = _Watch(conn)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="celora-statement-watchdog", daemon=True)
                self._thread.start()
            self._count += 1
            deadline = time.monotonic() + seconds
            wake = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, self._count, watch))
            if wake:
                self._cond.notify()
        return watch

    def _run(self) -> None:
        import heapq
        import time

        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                watch = heapq.heappop(self._heap)[2]
                watch.fired = True
                _break_silence(watch.conn)


_WATCHDOG = _Watchdog()


def _break_silence(conn) -> None:
    import contextlib
    import os
    import socket

    with contextlib.suppress(Exception):  # the connection may be closed by now: nothing to break
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the waiting libpq sees end-of-file at once
        finally:
            sock.close()


def _logging_cursor():
    """CELORA_LOG_QUERIES for plain psycopg connections: the same `celora.sql` lines as the engines."""
    import logging
    import time

    import psycopg

    log = logging.getLogger("celora.sql")

    class LoggingCursor(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            started = time.perf_counter()
            try:
                return super().execute(query, params, **kwargs)
            finally:
                count = len(params) if isinstance(params, (list, tuple, dict)) else 0
                hidden = f" [{count} parameter(s) hidden]" if count else ""
                log.info("%.1f ms  %s%s", (time.perf_counter() - started) * 1000, " ".join(str(query).split()),
                         hidden)

    return LoggingCursor
