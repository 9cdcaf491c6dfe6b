"""Bounded retries for transient database failures, on tenacity.

Transient: the connection was refused, reset or lost (SQLSTATE class 08 or a libpq connection message),
the server is shutting down or starting (57P01-57P03), too many connections (53300), serialization
failure (40001) and deadlock (40P01). Never syntax, constraint or authentication errors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar, overload

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from celora_cli.db.errors import root_cause, sqlstate_of

T = TypeVar("T")

TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})
_CONNECTION_MESSAGES = ("connection refused", "connection reset", "server closed the connection",
                        "connection is lost", "the connection is closed", "could not connect",
                        "consuming input failed", "terminating connection", "timeout expired",
                        "no connection to the server",
                        # At connect time libpq reports these as text, without a SQLSTATE:
                        "too many clients", "too many connections", "remaining connection slots",
                        "the database system is starting up", "the database system is shutting down",
                        "the database system is in recovery mode")
_NEVER = ("password authentication failed", "no password supplied", "no pg_hba.conf entry",
          "authentication failed")


def is_transient(exc: BaseException) -> bool:
    """True for failures that a retry can cure."""
    import psycopg
    import sqlalchemy.exc

    cause = root_cause(exc)
    state = sqlstate_of(exc)
    if state is not None:  # syntax (42), constraint (23), data (22) and auth (28) errors fall through to False
        return state.startswith("08") or state in TRANSIENT_SQLSTATES
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(cause, (psycopg.OperationalError, ConnectionError)):
        text = str(cause).lower()
        if any(m in text for m in _NEVER):
            return False
        return isinstance(cause, ConnectionError) or any(m in text for m in _CONNECTION_MESSAGES)
    return False


@overload
def with_retry(fn: Callable[..., T]) -> Callable[..., T]: ...
@overload
def with_retry(*, attempts: int = 3, initial_wait: float = 0.1,
               max_wait: float = 2.0) -> Callable[[Callable[..., T]], Callable[..., T]]: ...


def with_retry(fn=None, *, attempts: int = 3, initial_wait: float = 0.1, max_wait: float = 2.0):
    """Retry `fn` on transient failures: `with_retry(fn)(...)`, `@with_retry` or `@with_retry(attempts=5)`.

    Waits grow exponentially (0.1 s, 0.2 s, ... capped at max_wait). When it gives up it raises the
    last error itself (not a RetryError), so callers handle the real exception.
    """

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def wrapper(*args, **kwargs) -> T:
            retrying = Retrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=initial_wait, max=max_wait),
                retry=retry_if_exception(is_transient),
                reraise=True,
            )
            return retrying(func, *args, **kwargs)

        return wrapper

    return decorate(fn) if fn is not None else decorate


def retry_call(fn: Callable[..., T], *args, attempts: int = 3, **kwargs) -> T:
    """Call `fn(*args, **kwargs)` now, retrying transient failures."""
    return with_retry(attempts=attempts)(fn)(*args, **kwargs)
