"""The `celora db` command table (celora_cli/cli/db_group.py) against what the command modules really register,
and the laziness it buys: a command imports its own module only."""

from __future__ import annotations

import json
import subprocess
import sys

REGISTERED_BY_MODULE = """
import importlib, json
from typer.main import get_command_name
import celora_cli.cli.app  # the root first: it imports the groups
from celora_cli.cli import db_group as db

def names():
    found = [i.name or get_command_name(i.callback.__name__) for i in db.app.registered_commands]
    return found + [g.name for g in db.app.registered_groups]

owner = {name: None for name in names()}
for module in dict.fromkeys(m for m in db._DbCommands.command_modules.values() if m):
    importlib.import_module(module)
    owner.update({name: module for name in names() if name not in owner})
print(json.dumps({"table": db._DbCommands.command_modules, "real": owner}))
"""

LOADED_MODULES = """
import sys
from celora_cli.cli.app import main
sys.argv = ["celora", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
GROUPS = ("celora_cli.cli.db", "celora_cli.cli.local")
print("\\nLOADED " + " ".join(sorted(m for m in sys.modules if m.startswith(GROUPS))))
"""


def _run(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_command_table_names_every_command_and_its_real_module():
    result = json.loads(_run(REGISTERED_BY_MODULE))
    assert result["table"] == result["real"], (
        "celora_cli/cli/db_group.py _DbCommands.command_modules is out of date: "
        f"table {result['table']} but the modules register {result['real']}")


def _loaded(*args: str) -> set[str]:
    line = _run(LOADED_MODULES, *args).rsplit("LOADED", 1)[1]
    return set(line.split())


def test_running_one_command_imports_its_module_only():
    assert _loaded("db", "health", "--help") == {"celora_cli.cli.db_group", "celora_cli.cli.db_health"}
    assert _loaded("--help") == set()  # the root lists its groups from CeloraGroup.summaries
    assert _loaded() == set()  # `celora` alone prints the same help
    assert _loaded("db", "migrate-deploy", "--help") == {"celora_cli.cli.db_group",
                                                          "celora_cli.cli.db_migrate_deploy"}
    assert _loaded("local", "status", "--help") == {"celora_cli.cli.local", "celora_cli.cli.local_pgbouncer"}


def test_the_group_help_lists_every_command_in_the_table_order():
    table = json.loads(_run(REGISTERED_BY_MODULE))["table"]
    help_lines = _run(LOADED_MODULES, "db", "--help").splitlines()
    # a command's row starts with its name, after the panel's border
    first_words = [line.strip("│| ").split(" ", 1)[0] for line in help_lines]
    listed = [word for word in first_words if word in table]
    assert listed == list(table), "\n".join(help_lines)


def test_a_typo_still_suggests_a_command_whose_module_is_not_loaded():
    done = subprocess.run([sys.executable, "-m", "celora_cli", "db", "helth"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 64
    assert "Did you mean 'health'" in done.stderr


def test_the_root_lists_each_group_with_the_groups_own_help():
    import typer

    from celora_cli.cli.app import CeloraGroup, app

    root = typer.main.get_command(app)
    assert set(CeloraGroup.summaries) == set(CeloraGroup.command_modules)
    for name, summary in CeloraGroup.summaries.items():
        assert root.get_command(None, name).help == summary
