"""Unit tests for celora_cli.db.errors.translate: the right CeloraError, a useful hint, and never the password."""

from __future__ import annotations

import psycopg
import psycopg.errors as pe
import pytest
import sqlalchemy.exc as sa_exc

from celora_cli.config.settings import parse_database_url
from celora_cli.db.errors import postgres_message, root_cause, sqlstate_of, translate, translating
from celora_cli.errors import (
    AuthenticationFailed,
    CeloraError,
    ConfigError,
    DatabaseError,
    DatabaseNotFound,
    DatabaseUnreachable,
    SchemaNotMigrated,
    TooManyConnections,
)

PASSWORD = "hunter22"
RAW_URL = f"postgresql://app:{PASSWORD}@db.example:6543/celora"


@pytest.fixture
def url():
    return parse_database_url(RAW_URL)


def wrap(orig):
    return sa_exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg.Error)


# name -> (factory taking the text to embed, expected class, exit code)
CASES = {
    "refused": (lambda extra: psycopg.OperationalError(
        f'connection failed: connection to server at "10.0.0.5", port 6543 failed: Connection refused{extra}'),
        DatabaseUnreachable, 4),
    "timeout": (lambda extra: psycopg.errors.ConnectionTimeout(f"connection timeout expired{extra}"),
                DatabaseUnreachable, 4),
    "dns": (lambda extra: psycopg.OperationalError(
        f'connection failed: could not translate host name "db.example" to address{extra}'),
        DatabaseUnreachable, 4),
    "admin_shutdown": (lambda extra: pe.AdminShutdown(f"terminating connection{extra}"), DatabaseUnreachable, 4),
    "password_failed": (lambda extra: psycopg.OperationalError(
        f'connection failed: FATAL:  password authentication failed for user "app"{extra}'),
        AuthenticationFailed, 5),
    "invalid_password": (lambda extra: pe.InvalidPassword(f"auth{extra}"), AuthenticationFailed, 5),
    "no_hba": (lambda extra: psycopg.OperationalError(
        f'connection failed: FATAL:  no pg_hba.conf entry for host "1.2.3.4", user "app"{extra}'),
        AuthenticationFailed, 5),
    "no_database": (lambda extra: pe.InvalidCatalogName(f'database "celora" does not exist{extra}'),
                    DatabaseNotFound, 6),
    "no_database_text": (lambda extra: psycopg.OperationalError(
        f'connection failed: FATAL:  database "celora" does not exist{extra}'), DatabaseNotFound, 6),
    "undefined_table": (lambda extra: pe.UndefinedTable(f'relation "users" does not exist{extra}'),
                        SchemaNotMigrated, 7),
    "too_many": (lambda extra: pe.TooManyConnections(f"sorry, too many clients already{extra}"),
                 TooManyConnections, 8),
    "too_many_text": (lambda extra: psycopg.OperationalError(
        f"connection failed: FATAL:  remaining connection slots are reserved{extra}"), TooManyConnections, 8),
    "syntax": (lambda extra: pe.SyntaxError(f'syntax error at or near "SELEC"{extra}'), DatabaseError, 13),
}

