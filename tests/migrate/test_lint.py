"""`celora db lint`: the migrations' SQL rendered offline through celora's runtime and linted with squawk (the real
program), findings mapped to celora's rules with the file line that emitted them; silences with reasons; the
project's own history; broken files; `migrate-deploy --lint` applying nothing when there are findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celora_cli.errors import ConfigError, LintFindings
from celora_cli.migrate.lint import check, lint
from tests.migrate.test_journal import EXTRA, HEAD, query, write_history
from tests.support import REPO, run_celora, settings_for

OFFLINE = "postgresql://nobody@127.0.0.1:1/unused"  # lint needs no database: nothing may connect to this

NOT_NULL_COLUMN = "    op.add_column('users', sa.Column('nickname', sa.Text(), nullable=False))"
PLAIN_INDEX = "    op.create_index('ix_users_created_at_extra', 'users', ['created_at'])"


def _history(tmp_path: Path, body: str) -> Path:
    history = write_history(tmp_path, body)
    extra = history / "versions" / f"{EXTRA}_extra.py"
    source = extra.read_text().replace("from alembic import op\n", "import sqlalchemy as sa\nfrom alembic import op\n")
    extra.write_text(source)
    return history


def _lint(tmp_path: Path, body: str, revision_range: str | None = EXTRA):
    history = _history(tmp_path, body)
    return lint(settings_for(OFFLINE, CELORA_MIGRATIONS_DIR=history), revision_range), history


def _line_of(history: Path, text: str) -> int:
    lines = (history / "versions" / f"{EXTRA}_extra.py").read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


def test_not_null_column_without_default_is_flagged_with_its_line_and_the_safe_alternative(tmp_path):
    result, history = _lint(tmp_path, NOT_NULL_COLUMN)
    assert result.migrations == [f"{EXTRA}_extra"]
    [finding] = result.findings
    assert finding.rule == "not-null-without-default" and finding.squawk_rules == ("adding-required-field",)
    assert finding.statement == "ALTER TABLE users ADD COLUMN nickname TEXT NOT NULL;"
    assert finding.revision == EXTRA and finding.line == _line_of(history, "add_column")
    assert finding.file.endswith(f"{EXTRA}_extra.py")
    assert "backfill" in finding.safe_alternative and "INSERT" in finding.why


def test_index_without_concurrently_is_flagged_and_concurrently_in_an_autocommit_block_is_clean(tmp_path):
    result, _ = _lint(tmp_path, PLAIN_INDEX)
    assert [(f.rule, f.statement) for f in result.findings] == [
        ("index-without-concurrently", "CREATE INDEX ix_users_created_at_extra ON users (created_at);")]
    concurrent = ("    with op.get_context().autocommit_block():\n"
                  "        op.create_index('ix_users_created_at_extra', 'users', ['created_at'],"
                  " postgresql_concurrently=True)")
    result, _ = _lint(tmp_path / "concurrent", concurrent)
    assert result.findings == []


def test_ddl_inside_an_autocommit_block_misses_the_lock_timeout(tmp_path):
    body = ("    with op.get_context().autocommit_block():\n"
            "        op.execute('ALTER TABLE users ADD COLUMN note text')")
    result, _ = _lint(tmp_path, body)
    assert [f.rule for f in result.findings] == ["missing-lock-timeout"]
    with_timeout = ("    with op.get_context().autocommit_block():\n"
                    "        op.execute(\"SET lock_timeout = '2s'\")\n"
                    "        op.execute('ALTER TABLE users ADD COLUMN note text')")
    assert _lint(tmp_path / "set", with_timeout)[0].findings == []


def test_a_silence_with_a_reason_passes_and_one_without_is_a_finding(tmp_path):
    silenced = ("    # celora: allow index-without-concurrently -- users is empty until the launch on 2027-01-10\n"
                + PLAIN_INDEX)
    result, history = _lint(tmp_path, silenced)
    assert result.findings == []
    [kept] = result.silenced
    assert kept.finding.rule == "index-without-concurrently" and kept.reason.startswith("users is empty")
    assert kept.silenced_by.endswith(f"_extra.py:{_line_of(history, 'celora: allow')}")

    squawk_name = "    op.add_column('users', sa.Column('nickname', sa.Text(), nullable=False))" \
        "  # celora: allow adding-required-field -- the column is filled by the same release's code"
    assert _lint(tmp_path / "squawk_name", squawk_name)[0].findings == []

    reasonless = "    # celora: allow index-without-concurrently\n" + PLAIN_INDEX
    result, _ = _lint(tmp_path / "reasonless", reasonless)
    assert sorted(f.rule for f in result.findings) == ["index-without-concurrently", "silence-without-reason"]


def test_squawks_own_ignore_comment_needs_a_reason_too(tmp_path):
    with_reason = ("    op.execute('-- squawk-ignore require-concurrent-index-creation -- built before the table "
                   "has rows\\nCREATE INDEX ix_extra ON users (created_at)')")
    assert _lint(tmp_path, with_reason)[0].findings == []
    without = ("    op.execute('-- squawk-ignore require-concurrent-index-creation\\n"
               "CREATE INDEX ix_extra ON users (created_at)')")
    assert [f.rule for f in _lint(tmp_path / "without", without)[0].findings] == ["silence-without-reason"]


def test_the_projects_own_history_passes(tmp_path):
    run = run_celora("db", "lint", "--json", env={"DATABASE_URL": OFFLINE,
                                                  "CELORA_MIGRATIONS_DIR": str(REPO / "migrations")})
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["ok"] and result["clean"] and result["findings"] == []
    assert f"{HEAD}" in " ".join(result["migrations"]) and len(result["migrations"]) >= 2
    # Every silence in the history has its reason (the allow file: applied files must not change).
    assert result["silenced"] and all(s["reason"] for s in result["silenced"])


def test_the_allow_file_silences_by_statement_and_an_unused_entry_is_a_finding(tmp_path):
    history = _history(tmp_path, PLAIN_INDEX)
    allow = history / "lint-allow.toml"
    entry = (f'\n[[allow]]\nmigration = "{EXTRA}_extra"\nrule = "index-without-concurrently"\n'
             'statement = "create index ix_users_created_at_extra"\nreason = "built while the table is empty"\n')
    allow.write_text(allow.read_text() + entry)
    settings = settings_for(OFFLINE, CELORA_MIGRATIONS_DIR=history)
    assert lint(settings, EXTRA).findings == []
    allow.write_text(allow.read_text() + entry.replace("ix_users_created_at_extra", "ix_nothing"))
    assert [f.rule for f in lint(settings, EXTRA).findings] == ["unused-silence"]


def test_findings_are_exit_16_with_each_finding_in_the_json_error(tmp_path):
    history = _history(tmp_path, NOT_NULL_COLUMN + "\n" + PLAIN_INDEX)
    env = {"DATABASE_URL": OFFLINE, "CELORA_MIGRATIONS_DIR": str(history)}
    run = run_celora("db", "lint", f"{HEAD}:head", "--json", env=env)
    assert run.returncode == 16, run.stderr
    error = json.loads(run.stdout)["error"]
    assert error["type"] == "LintFindings" and error["code"] == 16
    assert sorted(f["rule"] for f in error["findings"]) == ["index-without-concurrently", "not-null-without-default"]
    assert all(f["why"] and f["safe_alternative"] and f["statement"] and f["line"] for f in error["findings"])
    human = run_celora("db", "lint", env=env)
    assert human.returncode == 16 and "Traceback" not in human.stderr
    assert "not-null-without-default" in human.stdout and "instead:" in human.stdout
    assert "2 finding(s)" in human.stderr


def test_a_broken_migration_file_is_exit_14_naming_it(tmp_path):
    history = write_history(tmp_path, "    op.execute('SELECT 1'")  # unclosed parenthesis
    run = run_celora("db", "lint", env={"DATABASE_URL": OFFLINE, "CELORA_MIGRATIONS_DIR": str(history)})
    assert run.returncode == 14, run.stdout + run.stderr
    assert f"{EXTRA}_extra.py" in run.stderr and "syntax error" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("revision_range", ["nosuchrevision", "2", "zz:", ":zz", "1:2"])
def test_an_unknown_or_ambiguous_revision_range_is_a_config_error(tmp_path, revision_range):
    # "2" is a prefix of every timestamped revision; "zz" is too short for Alembic's prefix matching: both once
    # escaped as Alembic's ResolutionError, an "internal error" (exit 70)
    settings = settings_for(OFFLINE, CELORA_MIGRATIONS_DIR=write_history(tmp_path))
    with pytest.raises(ConfigError, match="names no migrations"):
        lint(settings, revision_range)


def test_migrate_deploy_with_lint_applies_nothing_when_a_pending_migration_has_findings(migrated_db, tmp_path):
    history = _history(tmp_path, NOT_NULL_COLUMN)
    settings = settings_for(migrated_db, CELORA_MIGRATIONS_DIR=history)
    env = {"DATABASE_URL": migrated_db, "CELORA_MIGRATIONS_DIR": str(history)}
    run = run_celora("db", "migrate-deploy", "--lint", "--json", env=env)
    assert run.returncode == 16, run.stderr
    assert [f["rule"] for f in json.loads(run.stdout)["error"]["findings"]] == ["not-null-without-default"]
    assert query(migrated_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    with pytest.raises(LintFindings):  # the same check from Python, on the pending migrations only
        from celora_cli.migrate.lint import pending_revisions

        check(settings, revisions=pending_revisions(settings))
    # Without --lint the lint is not run (opt-in): the deploy goes ahead.
    assert run_celora("db", "migrate-deploy", env=env).returncode == 0


def test_the_new_revision_hook_of_db_migrate_turns_findings_into_warnings(tmp_path):
    from celora_cli.migrate.lint import revision_warnings

    history = _history(tmp_path, NOT_NULL_COLUMN)
    settings = settings_for(OFFLINE, CELORA_MIGRATIONS_DIR=history)
    [warning] = revision_warnings(settings, history / "versions" / f"{EXTRA}_extra.py")
    assert warning.startswith("not-null-without-default at ") and "ADD COLUMN nickname TEXT NOT NULL" in warning
    clean = _history(tmp_path / "clean", "    op.add_column('users', sa.Column('nickname', sa.Text()))")
    assert revision_warnings(settings_for(OFFLINE, CELORA_MIGRATIONS_DIR=clean),
                             clean / "versions" / f"{EXTRA}_extra.py") == []


def test_a_migration_that_reads_the_database_cannot_be_rendered_and_says_so(tmp_path):
    body = ("    count = op.get_bind().execute(sa.text('SELECT count(*) FROM users')).scalar()\n"
            "    op.execute(f'SELECT {count}')")
    result, history = _lint(tmp_path, body)
    [finding] = result.findings
    assert finding.rule == "unrenderable" and finding.revision == EXTRA
    assert finding.line == _line_of(history, "get_bind") and "not linted" in finding.why
