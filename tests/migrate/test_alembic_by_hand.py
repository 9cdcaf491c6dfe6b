"""Plain `alembic` from the project root behaves like `celora db migrate-deploy` (one migration runtime):
the direct URL (never PgBouncer), no app statement timeout, the same migration lock, the same file names.

Every test runs the real `alembic` command (python3 -m alembic) in a subprocess, from a project root whose
pyproject.toml is the repository's own, with a clean environment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from celora_cli.migrate.lock import MIGRATION_LOCK_KEY
from celora_cli.migrate.scripts import FILE_TEMPLATE, load_script_directory
from tests.support import REPO, db_name, run_celora, settings_for

HEAD = load_script_directory(REPO / "migrations").get_current_head()


def alembic(*args: str, env: dict | None = None, cwd: Path = REPO, isolated_root: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    # This checkout's code; settings never read from a developer's .env (an empty project root for them).
    clean.update({"PYTHONPATH": str(REPO), "CELORA_PROJECT_ROOT": str(isolated_root or cwd)})
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "alembic", *args], capture_output=True, text=True, env=clean,
                          cwd=cwd, timeout=timeout, check=False)


@pytest.fixture
def settings_root(tmp_path) -> Path:
    """An empty folder as CELORA_PROJECT_ROOT: no .env of the developer's can reach the test."""
    root = tmp_path / "settings-root"
    root.mkdir()
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    """A project root like the repository's (its pyproject.toml and migrations), to add migrations to."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def version(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version").fetchall()]


def add_migration(project: Path, revision: str, down: str, body: str) -> None:
    (project / "migrations" / "versions" / f"{revision}_step.py").write_text(
        f'"""step {revision}"""\nfrom alembic import op\n\nrevision = "{revision}"\n'
        f'down_revision = "{down}"\nbranch_labels = None\ndepends_on = None\n\n\n'
        f"def upgrade():\n{body}\n\n\ndef downgrade():\n    pass\n")


def test_upgrade_current_and_history_from_the_project_root(empty_db, settings_root):
    env = {"DATABASE_URL": empty_db}
    upgraded = alembic("upgrade", "head", env=env, isolated_root=settings_root)
    assert upgraded.returncode == 0, upgraded.stderr
    assert version(empty_db) == [HEAD]
    current = alembic("current", env=env, isolated_root=settings_root)
    assert current.returncode == 0, current.stderr
    assert f"{HEAD} (head)" in current.stdout
    history = alembic("history", env=env, isolated_root=settings_root)
    assert history.returncode == 0 and "<base> ->" in history.stdout and HEAD in history.stdout
    # celora agrees: nothing left to do.
    cli = run_celora("db", "migrate-deploy", env=env)
    assert cli.returncode == 0 and "No pending migrations" in cli.stdout, cli.stderr


def test_offline_sql_needs_no_database(settings_root):
    # A closed port: --sql writes SQL for a DBA and must not connect (nor start a local server).
    sql = alembic("upgrade", "head", "--sql", env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"},
                  isolated_root=settings_root)
    assert sql.returncode == 0, sql.stderr
    assert "CREATE TABLE users" in sql.stdout and "CREATE TABLE alembic_version" in sql.stdout
    assert f"UPDATE alembic_version SET version_num='{HEAD}'" in sql.stdout


def test_by_hand_uses_the_direct_url_never_pgbouncer(pgbouncer, empty_db, settings_root):
    pooled = pgbouncer(db_name(empty_db))
    refused = alembic("upgrade", "head", env={"DATABASE_URL": pooled}, isolated_root=settings_root)
    # Alembic's CLI prints a CommandError as "FAILED: ..." (on stdout) and exits non-zero.
    assert refused.returncode != 0
    assert "DIRECT_DATABASE_URL" in refused.stdout + refused.stderr and "Traceback" not in refused.stderr
    through_pooler = alembic("upgrade", "head", isolated_root=settings_root,
                             env={"DATABASE_URL": pooled, "DIRECT_DATABASE_URL": pgbouncer(db_name(empty_db), False)})
    assert through_pooler.returncode != 0
    assert "connection pooler" in through_pooler.stdout + through_pooler.stderr
    assert "Traceback" not in through_pooler.stderr
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None

    done = alembic("upgrade", "head", env={"DATABASE_URL": pooled, "DIRECT_DATABASE_URL": empty_db},
                   isolated_root=settings_root)
    assert done.returncode == 0, done.stderr
    assert version(empty_db) == [HEAD]


def test_no_app_statement_timeout_by_hand_as_in_migrate_deploy(project, pg_server, settings_root):
    add_migration(project, "20261127000000", HEAD, "    op.execute('SELECT pg_sleep(2)')")
    for runner in ("alembic", "celora"):
        url = pg_server.create_database(f"t_slow_{runner}_{os.getpid()}")
        env = {"DATABASE_URL": url, "CELORA_STATEMENT_TIMEOUT": "1"}
        if runner == "alembic":
            run = alembic("upgrade", "head", env=env, cwd=project, isolated_root=settings_root)
        else:
            run = run_celora("db", "migrate-deploy", env={**env, "CELORA_MIGRATIONS_DIR": str(project / "migrations")})
        assert run.returncode == 0, (runner, run.stderr)
        assert version(url) == ["20261127000000"]
    # ... while the app's own connections do get the 1 s timeout.
    from celora_cli.db.engine import build_engine

    engine = build_engine(settings_for(url).database_url, settings_for(url, CELORA_STATEMENT_TIMEOUT=1))
    with pytest.raises(Exception, match="statement timeout"), engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_sleep(2)")
    engine.dispose()


def test_by_hand_takes_the_same_migration_lock(migrated_db, project, settings_root):
    add_migration(project, "20261127000000", HEAD, "    op.execute('CREATE TABLE by_hand (id int)')")
    with psycopg.connect(migrated_db, autocommit=True) as holder:
        holder.execute("SET application_name = 'a deploy in progress'")
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        pid = holder.info.backend_pid
        blocked = alembic("upgrade", "head", cwd=project, isolated_root=settings_root,
                          env={"DATABASE_URL": migrated_db, "CELORA_LOCK_TIMEOUT": "0.5"})
        assert blocked.returncode != 0
        output = blocked.stdout + blocked.stderr
        assert f"pid {pid}" in output and "a deploy in progress" in output
        assert "Waiting for the migration lock held by" in blocked.stderr  # the same notice as celora's
        assert "Traceback" not in blocked.stderr
        assert version(migrated_db) == [HEAD]
    done = alembic("upgrade", "head", cwd=project, isolated_root=settings_root,
                   env={"DATABASE_URL": migrated_db, "CELORA_LOCK_TIMEOUT": "0.5"})
    assert done.returncode == 0, done.stderr
    assert version(migrated_db) == ["20261127000000"]


def test_revision_uses_the_timestamped_names_and_needs_no_database(project, settings_root):
    # No DATABASE_URL at all: writing a file must not connect, nor start celora's local server.
    made = alembic("revision", "-m", "add wallet labels", cwd=project, isolated_root=settings_root)
    assert made.returncode == 0, made.stderr
    created = [p for p in (project / "migrations" / "versions").glob("*.py") if "add_wallet_labels" in p.name]
    assert len(created) == 1, made.stdout
    match = re.fullmatch(r"(\d{14})_add_wallet_labels\.py", created[0].name)
    assert match, created[0].name
    source = created[0].read_text()
    revision = re.search(r"^revision = ['\"](\w+)['\"]", source, re.MULTILINE).group(1)
    assert re.fullmatch(r"\d{14}", revision) and abs(int(revision) - int(match.group(1))) <= 1
    assert f"down_revision = {HEAD!r}" in source
    assert not (settings_root / ".celora").exists()

    explicit = alembic("revision", "-m", "explicit id", "--rev-id", "20300101000000", cwd=project,
                       isolated_root=settings_root)
    assert explicit.returncode == 0, explicit.stderr
    [named] = [p for p in (project / "migrations" / "versions").glob("*_explicit_id.py")]
    assert "revision = '20300101000000'" in named.read_text()


def test_pyproject_file_template_is_celoras():
    from alembic.config import Config

    config = Config(toml_file=str(REPO / "pyproject.toml"))
    assert config.get_alembic_option("file_template") == FILE_TEMPLATE.replace("%%", "%")
    assert config.get_alembic_option("timezone") == "UTC"


def test_env_accepts_an_engine_or_a_connection(empty_db):
    from alembic import command
    from sqlalchemy import create_engine

    from celora_cli.migrate.scripts import alembic_config

    settings = settings_for(empty_db)
    engine = create_engine(settings.database_url.sqlalchemy_url())
    try:
        command.upgrade(alembic_config(settings, connection=engine), "head")
        assert version(empty_db) == [HEAD]
        with engine.connect() as conn:
            command.downgrade(alembic_config(settings, connection=conn), "base")
            conn.commit()
        assert version(empty_db) == []
    finally:
        engine.dispose()


def test_autogenerate_revision_against_a_database_at_head(migrated_db, project, settings_root):
    made = alembic("revision", "--autogenerate", "-m", "auto check", cwd=project, isolated_root=settings_root,
                   env={"DATABASE_URL": migrated_db})
    assert made.returncode == 0, made.stdout + made.stderr
    [created] = [p for p in (project / "migrations" / "versions").glob("*_auto_check.py")]
    assert re.fullmatch(r"\d{14}_auto_check\.py", created.name)
    source = created.read_text()
    assert re.search(r"^revision = '\d{14}'$", source, re.MULTILINE), source
    assert "op." not in source.split("def upgrade", 1)[1], source  # models and migrations agree: nothing to do
