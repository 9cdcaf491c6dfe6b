"""One decision, one spelling: "is this CI?" is decided in celora_cli.safety.interaction alone, and the words of
the production protection ("production", "--allow-production") are written in celora_cli.safety.production alone.
Three "is this CI?" checks once disagreed about CI=no and CI=false; this keeps a fourth from appearing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from celora_cli.safety.interaction import ci_is_set

PACKAGE = Path(__file__).resolve().parents[2] / "celora_cli"

# Where a literal may stay, and why: CELORA_ENV's list of valid names is the settings' own table, and db/
# (connect's refusal to start a local server for staging or production) sits below safety in the layers.
HOMES = {
    "CI": {"safety/interaction.py"},
    "production": {"safety/production.py", "config/settings.py", "db/connect.py"},
    "--allow-production": {"safety/production.py"},
}


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


@pytest.mark.parametrize("word", sorted(HOMES))
def test_word_is_spelled_in_its_home_only(word):
    found = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py") if word in _string_constants(path)}
    assert found - HOMES[word] == set(), f"{word!r} spelled outside {sorted(HOMES[word])}: import the constant"


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("false", False), ("FALSE", False),
                                                 ("no", False), (" No ", False), ("true", True), ("1", True),
                                                 ("yes", True), ("github-actions", True)])
def test_ci_is_set(value, expected):
    assert ci_is_set({"CI": value}) is expected


def test_unset_ci_is_not_ci():
    assert ci_is_set({}) is False
