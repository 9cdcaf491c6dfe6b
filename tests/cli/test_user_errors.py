"""The errors users actually hit, through the real `celora` CLI against the real test server.

Every case checks the documented exit code, that stderr names the cause and the fix (the hint), that no
Python traceback is shown (unless --debug asks for one) and that the password from the URL never appears.
The test server uses trust auth, so the passwords in these URLs are accepted and ignored: they are there
only to catch a leak.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import ProgrammingError

from celora_cli.errors import ExitCode, SchemaNotMigrated
from tests.support import admin_execute, db_name, free_port, run_celora, settings_for

PASSWORD = "Zq9-very-secret"


def with_password(url: str, password: str = PASSWORD, user: str = "celora") -> str:
    """postgresql://celora@host:port/db -> postgresql://USER:PASSWORD@host:port/db"""
    scheme, rest = url.split("://", 1)
    host_and_path = rest.split("@", 1)[1] if "@" in rest else rest
    return f"{scheme}://{user}:{password}@{host_and_path}"


def unreachable_url(password: str = PASSWORD) -> tuple[str, int]:
    port = free_port()  # bound and released: nothing listens there
    return f"postgresql://celora:{password}@127.0.0.1:{port}/celora", port


def run_many(*calls: tuple[tuple[str, ...], dict]):
    """Run several independent CLI invocations at once (each is a separate process): keeps the file fast."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run_celora, *args, env=env) for args, env in calls]
        return [f.result() for f in futures]


def assert_clean(result, *secrets: str, traceback_allowed: bool = False) -> None:
    both = result.stdout + result.stderr
    if not traceback_allowed:
        assert "Traceback" not in both, both
    for secret in secrets or (PASSWORD,):
        assert secret not in both, f"password {secret!r} leaked:\n{both}"


# 1. Can't reach the server --------------------------------------------------------------------------------

def test_unreachable_server_exit_4_with_pg_isready_hint():
    url, port = unreachable_url()
    deploy, status = run_many((("db", "migrate-deploy"), {"DATABASE_URL": url}),
                              (("db", "status"), {"DATABASE_URL": url}))
    for result in (deploy, status):
        assert result.returncode == ExitCode.UNREACHABLE == 4, result.stderr
        assert "Can't reach database server at 127.0.0.1:" + str(port) in result.stderr
        assert f"pg_isready -h 127.0.0.1 -p {port}" in result.stderr
        assert "Hint:" in result.stderr
        assert "postgresql://celora:****@127.0.0.1" in result.stderr  # the URL is shown, masked
        assert result.stdout == ""
        assert_clean(result)


# 2. Authentication failed ---------------------------------------------------------------------------------

def test_unknown_role_is_an_authentication_failure_exit_5(pg_server):
    url = with_password(pg_server.url("postgres"), user="nobody_here")
    result = run_celora("db", "migrate-deploy", env={"DATABASE_URL": url})
    assert result.returncode == ExitCode.AUTH == 5, result.stderr
    assert "Authentication failed for user 'nobody_here'" in result.stderr
    assert 'role "nobody_here" does not exist' in result.stderr
    assert "Hint: Check the user name and password in DATABASE_URL" in result.stderr
    assert_clean(result)


# 3. Database does not exist -------------------------------------------------------------------------------

def test_missing_database_exit_6(pg_server):
    url = with_password(pg_server.url("no_such_database_here"))
    result = run_celora("db", "status", env={"DATABASE_URL": url})
    assert result.returncode == ExitCode.DATABASE_MISSING == 6, result.stderr
    assert "Database 'no_such_database_here' does not exist on 127.0.0.1:" in result.stderr
    assert f"createdb -h 127.0.0.1 -p {pg_server.port} no_such_database_here" in result.stderr
    assert_clean(result)


# 4. Too many connections ----------------------------------------------------------------------------------

@pytest.fixture
def limited_role(pg_server):
    name = f"limited_{os.getpid()}"
    admin_execute(pg_server, f'DROP ROLE IF EXISTS "{name}"')
    admin_execute(pg_server, f'CREATE ROLE "{name}" LOGIN CONNECTION LIMIT 0')
    yield name
    admin_execute(pg_server, f'DROP ROLE IF EXISTS "{name}"')


def test_connection_limit_reached_exit_8_with_pgbouncer_hint(pg_server, limited_role):
    # FATAL 53300 'too many connections for role "x"' contains 'role "', which once matched the
    # authentication markers first and was reported as exit 5.
    url = with_password(pg_server.url("postgres"), user=limited_role)
    result = run_celora("db", "migrate-deploy", env={"DATABASE_URL": url})
    assert f'too many connections for role "{limited_role}"' in result.stderr, result.stderr
    assert_clean(result)
    assert result.returncode == ExitCode.TOO_MANY_CONNECTIONS == 8, result.stderr
    assert "has no connection slots left" in result.stderr
    assert "Authentication failed" not in result.stderr
    assert "PgBouncer" in result.stderr.split("Hint:", 1)[1]


# 5. Table does not exist (library) ------------------------------------------------------------------------

def test_missing_table_translates_to_schema_not_migrated(empty_db):
    from celora_cli.config.settings import parse_database_url
    from celora_cli.db.engine import get_engine, session_scope
    from celora_cli.db.errors import translate
    from celora_cli.db.models import User

    url = with_password(empty_db)
    settings = settings_for(url)
    try:
        with pytest.raises(ProgrammingError) as info:
            with session_scope(settings) as session:
                session.execute(select(User)).all()
    finally:
        get_engine(settings).dispose()
    assert info.value.orig.sqlstate == "42P01"  # a real UndefinedTable from the server
    error = translate(info.value, parse_database_url(url))
    assert isinstance(error, SchemaNotMigrated)
    assert error.exit_code == ExitCode.SCHEMA == 7
    assert 'relation "users" does not exist' in error.message
    assert "celora db migrate-deploy" in error.hint
    assert PASSWORD not in error.message + error.hint


# 6. Malformed / unsupported URLs --------------------------------------------------------------------------

MALFORMED = [
    ("mysql://u:Zq9-very-secret@h/db", "unsupported scheme 'mysql'", "postgresql://"),
    ("postgresql://u:Zq9-very-secret@h:notaport/db", "DATABASE_URL is malformed", "port is a number"),
    # An unencoded '@' in the password AND a bad port: malformed, and no fragment of the password shows.
    ("postgresql://u:Zq9@very-secret@h:notaport/db", "DATABASE_URL is malformed", "%40"),
    ("u:Zq9-very-secret@h/db", "DATABASE_URL is not a URL (it has no scheme://)", "postgresql://"),
]


def test_malformed_and_unsupported_urls_exit_3_without_the_password():
    calls = [(("db", command), {"DATABASE_URL": url}) for url, _, _ in MALFORMED
             for command in ("migrate-deploy", "status")]
    results = run_many(*calls)
    for (_args, env), result in zip(calls, results, strict=True):
        url = env["DATABASE_URL"]
        _, cause, fix = next(case for case in MALFORMED if case[0] == url)
        assert result.returncode == ExitCode.CONFIG == 3, (url, result.stderr)
        assert cause in result.stderr, (url, result.stderr)
        hint = result.stderr.split("Hint:", 1)[1]
        assert fix in hint, (url, result.stderr)
        assert_clean(result, "very-secret", ":Zq9")


def test_unencoded_at_in_password_is_read_up_to_the_last_at_and_never_shown():
    # By design (settings.mask_url, tests/config), the user info ends at the LAST '@', as urlsplit reads
    # it: the password is "Zq9@very-secret" and the URL is otherwise valid, so this is not a config error;
    # with nothing listening it is "can't reach" (4). No part of the password may show.
    port = free_port()
    url = f"postgresql://u:Zq9@very-secret@127.0.0.1:{port}/db"
    result = run_celora("db", "migrate-deploy", env={"DATABASE_URL": url})
    assert result.returncode == ExitCode.UNREACHABLE, result.stderr
    assert f"postgresql://u:****@127.0.0.1:{port}/db" in result.stderr
    assert_clean(result, "very-secret", ":Zq9", "Zq9@")


def test_no_scheme_hint_shows_the_url_form_unmangled():
    # The hint's example URL once had a USER:PASSWORD placeholder that the output masking turned into
    # 'USER:****': the example must survive masking intact.
    result = run_celora("db", "status", env={"DATABASE_URL": "u:Zq9-very-secret@h/db"})
    assert result.returncode == 3
    hint = result.stderr.split("Hint:", 1)[1]
    assert "postgresql://USER" in hint and "HOST:5432/DATABASE" in hint, result.stderr
    assert "PASSWORD" in hint and "****" not in hint, result.stderr
    assert_clean(result, "very-secret", "Zq9")


def test_password_query_parameter_is_masked():
    # In free text the end of a ?password= value is unknowable ( ')' is a legal query character), so the
    # mask runs to the next '&' or whitespace: it may swallow the message's closing '):', never leak.
    port = free_port()
    url = f"postgresql://celora@127.0.0.1:{port}/db?password={PASSWORD}"
    result = run_celora("db", "status", env={"DATABASE_URL": url})
    assert result.returncode == 4, result.stderr
    assert_clean(result)
    assert f"(DATABASE_URL=postgresql://celora@127.0.0.1:{port}/db?password=****" in result.stderr, result.stderr


def test_invalid_libpq_parameter_in_url_is_a_config_error():
    url = f"postgresql://celora:{PASSWORD}@127.0.0.1:{free_port()}/db?sslmode=bogus"
    result = run_celora("db", "status", env={"DATABASE_URL": url})
    assert_clean(result)
    assert 'invalid sslmode value: "bogus"' in result.stderr, result.stderr
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "DATABASE_URL" in result.stderr


# 7. --debug / CELORA_DEBUG --------------------------------------------------------------------------------

def test_debug_shows_a_masked_traceback_and_keeps_the_exit_code():
    url, port = unreachable_url()
    flag, env_var, plain = run_many(
        (("--debug", "db", "migrate-deploy"), {"DATABASE_URL": url}),
        (("db", "migrate-deploy"), {"DATABASE_URL": url, "CELORA_DEBUG": "1"}),
        (("db", "migrate-deploy"), {"DATABASE_URL": url}),
    )
    for result in (flag, env_var):
        assert result.returncode == 4, result.stderr
        assert "Traceback (most recent call last)" in result.stderr
        assert "psycopg.OperationalError" in result.stderr  # the real cause is in the traceback
        assert "DatabaseUnreachable" in result.stderr
        assert "Can't reach database server" in result.stderr and f"pg_isready -h 127.0.0.1 -p {port}" in result.stderr
        assert "Traceback" not in result.stdout
        assert_clean(result, traceback_allowed=True)
    assert plain.returncode == 4
    assert_clean(plain)


# 8. --env-file --------------------------------------------------------------------------------------------

def test_env_file_beats_the_environment_and_a_missing_one_is_a_config_error(tmp_path, migrated_db):
    env_file = tmp_path / "celora.env"
    env_file.write_text(f"DATABASE_URL={with_password(migrated_db)}\n")
    unreachable, _ = unreachable_url("Other-pw-8812q")
    missing = tmp_path / "nope.env"
    wins, gone = run_many(
        (("--env-file", str(env_file), "db", "status"), {"DATABASE_URL": unreachable}),
        (("--env-file", str(missing), "db", "status"), {"DATABASE_URL": unreachable}),
    )
    assert wins.returncode == 0, wins.stderr
    assert "Database is up to date." in wins.stdout
    assert_clean(wins, PASSWORD, "Other-pw-8812q")

    assert gone.returncode == ExitCode.CONFIG, gone.stderr
    assert f"--env-file {missing} does not exist" in gone.stderr
    assert "Hint: Pass the path of a dotenv file" in gone.stderr
    assert_clean(gone, PASSWORD, "Other-pw-8812q")


# 9. Pooled URL without a direct URL -----------------------------------------------------------------------

def test_pgbouncer_url_without_direct_url_refuses_to_migrate(pgbouncer, empty_db):
    pooled = with_password(pgbouncer(db_name(empty_db)))
    assert pooled.endswith("?pgbouncer=true")
    result = run_celora("db", "migrate-deploy", env={"DATABASE_URL": pooled})
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "DIRECT_DATABASE_URL is not set" in result.stderr
    assert "Hint: Set DIRECT_DATABASE_URL" in result.stderr
    assert_clean(result)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


# 10. No colour when piped / NO_COLOR ----------------------------------------------------------------------

def test_no_ansi_escapes_with_no_color_or_a_pipe(migrated_db):
    env = {"DATABASE_URL": with_password(migrated_db)}
    no_color, piped, failing = run_many(
        (("db", "health"), env),  # run_celora sets NO_COLOR=1
        (("db", "health"), {**env, "NO_COLOR": "", "TERM": "xterm-256color"}),  # only the pipe
        (("db", "status"), {"DATABASE_URL": unreachable_url()[0]}),  # the error path (stderr)
    )
    for result in (no_color, piped):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "HEALTHY" in result.stdout
    assert failing.returncode == 4 and "Error:" in failing.stderr
    for result in (no_color, piped, failing):
        assert "\x1b[" not in result.stdout + result.stderr
        assert_clean(result)


# 11. Two passwords, every command ------------------------------------------------------------------------

def test_no_command_prints_either_password(pgbouncer, migrated_db):
    pooled_pw, direct_pw = "Pooled-pw-7731x", "Direct-pw-4410y"
    env = {"DATABASE_URL": with_password(pgbouncer(db_name(migrated_db)), pooled_pw),
           "DIRECT_DATABASE_URL": with_password(migrated_db, direct_pw)}
    commands = [("db", "migrate-deploy"), ("db", "status"), ("db", "health"), ("db", "health", "--json"),
                ("db", "migrate-deploy", "--json"), ("db", "status", "--json")]
    results = run_many(*[(command, env) for command in commands])
    for command, result in zip(commands, results, strict=True):
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert_clean(result, pooled_pw, direct_pw)
        if "--json" in command:
            json.loads(result.stdout)
    health = json.loads(results[3].stdout)
    assert health["status"] == "healthy"
    assert health["checks"]["pooled"]["url"].startswith("postgresql://celora:****@")
    assert health["checks"]["direct"]["url"].startswith("postgresql://celora:****@")
    assert json.loads(results[4].stdout)["database"].startswith("postgresql://celora:****@")
