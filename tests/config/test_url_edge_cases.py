"""URL forms libpq accepts, against the real test PostgreSQL: a percent-encoded unix-socket host, and a
?schema= that needs quoting and escaping in the startup options.

The session server (`pg_server`) listens on TCP only, so the socket tests put a small relay in front of it: a
real unix socket in a folder of our own (named where libpq looks: <dir>/.s.PGSQL.<port>) whose connections are
passed byte for byte to the server's TCP port. libpq, psycopg and celora see a genuine unix-socket connection;
the server behind it is the real one.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import text

from celora_cli.db.engine import build_engine, get_direct_engine
from tests.support import admin_execute, db_name, run_celora, settings_for
from tests.support.relay import Relay


@pytest.fixture
def socket_dir(pg_server):
    """A socket folder whose name has upper case and a space (so lower-casing or not decoding it shows),
    with a relay to the test server on the default port 5432."""
    directory = Path(tempfile.mkdtemp(prefix="cel-Sock "))
    relay = Relay.unix(directory, 5432, pg_server.port)
    yield directory, relay
    relay.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_percent_encoded_socket_host_connects_through_the_socket(socket_dir, empty_db):
    directory, relay = socket_dir
    url = f"postgresql://celora@{quote(str(directory), safe='')}/{db_name(empty_db)}"
    settings = settings_for(url)
    assert settings.database_url.host == str(directory)
    engine = get_direct_engine(settings)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == db_name(empty_db)
            assert conn.connection.driver_connection.info.host == str(directory)  # a socket dir, as written
    finally:
        engine.dispose()
    assert relay.accepted >= 1


def test_host_query_parameter_form_still_connects(socket_dir, empty_db):
    directory, relay = socket_dir
    url = f"postgresql:///{db_name(empty_db)}?host={quote(str(directory), safe='')}&user=celora"
    engine = get_direct_engine(settings_for(url))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    assert relay.accepted >= 1


def test_cli_status_through_a_percent_encoded_socket_host(socket_dir, migrated_db):
    directory, relay = socket_dir
    url = f"postgresql://celora:Zq9-very-secret@{quote(str(directory), safe='')}/{db_name(migrated_db)}"
    result = run_celora("db", "status", env={"DATABASE_URL": url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Zq9-very-secret" not in result.stdout + result.stderr
    assert relay.accepted >= 1


@pytest.mark.parametrize("schema", ["my schema", 'Odd "Name" \\ x'])
def test_schema_parameter_with_characters_to_escape_sets_search_path(pg_server, empty_db, schema):
    # Before: "invalid command-line argument for server process" (the space split the -c argument).
    quoted = '"' + schema.replace('"', '""') + '"'
    admin_execute(pg_server, f"CREATE SCHEMA {quoted}; CREATE TABLE {quoted}.things (id int); "
                             f"INSERT INTO {quoted}.things VALUES (1), (2)", db_name(empty_db))
    url = f"{empty_db}?schema={quote(schema, safe='')}"
    settings = settings_for(url)
    assert settings.database_url.pgbouncer is False
    engine = build_engine(settings.database_url, settings, pooled=False)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_schemas(false)")).scalar() == [schema]
            assert conn.execute(text("SELECT count(*) FROM things")).scalar() == 2  # found unqualified
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "30s"  # the other options survive
            assert conn.execute(text("SELECT current_setting('celora.direct_session')")).scalar() == "on"
    finally:
        engine.dispose()
