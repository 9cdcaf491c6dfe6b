"""The first screen: each command's listing is one line, in panels; each command's help is reflowed (no source
line breaks in the middle of a sentence) and ends with an example. Rendered by the real CLI at 80 and 120
columns, as a newcomer's terminal would."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from celora_cli.cli.lazy import reflow
from tests.support import REPO

GROUPS = {
    (): ("db", "local"),
    ("db",): ("migrate", "migrate-deploy", "status", "lint", "generate", "push", "resolve", "baseline", "diff",
              "rollback", "reset", "squash", "snapshots",
              "seed", "studio", "audit", "changes", "health", "metrics", "backup", "restore", "roles"),
    ("local",): ("start", "stop", "url", "status", "destroy", "pgbouncer"),
    ("local", "pgbouncer"): ("start", "stop", "status"),
}
PANEL_TOP = re.compile(r"^╭─ (?P<title>.+?) ─")


def _help(*args: str, columns: int) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_")}
    env.update({"COLUMNS": str(columns), "NO_COLOR": "1", "PYTHONPATH": str(REPO), "TERM": "dumb"})
    done = subprocess.run([sys.executable, "-m", "celora_cli", *args, "--help"], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _panels(text: str) -> dict[str, list[str]]:
    """Panel title -> the rows inside it (without the borders)."""
    panels: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        top = PANEL_TOP.match(line)
        if top:
            current = panels.setdefault(top["title"], [])
        elif line.startswith("╰"):
            current = None
        elif current is not None and line.startswith("│"):
            current.append(line.strip("│").rstrip())
    return panels


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("group", list(GROUPS), ids=lambda g: " ".join(("celora", *g)))
def test_each_command_is_listed_on_one_line(group, columns):
    panels = _panels(_help(*group, columns=columns))
    listed: list[str] = []
    for title, rows in panels.items():
        if title in ("Options", "Arguments"):
            continue
        for row in rows:
            name = row.split()[0] if row.startswith(" ") and row[1:2] != " " else None
            assert name is not None, f"a listing row wrapped onto a second line at {columns} columns: {row!r}"
            listed.append(name)
    assert sorted(listed) == sorted(GROUPS[group])


def test_db_commands_are_grouped_in_panels():
    panels = _panels(_help("db", columns=120))
    assert {"Migrations", "Data", "Operations"} <= set(panels)
    assert panels["Operations"][0].split()[0] == "health"


COMMANDS = [(*group, name) for group, names in GROUPS.items() if group for name in names if name != "pgbouncer"]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_command_help_is_reflowed_and_ends_with_an_example(command):
    text = _help(*command, columns=1000)
    description = text.split("Usage:", 1)[1].split("╭", 1)[0]
    lines = [line.strip() for line in description.splitlines()[1:] if line.strip()]
    assert lines[-1].startswith("Example"), f"`celora {' '.join(command)} --help` does not end with an example"
    for line in lines:  # at 1000 columns nothing wraps: a line that stops mid-sentence is a hard break
        assert line.startswith(("Example", "Exit ", "- ")) or line[-1] in ".:;)!?`", (
            f"`celora {' '.join(command)} --help` breaks a sentence: {line!r}")


def test_reflow_joins_source_lines_and_keeps_examples_on_their_own():
    doc = """Short summary.

    A sentence broken
        where the source line ended.
    Exit 1 when it is not.
    Example: celora db x --y
    """
    assert reflow(doc) == ("Short summary.\n\nA sentence broken where the source line ended.\nExit 1 when it is not."
                           "\nExample: celora db x --y")
