"""Read replicas in the library, without a database: their settings go through the one validator, the error a
write in a read-only session raises is one of celora's, and a router with no replicas plans the primary."""

from __future__ import annotations

import pytest

from celora_cli.config.settings import load_settings
from celora_cli.errors import ConfigError, DatabaseError, ExitCode

BASE = {"DATABASE_URL": "postgresql://app@db:5432/celora"}


def _load(tmp_path, **values):
    return load_settings(environ={**BASE, **values}, project_root=tmp_path)


def test_defaults(tmp_path):
    settings = _load(tmp_path)
    assert (settings.replica_max_lag, settings.replica_check_interval) == (5.0, 1.0)
    assert _load(tmp_path, CELORA_REPLICA_MAX_LAG="0", CELORA_REPLICA_CHECK_INTERVAL="0.25").replica_max_lag == 0


@pytest.mark.parametrize(("name", "value"), [("CELORA_REPLICA_MAX_LAG", "-1"), ("CELORA_REPLICA_MAX_LAG", "soon"),
                                             ("CELORA_REPLICA_MAX_LAG", "86401"),
                                             ("CELORA_REPLICA_CHECK_INTERVAL", "inf"),
                                             ("CELORA_REPLICA_CHECK_INTERVAL", "3601")])
def test_values_outside_their_limits_are_config_errors_naming_the_setting(tmp_path, name, value):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, **{name: value})
    assert name in caught.value.message and caught.value.hint


def test_library_arguments_are_validated_like_the_environment(tmp_path):
    with pytest.raises(ConfigError, match="replica_max_lag"):
        _load(tmp_path).with_overrides(replica_max_lag=-2)


def test_the_read_only_error_is_a_database_error_exported_by_the_library():
    import celora_cli
    from celora_cli.db.replicas import ReadOnlySessionError

    assert celora_cli.ReadOnlySessionError is ReadOnlySessionError
    assert issubclass(ReadOnlySessionError, DatabaseError) and ReadOnlySessionError.exit_code == ExitCode.DATABASE_ERROR
    assert callable(celora_cli.get_read_router)


def test_with_no_replicas_every_read_only_session_goes_to_the_primary(tmp_path):
    """No server is contacted: a router with nothing in CELORA_REPLICA_URLS has nothing to check."""
    from sqlalchemy import create_engine

    from celora_cli.db.replicas import ReadRouter

    router = ReadRouter(_load(tmp_path), create_engine("postgresql+psycopg://app@db:5432/celora"))
    assert router.status() == []
    route = router.route()
    assert route.target == "primary" and route.replica is None and route.engine is router.primary
    assert route.engine.get_execution_options()["postgresql_readonly"] is True
