"""The pooled engine behind a real PgBouncer in transaction mode (one server connection per database)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from celora_cli.db.engine import build_engine, get_engine, session_scope
from celora_cli.db.models import User
from tests.support import db_name, settings_for


def test_raw_prepared_statements_break_through_pgbouncer(pgbouncer, migrated_db):
    """Control: without celora's settings, psycopg's prepared statements collide in transaction mode."""
    url = pgbouncer(db_name(migrated_db), flag=False)
    first, second = psycopg.connect(url, autocommit=True), psycopg.connect(url, autocommit=True)
    try:
        first.prepare_threshold = second.prepare_threshold = 0  # prepare at once
        first.execute("SELECT %s::int", (1,))
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            second.execute("SELECT %s::int", (1,))
    finally:
        first.close()
        second.close()


def test_pooled_engine_never_prepares(pgbouncer, migrated_db):
    settings = settings_for(pgbouncer(db_name(migrated_db)), direct=migrated_db)
    engine = build_engine(settings.database_url, settings, pooled=True)
    # Two client connections take turns on PgBouncer's single server connection, each far past psycopg's
    # default prepare threshold (5): any server-side prepared statement would collide or go missing.
    with engine.connect() as first, engine.connect() as second:
        for i in range(20):
            for conn in (first, second):
                assert conn.execute(text("SELECT CAST(:n AS int) + 1"), {"n": i}).scalar() == i + 1
                conn.execute(select(User).where(User.firebase_uid == f"uid-{i}")).all()
                conn.commit()  # end the transaction so PgBouncer hands the server connection over
    engine.dispose()


def test_statement_timeout_applies_per_transaction_and_does_not_leak(pgbouncer, migrated_db):
    pooled = pgbouncer(db_name(migrated_db))
    settings = settings_for(pooled, direct=migrated_db, CELORA_STATEMENT_TIMEOUT="0.5")
    engine = build_engine(settings.database_url, settings, pooled=True)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "500ms"
        with pytest.raises(OperationalError) as caught:
            conn.execute(text("SELECT pg_sleep(2)"))
        assert caught.value.orig.sqlstate == "57014"
    engine.dispose()
    # The same single server connection, seen by another client: no timeout left behind.
    with psycopg.connect(pgbouncer(db_name(migrated_db), flag=False), autocommit=True) as other:
        assert other.execute("SHOW statement_timeout").fetchone()[0] == "0"


def test_session_scope_writes_through_pgbouncer(pgbouncer, migrated_db):
    settings = settings_for(pgbouncer(db_name(migrated_db)), direct=migrated_db)
    with session_scope(settings) as session:
        session.add(User(firebase_uid="fb-1", email="Alice@Example.com"))
    with session_scope(settings) as session:
        assert session.scalars(select(User.email)).one() == "Alice@Example.com"
    get_engine(settings).dispose()
