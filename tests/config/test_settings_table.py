"""The documented settings table against the field table (celora_cli.config.settings.Settings): every setting
documented, every documented row a setting, and each documented default equal to the field's.

The table may move (the README is becoming a docs site): SETTINGS_TABLE_FILE says where it is, and the table is
the one under the header row SETTINGS_TABLE_HEADER in that file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from celora_cli.config.settings import SETTING_FIELDS, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_TABLE_FILE = ROOT / "README.md"  # the one place to change when the table moves
SETTINGS_TABLE_HEADER = "| setting | default | meaning |"

BY_ENV = {spec.metadata["env"]: spec for spec in SETTING_FIELDS}


def _documented_rows() -> dict[str, str]:
    """environment variable -> its default cell. A row may name several settings (`A`, `B`) with as many
    defaults (`a`, `b`), in the same order."""
    text = SETTINGS_TABLE_FILE.read_text(encoding="utf-8")
    assert SETTINGS_TABLE_HEADER in text, f"no table headed {SETTINGS_TABLE_HEADER!r} in {SETTINGS_TABLE_FILE}"
    lines = text.split(SETTINGS_TABLE_HEADER, 1)[1].splitlines()[2:]  # past the header's | --- | line
    rows: dict[str, str] = {}
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        assert names, f"a settings row names no setting: {line}"
        defaults = [cells[1]] if len(names) == 1 else [part.strip() for part in cells[1].split(",")]
        assert len(defaults) == len(names), f"{names}: one default each expected in {cells[1]!r}"
        for name, default in zip(names, defaults, strict=True):
            assert name not in rows, f"{name} is documented twice"
            rows[name] = default
    return rows


def _expected_default(spec) -> str:
    """How the documented default begins: the literal default in backticks, else the field's `shown` text."""
    if spec.metadata["default"] is not None:
        return f"`{spec.metadata['default']}`"
    assert spec.metadata["shown"], f"{spec.metadata['env']} has no default and no `shown` text for the docs"
    return spec.metadata["shown"]


def test_every_setting_is_documented_and_every_documented_row_is_a_setting():
    documented = set(_documented_rows())
    assert documented - set(BY_ENV) == set(), f"documented but not in the field table: {documented - set(BY_ENV)}"
    assert set(BY_ENV) - documented == set(), f"in the field table but not documented: {set(BY_ENV) - documented}"


@pytest.mark.parametrize("env", sorted(BY_ENV))
def test_the_documented_default_is_the_fields(env):
    cell = _documented_rows()[env]
    expected = _expected_default(BY_ENV[env])
    assert cell.startswith(expected), f"{env}: documented default {cell!r} does not begin with {expected!r}"


@pytest.mark.parametrize("spec", [s for s in SETTING_FIELDS if s.metadata["default"] is not None],
                         ids=lambda spec: spec.metadata["env"])
def test_a_literal_default_is_what_load_settings_gives_and_what_setting_it_gives(spec, tmp_path):
    """The field default is the documented text parsed, so unset and set-to-the-default agree."""
    unset = load_settings(environ={}, project_root=tmp_path)
    explicit = load_settings(environ={spec.metadata["env"]: spec.metadata["default"]}, project_root=tmp_path)
    assert getattr(unset, spec.name) == getattr(explicit, spec.name) == getattr(Settings(), spec.name)


def test_every_setting_has_a_meaning_and_its_own_variable():
    assert len(BY_ENV) == len(SETTING_FIELDS)
    for spec in SETTING_FIELDS:
        assert spec.metadata["meaning"].strip(), f"{spec.metadata['env']} has no meaning"


def test_every_setting_is_in_env_example():
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    missing = [env for env in BY_ENV if not re.search(rf"^#? ?{env}=", example, re.MULTILINE)]
    assert missing == [], f".env.example does not list {missing}"
