"""pytest-alembic's built-in checks of the migration history, against the real PostgreSQL.

single head, upgrade through every revision, models match the DDL the migrations build, and down/up
consistency. Its own collector (which binds the tests to tests/conftest.py) is disabled in pyproject.toml
(`-p no:pytest_alembic`: with pytest 9 it can fail collection with "'TestCollector' object has no attribute
'_nodeid'"); the test functions are imported here instead, with the fixtures they need.
"""

from __future__ import annotations

import pytest
from pytest_alembic.config import Config as PytestAlembicConfig
from pytest_alembic.runner import runner
from pytest_alembic.tests import (  # noqa: F401 - collected by pytest from this module
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import create_engine

from tests.support import settings_for


@pytest.fixture
def alembic_engine(empty_db):
    """An Engine, as pytest-alembic hands to env.py (env.py accepts an Engine or a Connection)."""
    engine = create_engine(settings_for(empty_db).database_url.sqlalchemy_url())
    yield engine
    engine.dispose()


@pytest.fixture
def alembic_runner(empty_db, alembic_engine):
    from celora_cli.migrate.scripts import alembic_config

    config = PytestAlembicConfig.from_raw_config(alembic_config(settings_for(empty_db)))
    with runner(config=config, engine=alembic_engine) as migration_context:
        yield migration_context
