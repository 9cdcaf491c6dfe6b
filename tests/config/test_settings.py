"""Unit tests for celora_cli.config.settings: URL parsing/masking, redaction and settings precedence.

No database, no network. Every load_settings() call passes environ= and project_root= explicitly so the
developer's own environment and .env never leak in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from celora_cli.config.settings import Settings, load_settings, mask_url, parse_database_url, redact
from celora_cli.errors import ConfigError, ExitCode

# --------------------------------------------------------------------------- parse_database_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cret@db:5432/celora",
        "postgres://app:s3cret@db:5432/celora",
        "postgresql+psycopg://app:s3cret@db:5432/celora",
        "POSTGRESQL://app:s3cret@db:5432/celora",
        "  postgresql://app:s3cret@db:5432/celora \n",
    ],
)
def test_accepted_schemes_all_give_psycopg_sqlalchemy_url(url):
    parsed = parse_database_url(url)
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "app", "s3cret", "db", 5432, "celora")
    assert parsed.sqlalchemy_url() == "postgresql+psycopg://app:s3cret@db:5432/celora"
    assert parsed.pgbouncer is False
    assert parsed.libpq_params == ()


def test_no_port_and_display_host_default():
    parsed = parse_database_url("postgres://app:pw@db/celora")
    assert parsed.port is None
    assert parsed.display_host == "db:5432"
    assert parsed.sqlalchemy_url() == "postgresql+psycopg://app:pw@db/celora"


def test_display_host_uses_explicit_port():
    assert parse_database_url("postgresql://app:pw@db.example:6543/celora").display_host == "db.example:6543"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://u:topsecret@h/db", "unsupported scheme 'mysql'"),
        ("sqlite:///x", "unsupported scheme 'sqlite'"),
        ("postgresql+psycopg2://u:topsecret@h/db", "unsupported scheme 'postgresql+psycopg2'"),
        ("host=h user=u password=topsecret", "is not a URL"),
    ],
)
def test_rejected_urls_raise_config_error_without_password(url, needle):
    with pytest.raises(ConfigError) as info:
        parse_database_url(url)
    err = info.value
    assert needle in err.message
    assert err.message.startswith("DATABASE_URL ")
    assert err.exit_code == ExitCode.CONFIG == 3
    assert err.hint
    assert "topsecret" not in err.message
    assert "topsecret" not in err.hint


def test_scheme_less_url_error_does_not_leak_password():
    with pytest.raises(ConfigError) as info:
        parse_database_url("app:topsecret@db:5432/celora")
    assert "is not a URL" in info.value.message
    assert "topsecret" not in info.value.message


def test_error_names_the_setting():
    with pytest.raises(ConfigError) as info:
        parse_database_url("mysql://u:pw@h/db", "DIRECT_DATABASE_URL")
    assert info.value.message.startswith("DIRECT_DATABASE_URL uses the unsupported scheme")


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("postgresql://u:secret@h:notaport/db", "Port could not be cast to integer value as 'notaport'"),
        ("postgresql://u:secret@h:99999/db", "Port out of range"),
    ],
)
def test_malformed_port_is_config_error_without_password(url, detail):
    with pytest.raises(ConfigError) as info:
        parse_database_url(url)
    assert "malformed" in info.value.message
    assert detail in info.value.message
    assert "secret" not in info.value.message
    assert "secret" not in info.value.hint
    assert "%40" in info.value.hint  # tells the user how to encode @


def test_invalid_database_name_with_slash():
    with pytest.raises(ConfigError, match="invalid database name 'a/b'"):
        parse_database_url("postgresql://u:pw@h/a/b")


def test_pgbouncer_param_consumed_and_libpq_params_pass_through():
    parsed = parse_database_url(
        "postgresql://u:p@h:6432/db?pgbouncer=true&sslmode=require&connect_timeout=3&application_name=x")
    assert parsed.pgbouncer is True
    assert parsed.libpq_params == (("sslmode", "require"), ("connect_timeout", "3"), ("application_name", "x"))
    assert parsed.libpq_param("sslmode") == "require"
    assert parsed.libpq_param("pgbouncer") is None
    url = parsed.sqlalchemy_url()
    assert url == "postgresql+psycopg://u:p@h:6432/db?sslmode=require&connect_timeout=3&application_name=x"
    assert "pgbouncer" not in url


@pytest.mark.parametrize("value,expected", [("true", True), ("1", True), ("YES", True), ("on", True),
                                            ("false", False), ("0", False), ("off", False), ("", False)])
def test_pgbouncer_boolean_spellings(value, expected):
    assert parse_database_url(f"postgresql://u:p@h/db?pgbouncer={value}").pgbouncer is expected


def test_pgbouncer_maybe_is_config_error():
    with pytest.raises(ConfigError, match=r"\?pgbouncer must be true or false, not 'maybe'"):
        parse_database_url("postgresql://u:p@h/db?pgbouncer=maybe")


def test_celora_params_consumed_and_typed():
    parsed = parse_database_url(
        "postgresql://u:p@h/db?connection_limit=5&pool_timeout=2.5&schema=app&socket_timeout=9"
        "&statement_cache_size=0&sslmode=verify-full")
    assert parsed.connection_limit == 5
    assert isinstance(parsed.connection_limit, int)
    assert parsed.pool_timeout == 2.5
    assert parsed.schema == "app"
    assert parsed.libpq_params == (("sslmode", "verify-full"),)
    assert parsed.sqlalchemy_url() == "postgresql+psycopg://u:p@h/db?sslmode=verify-full"


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("connection_limit=abc", r"\?connection_limit must be a number, not 'abc'"),
        ("connection_limit=2.5", r"\?connection_limit must be a number"),
        ("connection_limit=-1", r"\?connection_limit must not be negative"),
        ("pool_timeout=-0.5", r"\?pool_timeout must not be negative"),
    ],
)
def test_bad_celora_params(query, match):
    with pytest.raises(ConfigError, match=match):
        parse_database_url(f"postgresql://u:p@h/db?{query}")


def test_percent_encoded_password_decodes_and_round_trips():
    parsed = parse_database_url("postgresql://app:p%40ss@h:5432/db?sslmode=require")
    assert parsed.password == "p@ss"
    assert parsed.sqlalchemy_url() == "postgresql+psycopg://app:p%40ss@h:5432/db?sslmode=require"
    sa = make_url(parsed.sqlalchemy_url())
    assert (sa.drivername, sa.username, sa.password, sa.host, sa.port, sa.database) == (
        "postgresql+psycopg", "app", "p@ss", "h", 5432, "db")
    assert dict(sa.query) == {"sslmode": "require"}


def test_special_characters_in_password_and_database_round_trip():
    parsed = parse_database_url("postgresql://app:pa%3As%2Fs@h/my%20db")
    assert parsed.password == "pa:s/s"
    assert parsed.database == "my db"
    sa = make_url(parsed.sqlalchemy_url())
    assert (sa.password, sa.database) == ("pa:s/s", "my db")


def test_ipv6_host():
    parsed = parse_database_url("postgresql://u:pw@[2001:db8::1]:5433/db")
    assert parsed.host == "2001:db8::1"
    assert parsed.port == 5433
    assert parsed.sqlalchemy_url() == "postgresql+psycopg://u:pw@[2001:db8::1]:5433/db"
    sa = make_url(parsed.sqlalchemy_url())
    assert (sa.host, sa.port, sa.database) == ("2001:db8::1", 5433, "db")


def test_user_without_password():
    parsed = parse_database_url("postgresql://app@h/db")
    assert parsed.username == "app"
    assert parsed.password is None
    assert parsed.sqlalchemy_url() == "postgresql+psycopg://app@h/db"


def test_unix_socket_host_query_param_keeps_database_name():
    parsed = parse_database_url("postgresql:///celora?host=/var/run/postgresql")
    assert parsed.host == "/var/run/postgresql"
    assert parsed.database == "celora"
    sa = make_url(parsed.sqlalchemy_url())
    assert sa.database == "celora"


# --------------------------------------------------------------------------- mask_url / redact


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/celora", "postgresql://app:****@db:5432/celora"),
        ("postgres://app:s3cret@db/celora?sslmode=require", "postgres://app:****@db/celora?sslmode=require"),
        ("postgresql://app:pa:ss@db/celora", "postgresql://app:****@db/celora"),
        ("postgresql://app:s3cret@[::1]:5432/celora", "postgresql://app:****@[::1]:5432/celora"),
        ("postgresql://db:5432/celora?sslmode=require&password=s3cret",
         "postgresql://db:5432/celora?sslmode=require&password=****"),
        ("postgresql://db/celora?PASSWORD=s3cret", "postgresql://db/celora?PASSWORD=****"),
        ("host=db user=app password=s3cret dbname=celora", "host=db user=app password=**** dbname=celora"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@db:5432/celora",
        "postgresql://db:5432/celora",
        "postgresql://[::1]:5432/celora",
        "postgresql:///celora?host=/var/run/postgresql",
        "not a url at all",
    ],
)
def test_mask_url_leaves_urls_without_password_unchanged(url):
    assert mask_url(url) == url


def test_mask_url_no_password_with_at_in_query_unchanged():
    url = "postgresql://db:5432/celora?application_name=me@laptop"
    assert mask_url(url) == url


def test_mask_url_password_with_unencoded_at_is_fully_masked():
    url = "postgresql://app:hunter@22secret@db:5432/celora"
    assert parse_database_url(url).password == "hunter@22secret"
    masked = mask_url(url)
    assert "22secret" not in masked
    assert masked == "postgresql://app:****@db:5432/celora"


def test_malformed_url_with_unencoded_at_in_password_does_not_leak():
    with pytest.raises(ConfigError) as info:
        parse_database_url("postgresql://app:top@secret@db:bad/celora")
    assert "secret" not in info.value.message


def test_masked_property_uses_original_url():
    parsed = parse_database_url("postgresql://app:s3cret@db:5432/celora?pgbouncer=true")
    assert parsed.masked == "postgresql://app:****@db:5432/celora?pgbouncer=true"


def test_redact_masks_urls_and_known_secrets():
    text = "login failed for postgresql://a:zz@h/db; server said: bad password hunter22 (again hunter22)"
    assert redact(text, ["hunter22"]) == (
        "login failed for postgresql://a:****@h/db; server said: bad password **** (again ****)")


def test_redact_ignores_empty_and_very_short_secrets():
    assert redact("a ab abc", ["", "a", "ab"]) == "a ab abc"
    assert redact("a ab abc", ["abc"]) == "a ab ****"


def test_redact_without_secrets_only_masks_urls():
    assert redact("postgresql://u:pw@h/db and pw") == "postgresql://u:****@h/db and pw"


# --------------------------------------------------------------------------- load_settings


ENV_VARS_DEFAULTS = dict(env="development", log_queries=False, connect_timeout=5.0, statement_timeout=30.0,
                         lock_timeout=60.0, health_timeout=5.0, debug=False)


def test_defaults_with_empty_environment(tmp_path):
    settings = load_settings(environ={}, project_root=tmp_path)
    for name, value in ENV_VARS_DEFAULTS.items():
        assert getattr(settings, name) == value, name
    assert settings.project_root == tmp_path
    assert settings.database_url is None
    assert settings.direct_database_url is None
    assert settings.uses_local_server is True
    assert settings.local_server_dir == tmp_path / ".celora"
    assert settings.local_port is None
    assert settings.secrets() == []
    assert settings.ddl_url() is None


def test_values_read_from_environ(tmp_path):
    settings = load_settings(environ={
        "DATABASE_URL": "postgresql://app:pw1@db:6432/celora?pgbouncer=true",
        "DIRECT_DATABASE_URL": "postgresql://app:pw2@db:5432/celora",
        "CELORA_ENV": " Production ",
        "CELORA_LOG_QUERIES": "yes",
        "CELORA_CONNECT_TIMEOUT": "2.5",
        "CELORA_STATEMENT_TIMEOUT": "0",
        "CELORA_LOCK_TIMEOUT": "120",
        "CELORA_HEALTH_TIMEOUT": "3",
        "CELORA_DEBUG": "1",
        "CELORA_LOCAL_DIR": str(tmp_path / "pg"),
        "CELORA_LOCAL_PORT": "54329",
        "CELORA_PG_USER": "postgres",
        "CELORA_MIGRATIONS_DIR": str(tmp_path / "mig"),
    }, project_root=tmp_path)
    assert settings.uses_local_server is False
    assert settings.database_url.pgbouncer is True
    assert settings.direct_database_url.port == 5432
    assert settings.env == "production"
    assert settings.log_queries is True and settings.debug is True
    assert (settings.connect_timeout, settings.statement_timeout, settings.lock_timeout,
            settings.health_timeout) == (2.5, 0.0, 120.0, 3.0)
    assert settings.local_server_dir == tmp_path / "pg"
    assert settings.local_port == 54329
    assert settings.local_pg_user == "postgres"
    assert settings.migrations_dir == tmp_path / "mig"
    assert settings.secrets() == ["pw1", "pw2"]


def test_dotenv_in_project_root_is_read(tmp_path):
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://app:fromdotenv@db/celora\n"
                                   "CELORA_LOCK_TIMEOUT=11\n")
    settings = load_settings(environ={}, project_root=tmp_path)
    assert settings.database_url.password == "fromdotenv"
    assert settings.lock_timeout == 11.0


def test_environ_beats_dotenv(tmp_path):
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://app:fromdotenv@db/celora\nCELORA_LOCK_TIMEOUT=11\n")
    settings = load_settings(environ={"DATABASE_URL": "postgresql://app:fromenv@db/celora"},
                             project_root=tmp_path)
    assert settings.database_url.password == "fromenv"
    assert settings.lock_timeout == 11.0  # not in environ: .env still applies


def test_env_file_beats_environ_and_dotenv(tmp_path):
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://app:fromdotenv@db/celora\nCELORA_ENV=test\n")
    env_file = tmp_path / ".env.staging"
    env_file.write_text("DATABASE_URL=postgresql://app:fromfile@db/celora\n")
    settings = load_settings(environ={"DATABASE_URL": "postgresql://app:fromenv@db/celora",
                                      "CELORA_HEALTH_TIMEOUT": "7"},
                             project_root=tmp_path, env_file=env_file)
    assert settings.database_url.password == "fromfile"
    assert settings.env == "test"  # only in .env
    assert settings.health_timeout == 7.0  # only in environ


def test_flags_beat_env_file_and_none_flags_are_ignored(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text("CELORA_CONNECT_TIMEOUT=8\nCELORA_LOCK_TIMEOUT=9\n")
    settings = load_settings(environ={"CELORA_CONNECT_TIMEOUT": "4"}, project_root=tmp_path,
                             env_file=env_file, connect_timeout=1.5, lock_timeout=None)
    assert settings.connect_timeout == 1.5
    assert settings.lock_timeout == 9.0


def test_env_file_accepts_str_path(tmp_path):
    env_file = tmp_path / "x.env"
    env_file.write_text("CELORA_ENV=staging\n")
    assert load_settings(environ={}, project_root=tmp_path, env_file=str(env_file)).env == "staging"


@pytest.mark.parametrize("name", ["missing.env", "adir"])
def test_missing_env_file_is_config_error(tmp_path, name):
    (tmp_path / "adir").mkdir()
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, project_root=tmp_path, env_file=tmp_path / name)
    assert name in info.value.message
    assert "does not exist" in info.value.message


@pytest.mark.parametrize("value", ["prod", "dev", "qa"])
def test_unknown_celora_env_is_config_error(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"CELORA_ENV": value}, project_root=tmp_path)
    assert repr(value) in info.value.message
    assert "development, test, staging, production" in info.value.hint


@pytest.mark.parametrize("name", ["CELORA_CONNECT_TIMEOUT", "CELORA_STATEMENT_TIMEOUT", "CELORA_LOCK_TIMEOUT",
                                  "CELORA_HEALTH_TIMEOUT"])
@pytest.mark.parametrize("value,words", [("abc", "must be a number"), ("-1", "must be from"),
                                         ("5s", "must be a number")])
def test_bad_timeouts_are_config_errors(tmp_path, name, value, words):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={name: value}, project_root=tmp_path)
    assert info.value.message.startswith(name)
    assert words in info.value.message


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_timeout_is_config_error(tmp_path, value):
    with pytest.raises(ConfigError):
        load_settings(environ={"CELORA_CONNECT_TIMEOUT": value}, project_root=tmp_path)


def test_local_port_out_of_range_is_config_error(tmp_path):
    with pytest.raises(ConfigError):
        load_settings(environ={"CELORA_LOCAL_PORT": "99999"}, project_root=tmp_path)


@pytest.mark.parametrize("env", [{"CELORA_LOCAL_PORT": "abc"}, {"CELORA_LOCAL_PORT": "-5"},
                                 {"CELORA_DEBUG": "maybe"}, {"CELORA_LOG_QUERIES": "2"}])
def test_other_bad_values_are_config_errors(tmp_path, env):
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env, project_root=tmp_path)
    assert next(iter(env)) in info.value.message


def test_bad_database_url_in_environ_is_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DATABASE_URL": "mysql://u:topsecret@h/db"}, project_root=tmp_path)
    assert "unsupported scheme" in info.value.message
    assert "topsecret" not in info.value.message


def test_bad_direct_url_names_its_setting(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DIRECT_DATABASE_URL": "postgresql://u:topsecret@h:x/db"}, project_root=tmp_path)
    assert info.value.message.startswith("DIRECT_DATABASE_URL is malformed")
    assert "topsecret" not in info.value.message


def test_direct_url_with_pgbouncer_is_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DATABASE_URL": "postgresql://u:pw@h:6432/db?pgbouncer=true",
                               "DIRECT_DATABASE_URL": "postgresql://u:pw@h:6432/db?pgbouncer=true"},
                      project_root=tmp_path)
    assert "DIRECT_DATABASE_URL" in info.value.message
    assert "pgbouncer=true" in info.value.message


def test_empty_database_url_means_local_server(tmp_path):
    settings = load_settings(environ={"DATABASE_URL": "", "DIRECT_DATABASE_URL": ""}, project_root=tmp_path)
    assert settings.uses_local_server is True


# --------------------------------------------------------------------------- Settings.ddl_url / secrets


def test_ddl_url_pgbouncer_without_direct_url_is_config_error(tmp_path):
    settings = load_settings(environ={"DATABASE_URL": "postgresql://u:pw@h:6432/db?pgbouncer=true"},
                             project_root=tmp_path)
    with pytest.raises(ConfigError) as info:
        settings.ddl_url()
    assert "DIRECT_DATABASE_URL" in info.value.message
    assert "DIRECT_DATABASE_URL" in info.value.hint
    assert info.value.exit_code == 3


def test_ddl_url_prefers_direct_url(tmp_path):
    settings = load_settings(environ={"DATABASE_URL": "postgresql://u:pooled@h:6432/db?pgbouncer=true",
                                      "DIRECT_DATABASE_URL": "postgresql://u:direct@h:5432/db"},
                             project_root=tmp_path)
    ddl = settings.ddl_url()
    assert ddl is settings.direct_database_url
    assert (ddl.port, ddl.password) == (5432, "direct")


def test_ddl_url_plain_database_url_is_itself(tmp_path):
    settings = load_settings(environ={"DATABASE_URL": "postgresql://u:pw@h:5432/db"}, project_root=tmp_path)
    assert settings.ddl_url() is settings.database_url


def test_secrets_lists_both_passwords_and_skips_missing():
    both = Settings(database_url=parse_database_url("postgresql://u:one@h/db"),
                    direct_database_url=parse_database_url("postgresql://u:two@h/db"), project_root=Path("."))
    assert both.secrets() == ["one", "two"]
    none = Settings(database_url=parse_database_url("postgresql://u@h/db"), project_root=Path("."))
    assert none.secrets() == []


def test_with_overrides_returns_new_frozen_settings(tmp_path):
    settings = Settings(project_root=tmp_path)
    changed = settings.with_overrides(env="test", debug=None)
    assert changed.env == "test" and settings.env == "development"
    assert changed.debug is False
    with pytest.raises(AttributeError):
        settings.env = "x"  # frozen dataclass
