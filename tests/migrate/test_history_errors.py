"""Broken migration files are the user's to fix: MigrationHistoryError (exit 14) naming the file and the problem,
from migrate-deploy, status and health's migration check. Never "Unexpected error", never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from celora_cli.errors import ExitCode, MigrationHistoryError
from celora_cli.migrate.deploy import deploy
from tests.support import REPO, run_celora, settings_for

STEP = '''"""{doc}"""
from alembic import op

revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{body}


def downgrade():
    pass
'''


def repo_head() -> str:
    from celora_cli.migrate.scripts import load_script_directory

    return load_script_directory(REPO / "migrations").get_current_head()


def history_with(tmp_path: Path, *files: tuple[str, str]) -> Path:
    """The repo's migrations plus extra files (name, source)."""
    target = tmp_path / "migrations"
    shutil.copytree(REPO / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    for name, source in files:
        (target / "versions" / name).write_text(source)
    return target


def broken(kind: str, tmp_path: Path) -> tuple[Path, str, str]:
    """(migrations dir, the file to name, words the message must contain)."""
    head = repo_head()
    if kind == "syntax-error":
        source = STEP.format(doc="typo", revision="20261127000000", down=head, body="    op.execute('SELECT 1'")
        return history_with(tmp_path, ("20261127000000_typo.py", source)), "20261127000000_typo.py", "syntax error"
    if kind == "unknown-down-revision":
        source = STEP.format(doc="orphan", revision="20261127000000", down="20200101000000", body="    pass")
        return (history_with(tmp_path, ("20261127000000_orphan.py", source)), "20261127000000_orphan.py",
                "'20200101000000'")
    if kind == "two-heads":
        files = [(f"2026112700000{i}_branch{i}.py",
                  STEP.format(doc=f"branch {i}", revision=f"2026112700000{i}", down=head, body="    pass"))
                 for i in (1, 2)]
        return history_with(tmp_path, *files), "20261127000001", "2 heads"
    if kind == "import-error":
        source = STEP.format(doc="bad import", revision="20261127000000", down=head, body="    pass")
        source = source.replace("from alembic import op", "from alembic import op\nimport no_such_module_celora")
        return (history_with(tmp_path, ("20261127000000_bad_import.py", source)), "20261127000000_bad_import.py",
                "no_such_module_celora")
    if kind == "nul-byte":  # compile() names no file and no line for it
        target = history_with(tmp_path)
        (target / "versions" / "20261127000000_nul.py").write_bytes(b'revision = "x"\x00\n')
        return target, "20261127000000_nul.py", "null bytes"
    if kind == "dangling-link":  # a *.py link to nothing: Alembic fails on it; so must status
        target = history_with(tmp_path)
        (target / "versions" / "20261127000000_gone.py").symlink_to(tmp_path / "nowhere.py")
        return target, "20261127000000_gone.py", "can't be read"
    raise AssertionError(kind)


# status and health read the history without importing the files (celora_cli.migrate.history), so a file that parses
# but fails on import is only caught where the files run: migrate-deploy.
KINDS = ["syntax-error", "unknown-down-revision", "two-heads", "nul-byte", "dangling-link"]


@pytest.mark.parametrize("kind", [*KINDS, "import-error"])
def test_migrate_deploy_names_the_broken_file(kind, tmp_path, empty_db):
    history, named, words = broken(kind, tmp_path)
    with pytest.raises(MigrationHistoryError) as caught:
        deploy(settings_for(empty_db, CELORA_MIGRATIONS_DIR=history))
    assert named in caught.value.message and words in caught.value.message, caught.value.message
    assert caught.value.hint
    with psycopg.connect(empty_db) as conn:  # refused before anything was changed
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None

    cli = run_celora("db", "migrate-deploy", env={"DATABASE_URL": empty_db, "CELORA_MIGRATIONS_DIR": str(history)})
    assert cli.returncode == ExitCode.MIGRATION_HISTORY == 14, cli.stdout + cli.stderr
    assert named in cli.stderr and words in cli.stderr
    assert "internal error" not in cli.stderr and "Traceback" not in cli.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_status_names_the_broken_file(kind, tmp_path, migrated_db):
    history, named, words = broken(kind, tmp_path)
    cli = run_celora("db", "status", env={"DATABASE_URL": migrated_db, "CELORA_MIGRATIONS_DIR": str(history)})
    assert cli.returncode == 14, cli.stdout + cli.stderr
    assert named in cli.stderr and words in cli.stderr
    assert "internal error" not in cli.stderr and "Traceback" not in cli.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_health_reports_the_broken_file_as_a_migration_problem(kind, tmp_path, migrated_db):
    history, named, words = broken(kind, tmp_path)
    cli = run_celora("db", "health", "--json",
                     env={"DATABASE_URL": migrated_db, "CELORA_MIGRATIONS_DIR": str(history)})
    report = json.loads(cli.stdout)
    assert cli.returncode == 1 and report["status"] == "degraded", cli.stdout + cli.stderr
    assert report["migrations"] is None
    assert any(named in line and words in line for line in report["problems"] + report["warnings"]), report
    assert "internal error" not in cli.stdout + cli.stderr and "Traceback" not in cli.stderr
