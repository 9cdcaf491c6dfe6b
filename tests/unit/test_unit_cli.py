"""Unit tests for the Typer CLI that stop before any database connection (config errors, --help)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
import sys

import pytest
import typer
from typer.testing import CliRunner

from celora_cli.cli.app import app

SETTING_VARS = ["DATABASE_URL", "DIRECT_DATABASE_URL", "CELORA_ENV", "CELORA_LOG_QUERIES", "CELORA_CONNECT_TIMEOUT",
                "CELORA_STATEMENT_TIMEOUT", "CELORA_LOCK_TIMEOUT", "CELORA_HEALTH_TIMEOUT", "CELORA_DEBUG",
                "CELORA_LOCAL_DIR", "CELORA_PG_BIN", "CELORA_PG_USER", "CELORA_LOCAL_PORT", "CELORA_MIGRATIONS_DIR"]

EXPECTED_COMMANDS = {("db", "migrate-deploy"), ("db", "status"), ("db", "health"),
                     ("local", "start"), ("local", "stop"), ("local", "url"), ("local", "status")}


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Invoke the app in an empty tmp project with every celora setting unset unless given."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(args, **env):
        full = {name: None for name in SETTING_VARS}
        full.update({"CELORA_PROJECT_ROOT": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"})
        full.update(env)
        return runner.invoke(app, args, env=full)

    return invoke


def _commands():
    group = typer.main.get_command(app)
    found = set()
    for name, sub in group.commands.items():
        for sub_name in getattr(sub, "commands", {}):
            found.add((name, sub_name))
    return found


def test_all_expected_subcommands_registered():
    assert _commands() == EXPECTED_COMMANDS


@pytest.mark.parametrize("args", [[], ["db"], ["local"]] + [list(c) for c in sorted(EXPECTED_COMMANDS)],
                         ids=lambda a: " ".join(a) or "root")
def test_help_exits_zero_with_text(run, args):
    result = run([*args, "--help"])
    assert result.exit_code == 0, result.output
    usage = " ".join(["celora", *args])
    assert f"Usage: {usage}" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip()) > 80


def test_root_help_lists_groups_and_options(run):
    out = run(["-h"]).output
    for word in ("db", "local", "--env-file", "--debug"):
        assert word in out


def test_db_help_lists_commands(run):
    out = run(["db", "--help"]).output
    for word in ("migrate-deploy", "status", "health"):
        assert word in out


def test_no_args_shows_help(run):
    result = run([])
    assert result.exit_code == 2  # no_args_is_help
    assert "Usage: celora" in result.output


def _assert_clean_config_error(result, secret="topsecret"):
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert secret not in result.output
    assert "Error:" in result.output
    assert "Hint:" in result.output


@pytest.mark.parametrize("command", [["db", "health"], ["db", "status"], ["db", "migrate-deploy"]])
def test_unsupported_scheme_exits_3(run, command):
    result = run(command, DATABASE_URL="mysql://u:topsecret@h/db")
    _assert_clean_config_error(result)
    assert "unsupported scheme" in result.output
    assert "mysql://u:****@h/db" in result.output


def test_invalid_port_exits_3_without_password(run):
    result = run(["db", "health"], DATABASE_URL="postgresql://u:topsecret@h:99999/db")
    _assert_clean_config_error(result)
    assert "malformed" in result.output
    assert "Port out of range" in result.output


def test_debug_traceback_still_hides_password(run):
    result = run(["--debug", "db", "health"], DATABASE_URL="postgresql://u:topsecret@h:notaport/db")
    assert result.exit_code == 3
    assert "Traceback" in result.output  # --debug shows it ...
    assert "topsecret" not in result.output  # ... but masked


def test_migrate_deploy_pgbouncer_without_direct_url_exits_3(run):
    result = run(["db", "migrate-deploy"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db?pgbouncer=true")
    _assert_clean_config_error(result)
    assert "DIRECT_DATABASE_URL" in result.output


def test_direct_url_with_pgbouncer_exits_3(run):
    result = run(["db", "health"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db",
                 DIRECT_DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db?pgbouncer=true")
    _assert_clean_config_error(result)
    assert "DIRECT_DATABASE_URL has ?pgbouncer=true" in result.output


def test_missing_env_file_exits_3(run):
    result = run(["--env-file", "nope.env", "db", "health"])
    assert result.exit_code == 3
    assert "--env-file nope.env does not exist" in result.output
    assert "Traceback" not in result.output


def test_env_file_beats_environment(run, tmp_path):
    (tmp_path / "bad.env").write_text("DATABASE_URL=mysql://u:fromfile@h/db\n")
    result = run(["--env-file", str(tmp_path / "bad.env"), "db", "status"],
                 DATABASE_URL="postgresql://u:fromenv@127.0.0.1:1/db?pgbouncer=maybe")
    assert result.exit_code == 3
    assert "unsupported scheme 'mysql'" in result.output
    assert "fromfile" not in result.output


def test_dotenv_in_project_root_is_used(run, tmp_path):
    (tmp_path / ".env").write_text("CELORA_ENV=qa\n")
    result = run(["db", "status"])
    assert result.exit_code == 3
    assert "CELORA_ENV is 'qa'" in result.output


def test_bad_timeout_setting_exits_3(run):
    result = run(["db", "health"], CELORA_CONNECT_TIMEOUT="abc")
    assert result.exit_code == 3
    assert "CELORA_CONNECT_TIMEOUT must be a number of seconds, not 'abc'" in result.output


def test_flag_validation_is_usage_error(run):
    result = run(["db", "health", "--timeout", "0.1"])
    assert result.exit_code == 2
    assert "--timeout" in result.output


def test_help_imports_no_heavy_modules(tmp_path):
    code = (
        "import sys; sys.argv=['celora','--help']\n"
        "from celora_cli.cli.app import main\n"
        "try: main()\n"
        "except SystemExit as exc: print('EXIT', exc.code)\n"
        "bad=sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy','alembic','psycopg','faker'))\n"
        "print('HEAVY', bad)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in SETTING_VARS}
    env["CELORA_PROJECT_ROOT"] = str(tmp_path)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout's code
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: celora" in proc.stdout
    assert "EXIT 0" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]
