"""Unit tests for celora_cli.errors: one exit code per error class, all documented in ExitCode."""

from __future__ import annotations

import pytest

from celora_cli import errors
from celora_cli.errors import CeloraError, DatabaseError, ExitCode, MigrationFailed


def all_subclasses(cls):
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(all_subclasses(sub))
    return found


# Only the classes defined in celora_cli.errors (other modules may subclass for their own purposes).
SUBCLASSES = [c for c in all_subclasses(CeloraError) if c.__module__ == "celora_cli.errors"]


def test_expected_subclasses_present():
    names = {c.__name__ for c in SUBCLASSES}
    assert names == {"ConfigError", "DatabaseUnreachable", "AuthenticationFailed", "DatabaseNotFound",
                     "SchemaNotMigrated", "TooManyConnections", "MigrationFailed", "LockTimeout",
                     "LocalServerError", "Refused", "DatabaseError", "MigrationHistoryError", "DriftDetected",
                     "UsageError", "InternalError", "OutputError", "Interrupted",
                     "LintFindings", "AuditTampered"}


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_subclass_exit_code_is_a_documented_exit_code_at_least_3(cls):
    assert isinstance(cls.exit_code, ExitCode)
    assert cls.exit_code >= 3  # 0-2 are a command's own states (ok, degraded/pending, unhealthy)


def test_unclassified_error_is_a_bug():
    # A bare CeloraError was raised without choosing what kind of failure it is: that is celora's fault.
    assert CeloraError.exit_code == ExitCode.SOFTWARE == 70
    assert errors.InternalError.exit_code == 70


def test_exit_code_table():
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "DEGRADED": 1, "UNHEALTHY": 2, "CONFIG": 3, "UNREACHABLE": 4, "AUTH": 5,
        "DATABASE_MISSING": 6, "SCHEMA": 7, "TOO_MANY_CONNECTIONS": 8, "MIGRATION_FAILED": 9,
        "LOCK_TIMEOUT": 10, "LOCAL_SERVER": 11, "REFUSED": 12, "DATABASE_ERROR": 13, "MIGRATION_HISTORY": 14,
        "DRIFT": 15, "LINT_FINDINGS": 16, "AUDIT_TAMPERED": 17, "STALE": 30, "ROLES_DIFFER": 31,
        "NOT_RUNNING": 32, "PLAN_REWRITE": 33, "PLAN_BLOCKED": 34, "USAGE": 64, "SOFTWARE": 70, "OUTPUT_ERROR": 74,
        "INTERRUPTED": 130}
    assert ExitCode.PENDING is ExitCode.DEGRADED  # db status's "pending" shares 1 with health's "degraded"


def test_specific_exit_codes():
    assert {c.__name__: c.exit_code for c in SUBCLASSES} == {
        "ConfigError": 3, "DatabaseUnreachable": 4, "AuthenticationFailed": 5, "DatabaseNotFound": 6,
        "SchemaNotMigrated": 7, "TooManyConnections": 8, "MigrationFailed": 9, "LockTimeout": 10,
        "LocalServerError": 11, "Refused": 12, "DatabaseError": 13, "MigrationHistoryError": 14,
        "DriftDetected": 15, "LintFindings": 16, "AuditTampered": 17, "UsageError": 64, "InternalError": 70,
        "OutputError": 74,
        "Interrupted": 130}


def test_every_error_class_has_its_own_code():
    codes = [c.exit_code for c in SUBCLASSES]
    assert len(codes) == len(set(codes))


def test_message_hint_and_str():
    err = errors.ConfigError("the cause", "the fix")
    assert (err.message, err.hint, str(err)) == ("the cause", "the fix", "the cause")
    assert errors.Refused("no").hint is None


def test_extra_fields():
    mf = MigrationFailed("m", "h", revision="abc", sqlstate="42601")
    assert (mf.revision, mf.sqlstate, mf.applied) == ("abc", "42601", [])
    assert MigrationFailed("m", applied=[1]).applied == [1]
    assert DatabaseError("m", sqlstate="23505").sqlstate == "23505"


def test_details_default_is_empty():
    assert errors.ConfigError("m", "h").details() == {}
    assert CeloraError("m").details() == {}


def test_migration_failed_details_carry_the_applied_migrations():
    from celora_cli.migrate.deploy import AppliedMigration

    applied = [AppliedMigration("aaa", "20260101000000_first", 12.5)]
    mf = MigrationFailed("m", "h", revision="bbb", sqlstate="42601", applied=applied)
    assert mf.details() == {"revision": "bbb", "sqlstate": "42601",
                            "applied": [{"revision": "aaa", "name": "20260101000000_first", "duration_ms": 12.5}]}
    assert MigrationFailed("m").details() == {"revision": None, "sqlstate": None, "applied": []}


def test_database_error_details():
    assert DatabaseError("m", sqlstate="23505").details() == {"sqlstate": "23505"}
