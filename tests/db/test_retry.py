"""Unit tests for celora_cli.db.retry: which real psycopg/SQLAlchemy errors are transient, and with_retry.

Exceptions are built directly (no database). Sleeps are recorded instead of slept.
"""

from __future__ import annotations

import time

import psycopg
import psycopg.errors as pe
import pytest
import sqlalchemy.exc as sa_exc
import tenacity

from celora_cli.db.retry import is_transient, retry_call, with_retry


def wrap(orig: BaseException, **kwargs) -> sa_exc.DBAPIError:
    return sa_exc.OperationalError("SELECT 1", {}, orig, **kwargs)


def wrap_instance(orig: Exception) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error)


TRANSIENT = {
    "refused": lambda: psycopg.OperationalError("connection failed: Connection refused"),
    "server_closed": lambda: psycopg.OperationalError(
        "consuming input failed: server closed the connection unexpectedly"),
    "timeout": lambda: psycopg.errors.ConnectionTimeout("connection timeout expired"),
    "serialization": lambda: pe.SerializationFailure("could not serialize access"),
    "deadlock": lambda: pe.DeadlockDetected("deadlock detected"),
    "admin_shutdown": lambda: pe.AdminShutdown("terminating connection due to administrator command"),
    "crash_shutdown": lambda: pe.CrashShutdown("x"),
    "cannot_connect_now": lambda: pe.CannotConnectNow("the database system is starting up"),
    "too_many": lambda: pe.TooManyConnections("sorry, too many clients already"),
    "class08": lambda: pe.ConnectionFailure("x"),
    "conn_reset_builtin": lambda: ConnectionResetError("reset by peer"),
}

NOT_TRANSIENT = {
    "syntax": lambda: pe.SyntaxError('syntax error at or near "SELEC"'),
    "unique": lambda: pe.UniqueViolation("duplicate key value"),
    "invalid_password": lambda: pe.InvalidPassword('password authentication failed for user "x"'),
    "password_message": lambda: psycopg.OperationalError(
        'connection failed: FATAL:  password authentication failed for user "x"'),
    "no_hba": lambda: psycopg.OperationalError(
        'connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "x"'),
    "undefined_table": lambda: pe.UndefinedTable('relation "users" does not exist'),
    "division": lambda: pe.DivisionByZero("division by zero"),
    "query_canceled": lambda: pe.QueryCanceled("canceling statement due to statement timeout"),
    "unknown_operational": lambda: psycopg.OperationalError("something odd"),
    "value_error": lambda: ValueError("connection refused"),  # not a DB error, whatever the text says
}


@pytest.mark.parametrize("name", sorted(TRANSIENT))
def test_transient_raw(name):
    assert is_transient(TRANSIENT[name]()) is True


@pytest.mark.parametrize("name", sorted(NOT_TRANSIENT))
def test_not_transient_raw(name):
    assert is_transient(NOT_TRANSIENT[name]()) is False


@pytest.mark.parametrize("name", sorted(n for n in TRANSIENT if n != "conn_reset_builtin"))
def test_transient_wrapped_in_sqlalchemy(name):
    orig = TRANSIENT[name]()
    assert is_transient(wrap(orig)) is True
    instance = wrap_instance(orig)
    assert isinstance(instance, sa_exc.DBAPIError) and instance.orig is orig
    assert is_transient(instance) is True


@pytest.mark.parametrize("name", sorted(n for n in NOT_TRANSIENT if n != "value_error"))
def test_not_transient_wrapped_in_sqlalchemy(name):
    orig = NOT_TRANSIENT[name]()
    assert is_transient(wrap(orig)) is False
    assert is_transient(wrap_instance(orig)) is False


def test_sqlstate_of_built_exceptions_is_what_we_think():
    assert pe.SerializationFailure("x").sqlstate == "40001"
    assert pe.AdminShutdown("x").sqlstate == "57P01"
    assert pe.TooManyConnections("x").sqlstate == "53300"
    assert pe.InvalidPassword("x").sqlstate == "28P01"
    assert psycopg.OperationalError("connection failed: Connection refused").sqlstate is None


def test_invalidated_connection_is_transient_even_with_unknown_message():
    orig = psycopg.OperationalError("something odd")
    assert is_transient(wrap(orig)) is False
    assert is_transient(wrap(orig, connection_invalidated=True)) is True


def test_auth_sqlstate_wins_over_invalidated_connection():
    assert is_transient(wrap(pe.InvalidPassword("x"), connection_invalidated=True)) is False


# Connection-time failures from libpq reach psycopg as a plain OperationalError WITHOUT a sqlstate
# (psycopg.generators._connect: OperationalError(f"connection failed: {message}")), so only the text is there.
def test_connect_time_too_many_clients_is_transient():
    exc = psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                                   "FATAL:  sorry, too many clients already")
    assert exc.sqlstate is None
    assert is_transient(exc) is True


@pytest.mark.parametrize("phase", ["starting up", "shutting down"])
def test_connect_time_server_starting_or_stopping_is_transient(phase):
    exc = psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                                   f"FATAL:  the database system is {phase}")
    assert is_transient(exc) is True


# --------------------------------------------------------------------------- with_retry / retry_call


