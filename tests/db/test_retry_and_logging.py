"""`with_retry` against real server failures, and CELORA_LOG_QUERIES through the real CLI.

Every failure here is a real error from the real test server: a backend terminated by an admin session,
a real serialization failure between two REPEATABLE READ transactions, errors raised by PL/pgSQL with an
explicit SQLSTATE, a syntax error and a unique violation.
"""

from __future__ import annotations

import json
import re
import threading

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from tenacity import RetryError

from celora_cli.db.retry import is_transient, with_retry
from celora_cli.migrate.lock import MIGRATION_LOCK_KEY
from tests.support import admin_execute, run_celora, settings_for


def terminate(pg_server, pid: int) -> None:
    """End a backend from another (admin) session and wait until it is gone."""
    admin_execute(pg_server, f"SELECT pg_terminate_backend({int(pid)}, 5000)")


def raise_sqlstate(conn, state: str, message: str) -> None:
    conn.execute(f"DO $$ BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = '{state}'; END $$")


# 1. A real lost connection is retried ---------------------------------------------------------------------

def test_retry_survives_a_terminated_backend_psycopg(pg_server, empty_db):
    calls, errors = [], []

    @with_retry(initial_wait=0.01)
    def answer() -> int:
        calls.append(1)
        with psycopg.connect(empty_db, autocommit=True) as conn:
            if len(calls) == 1:
                terminate(pg_server, conn.info.backend_pid)
            try:
                return conn.execute("SELECT 40 + 2").fetchone()[0]
            except Exception as exc:
                errors.append(exc)
                raise

    assert answer() == 42
    assert len(calls) == 2
    assert len(errors) == 1 and isinstance(errors[0], psycopg.OperationalError)
    assert is_transient(errors[0])


def test_retry_survives_a_terminated_backend_sqlalchemy(pg_server, empty_db):
    from celora_cli.db.engine import build_engine

    settings = settings_for(empty_db)
    engine = build_engine(settings.database_url, settings, pooled=False)
    calls, errors = [], []

    @with_retry(initial_wait=0.01)
    def count_databases() -> int:
        calls.append(1)
        with engine.connect() as conn:
            if len(calls) == 1:
                terminate(pg_server, conn.connection.dbapi_connection.info.backend_pid)
            try:
                return conn.execute(text("SELECT count(*) FROM pg_database WHERE datname = current_database()"
                                         )).scalar()
            except Exception as exc:
                errors.append(exc)
                raise

    try:
        assert count_databases() == 1
    finally:
        engine.dispose()
    assert len(calls) == 2
    assert len(errors) == 1 and isinstance(errors[0], sqlalchemy.exc.OperationalError)
    assert is_transient(errors[0])


# 2. Real non-transient errors are raised at once ----------------------------------------------------------

def test_syntax_error_is_not_retried(empty_db):
    calls = []

    @with_retry(initial_wait=0.01)
    def broken():
        calls.append(1)
        with psycopg.connect(empty_db) as conn:
            return conn.execute("SELEC 1").fetchone()

    with pytest.raises(psycopg.errors.SyntaxError) as info:
        broken()
    assert info.value.sqlstate == "42601"
    assert len(calls) == 1


def test_unique_violation_is_not_retried(migrated_db):
    from celora_cli.db.engine import get_engine, session_scope
    from celora_cli.db.models import User

    settings = settings_for(migrated_db)
    calls = []

    @with_retry(initial_wait=0.01)
    def add_twice() -> None:
        calls.append(1)
        with session_scope(settings) as session:
            session.add(User(firebase_uid="same-uid"))
            session.flush()
            session.add(User(firebase_uid="same-uid"))
            session.flush()

    try:
        with pytest.raises(sqlalchemy.exc.IntegrityError) as info:
            add_twice()
    finally:
        get_engine(settings).dispose()
    assert info.value.orig.sqlstate == "23505"
    assert len(calls) == 1
    with psycopg.connect(migrated_db) as conn:  # and the session rolled back: nothing was kept
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_unknown_role_is_not_retried(pg_server):
    calls = []
    url = pg_server.url("postgres").replace("celora@", "nobody_here@")

    @with_retry(initial_wait=0.01)
    def connect():
        calls.append(1)
        psycopg.connect(url).close()

    with pytest.raises(psycopg.OperationalError, match='role "nobody_here" does not exist'):
        connect()
    assert len(calls) == 1


# 3. Serialization failures are retried --------------------------------------------------------------------

