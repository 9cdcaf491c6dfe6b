"""The settings behind `db health` in depth: thresholds through the one validator, sizes, replica URLs."""

from __future__ import annotations

import pytest

from celora_cli.config.settings import load_settings, parse_bytes
from celora_cli.errors import ConfigError

BASE = {"DATABASE_URL": "postgresql://app@db:5432/celora"}


def _load(tmp_path, **environ):
    return load_settings(environ={**BASE, **environ}, project_root=tmp_path)


def test_defaults(tmp_path):
    settings = _load(tmp_path)
    assert settings.pgbouncer_admin_url is None and settings.replica_urls == ()
    assert (settings.health_pool_wait, settings.health_replica_lag, settings.health_lock_wait,
            settings.health_transaction_age) == (1.0, 30.0, 5.0, 300.0)
    assert settings.slot_wal_threshold == 1024 ** 3


@pytest.mark.parametrize("name", ["CELORA_HEALTH_POOL_WAIT", "CELORA_HEALTH_REPLICA_LAG", "CELORA_HEALTH_LOCK_WAIT",
                                  "CELORA_HEALTH_TRANSACTION_AGE"])
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "86401", "soon"])
def test_thresholds_outside_their_limits_are_config_errors_naming_the_setting(tmp_path, name, value):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, **{name: value})
    assert name in caught.value.message and caught.value.hint


def test_a_threshold_of_zero_means_any(tmp_path):
    assert _load(tmp_path, CELORA_HEALTH_LOCK_WAIT="0").health_lock_wait == 0.0


@pytest.mark.parametrize(("text", "size"), [("0", 0), ("1048576", 1048576), ("1kB", 1024), ("16MB", 16 * 1024 ** 2),
                                            ("1.5 GB", int(1.5 * 1024 ** 3)), ("2tb", 2 * 1024 ** 4)])
def test_sizes(text, size):
    assert parse_bytes(text, "CELORA_SLOT_WAL_THRESHOLD") == size


@pytest.mark.parametrize("text", ["-1", "1PB", "lots", "1 G B", "", "1e9"])
def test_bad_sizes_are_config_errors(tmp_path, text):
    with pytest.raises(ConfigError) as caught:
        parse_bytes(text, "CELORA_SLOT_WAL_THRESHOLD")
    assert "CELORA_SLOT_WAL_THRESHOLD" in caught.value.message and "MB" in caught.value.hint


def test_replica_urls_are_split_and_their_passwords_are_secrets(tmp_path):
    settings = _load(tmp_path, CELORA_REPLICA_URLS=" postgresql://ro:pw1@r1/celora ,, postgresql://ro:pw2@r2/celora",
                     CELORA_PGBOUNCER_ADMIN_URL="postgresql://stats:pw3@bouncer:6432/pgbouncer")
    assert [url.host for url in settings.replica_urls] == ["r1", "r2"]
    assert {"pw1", "pw2", "pw3"} <= set(settings.secrets())
    assert "pw1" not in settings.replica_urls[0].masked


def test_a_malformed_replica_url_names_its_position(tmp_path):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, CELORA_REPLICA_URLS="postgresql://ok@r1/celora,mysql://r2/x")
    assert "CELORA_REPLICA_URLS (URL 2)" in caught.value.message
