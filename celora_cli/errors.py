"""The one exception hierarchy. Each error carries its exit code and a hint (the fix).

The CLI turns these into a message and an exit status in exactly one place
(`celora_cli.cli.app.CeloraGroup.invoke`). The core raises them and never exits.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes, one meaning each (README "Exit codes" is the table; a test checks it).

    1, 2 and 30 to 39 are a command's own non-success states (a result, `"ok": true` with --json, not an error): a
    script can tell each apart by its code. 1 keeps its documented meanings, health's "degraded" (what
    Nagios-style monitors expect), `db status`'s "pending" (what deploy scripts test for) and the "differences
    found" of the CI gates `db migrate --check` and `db diff --exit-code` (as `git diff --exit-code`), because no
    command has two of them; every other state has its own code.
    Errors start at 3; usage errors, bugs, output failures and interruptions use the BSD sysexits numbers.
    """

    OK = 0
    DEGRADED = 1  # `db health`: degraded;  `db status`: migrations pending
    PENDING = 1
    CHANGES = 1  # `db migrate --check`: the models need a migration; `db diff --exit-code`: the sources differ
    UNHEALTHY = 2  # `db health`: unhealthy (the app path is down)
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
    MIGRATION_HISTORY = 14  # the migration files themselves are broken (syntax error, unknown down_revision, heads)
    DRIFT = 15  # `db migrate`: the development database differs from what the migration history builds
    LINT_FINDINGS = 16  # `db lint` (and `migrate-deploy --lint`): a migration locks tables or breaks running code
    AUDIT_TAMPERED = 17  # `db audit --verify`: a sealed audit entry was changed, removed or inserted afterwards
    # States (results, not errors) take 30 to 39, so new errors keep counting up from 17 (to 29) without meeting them:
    STALE = 30  # `db generate --check`: a generated file does not match the models
    ROLES_DIFFER = 31  # `db roles --check`: the live roles and grants differ from the model
    NOT_RUNNING = 32  # `local status`, `local pgbouncer status`: the server asked about is not running
    PLAN_REWRITE = 33  # `migrate-deploy --plan`: would rewrite or scan, blocking writes, a table over the size setting
    PLAN_BLOCKED = 34  # `migrate-deploy --plan`: would wait behind a live session holding or awaiting a lock
    USAGE = 64  # bad flags or arguments (EX_USAGE)
    SOFTWARE = 70  # a bug in celora (EX_SOFTWARE)
    OUTPUT_ERROR = 74  # the result could not be written (stdout closed, disk full) (EX_IOERR)
    INTERRUPTED = 130  # Ctrl-C / SIGINT


class CeloraError(Exception):
    """Base class: `message` says the cause and what was checked; `hint` says the fix."""

    exit_code: int = ExitCode.SOFTWARE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def details(self) -> dict:
        """Extra machine-readable fields for the `--json` error object (beside code, type, message, hint)."""
        return {}


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

    def details(self) -> dict:
        # The migrations applied before the failure stay applied: a deploy log must not lose them.
        return {"revision": self.revision, "sqlstate": self.sqlstate,
                "applied": [_as_dict(migration) for migration in self.applied]}


class MigrationHistoryError(CeloraError):
    """A migration file can't be loaded (syntax error, missing down_revision, several heads)."""

    exit_code = ExitCode.MIGRATION_HISTORY


class LockTimeout(CeloraError):
    """The migration lock waited past --lock-timeout; or a migration's DDL hit CELORA_DDL_LOCK_TIMEOUT (PostgreSQL
    55P03) on every try, and then `blockers` names the sessions it queued behind."""

    exit_code = ExitCode.LOCK_TIMEOUT

    def __init__(self, message: str, hint: str | None = None, *, revision: str | None = None,
                 attempts: int | None = None, blockers: list | None = None, applied: list | None = None) -> None:
        super().__init__(message, hint)
        self.revision = revision
        self.attempts = attempts
        self.blockers = blockers or []
        self.applied = applied or []

    def details(self) -> dict:
        if self.attempts is None:  # the migration lock: nothing more to say than the message
            return {}
        return {"revision": self.revision, "sqlstate": "55P03", "attempts": self.attempts,
                "blockers": [_as_dict(blocker) for blocker in self.blockers],
                "applied": [_as_dict(migration) for migration in self.applied]}


class LintFindings(CeloraError):
    """`celora db lint` found statements that lock tables or break running code (`findings` lists them)."""

    exit_code = ExitCode.LINT_FINDINGS

    def __init__(self, message: str, hint: str | None = None, *, findings: list | None = None) -> None:
        super().__init__(message, hint)
        self.findings = findings or []

    def details(self) -> dict:
        return {"findings": [_as_dict(finding) for finding in self.findings]}


class LocalServerError(CeloraError):
    exit_code = ExitCode.LOCAL_SERVER


class Refused(CeloraError):
    exit_code = ExitCode.REFUSED


class DatabaseError(CeloraError):
    exit_code = ExitCode.DATABASE_ERROR

    def __init__(self, message: str, hint: str | None = None, *, sqlstate: str | None = None) -> None:
        super().__init__(message, hint)
        self.sqlstate = sqlstate

    def details(self) -> dict:
        return {"sqlstate": self.sqlstate}


class DriftDetected(CeloraError):
    """The development database differs from what the migration history builds (`differences` names each)."""

    exit_code = ExitCode.DRIFT

    def __init__(self, message: str, hint: str | None = None, *, differences: list | None = None) -> None:
        super().__init__(message, hint)
        self.differences = differences or []

    def details(self) -> dict:
        return {"differences": [_as_dict(difference) for difference in self.differences]}


class AuditTampered(CeloraError):
    """`celora db audit --verify`: the audit log no longer matches its seals (`problems` names each entry)."""

    exit_code = ExitCode.AUDIT_TAMPERED

    def __init__(self, message: str, hint: str | None = None, *, problems: list | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems or []

    def details(self) -> dict:
        return {"problems": [_as_dict(problem) for problem in self.problems]}


# Failures the CLI itself meets (never raised by the core); they give `--json` error objects a type name.
class UsageError(CeloraError):
    """Bad flags or arguments (Click's own usage errors, re-labelled)."""

    exit_code = ExitCode.USAGE


class InternalError(CeloraError):
    """A bug: any exception that is neither a CeloraError nor a database error."""

    exit_code = ExitCode.SOFTWARE


class OutputError(CeloraError):
    """The result could not be written: stdout closed (EPIPE) or on a full disk (ENOSPC), or a file the command
    writes (a read-only folder, a file in the way). `stdout_gone` is True only when celora's own stdout failed: then
    no JSON error object can follow, and the CLI says so in one line on stderr."""

    exit_code = ExitCode.OUTPUT_ERROR

    def __init__(self, message: str, hint: str | None = None, *, stdout_gone: bool = False) -> None:
        super().__init__(message, hint)
        self.stdout_gone = stdout_gone


class Interrupted(CeloraError):
    exit_code = ExitCode.INTERRUPTED


def _as_dict(item) -> dict:
    from celora_cli.results import to_json  # a leaf module; imported here so errors.py stays import-free

    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return to_json(item)
    return dict(item) if isinstance(item, dict) else {"value": item}
