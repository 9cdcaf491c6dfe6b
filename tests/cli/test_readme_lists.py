"""The lists that name commands or error classes, against the code (so that they stay true): the README's
opening list of commands, and the docs site's JSON output page (docs/pages/reference/json.md): the commands that
take `--json` and its `error.type` names."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from celora_cli import errors
from celora_cli.cli.app import app

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
JSON_PAGE = (REPO / "docs" / "pages" / "reference" / "json.md").read_text()


def _commands() -> dict:
    """Every leaf command by its full name ("db status", "local pgbouncer start"), loaded through the lazy groups."""
    found = {}

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), [*path, name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


def _named_commands(text: str) -> set[str]:
    """`db status [--drift]` -> db status; `local start|stop` -> local start, local stop."""
    names = set()
    for quoted in re.findall(r"`((?:db|local) [^`]+)`", text):
        words = [w for w in quoted.split() if not w.startswith("[")]
        *group, last = words
        names.update(" ".join([*group, leaf]) for leaf in last.split("|"))
    return names


def test_the_json_section_lists_every_command_that_takes_json():
    first_paragraph = JSON_PAGE.split("take `--json`", 1)[0]
    listed = _named_commands(first_paragraph)
    taking_json = {name for name, command in _commands().items()
                   if any("--json" in param.opts for param in command.params)}
    assert len(taking_json) >= 18
    assert listed == taking_json, (f"docs' 'JSON output' lists {sorted(listed - taking_json)} that take no "
                                   f"--json and misses {sorted(taking_json - listed)}")


def test_the_json_section_names_every_error_type():
    row = next(line for line in JSON_PAGE.splitlines() if line.startswith("| `error.type` |"))
    named = set(re.findall(r"`([A-Z]\w+)`", row))
    classes = {cls.__name__ for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, errors.CeloraError) and cls is not errors.CeloraError}
    assert {"LintFindings", "DriftDetected", "OutputError"} <= classes
    assert named == classes, f"error.type lists {sorted(named - classes)} and misses {sorted(classes - named)}"


def test_the_opening_names_every_command_and_nothing_unbuilt():
    opening = README.split("\n## ", 1)[0]
    assert "not built" not in opening
    paragraph = next(p for p in opening.split("\n\n") if p.startswith("The commands:"))
    assert _named_commands(paragraph) == set(_commands())