LEAKY_SUFFIXES = {
    "none": "",
    "url": f" (dsn {RAW_URL})",
    "bare": f" password={PASSWORD} / {PASSWORD}",
    "url_and_bare": f" {RAW_URL}?sslmode=require and again {PASSWORD}",
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("wrapped", [False, True], ids=["raw", "sqlalchemy"])
def test_translate_class_and_exit_code(url, name, wrapped):
    make, cls, code = CASES[name]
    exc = make("")
    result = translate(wrap(exc) if wrapped else exc, url)
    assert type(result) is cls
    assert result.exit_code == code
    assert result.hint


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("wrapped", [False, True], ids=["raw", "sqlalchemy"])
def test_translate_never_shows_password(url, name, wrapped):
    make, cls, _ = CASES[name]
    for suffix, text in LEAKY_SUFFIXES.items():
        exc = make(text)
        assert PASSWORD in str(exc) or suffix == "none"
        result = translate(wrap(exc) if wrapped else exc, url)
        assert type(result) is cls, suffix
        assert PASSWORD not in result.message, suffix
        assert PASSWORD not in (result.hint or ""), suffix
        assert PASSWORD not in str(result), suffix


def test_unreachable_message_and_hint(url):
    result = translate(psycopg.OperationalError("connection failed: Connection refused"), url)
    assert isinstance(result, DatabaseUnreachable)
    assert "db.example:6543" in result.message
    assert "DATABASE_URL=postgresql://app:****@db.example:6543/celora" in result.message
    assert "Connection refused" in result.message
    assert "pg_isready -h db.example -p 6543" in result.hint


def test_unreachable_without_url_has_generic_hint():
    result = translate(psycopg.OperationalError("connection failed: Connection refused"), None)
    assert isinstance(result, DatabaseUnreachable)
    assert "the database server" in result.message
    assert result.hint == "Is PostgreSQL running?"


def test_unreachable_default_port_in_hint():
    result = translate(psycopg.OperationalError("could not connect to server"),
                       parse_database_url("postgresql://app:pw@db.example/celora"))
    assert "pg_isready -h db.example -p 5432" in result.hint
    assert "db.example:5432" in result.message


def test_auth_message_names_user_and_host(url):
    result = translate(pe.InvalidPassword('password authentication failed for user "app"'), url)
    assert isinstance(result, AuthenticationFailed)
    assert "'app'" in result.message
    assert "db.example:6543" in result.message
    assert "percent-encode" in result.hint


def test_database_not_found_message_and_hint(url):
    result = translate(pe.InvalidCatalogName('database "celora" does not exist'), url)
    assert isinstance(result, DatabaseNotFound)
    assert result.exit_code == 6
    assert "Database 'celora' does not exist on db.example:6543" in result.message
    assert "createdb -h db.example -p 6543 celora" in result.hint


def test_schema_not_migrated_hint(url):
    result = translate(pe.UndefinedTable('relation "users" does not exist'), url)
    assert isinstance(result, SchemaNotMigrated)
    assert 'relation "users" does not exist' in result.message
    assert "migrate-deploy" in result.hint


def test_too_many_connections_hint(url):
    result = translate(pe.TooManyConnections("sorry, too many clients already"), url)
    assert isinstance(result, TooManyConnections)
    assert "db.example:6543" in result.message
    assert "PgBouncer" in result.hint


def test_other_postgres_error_keeps_sqlstate(url):
    result = translate(pe.UniqueViolation("duplicate key value violates unique constraint"), url)
    assert type(result) is DatabaseError
    assert result.exit_code == 13
    assert result.sqlstate == "23505"
    assert result.message.startswith("PostgreSQL error 23505 at db.example:6543: duplicate key")


def test_celora_error_passes_through_unchanged(url):
    original = ConfigError("bad", "fix")
    assert translate(original, url) is original


def test_sqlalchemy_statement_dump_not_in_message(url):
    exc = wrap(pe.SyntaxError("syntax error"))
    assert "[SQL: SELECT 1]" in str(exc)
    result = translate(exc, url)
    assert "[SQL:" not in result.message
    assert "syntax error" in result.message


def test_helpers_unwrap_sqlalchemy():
    orig = pe.DeadlockDetected("deadlock detected\nDETAIL: more")
    wrapped = wrap(orig)
    assert root_cause(wrapped) is orig
    assert root_cause(orig) is orig
    assert sqlstate_of(wrapped) == "40P01"
    assert sqlstate_of(ValueError("x")) is None
    assert postgres_message(wrapped) == "deadlock detected"


def test_translate_password_with_unencoded_at_does_not_leak():
    url = parse_database_url("postgresql://app:hunter@22secret@db.example:6543/celora")
    assert url.password == "hunter@22secret"
    result = translate(psycopg.OperationalError("connection failed: Connection refused"), url)
    assert isinstance(result, DatabaseUnreachable)
    assert "22secret" not in result.message


def test_role_does_not_exist_with_sqlstate_is_authentication_failure():
    url = parse_database_url("postgresql://bob:pw@db:5432/celora")
    result = translate(pe.InvalidAuthorizationSpecification('role "bob" does not exist'), url)
    assert isinstance(result, AuthenticationFailed)


def test_role_does_not_exist_at_connect_time_is_authentication_failure():
    url = parse_database_url("postgresql://bob:pw@db:5432/celora")
    exc = psycopg.OperationalError('connection failed: connection to server at "10.0.0.5", port 5432 failed: '
                                   'FATAL:  role "bob" does not exist')
    result = translate(exc, url)
    assert isinstance(result, AuthenticationFailed)
    assert result.exit_code == 5


def test_translating_context_manager_reraises_celora_error_with_cause(url):
    orig = pe.InvalidCatalogName('database "celora" does not exist')
    with pytest.raises(DatabaseNotFound) as info:
        with translating(url):
            raise wrap(orig)
    assert info.value.__cause__.orig is orig
    assert isinstance(info.value, CeloraError)


def test_translating_leaves_other_exceptions_alone(url):
    with pytest.raises(KeyError):
        with translating(url):
            raise KeyError("x")
