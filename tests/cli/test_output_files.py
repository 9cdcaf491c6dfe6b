"""A file a command cannot write is not stdout (README "JSON output", "Exit codes" 74): the error names the path,
exits 74, and with --json stdout still holds the one error object. Only when stdout itself fails (a full disk, a
closed pipe) is the object skipped, with one line on stderr saying so.

A read-only folder stops nobody running as root, so as root the command runs without the capabilities that
override file permissions (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from its bounding set)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, shared_tmpdir

SETPRIV = shutil.which("setpriv")


def _env(project: Path, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    env.update({"CELORA_PROJECT_ROOT": str(project), "NO_COLOR": "1", "PYTHONPATH": str(REPO), "CI": "true",
                **(extra or {})})
    return env


def run_without_override(project: Path, *args: str, stdout=subprocess.PIPE, env: dict | None = None):
    """The real CLI as a user whom file permissions bind."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("running as root without setpriv (util-linux): a read-only folder cannot stop root here")
        prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, sys.executable, "-m", "celora_cli", *args], stdout=stdout,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=_env(project, env),
                          cwd=project, timeout=120, check=False)


@pytest.fixture
def project():
    base = shared_tmpdir("celora-output-files-")
    shutil.copytree(REPO / "migrations", base / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    yield base
    for path in (base, *base.rglob("*")):  # writable again, so it can be removed
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(base, ignore_errors=True)


def read_only(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def stale_schema(project: Path) -> str:
    schema = project / "migrations" / "schema.sql"
    text = schema.read_text() + "-- stale: generate must rewrite this file\n"
    schema.write_text(text)
    return text


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_generate_into_a_read_only_migrations_folder_exits_74_naming_the_file(project, as_json):
    before = stale_schema(project)
    read_only(project / "migrations")
    done = run_without_override(project, "db", "generate", *(["--json"] if as_json else []))
    assert done.returncode == 74, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert "schema.sql" in done.stderr and "Permission denied" in done.stderr and "Hint:" in done.stderr
    if as_json:
        error = json.loads(done.stdout)["error"]  # stdout is fine: the one object is there
        assert (error["code"], error["type"]) == (74, "OutputError")
        assert "migrations/schema.sql" in error["message"] and error["hint"]
    else:
        assert done.stdout == ""
    assert (project / "migrations" / "schema.sql").read_text() == before


@pytest.mark.parametrize("docs", ["file", "file-on-the-way"])
def test_generate_where_docs_is_a_file_exits_74(project, docs):
    blocker = project / "docs"
    if docs == "file":
        blocker.write_text("not a folder\n")
    else:  # docs/ exists, but docs/schema.md is a folder
        (blocker / "schema.md").mkdir(parents=True)
    done = run_without_override(project, "db", "generate", "--json")
    assert done.returncode == 74, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "OutputError" and "Traceback" not in done.stderr
    assert ("docs is a file, not a folder" if docs == "file" else "schema.md is a folder, not a file") \
        in error["message"]


@pytest.mark.parametrize("stdout", ["full-disk", "closed-pipe"])
def test_a_file_error_when_stdout_is_gone_too(project, stdout):
    """The JSON object cannot be written: the file error still reaches stderr, then one line about stdout."""
    (project / "docs").write_text("not a folder\n")
    if stdout == "full-disk":
        with open("/dev/full", "w") as full:
            done = run_without_override(project, "db", "generate", "--json", stdout=full)
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = run_without_override(project, "db", "generate", "--json", stdout=write_end)
        finally:
            os.close(write_end)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 74, done.stderr
    assert "docs is a file, not a folder" in lines[0] and lines[1].startswith("Hint:")
    assert lines[-1].startswith("Error: celora could not write its output")
    assert len(lines) == 3 and "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_backup_into_a_read_only_folder_still_prints_the_json_object(project, migrated_db):
    folder = project / "backups"
    folder.mkdir()
    read_only(folder)
    done = run_without_override(project, "db", "backup", "--output", str(folder / "sub" / "x.dump"), "--json",
                                env={"DATABASE_URL": migrated_db})
    assert done.returncode == 74, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]  # was: exit 74 with an empty stdout
    assert (error["code"], error["type"]) == (74, "OutputError") and str(folder / "sub") in error["message"]
    assert "Traceback" not in done.stderr and not (folder / "sub").exists()
