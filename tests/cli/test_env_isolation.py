"""The suite never reads the developer's `.env` (or starts the checkout's `.celora/` cluster).

A developer's `.env` in the checkout once made `make test` migrate their own database. This plants a `.env`
in the checkout whose DIRECT_DATABASE_URL points at a port where nothing listens: if any test helper read it,
`db status` would try that URL and fail, and settings_for() would carry it.
"""

from __future__ import annotations

import json

import pytest

from tests.support import REPO, TEST_PROJECT, run_celora, settings_for

LEAK = "postgresql://leak:Dev3lopersOwn@127.0.0.1:1/developers_own_db"


@pytest.fixture
def planted_dotenv():
    dotenv = REPO / ".env"
    if dotenv.exists():  # a real developer file: never overwrite it; it is the very thing we must not read
        yield dotenv
        return
    dotenv.write_text(f"DIRECT_DATABASE_URL={LEAK}\nCELORA_ENV=production\n")
    try:
        yield dotenv
    finally:
        dotenv.unlink()


def test_test_project_is_isolated_from_the_checkout():
    assert TEST_PROJECT != REPO
    assert not (TEST_PROJECT / ".env").exists()
    assert (TEST_PROJECT / "migrations" / "env.py").is_file()


def test_settings_for_ignores_the_checkouts_dotenv(planted_dotenv, migrated_db):
    settings = settings_for(migrated_db)
    assert settings.direct_database_url is None
    assert settings.env == "test"
    assert settings.project_root == TEST_PROJECT


def test_cli_subprocess_ignores_the_checkouts_dotenv(planted_dotenv, migrated_db):
    result = run_celora("db", "status", "--json", env={"DATABASE_URL": migrated_db})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["head"]
    assert "Dev3lopersOwn" not in result.stdout + result.stderr
    assert "developers_own_db" not in result.stdout + result.stderr
