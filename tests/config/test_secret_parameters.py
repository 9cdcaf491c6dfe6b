"""Secrets in database URLs besides the password: `?sslpassword=`, and any parameter whose name holds "password"
or "secret" (case-insensitive, percent-encoded names too), masked wherever masking happens; and a URL object's
repr()/str() shows no secret."""

from __future__ import annotations

import pytest

from celora_cli.config.settings import (
    Settings,
    is_secret_parameter,
    load_settings,
    mask_url,
    parse_database_url,
    redact,
)

SECRET = "s3cr3t-value"


@pytest.mark.parametrize("name", ["password", "PASSWORD", "sslpassword", "SSLPassword", "ssl%70assword",
                                  "ssl%2570assword", "oauth_client_secret", "app_secret", "Vault%5FSecret",
                                  "db_password_file", "scram_client_key", "SCRAM_SERVER_KEY"])
def test_secret_parameter_names(name):
    assert is_secret_parameter(name)


@pytest.mark.parametrize("name", ["sslmode", "sslkey", "passfile", "user", "application_name", "options",
                                  "sslrootcert", "oauth_client_id", "%zz"])
def test_ordinary_parameter_names(name):
    assert not is_secret_parameter(name)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app@db/celora?sslmode=verify-full&sslpassword=s3cr3t-value&application_name=x",
         "postgresql://app@db/celora?sslmode=verify-full&sslpassword=****&application_name=x"),
        ("postgresql://app:pw@db/celora?ssl%70assword=s3cr3t-value",
         "postgresql://app:****@db/celora?ssl%70assword=****"),
        ("postgresql://db/celora?oauth_client_secret=s3cr3t-value&oauth_client_id=celora",
         "postgresql://db/celora?oauth_client_secret=****&oauth_client_id=celora"),
        ("postgresql://db/celora?My_Secret=s3cr3t-value", "postgresql://db/celora?My_Secret=****"),
        ("postgresql://db/celora?sslpassword=", "postgresql://db/celora?sslpassword="),  # nothing to hide
        ("postgresql://db/celora?sslpassword=s3cr3t-value#frag", "postgresql://db/celora?sslpassword=****"),
    ],
)
def test_secret_parameters_are_masked_in_free_text_and_in_a_parsed_url(url, masked):
    assert mask_url(url) == masked
    assert mask_url(f"connecting to {url} failed") == f"connecting to {masked} failed"
    assert parse_database_url(url).masked == masked


def test_a_space_in_a_secret_parameter_of_a_known_url_is_masked_whole():
    url = "postgresql://db/celora?sslpassword=two%20words and more&sslmode=require"
    assert parse_database_url(url).masked == "postgresql://db/celora?sslpassword=****&sslmode=require"


def test_keyword_value_strings_and_json_text():
    assert mask_url("host=db sslpassword=s3cr3t-value client_secret=x2 dbname=c") == \
        "host=db sslpassword=**** client_secret=**** dbname=c"
    # The JSON output is masked as text: the string's closing quote stays, the JSON stays valid.
    import json

    text = json.dumps({"url": "postgresql://db/c?sslpassword=s3cr3t-value", "password": "x"})
    assert json.loads(mask_url(text)) == {"url": "postgresql://db/c?sslpassword=****", "password": "x"}


def test_settings_secrets_hold_secret_parameters_so_redact_catches_them_anywhere(tmp_path):
    environ = {
        "DATABASE_URL": f"postgresql://app:pw1@db/celora?sslpassword={SECRET}",
        "DIRECT_DATABASE_URL": "postgresql://app@db:5432/celora?oauth_client_secret=client-s3cret",
        "CELORA_REPLICA_URLS": "postgresql://r@replica/celora?vault%5Fpassword=replica-pw",
    }
    settings = load_settings(environ=environ, project_root=tmp_path)
    assert set(settings.secrets()) == {"pw1", SECRET, "client-s3cret", "replica-pw"}
    # A driver's message that quotes a value on its own, away from any URL: only the known secrets catch it.
    text = f'could not decrypt key with "{SECRET}"; vault said replica-pw'
    assert redact(text, settings.secrets()) == 'could not decrypt key with "****"; vault said ****'


def test_repr_and_str_of_a_url_and_of_settings_show_no_secret(tmp_path):
    url = parse_database_url(f"postgresql://app:pw-hunter22@db/celora?sslpassword={SECRET}&sslmode=require")
    for shown in (repr(url), str(url), f"{url}", repr(Settings(database_url=url))):
        assert "pw-hunter22" not in shown and SECRET not in shown, shown
    assert repr(url) == "DatabaseURL('postgresql://app:****@db/celora?sslpassword=****&sslmode=require')"
    assert url.password == "pw-hunter22" and url.libpq_param("sslpassword") == SECRET  # still there to connect


def test_a_refused_url_names_itself_without_its_secret_parameters():
    from celora_cli.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        parse_database_url(f"mysql://db/celora?sslpassword={SECRET}")
    assert SECRET not in refused.value.message and "sslpassword=****" in refused.value.message