class Flaky:
    """Fails `failures` times with fresh exceptions from `make`, then returns `value`."""

    def __init__(self, failures, make, value="ok"):
        self.failures, self.make, self.value = failures, make, value
        self.calls = 0
        self.raised: list[BaseException] = []
        self.args: list = []

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.args.append((args, kwargs))
        if self.calls <= self.failures:
            exc = self.make()
            self.raised.append(exc)
            raise exc
        return self.value


@pytest.fixture
def sleeps(monkeypatch):
    """Record tenacity's waits instead of sleeping (tenacity.nap.sleep calls time.sleep)."""
    recorded: list[float] = []
    monkeypatch.setattr(tenacity.nap.time, "sleep", recorded.append)
    return recorded


def refused():
    return psycopg.OperationalError("connection failed: Connection refused")


def test_succeeds_after_two_transient_failures(sleeps):
    fn = Flaky(2, refused, value=42)
    assert with_retry(initial_wait=0.001)(fn)("a", k=1) == 42
    assert fn.calls == 3
    assert fn.args == [(("a",), {"k": 1})] * 3
    assert sleeps == [0.001, 0.002]


def test_always_transient_calls_three_times_and_raises_last_error(sleeps):
    fn = Flaky(10, lambda: pe.SerializationFailure("could not serialize"))
    with pytest.raises(pe.SerializationFailure) as info:
        with_retry(initial_wait=0.001)(fn)()
    assert fn.calls == 3
    assert info.value is fn.raised[-1]
    assert not isinstance(info.value, tenacity.RetryError)
    assert len(sleeps) == 2


def test_always_transient_wrapped_error_is_reraised_as_is(sleeps):
    fn = Flaky(10, lambda: wrap(refused()))
    with pytest.raises(sa_exc.OperationalError) as info:
        with_retry(initial_wait=0.001)(fn)()
    assert fn.calls == 3
    assert info.value is fn.raised[-1]


@pytest.mark.parametrize("make", [lambda: pe.SyntaxError("x"), lambda: pe.UniqueViolation("x"),
                                  lambda: pe.InvalidPassword("x"), lambda: ValueError("boom"),
                                  lambda: wrap(pe.UndefinedTable("x"))])
def test_non_transient_error_raised_after_one_call(sleeps, make):
    fn = Flaky(10, make)
    with pytest.raises(type(make())) as info:
        with_retry(initial_wait=0.001)(fn)()
    assert fn.calls == 1
    assert info.value is fn.raised[0]
    assert sleeps == []


def test_bare_decorator_uses_defaults(sleeps):
    calls = []

    @with_retry
    def work(x):
        """Docstring kept."""
        calls.append(x)
        if len(calls) < 3:
            raise refused()
        return x * 2

    assert work(21) == 42
    assert calls == [21, 21, 21]
    assert work.__name__ == "work"
    assert work.__doc__ == "Docstring kept."
    assert sleeps == [0.1, 0.2]  # default initial_wait 0.1 s, doubling


def test_decorator_with_attempts(sleeps):
    fn = Flaky(10, refused)

    @with_retry(attempts=5, initial_wait=0.001)
    def work():
        return fn()

    with pytest.raises(psycopg.OperationalError) as info:
        work()
    assert fn.calls == 5
    assert info.value is fn.raised[-1]
    assert len(sleeps) == 4


def test_attempts_one_means_no_retry(sleeps):
    fn = Flaky(10, refused)
    with pytest.raises(psycopg.OperationalError):
        with_retry(attempts=1)(fn)()
    assert fn.calls == 1
    assert sleeps == []


def test_waits_are_capped_by_max_wait(sleeps):
    fn = Flaky(10, refused)
    with pytest.raises(psycopg.OperationalError):
        with_retry(attempts=5, initial_wait=1.0, max_wait=2.0)(fn)()
    assert sleeps == [1.0, 2.0, 2.0, 2.0]


def test_with_retry_fn_call_form(sleeps):
    fn = Flaky(1, refused, value="done")
    assert with_retry(fn)(1, 2, x=3) == "done"
    assert fn.calls == 2
    assert fn.args[-1] == ((1, 2), {"x": 3})


def test_retry_call(sleeps):
    fn = Flaky(2, refused, value="v")
    assert retry_call(fn, "arg", key="kw") == "v"
    assert fn.calls == 3
    assert fn.args == [(("arg",), {"key": "kw"})] * 3


def test_retry_call_attempts(sleeps):
    fn = Flaky(10, lambda: pe.DeadlockDetected("x"))
    with pytest.raises(pe.DeadlockDetected) as info:
        retry_call(fn, attempts=2)
    assert fn.calls == 2
    assert info.value is fn.raised[-1]


def test_retry_state_is_fresh_per_call(sleeps):
    fn = Flaky(2, refused)
    wrapped = with_retry(initial_wait=0.001)(fn)
    assert wrapped() == "ok"
    fn.calls, fn.failures = 0, 2
    assert wrapped() == "ok"  # a second call gets its own 3 attempts
    assert fn.calls == 3


def test_real_sleep_is_short_with_tiny_initial_wait():
    fn = Flaky(2, refused)
    started = time.monotonic()
    assert with_retry(initial_wait=0.001)(fn)() == "ok"
    assert time.monotonic() - started < 0.5
