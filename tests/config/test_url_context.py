"""One context per invocation: a URL knows the setting it came from, and working out a URL never starts the local
server unless the command allowed it (celora_cli.local.startup)."""

from __future__ import annotations

import psycopg
import pytest

from celora_cli.config.settings import LOCAL_SETTING, load_settings, parse_database_url
from celora_cli.db.connect import direct_url, resolve_urls
from celora_cli.db.errors import translate
from celora_cli.errors import ConfigError, LocalServerError
from celora_cli.local.startup import allowing_start

DIRECT = "postgresql://deploy:pw@db:5432/celora"
POOLED = "postgresql://app:pw@pgbouncer:6432/celora?pgbouncer=true"


def _settings(tmp_path, **environ):
    return load_settings(environ={"CELORA_LOCAL_DIR": str(tmp_path / "local"), **environ}, project_root=tmp_path)


def test_each_url_knows_its_setting(tmp_path):
    settings = _settings(tmp_path, DATABASE_URL=POOLED, DIRECT_DATABASE_URL=DIRECT,
                         SHADOW_DATABASE_URL="postgresql://u@h/shadow",
                         CELORA_PGBOUNCER_ADMIN_URL="postgresql://stats@pgbouncer:6432/pgbouncer",
                         CELORA_REPLICA_URLS="postgresql://r@replica1/celora,postgresql://r@replica2/celora")
    assert settings.database_url.setting == "DATABASE_URL"
    assert settings.direct_database_url.setting == "DIRECT_DATABASE_URL"
    assert settings.shadow_database_url.setting == "SHADOW_DATABASE_URL"
    assert settings.pgbouncer_admin_url.setting == "CELORA_PGBOUNCER_ADMIN_URL"
    assert [u.setting for u in settings.replica_urls] == ["CELORA_REPLICA_URLS (URL 1)",
                                                          "CELORA_REPLICA_URLS (URL 2)"]
    assert settings.ddl_url().setting == direct_url(settings).setting == "DIRECT_DATABASE_URL"
    assert settings.app_url().setting == resolve_urls(settings).pooled.setting == "DATABASE_URL"


def test_without_a_direct_url_ddl_goes_to_database_url_and_says_so(tmp_path):
    settings = _settings(tmp_path, DATABASE_URL=DIRECT)
    assert direct_url(settings).setting == "DATABASE_URL"
    assert resolve_urls(settings).direct.setting == "DATABASE_URL"


def test_the_setting_is_not_part_of_a_urls_equality():
    assert parse_database_url(DIRECT, "DATABASE_URL") == parse_database_url(DIRECT, "DIRECT_DATABASE_URL")


def test_a_translated_error_names_the_urls_own_setting():
    url = parse_database_url(DIRECT, "DIRECT_DATABASE_URL")
    error = translate(psycopg.OperationalError('connection to server at "db", port 5432 failed: Connection refused'),
                      url)
    assert "DIRECT_DATABASE_URL" in error.message and "pw" not in error.message
    assert "SHADOW" in translate(psycopg.OperationalError("Connection refused"), url, "SHADOW").message


def test_resolving_without_the_grant_starts_nothing(tmp_path):
    settings = _settings(tmp_path)
    assert not settings.start_local_server
    for resolve in (resolve_urls, direct_url):
        with pytest.raises(LocalServerError, match="has not been created"):
            resolve(settings)
    assert not (tmp_path / "local" / "pgdata").exists()


def test_start_false_vetoes_the_grant(tmp_path):
    """db health and db metrics report on the local server: they never start it, even in a command."""
    settings = allowing_start(_settings(tmp_path))
    assert settings.start_local_server
    with pytest.raises(LocalServerError, match="has not been created"):
        resolve_urls(settings, start=False)
    assert not (tmp_path / "local" / "pgdata").exists()


def test_the_grant_changes_nothing_when_there_is_a_database_url(tmp_path):
    settings = _settings(tmp_path, DATABASE_URL=DIRECT)
    assert allowing_start(settings) is settings


def test_a_known_local_url_is_used_as_it_is(tmp_path):
    import dataclasses

    local = parse_database_url("postgresql://celora@127.0.0.1:54321/celora", LOCAL_SETTING)
    settings = dataclasses.replace(_settings(tmp_path), local_database_url=local)
    urls = resolve_urls(settings, start=False)
    assert urls.pooled is urls.direct is local and urls.pooled.setting == LOCAL_SETTING
    assert direct_url(settings) is local and settings.ddl_url() is local and settings.app_url() is local


@pytest.mark.parametrize("env", ["staging", "production"])
def test_no_local_server_outside_development_and_test(tmp_path, env):
    with pytest.raises(ConfigError, match=f"DATABASE_URL is not set \\(CELORA_ENV={env}\\)"):
        resolve_urls(allowing_start(_settings(tmp_path, CELORA_ENV=env)))
    assert not (tmp_path / "local").exists()
