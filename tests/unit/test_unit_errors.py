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
EXIT_CODES = {name: value for name, value in vars(ExitCode).items() if not name.startswith("_")}


def test_expected_subclasses_present():
    names = {c.__name__ for c in SUBCLASSES}
    assert names == {"ConfigError", "DatabaseUnreachable", "AuthenticationFailed", "DatabaseNotFound",
                     "SchemaNotMigrated", "TooManyConnections", "MigrationFailed", "LockTimeout",
                     "LocalServerError", "Refused", "DatabaseError"}


def test_subclass_exit_codes_are_distinct():
    codes = [c.exit_code for c in SUBCLASSES]
    assert len(codes) == len(set(codes)), {c.__name__: c.exit_code for c in SUBCLASSES}


@pytest.mark.parametrize("cls", SUBCLASSES, ids=lambda c: c.__name__)
def test_subclass_exit_code_is_documented_int_at_least_3(cls):
    assert type(cls.exit_code) is int
    assert cls.exit_code >= 3
    assert cls.exit_code != CeloraError.exit_code
    assert cls.exit_code in EXIT_CODES.values()


def test_base_exit_code_is_failure():
    assert CeloraError.exit_code == ExitCode.FAILURE == 1


def test_exit_code_values_distinct_and_reserved_ones():
    assert len(EXIT_CODES) == len(set(EXIT_CODES.values()))
    assert (ExitCode.OK, ExitCode.FAILURE, ExitCode.USAGE, ExitCode.CONFIG) == (0, 1, 2, 3)
    assert ExitCode.INTERRUPTED == 130


def test_specific_exit_codes():
    assert {c.__name__: c.exit_code for c in SUBCLASSES} == {
        "ConfigError": 3, "DatabaseUnreachable": 4, "AuthenticationFailed": 5, "DatabaseNotFound": 6,
        "SchemaNotMigrated": 7, "TooManyConnections": 8, "MigrationFailed": 9, "LockTimeout": 10,
        "LocalServerError": 11, "Refused": 12, "DatabaseError": 13}


def test_message_hint_and_str():
    err = errors.ConfigError("the cause", "the fix")
    assert (err.message, err.hint, str(err)) == ("the cause", "the fix", "the cause")
    assert errors.Refused("no").hint is None


def test_extra_fields():
    mf = MigrationFailed("m", "h", revision="abc", sqlstate="42601")
    assert (mf.revision, mf.sqlstate, mf.applied) == ("abc", "42601", [])
    assert MigrationFailed("m", applied=[1]).applied == [1]
    assert DatabaseError("m", sqlstate="23505").sqlstate == "23505"
