"""The one exception hierarchy. Each error carries its exit code and a hint (the fix).

The CLI turns these into a message and an exit status in exactly one place
(`celora_cli.cli.app.CeloraGroup.invoke`). The core raises them and never exits.
"""

from __future__ import annotations


class ExitCode:
    """Documented exit codes (README "Exit codes"). `db health` uses 0/1/2 for healthy/degraded/unhealthy."""

    OK = 0
    FAILURE = 1  # unexpected error, or `db health`: degraded
    USAGE = 2  # bad flags/arguments (Typer/Click), or `db health`: unhealthy
    CONFIG = 3  # missing or malformed setting / URL
    UNREACHABLE = 4  # can't reach the database server (refused, timeout, DNS)
    AUTH = 5  # authentication failed
    DATABASE_MISSING = 6  # the database named in the URL does not exist
    SCHEMA = 7  # a table does not exist / the schema is not migrated
    TOO_MANY_CONNECTIONS = 8
    MIGRATION_FAILED = 9
    LOCK_TIMEOUT = 10  # another migrate-deploy held the lock past --lock-timeout
    LOCAL_SERVER = 11  # the celora-managed local PostgreSQL could not be set up or started
    REFUSED = 12  # a destructive action refused (no flag, not interactive, or production)
    DATABASE_ERROR = 13  # any other error reported by PostgreSQL
    INTERRUPTED = 130


class CeloraError(Exception):
    """Base class: `message` says the cause and what was checked; `hint` says the fix."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(CeloraError):
    exit_code = ExitCode.CONFIG


class DatabaseUnreachable(CeloraError):
    exit_code = ExitCode.UNREACHABLE


class AuthenticationFailed(CeloraError):
    exit_code = ExitCode.AUTH


class DatabaseNotFound(CeloraError):
    exit_code = ExitCode.DATABASE_MISSING


class SchemaNotMigrated(CeloraError):
    exit_code = ExitCode.SCHEMA


class TooManyConnections(CeloraError):
    exit_code = ExitCode.TOO_MANY_CONNECTIONS


class MigrationFailed(CeloraError):
    exit_code = ExitCode.MIGRATION_FAILED

    def __init__(self, message: str, hint: str | None = None, *, revision: str | None = None,
                 sqlstate: str | None = None, applied: list | None = None) -> None:
        super().__init__(message, hint)
        self.revision = revision
        self.sqlstate = sqlstate
        self.applied = applied or []


class LockTimeout(CeloraError):
    exit_code = ExitCode.LOCK_TIMEOUT


class LocalServerError(CeloraError):
    exit_code = ExitCode.LOCAL_SERVER


class Refused(CeloraError):
    exit_code = ExitCode.REFUSED


class DatabaseError(CeloraError):
    exit_code = ExitCode.DATABASE_ERROR

    def __init__(self, message: str, hint: str | None = None, *, sqlstate: str | None = None) -> None:
        super().__init__(message, hint)
        self.sqlstate = sqlstate
