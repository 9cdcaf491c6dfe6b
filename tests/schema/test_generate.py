"""`celora db generate [--check]`: deterministic schema artifacts, and a CI check that they are current."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from celora_cli.config.settings import load_settings
from tests.support import REPO, run_celora, shared_tmpdir


@pytest.fixture
def project() -> Path:
    """A throwaway project with its own copy of the migrations (generate writes beside them)."""
    root = shared_tmpdir("celora-generate-")
    shutil.copytree(REPO / "migrations", root / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__", "schema.sql"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def env_for(root: Path, **extra: str) -> dict:
    return {"CELORA_PROJECT_ROOT": str(root), "CELORA_MIGRATIONS_DIR": str(root / "migrations"), **extra}


def test_committed_artifacts_match_the_models():
    """A model change committed without `celora db generate` fails here (and in CI)."""
    from celora_cli.schema.generate import generate

    settings = load_settings(environ={"CELORA_ENV": "test"}, project_root=REPO)
    result = generate(settings, check=True)
    assert result.up_to_date, "Run `celora db generate` and commit the files:\n" + "\n".join(result.diffs.values())
    assert sorted(result.unchanged) == ["docs/schema.md", "migrations/schema.sql"]


def test_generate_writes_then_check_passes_and_output_is_byte_identical(project):
    first = run_celora("db", "generate", env=env_for(project, PYTHONHASHSEED="1"))
    assert first.returncode == 0, first.stderr
    sql = (project / "migrations" / "schema.sql").read_bytes()
    diagram = (project / "docs" / "schema.md").read_bytes()
    assert b"CREATE TABLE users" in sql and b"CREATE TYPE chain AS ENUM" in sql
    assert b"erDiagram" in diagram and b'users ||--o{ wallets : "user_id"' in diagram

    # Another hash seed: SQLAlchemy keeps a table's indexes in a set; the files must not care.
    (project / "migrations" / "schema.sql").unlink()
    (project / "docs" / "schema.md").unlink()
    second = run_celora("db", "generate", env=env_for(project, PYTHONHASHSEED="2"))
    assert second.returncode == 0, second.stderr
    assert (project / "migrations" / "schema.sql").read_bytes() == sql
    assert (project / "docs" / "schema.md").read_bytes() == diagram

    check = run_celora("db", "generate", "--check", env=env_for(project, PYTHONHASHSEED="3"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Up to date" in check.stdout


def test_check_fails_on_a_stale_file_naming_it_with_a_diff(project):
    assert run_celora("db", "generate", env=env_for(project)).returncode == 0
    schema = project / "migrations" / "schema.sql"
    schema.write_text(schema.read_text().replace("\tdisplay_name TEXT,\n", ""))

    check = run_celora("db", "generate", "--check", env=env_for(project))
    assert check.returncode == 30, check.stdout + check.stderr
    assert "Stale migrations/schema.sql" in check.stdout
    assert any(line.startswith("+") and "display_name TEXT," in line for line in check.stdout.splitlines())
    assert "docs/schema.md" not in check.stdout
    assert schema.read_text().count("display_name TEXT") == 0  # --check writes nothing

    as_json = run_celora("db", "generate", "--check", "--json", env=env_for(project))
    assert as_json.returncode == 30
    assert '"stale": [' in as_json.stdout and '"up_to_date": false' in as_json.stdout

    assert run_celora("db", "generate", env=env_for(project)).returncode == 0
    assert run_celora("db", "generate", "--check", env=env_for(project)).returncode == 0


def test_check_fails_when_the_models_do_not_import(project):
    check = run_celora("db", "generate", "--check", env=env_for(project, CELORA_MODELS="celora_no_such_models:Base"))
    assert check.returncode == 3, check.stdout + check.stderr
    assert "fail to import" in check.stderr and "celora_no_such_models" in check.stderr
    assert "Traceback" not in check.stderr
