"""Revision ids in any form Alembic accepts: a new id is a timestamp that sorts after every timestamp-like id of
the history (even an impossible one, such as second 99) and is never taken; two files with one id are an error
naming both, on both ways celora reads the history (its own ast reader and Alembic's revision map)."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest

from celora_cli.errors import ExitCode, MigrationHistoryError
from celora_cli.migrate.history import read_history
from celora_cli.migrate.revision_ids import next_revision_id
from celora_cli.migrate.scripts import load_script_directory
from celora_cli.migrate.status import _history_from_alembic
from tests.support import REPO

NOW = datetime.datetime(2026, 11, 26, 12, 0, 0)


@pytest.mark.parametrize("history, expected", [
    ((), "20261126120000"),
    (("20261126110000",), "20261126120000"),  # the head is older: the clock decides
    (("20261126120000",), "20261126120001"),  # written within the same second
    (("20261126235959",), "20261127000000"),
    (("29990101000000",), "29990101000001"),  # a head stamped far in the future
    (("29990101000199",), "29990101000200"),  # second 99: no valid time ("unconverted data remains")
    (("29991399999999",), "30000101000000"),  # month 13
    (("29990230000000",), "29990301000000"),  # 30 February
    (("29990100000000",), "29990101000000"),  # day 00: the smallest valid day already sorts after it
    (("20261231235960",), "20270101000000"),  # second 60 on New Year's Eve carries into the year
    (("ae1027a6acf", "1975ea83b712"), "20261126120000"),  # Alembic's own hex ids say nothing about time
    (("12345678901234",), "20261126120000"),  # 14 digits, but long past
    (("2999010100019",), "20261126120000"),  # 13 digits: not a timestamp-like id
    (("20261126120000", "20261126120001"), "20261126120002"),  # never an id the history holds
])
def test_new_ids_are_timestamps_after_the_history(history, expected):
    new = next_revision_id(history, NOW)
    assert new == expected
    datetime.datetime.strptime(new, "%Y%m%d%H%M%S")  # always a valid time
    assert new not in history


def test_no_timestamp_after_the_last_possible_one_is_a_history_error():
    with pytest.raises(MigrationHistoryError, match="99991231235959") as caught:
        next_revision_id(["99991231235959"], NOW)
    assert caught.value.exit_code == ExitCode.MIGRATION_HISTORY and caught.value.hint


@pytest.fixture
def duplicated(tmp_path) -> Path:
    """The repo's history plus a copy of its second migration under another file name (same revision id)."""
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    versions = target / "versions"
    original = next(versions.glob("*_schema_corrections.py"))
    shutil.copy(original, versions / "29990101000000_copied.py")
    return target


@pytest.mark.parametrize("reader", ["ast", "alembic-status", "alembic-runtime"])
def test_a_duplicate_revision_id_names_both_files(duplicated, reader, recwarn):
    read = {"ast": lambda: read_history(duplicated / "versions"),
            "alembic-status": lambda: _history_from_alembic(duplicated),
            "alembic-runtime": lambda: load_script_directory(duplicated)}[reader]
    with pytest.raises(MigrationHistoryError) as caught:
        read()
    error = caught.value
    assert error.exit_code == ExitCode.MIGRATION_HISTORY
    assert "20261126150000" in error.message
    assert "20261126150000_schema_corrections.py" in error.message and "29990101000000_copied.py" in error.message
    assert "revision" in error.hint
    assert not [w for w in recwarn if "more than once" in str(w.message)]  # no raw Alembic warning besides


def test_a_link_to_the_same_file_is_no_duplicate(tmp_path):
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    versions = target / "versions"
    original = next(versions.glob("*_init.py"))
    (versions / "zz_link.py").symlink_to(original)
    assert len(read_history(versions).revisions) == len(list(versions.glob("2*.py")))


@pytest.mark.parametrize("stamp, after", [
    ("00000000000000", "00010101000000"),  # year 0: the smallest valid year already sorts after it
    ("00001399999999", "00010101000000"),
    ("09991231235959", "10000101000000"),  # four digits even below year 1000
    ("20240228235959", "20240229000000"),  # a leap day
    ("20230229000000", "20230301000000"),  # no leap day that year
])
def test_the_first_valid_time_after_any_14_digits(stamp, after):
    from celora_cli.migrate.revision_ids import _first_timestamp_after

    assert _first_timestamp_after(stamp) == after