def test_real_serialization_failure_is_retried(empty_db):
    with psycopg.connect(empty_db, autocommit=True) as setup:
        setup.execute("CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)")
        setup.execute("INSERT INTO counter VALUES (1, 0)")
    calls, errors = [], []

    @with_retry(initial_wait=0.01)
    def increment() -> int:
        calls.append(1)
        with psycopg.connect(empty_db) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT n FROM counter WHERE id = 1").fetchone()  # takes the snapshot
            if len(calls) == 1:  # a concurrent writer commits after our snapshot
                with psycopg.connect(empty_db, autocommit=True) as other:
                    other.execute("UPDATE counter SET n = n + 100 WHERE id = 1")
            try:
                value = conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n").fetchone()[0]
            except Exception as exc:
                errors.append(exc)
                raise
            conn.commit()
            return value

    assert increment() == 101
    assert len(calls) == 2
    assert len(errors) == 1 and isinstance(errors[0], psycopg.errors.SerializationFailure)
    assert errors[0].sqlstate == "40001"


@pytest.mark.parametrize("state", ["40001", "40P01"])
def test_raised_serialization_failure_and_deadlock_are_retried(empty_db, state):
    calls = []

    @with_retry(initial_wait=0.01)
    def flaky() -> str:
        calls.append(1)
        with psycopg.connect(empty_db) as conn:
            if len(calls) == 1:
                raise_sqlstate(conn, state, "first attempt fails")
            return conn.execute("SELECT 'done'").fetchone()[0]

    assert flaky() == "done"
    assert len(calls) == 2


# 4. Giving up ---------------------------------------------------------------------------------------------

def test_gives_up_after_three_attempts_with_the_last_error(empty_db):
    calls = []

    @with_retry(initial_wait=0.01)
    def always_conflicts():
        calls.append(1)
        with psycopg.connect(empty_db) as conn:
            raise_sqlstate(conn, "40001", f"conflict on attempt {len(calls)}")

    with pytest.raises(psycopg.errors.SerializationFailure) as info:
        always_conflicts()
    assert not isinstance(info.value, RetryError)
    assert len(calls) == 3
    assert "conflict on attempt 3" in str(info.value)
    assert info.value.sqlstate == "40001"


def test_attempts_is_configurable(empty_db):
    calls = []

    def always_conflicts():
        calls.append(1)
        with psycopg.connect(empty_db) as conn:
            raise_sqlstate(conn, "40001", f"conflict on attempt {len(calls)}")

    with pytest.raises(psycopg.errors.SerializationFailure, match="conflict on attempt 5"):
        with_retry(attempts=5, initial_wait=0.001)(always_conflicts)()
    assert len(calls) == 5


# 5. CELORA_LOG_QUERIES ------------------------------------------------------------------------------------

SQL_LINE = re.compile(r"^celora\.sql (\d+\.\d) ms  (\S.*)$")


def sql_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("celora.sql")]


def test_log_queries_shows_sql_and_durations_but_never_parameters(migrated_db):
    base = {"DATABASE_URL": migrated_db}
    runs = {}

    def run(key, *args, **env):
        runs[key] = run_celora(*args, env={**base, **env})

    threads = [threading.Thread(target=run, args=a, kwargs=k) for a, k in [
        (("logged", "db", "migrate-deploy"), {"CELORA_LOG_QUERIES": "true"}),
        (("json", "db", "migrate-deploy", "--json"), {"CELORA_LOG_QUERIES": "true"}),
        (("health", "db", "health", "--json"), {"CELORA_LOG_QUERIES": "true"}),
        (("quiet", "db", "migrate-deploy"), {}),
    ]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    logged = runs["logged"]
    assert logged.returncode == 0, logged.stderr
    lines = sql_lines(logged.stderr)
    assert lines, logged.stderr
    for line in lines:
        assert SQL_LINE.match(line), line
    lock = [line for line in lines if "pg_try_advisory_xact_lock" in line]
    assert lock, lines
    assert all(line.endswith("[1 parameter(s) hidden]") for line in lock), lock
    assert str(MIGRATION_LOCK_KEY) == "1667591279"
    assert "1667591279" not in logged.stdout + logged.stderr
    assert "No pending migrations" in logged.stdout
    assert not sql_lines(logged.stdout)  # logging goes to stderr only

    quiet = runs["quiet"]
    assert quiet.returncode == 0, quiet.stderr
    assert "celora.sql" not in quiet.stdout + quiet.stderr

    logged_json = runs["json"]
    assert logged_json.returncode == 0, logged_json.stderr
    assert json.loads(logged_json.stdout)["applied"] == []  # stdout stays pure JSON
    assert any("pg_try_advisory_xact_lock" in line for line in sql_lines(logged_json.stderr)), logged_json.stderr
    assert "1667591279" not in logged_json.stdout + logged_json.stderr

    # `db health` builds its engines with log_queries=False on purpose (health.py); its JSON stays clean too.
    health = runs["health"]
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "healthy"
    assert "celora.sql" not in health.stdout
