"""CELORA_ROLE_*: the group role names `celora db roles` uses, validated like every other setting (exit 3)."""

from __future__ import annotations

import pytest

from celora_cli.config.settings import load_settings
from celora_cli.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    defaults = load_settings(environ={}, project_root=tmp_path)
    assert (defaults.role_migrator, defaults.role_app, defaults.role_readonly, defaults.role_cdc) == \
        ("celora_migrator", "celora_app", "celora_readonly", "celora_cdc")
    renamed = load_settings(environ={"CELORA_ROLE_APP": "Wallet App"}, project_root=tmp_path)
    assert renamed.role_app == "Wallet App"  # any name PostgreSQL takes; celora quotes it


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("CELORA_ROLE_APP", "pg_app", "not starting with pg_"),
    ("CELORA_ROLE_READONLY", "x" * 64, "1 to 63 bytes"),
    ("CELORA_ROLE_CDC", "celora_app", "four different roles"),
])
def test_bad_names_are_configuration_errors(tmp_path, variable, value, said):
    with pytest.raises(ConfigError, match=said):
        load_settings(environ={variable: value}, project_root=tmp_path)
