"""Unit tests for the Typer CLI that stop before any database connection (config errors, --help)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from celora_cli.cli.app import app

SETTING_VARS = ["DATABASE_URL", "DIRECT_DATABASE_URL", "CELORA_ENV", "CELORA_LOG_QUERIES", "CELORA_CONNECT_TIMEOUT",
                "CELORA_STATEMENT_TIMEOUT", "CELORA_LOCK_TIMEOUT", "CELORA_HEALTH_TIMEOUT", "CELORA_DEBUG",
                "CELORA_LOCAL_DIR", "CELORA_PG_BIN", "CELORA_PG_USER", "CELORA_LOCAL_PORT", "CELORA_MIGRATIONS_DIR"]

EXPECTED_COMMANDS = {("db", "migrate-deploy"), ("db", "status"), ("db", "health"),
                     ("local", "start"), ("local", "stop"), ("local", "url"), ("local", "status"),
                     ("local", "destroy"), ("db", "reset"), ("db", "rollback"), ("db", "seed"),
                     ("db", "migrate"), ("db", "generate"), ("db", "push"),
                     ("db", "resolve"), ("db", "baseline"), ("db", "diff"), ("db", "squash"), ("db", "snapshots"),
                     ("db", "lint"),
                     ("db", "audit"), ("db", "changes"),
                     ("db", "metrics"),
                     ("db", "studio"),
                     ("db", "backup"), ("db", "restore"), ("db", "roles"), ("local", "pgbouncer")}
JSON_COMMANDS = [["db", "health"], ["db", "status"], ["db", "migrate-deploy"], ["local", "status"],
                 ["db", "reset", "--force"], ["db", "rollback", "--steps", "1", "--force"],
                 ["db", "push", "--accept-data-loss"], ["db", "resolve", "--rolled-back", "x"],
                 ["db", "lint"],
                 ["db", "audit"], ["db", "changes", "--list"],
                 ["db", "backup"], ["db", "restore", "x.dump"]]


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
    for name in group.list_commands(None):  # the groups load lazily (cli/lazy.py)
        sub = group.get_command(None, name)
        # list_commands, not .commands: `celora db` loads its command modules only when asked (cli/lazy.py)
        for sub_name in (sub.list_commands(None) if hasattr(sub, "list_commands") else ()):
            found.add((name, sub_name))
    return found


def test_all_expected_subcommands_registered():
    assert _commands() == EXPECTED_COMMANDS


def test_every_command_is_in_the_readme_with_an_example():
    """The README is the front door: each command has a section or an example there."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [f"celora {group} {name}" for group, name in sorted(_commands())
               if f"celora {group} {name}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"


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


@pytest.mark.parametrize("args", [[], ["db"], ["local"]], ids=lambda a: " ".join(a) or "root")
def test_no_command_shows_help_and_exits_64(run, args):
    result = run(args)
    assert result.exit_code == 64  # no command given: nothing was done, so not success (README: Exit codes)
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
    result = run(["db", "migrate-deploy"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db?pgbouncer=true",
                 CELORA_MIGRATIONS_DIR=str(Path(__file__).resolve().parents[2] / "migrations"))
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


@pytest.mark.parametrize("args", [["db", "health", "--timeout", "abc"], ["db", "status", "--bogus"],
                                  ["--bogus"], ["db", "nosuchcommand"], ["db", "migrate-deploy", "--lock-timeout"]])
def test_usage_errors_exit_64_not_2(run, args):
    result = run(args)
    assert result.exit_code == 64, result.output  # 2 means "unhealthy" for db health
    assert "Error" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["inf", "0", "nan", "1e12", "0.1", "-5"])
