"""The documentation against the code: the README (the front door) and the MkDocs site in docs/.

The command reference is generated (docs/hooks.py) from the Typer app; these tests check that it names every
command and option, that the README's settings and exit-code tables say what the code does, that the README's
links into docs/ lead somewhere, and that the site builds with `--strict` (what `make docs` and CI run).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from celora_cli.cli.app import app
from celora_cli.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _hooks():
    spec = importlib.util.spec_from_file_location("celora_docs_hooks", REPO / "docs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaves() -> dict[str, object]:
    """Every runnable command by its full name, walked independently of docs/hooks.py (the groups load lazily:
    list_commands/get_command load them)."""
    found = {}

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), [*path, name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(app), [])
    return found


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _table_rows(section: str) -> list[list[str]]:
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[2:]]  # past header and ---


# ------------------------------------------------------------------------------------------ the command reference


def test_the_command_reference_has_every_command_and_option():
    reference = _hooks().command_reference()
    leaves = _leaves()
    assert len(leaves) >= 25
    for name, command in leaves.items():
        section = _section(reference, f"## `celora {name}`")
        summary = command.help.strip().split("\n\n")[0].split("\n")[0]
        assert summary.split("`")[0][:40] in section, (name, summary)
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
                shown = opt if param.param_type_name == "option" else param.human_readable_name
                assert f"`{shown}`" in section, f"celora {name}: {shown} is missing from the command reference"


def test_the_command_reference_shows_defaults_and_escapes_what_markdown_would_eat():
    reference = _hooks().command_reference()
    metrics = _section(reference, "## `celora db metrics`")
    port = next(line for line in metrics.splitlines() if line.startswith("| `--port`"))
    assert "`9187`" in port  # the default, read from the option itself
    # `backups/<database>-<UTC time>` in a help text would vanish as HTML tags; outside code it is escaped
    prose = re.sub(r"```.*?```", "", re.sub(r"`[^`\n]*`", "", reference), flags=re.DOTALL)
    assert "&lt;database&gt;" in prose
    assert not re.search(r"<[A-Za-z/]", prose), re.search(r".{0,40}<[A-Za-z/].{0,40}", prose)


# ------------------------------------------------------------------------------------------ the README


def test_the_readme_is_a_front_door_not_the_manual():
    lines = README.splitlines()
    assert len(lines) < 350, f"README.md has {len(lines)} lines: move detail into docs/pages/"
    assert "```sh\nmake quickstart\n```" in README and "```sh\nmake test\n```" in README
    for heading in ("## Set-up: the two commands", "## Settings", "## Exit codes", "## Documentation"):
        assert f"\n{heading}\n" in README


def test_the_readme_links_into_the_docs_lead_somewhere():
    links = re.findall(r"\]\(((?!https?://|#)[^)\s]+)\)", README)
    assert any(link.startswith("docs/pages/") for link in links)
    broken = [link for link in links if not (REPO / link.split("#")[0]).exists()]
    assert not broken, f"README links to missing files: {broken}"


def test_the_exit_code_table_is_the_enum():
    rows = _table_rows(_section(README, "## Exit codes"))
    documented = {}
    for code, names, _meaning in rows:
        for name in re.findall(r"`([A-Z_]+)`", names):
            documented[name] = int(code)
    actual = {name: int(member) for name, member in ExitCode.__members__.items()}
    assert documented == actual, (f"README 'Exit codes' differs from ExitCode: documented {documented}, "
                                  f"in the code {actual}")


def _setting_names(cell: str) -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cell))


def test_the_settings_table_is_every_setting():
    """The README's table, .env.example and the names the code reads are the same set of settings."""
    table = set().union(*(_setting_names(row[0]) for row in _table_rows(_section(README, "## Settings"))))
    example = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (REPO / ".env.example").read_text(), flags=re.MULTILINE))
    assert table == example, (f"README settings table only: {sorted(table - example)}; "
                              f".env.example only: {sorted(example - table)}")
    # Every setting name written in the code is documented (names may also be built from a field table, so this
    # is one direction only).
    in_code = set()
    for path in (REPO / "celora_cli").rglob("*.py"):
        in_code |= set(re.findall(r"[\"']((?:CELORA_[A-Z0-9_]+)|(?:[A-Z]+_)?DATABASE_URL)[\"']", path.read_text()))
    assert in_code, "no setting name found in the code"
    assert in_code <= table, f"settings the code reads that the README does not document: {sorted(in_code - table)}"


# ------------------------------------------------------------------------------------------ the site


def test_the_site_builds_strict(tmp_path):
    """`make docs` runs this build; a broken link, a missing page or a bad anchor fails it."""
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.fail("mkdocs and mkdocs-material are not installed: `make install-dev` installs the docs extra",
                    pytrace=False)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                             "-f", str(REPO / "docs" / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                            capture_output=True, text=True, timeout=170, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = (tmp_path / "site" / "reference" / "commands" / "index.html").read_text()
    assert "celora db migrate-deploy" in commands and "--lock-timeout" in commands
    exit_codes = (tmp_path / "site" / "reference" / "exit-codes" / "index.html").read_text()
    assert "MIGRATION_FAILED" in exit_codes  # the README's table, included at build time
    schema = (tmp_path / "site" / "reference" / "schema" / "index.html").read_text()
    assert "erDiagram" in schema  # docs/schema.md, as `celora db generate` wrote it