def test_health_timeout_flag_is_validated_like_the_setting(run, value):
    result = run(["db", "health", "--timeout", value], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    assert result.exit_code == 3, result.output
    assert "--timeout must be" in result.stderr and "0.5 to 3600" in result.stderr
    assert "Traceback" not in result.output and "OverflowError" not in result.output


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e12"])
def test_lock_timeout_flag_is_validated_like_the_setting(run, value):
    result = run(["db", "migrate-deploy", "--lock-timeout", value],
                 DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    assert result.exit_code == 3, result.output
    assert "--lock-timeout must be" in result.stderr
    assert "Traceback" not in result.output and "OverflowError" not in result.output


def test_timeout_environment_is_validated_too(run):
    result = run(["db", "health"], CELORA_HEALTH_TIMEOUT="1e12", DATABASE_URL="postgresql://u:p@127.0.0.1:1/db")
    assert result.exit_code == 3, result.output
    assert "CELORA_HEALTH_TIMEOUT" in result.stderr


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
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: celora" in proc.stdout
    assert "EXIT 0" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


def test_version(run):
    result = run(["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"celora \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_help_metavars_name_what_they_take(run):
    assert "FILE" in run(["--help"]).stdout
    assert "SECONDS" in run(["db", "health", "--help"]).stdout
    assert "SECONDS" in run(["db", "migrate-deploy", "--help"]).stdout
    for args in (["--help"], ["db", "health", "--help"], ["db", "migrate-deploy", "--help"]):
        out = run(args).stdout
        assert "<str>" not in out and "<float>" not in out, out


def test_shell_completion_is_offered(run, monkeypatch):
    # Typer's own switch for tests: take the shell from the argument instead of detecting the parent process's
    # (which fails where no shell is an ancestor, e.g. a background job).
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    out = run(["--help"]).stdout
    assert "--install-completion" in out and "--show-completion" in out
    shown = run(["--show-completion", "bash"])
    assert shown.exit_code == 0, shown.output
    assert "complete" in shown.stdout and "celora" in shown.stdout.lower()


# --- the JSON contract for failures the CLI meets before any database (README: JSON output) ---------------

def _one_json_object(stdout: str) -> dict:
    data = json.loads(stdout)  # raises if stdout is anything but exactly one JSON document
    assert isinstance(data, dict)
    assert data["format_version"] == 1
    return data


def _assert_json_error(result, code: int, error_type: str) -> dict:
    assert result.exit_code == code, result.output
    data = _one_json_object(result.stdout)
    assert data["ok"] is False
    error = data["error"]
    assert (error["code"], error["type"]) == (code, error_type)
    assert error["message"] and "hint" in error
    assert "topsecret" not in result.stdout + result.stderr
    return data


@pytest.mark.parametrize("command", JSON_COMMANDS, ids=" ".join)
def test_json_config_error_is_one_object(run, command):
    result = run([*command, "--json"], DATABASE_URL="postgresql://u:topsecret@h:notaport/db")
    data = _assert_json_error(result, 3, "ConfigError")
    assert "malformed" in data["error"]["message"]
    assert "Error:" in result.stderr  # the human message still goes to stderr


def test_json_health_config_error_keeps_the_status_field(run):
    result = run(["db", "health", "--json"], DATABASE_URL="postgresql://u:topsecret@h:notaport/db")
    data = _assert_json_error(result, 3, "ConfigError")
    assert data["status"] == "unhealthy"


def test_json_env_file_error_is_one_object(run):
    result = run(["--env-file", "nope.env", "db", "status", "--json"])
    _assert_json_error(result, 3, "ConfigError")


@pytest.mark.parametrize("args", [["db", "status", "--json", "--bogus"], ["db", "health", "--json", "--timeout", "x"]])
def test_json_usage_error_is_one_object(run, args):
    _assert_json_error(run(args), 64, "UsageError")


def test_without_json_stdout_stays_empty_on_error(run):
    result = run(["db", "status"], DATABASE_URL="postgresql://u:topsecret@h:notaport/db")
    assert result.exit_code == 3
    assert result.stdout == ""


# --- bugs and interruptions: a real exception raised where the core would raise it ----------------------

@pytest.fixture
def broken_status(monkeypatch):
    """`db status` whose core call fails with the given exception (no database is reached)."""
    import celora_cli.migrate.status

    def install(exc):
        def fail(settings):
            raise exc
        monkeypatch.setattr(celora_cli.migrate.status, "migration_status", fail)
    return install


def test_bug_exits_70_with_a_bug_message(run, broken_status):
    broken_status(ZeroDivisionError("division by zero"))
    result = run(["db", "status"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    assert result.exit_code == 70, result.output
    assert "unexpected internal error" in result.stderr
    assert "ZeroDivisionError" in result.stderr
    assert "--debug" in result.stderr
    assert "Traceback" not in result.output


def test_bug_with_json_is_an_internal_error_object(run, broken_status):
    broken_status(KeyError("x"))
    result = run(["db", "status", "--json"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    _assert_json_error(result, 70, "InternalError")


def test_bug_with_debug_shows_the_traceback(run, broken_status):
    broken_status(ZeroDivisionError("division by zero"))
    result = run(["--debug", "db", "status"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    assert result.exit_code == 70
    assert "Traceback" in result.stderr


def test_ctrl_c_exits_130(run, broken_status):
    broken_status(KeyboardInterrupt())
    result = run(["db", "status", "--json"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    _assert_json_error(result, 130, "Interrupted")
    assert "Interrupted" in result.stderr


def test_user_errors_are_not_reported_as_bugs(run, broken_status):
    from celora_cli.errors import MigrationFailed

    broken_status(MigrationFailed("Migration x failed.", "Fix x.", revision="x", sqlstate="42601",
                                  applied=[{"revision": "a", "name": "a_init", "duration_ms": 1.23456}]))
    result = run(["db", "status", "--json"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    data = _assert_json_error(result, 9, "MigrationFailed")
    assert data["error"]["revision"] == "x" and data["error"]["sqlstate"] == "42601"
    assert data["error"]["applied"] == [{"revision": "a", "name": "a_init", "duration_ms": 1.2}]
    assert "internal error" not in result.output


def test_database_error_escaping_the_core_is_translated(run, broken_status):
    import psycopg

    try:  # a real libpq failure: nothing listens on port 1
        psycopg.connect("postgresql://u@127.0.0.1:1/db", connect_timeout=2)
    except psycopg.OperationalError as exc:
        broken_status(exc)
    result = run(["db", "status", "--json"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    _assert_json_error(result, 4, "DatabaseUnreachable")


def test_json_numbers_are_rounded():
    from celora_cli.cli.output import rounded

    data = {"duration_ms": 12.3456, "waited_for_lock_s": 1.234567, "ratio": 0.123456, "count": 3,
            "checks": {"pooled": {"latency_ms": 0.04567}}, "applied": [{"duration_ms": 9.99}]}
    assert rounded(data) == {"duration_ms": 12.3, "waited_for_lock_s": 1.235, "ratio": 0.123, "count": 3,
                             "checks": {"pooled": {"latency_ms": 0.0}}, "applied": [{"duration_ms": 10.0}]}


def test_notice_logger_reaches_stderr(run, monkeypatch):
    import logging

    import celora_cli.migrate.status

    def noisy(settings):
        logging.getLogger("celora.notice").info("Creating the local PostgreSQL in /somewhere ...")
        raise KeyboardInterrupt
    monkeypatch.setattr(celora_cli.migrate.status, "migration_status", noisy)
    result = run(["db", "status", "--json"], DATABASE_URL="postgresql://u:topsecret@127.0.0.1:1/db")
    assert "Creating the local PostgreSQL in /somewhere ..." in result.stderr
    assert "Creating" not in result.stdout


@pytest.mark.parametrize("args", [["db", "reset"], ["db", "rollback"], ["db", "restore"], ["db", "changes"],
                                  ["db", "audit"], ["db", "studio"], ["local", "destroy"]], ids=" ".join)
def test_every_confirmation_skip_flag_answers_to_force_yes_and_y(run, args):
    """Prisma says --force, many tools say --yes/-y: each command that asks first takes all three."""
    out = run([*args, "--help"]).output
    assert all(flag in out for flag in ("--force", "--yes", "-y")), out
