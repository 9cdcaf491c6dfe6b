"""`celora db backup` / `celora db restore` against the real test PostgreSQL: a seeded database round-trips with
identical tables and exact row counts; a modified or truncated file is refused before anything is restored; a
restore replaces the database (leaving nothing of it behind) only when confirmed, and never production's."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from celora_cli.config.settings import parse_database_url
from celora_cli.errors import ConfigError, DatabaseError, Refused
from celora_cli.migrate.scripts import load_script_directory
from celora_cli.ops.backup import BackupInvalid, backup, restore, verify_backup
from celora_cli.ops.backup.manifest import manifest_path
from celora_cli.ops.backup.tools import conninfo
from tests.support import REPO, TEST_PROJECT, db_name, drop_database, run_celora, settings_for, shared_tmpdir

HEAD = load_script_directory(REPO / "migrations").get_current_head()


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


def counts(url: str) -> dict[str, int]:
    tables = query(url, "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname = 'public'")
    return {name: query(url, f"SELECT count(*) FROM {name}")[0][0] for (name,) in tables}


def client_tools_for(url: str):
    """The pg_dump/pg_restore celora picks for the server of `url`."""
    from celora_cli.ops.backup.tools import find_client_tools

    major = int(query(url, "SHOW server_version_num")[0][0]) // 10000
    return find_client_tools(settings_for(url), server_major=major, needed_for="the test server")


def databases(pg_server) -> set[str]:
    return {row[0] for row in query(pg_server.url("postgres"), "SELECT datname FROM pg_database")}


@pytest.fixture(scope="module")
def seeded(pg_server, migrated_template):
    """A migrated database holding the fixtures (the seed), shared by the module's read-only tests."""
    from celora_cli.data.seed.apply import seed

    name = f"t_backup_seeded_{os.getpid()}"
    url = pg_server.create_database(name, template=migrated_template)
    seed(settings_for(url), REPO / "fixtures")
    yield url
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def folder():
    path = shared_tmpdir("celora-test-backup-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dumped(seeded, folder):
    """One backup of the seeded database, made through the CLI with a password in the URL."""
    with_password = seeded.replace("celora@", "celora:Pw-never-shown-42@")
    file = folder / "seeded.dump"
    cli = run_celora("db", "backup", "--output", str(file), "--json", env={"DATABASE_URL": with_password})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "Pw-never-shown-42" not in cli.stdout + cli.stderr
    return file, json.loads(cli.stdout)


def copy_of(file: Path, folder: Path, name: str) -> Path:
    target = folder / name
    shutil.copy(file, target)
    shutil.copy(manifest_path(file), manifest_path(target))
    return target


def test_backup_writes_the_dump_and_a_manifest_of_the_snapshot(seeded, dumped):
    file, result = dumped
    manifest = json.loads(manifest_path(file).read_text())
    assert result["ok"] and result["file"] == str(file)
    assert manifest["size_bytes"] == file.stat().st_size == result["size_bytes"]
    assert manifest["sha256"] == result["sha256"] and len(manifest["sha256"]) == 64
    assert manifest["schema_revision"] == HEAD
    assert manifest["database"] == db_name(seeded) and "Pw-never-shown-42" not in manifest_path(file).read_text()
    expected = counts(seeded)
    assert {k: v for k, v in manifest["tables"].items() if k.startswith("public.")} == expected
    assert expected["public.users"] > 0 and expected["public.transactions"] > 0  # the seed is in it
    assert file.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert not list(file.parent.glob(".*partial*"))
    # Every row of the database is in there: for the owner only, like the manifest.
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and stat.S_IMODE(manifest_path(file).stat().st_mode) == 0o600


def test_restore_verify_round_trips_with_identical_tables_and_counts(pg_server, seeded, dumped):
    file, _ = dumped
    before = databases(pg_server)
    cli = run_celora("db", "restore", str(file), "--verify", "--json", env={"DATABASE_URL": seeded})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    result = json.loads(cli.stdout)
    assert result["ok"] and result["schema_revision"] == HEAD
    assert {k: v for k, v in result["tables"].items() if k.startswith("public.")} == counts(seeded)
    assert databases(pg_server) == before  # the scratch database is gone again
    assert "scratch database" in cli.stderr  # announced: celora created a database the user did not name


def test_a_modified_backup_is_refused_before_anything_is_restored(pg_server, seeded, dumped, folder):
    tampered = copy_of(dumped[0], folder, "tampered.dump")
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    tampered.write_bytes(bytes(data))
    before = databases(pg_server)
    cli = run_celora("db", "restore", str(tampered), "--verify", "--json", env={"DATABASE_URL": seeded})
    assert cli.returncode == 3, cli.stdout + cli.stderr
    error = json.loads(cli.stdout)["error"]
    assert error["type"] == "BackupInvalid" and "modified or corrupted" in error["message"]
    assert "Traceback" not in cli.stderr and databases(pg_server) == before


def test_a_truncated_backup_gets_a_clear_error(seeded, dumped, folder):
    truncated = copy_of(dumped[0], folder, "truncated.dump")
    with open(truncated, "r+b") as handle:
        handle.truncate(truncated.stat().st_size // 3)
    with pytest.raises(BackupInvalid, match="is truncated"):
        verify_backup(settings_for(seeded), truncated)


def test_a_backup_without_its_manifest_is_refused(seeded, dumped, folder):
    lonely = folder / "lonely.dump"
    shutil.copy(dumped[0], lonely)
    with pytest.raises(BackupInvalid, match="has no manifest"):
        verify_backup(settings_for(seeded), lonely)


def test_restore_replaces_the_database_and_leaves_nothing_of_it_behind(pg_server, migrated_db, folder):
    from celora_cli.data.seed.apply import seed

    settings = settings_for(migrated_db)
    seed(settings, REPO / "fixtures")
    query(migrated_db, "ALTER DATABASE " + db_name(migrated_db) + " SET work_mem = '7MB'")
    expected = counts(migrated_db)
    file = backup(settings, folder / "replace.dump").file
    query(migrated_db, "DELETE FROM notifications; CREATE TABLE added_after_backup (id int)")
    before = databases(pg_server)

    with pytest.raises(Refused, match="without confirmation"):  # not a terminal, no --yes
        restore(settings, Path(file), confirm=_guard(settings, forced=False))
    assert "public.added_after_backup" in counts(migrated_db)  # refused: nothing changed

    result = restore(settings, Path(file), confirm=_guard(settings, forced=True))
    assert counts(migrated_db) == expected  # rows back, the later table gone
    assert result.replaced_tables["public.notifications"] == 0
    assert databases(pg_server) == before  # no scratch or replaced database left
    assert query(migrated_db, "SHOW work_mem")[0][0] == "7MB"  # database settings carried over


def test_restore_keeps_the_encoding_and_locale_of_the_database_it_replaces(pg_server, folder):
    name = f"t_backup_latin1_{os.getpid()}"
    query(pg_server.url("postgres"), f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'LATIN1' "
                                     "LC_COLLATE 'C' LC_CTYPE 'C'")
    target = pg_server.url(name)
    try:
        query(target, "CREATE TABLE names (name text); INSERT INTO names VALUES ('Zoë')")
        settings = settings_for(target)
        file = backup(settings, folder / "latin1.dump").file
        restore(settings, Path(file), confirm=_guard(settings, forced=True))
        assert query(target, "SELECT pg_encoding_to_char(encoding) FROM pg_database "
                             "WHERE datname = current_database()")[0][0] == "LATIN1"
        assert query(target, "SELECT name FROM names") == [("Zoë",)]
    finally:
        drop_database(pg_server, name)


def test_restore_into_a_missing_database_creates_it(pg_server, seeded, dumped):
    """Disaster recovery on a new server: the database of the URL does not exist yet."""
    name = f"t_backup_new_{os.getpid()}"
    target = pg_server.url(name)
    try:
        result = restore(settings_for(target), dumped[0], confirm=_guard(settings_for(target), forced=True))
        assert counts(target) == counts(seeded) and result.replaced_tables == {}
    finally:
        drop_database(pg_server, name)


def test_at_a_terminal_the_prompt_names_the_database_and_what_is_replaced(pg_server, seeded, dumped):
    from tests.support import run_celora_at_terminal

    before = databases(pg_server)
    declined = run_celora_at_terminal("n", "db", "restore", str(dumped[0]), env={"DATABASE_URL": seeded})
    assert declined.returncode == 12, declined.stdout + declined.stderr
    users = counts(seeded)["public.users"]
    assert f"table public.users ({users} rows) replaced" in declined.stderr and "Proceed?" in declined.stderr
    assert db_name(seeded) in declined.stderr and "not confirmed" in declined.stderr
    assert databases(pg_server) == before  # asked before anything was created


def test_without_createdb_the_error_says_so_and_what_else_works(pg_server, seeded, dumped):
    role = f"t_no_createdb_{os.getpid()}"
    query(pg_server.url("postgres"), f"CREATE ROLE {role} LOGIN NOCREATEDB")
    try:
        with pytest.raises(DatabaseError, match="may not create databases") as caught:
            verify_backup(settings_for(seeded.replace("celora@", f"{role}@")), dumped[0])
        assert "CREATEDB" in caught.value.hint and "pg_restore --clean" in caught.value.hint
    finally:
        query(pg_server.url("postgres"), f"DROP ROLE {role}")


def test_restore_is_refused_on_a_production_database(seeded, dumped):
    settings = settings_for(seeded, CELORA_ENV="production")
    with pytest.raises(Refused, match="production"):
        restore(settings, dumped[0], confirm=_guard(settings, forced=True))


def test_the_default_file_is_timestamped_under_backups_and_the_new_folder_announced(seeded):
    folder = TEST_PROJECT / "backups"
    shutil.rmtree(folder, ignore_errors=True)
    notices: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: notices.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("celora.notice")  # the CLI may have set propagate=False in this process
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        file = Path(backup(settings_for(seeded)).file)
        assert file.parent == folder and re.fullmatch(rf"{db_name(seeded)}-\d{{8}}T\d{{6}}Z\.dump", file.name)
        assert manifest_path(file).is_file()
        assert any(f"Created the folder {folder}" in notice for notice in notices)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        shutil.rmtree(folder, ignore_errors=True)


def test_an_existing_file_is_never_overwritten(seeded, dumped):
    with pytest.raises(ConfigError, match="already exists"):
        backup(settings_for(seeded), dumped[0])


def test_a_pg_dump_older_than_the_server_is_named(seeded, folder):
    old = sorted(Path("/usr/lib/postgresql").glob("1[0-7]/bin"))
    server_major = int(query(seeded, "SHOW server_version_num")[0][0]) // 10000
    if not old or int(old[0].parent.name) >= server_major:
        pytest.skip("no PostgreSQL client older than the test server here")
    settings = settings_for(seeded, CELORA_PG_BIN=str(old[0]))
    with pytest.raises(ConfigError, match=r"older than the server \(PostgreSQL") as caught:
        backup(settings, folder / "never.dump")
    assert "CELORA_PG_BIN" in caught.value.hint and not (folder / "never.dump").exists()


def test_a_full_disk_exits_74_and_leaves_no_file(seeded, folder):
    """The file system refuses pg_dump's writes (a file size limit: EFBIG, as a full disk gives ENOSPC)."""
    file = folder / "full.dump"

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    env = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_") and k != "DATABASE_URL"}
    env.update({"DATABASE_URL": seeded, "CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1",
                "PYTHONPATH": str(REPO)})
    cli = subprocess.run([sys.executable, "-m", "celora_cli", "db", "backup", "--output", str(file)],
                         capture_output=True, text=True, env=env, cwd=TEST_PROJECT, timeout=120,
                         stdin=subprocess.DEVNULL, preexec_fn=small_files)
    assert cli.returncode == 74, cli.stdout + cli.stderr
    assert "could not write" in cli.stderr and "Traceback" not in cli.stderr
    assert not file.exists() and not manifest_path(file).exists()
    assert not list(folder.glob(".full.dump*"))


def test_ctrl_c_during_the_dump_exits_130_and_leaves_no_file(seeded, folder):
    """Ctrl-C (SIGINT to the terminal's process group) while pg_dump has half-written its file. A stand-in pg_dump
    (CELORA_PG_BIN; the database stays the real one) writes the start of an archive and then hangs, so the
    interrupt lands at a known point: exit 130, and nothing left under the backup's name or a temporary one."""
    real = client_tools_for(seeded).bin_dir
    tools = shared_tmpdir("celora-test-slow-pg-dump-")
    (tools / "pg_restore").symlink_to(real / "pg_restore")
    (tools / "pg_dump").write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in\n'
        f'  --version) exec "{real / "pg_dump"}" --version ;;\n'
        '  --file=*) file="${arg#--file=}" ;;\n'
        "esac; done\n"
        'printf "PGDMP half an archive" > "$file"\n'
        "exec sleep 120\n")
    (tools / "pg_dump").chmod(0o755)
    file = folder / "interrupted.dump"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_") and k != "DATABASE_URL"}
    env.update({"DATABASE_URL": seeded, "CELORA_PG_BIN": str(tools), "CELORA_PROJECT_ROOT": str(TEST_PROJECT),
                "NO_COLOR": "1", "PYTHONPATH": str(REPO)})
    process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "backup", "--output", str(file)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=TEST_PROJECT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(600):  # until the half-written temporary file is there (bounded: 60 s)
            partial = list(folder.glob(".interrupted.dump.partial-*"))
            if partial or process.poll() is not None:
                break
            time.sleep(0.1)
        assert partial, process.communicate(timeout=10)
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(tools, ignore_errors=True)
    assert process.returncode == 130, out + err
    assert "Interrupted" in err and "Traceback" not in err
    assert not file.exists() and not manifest_path(file).exists() and not list(folder.glob(".interrupted*"))


def test_the_password_goes_to_a_passfile_never_into_the_arguments(seeded):
    url = parse_database_url(seeded.replace("celora@", "celora:Sec%3Aret@"))
    assert "Sec" not in conninfo(url, settings_for(seeded), application_name="x")


def _guard(settings, *, forced: bool):
    from celora_cli.safety.guard import confirm_destructive

    def confirm(plan) -> None:
        confirm_destructive("replace the database", target=plan.database, losses=plan.losses(), force_flag="--yes",
                            forced=forced, settings=settings, database_env=plan.database_env,
                            production_override=False, command="celora db restore", ask=None)

    return confirm


def _cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_") and k != "DATABASE_URL"}
    env.update({"DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1",
                "PYTHONPATH": str(REPO), **extra})
    return env


def _read_only(folder: Path, command: list[str]) -> list[str]:
    """`command` run with `folder` read-only: a read-only bind mount in a private mount namespace when we are root
    (root writes through any mode bits), else the folder's mode."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -m (a private mount namespace) to make a folder read-only for root")
    script = (f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"')
    return ["unshare", "-m", "sh", "-c", script, "sh", *command]


@pytest.mark.parametrize("where", ["x.dump", "sub/x.dump"])
def test_a_read_only_folder_exits_74_with_one_json_object_and_no_traceback(seeded, where):
    folder = shared_tmpdir("celora-test-backup-ro-")
    try:
        target = folder / where
        command = _read_only(folder, [sys.executable, "-m", "celora_cli", "db", "backup", "--output", str(target),
                                      "--json"])
        cli = subprocess.run(command, capture_output=True, text=True, env=_cli_env(seeded), cwd=TEST_PROJECT,
                             timeout=120, stdin=subprocess.DEVNULL)
        assert cli.returncode == 74, cli.stdout + cli.stderr
        error = json.loads(cli.stdout)["error"]  # stdout works: the one JSON object is there
        assert error["type"] == "OutputError" and error["code"] == 74
        assert str(folder) in error["message"] and "Traceback" not in cli.stderr
        assert "--output" in error["hint"] and str(folder) in cli.stderr
        assert not list(folder.rglob("*"))
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def _recording_tools(real: Path, record: Path) -> Path:
    """A bin folder whose pg_dump and pg_restore write their arguments and the files their environment names
    (with modes) into `record`, then run the real ones."""
    tools = shared_tmpdir("celora-test-recording-tools-")
    for tool in ("pg_dump", "pg_restore", "psql"):
        (tools / tool).write_text(
            "#!/bin/sh\n"
            f'for arg in "$@"; do printf "%s\\n" "$arg"; done >> "{record}/args"\n'
            f'for f in "$PGPASSFILE" "$PGSERVICEFILE"; do [ -n "$f" ] && stat -c "%a %n" "$f" >> "{record}/files"; '
            f'[ -n "$f" ] && cat "$f" >> "{record}/contents"; done\n'
            f'exec "{real / tool}" "$@"\n')
        (tools / tool).chmod(0o755)
    return tools


def test_secret_url_parameters_reach_pg_dump_through_a_private_file_never_its_command_line(seeded, folder):
    real = client_tools_for(seeded).bin_dir
    record = shared_tmpdir("celora-test-recorded-")
    tools = _recording_tools(real, record)
    url = seeded.replace("celora@", "celora:Pw-in-passfile-9@") + "?sslmode=disable&sslpassword=Ssl-key-pass-77"
    file = folder / "secret-params.dump"
    try:
        cli = subprocess.run([sys.executable, "-m", "celora_cli", "db", "backup", "--output", str(file), "--verify",
                              "--json"], capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
                             env=_cli_env(url, CELORA_PG_BIN=str(tools)), cwd=TEST_PROJECT)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        args = (record / "args").read_text()
        assert "--snapshot" in args and "--single-transaction" in args  # pg_dump, then pg_restore (--verify)
        assert "Ssl-key-pass-77" not in args and "Pw-in-passfile-9" not in args
        contents = (record / "contents").read_text()
        assert "sslpassword=Ssl-key-pass-77" in contents and "Pw-in-passfile-9" in contents  # handed over
        modes = (record / "files").read_text().split()
        assert modes[0::2] and set(modes[0::2]) == {"600"}
        assert not any(Path(name).exists() for name in modes[1::2])  # deleted afterwards
        for text in (cli.stdout, cli.stderr, manifest_path(file).read_text()):
            assert "Ssl-key-pass-77" not in text and "Pw-in-passfile-9" not in text
    finally:
        shutil.rmtree(tools, ignore_errors=True)
        shutil.rmtree(record, ignore_errors=True)


@pytest.mark.parametrize("password", [True, False])
def test_sigterm_during_the_dump_removes_the_passfile_and_the_partial_file(seeded, folder, password):
    """celora alone gets SIGTERM (a service manager stopping it) while pg_dump runs: exit 130, pg_dump killed,
    and neither the temporary passfile nor the half-written dump is left."""
    real = client_tools_for(seeded).bin_dir
    tools = shared_tmpdir("celora-test-hanging-pg-dump-")
    (tools / "pg_restore").symlink_to(real / "pg_restore")
    (tools / "pg_dump").write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case "$arg" in\n'
        f'  --version) exec "{real / "pg_dump"}" --version ;;\n'
        '  --file=*) file="${arg#--file=}" ;;\n'
        "esac; done\n"
        f'printf "%s" "$PGPASSFILE" > "{tools}/passfile"\n'
        'printf "PGDMP half an archive" > "$file"\n'
        "exec sleep 120\n")
    (tools / "pg_dump").chmod(0o755)
    file = folder / "terminated.dump"
    url = seeded.replace("celora@", "celora:Pw-term-5@") if password else seeded
    process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "backup", "--output", str(file)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=TEST_PROJECT,
                               env=_cli_env(url, CELORA_PG_BIN=str(tools)), stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        for _ in range(600):  # until pg_dump has written its file (bounded: 60 s)
            if (tools / "passfile").exists() and list(folder.glob(".terminated.dump.partial-*")) \
                    or process.poll() is not None:
                break
            time.sleep(0.1)
        passfile = Path((tools / "passfile").read_text()) if password else None
        assert passfile is None or passfile.is_file()
        process.send_signal(signal.SIGTERM)  # celora only, not its process group
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the stand-in's sleep, if it outlived celora
        shutil.rmtree(tools, ignore_errors=True)
    assert process.returncode == 130, out + err
    assert "SIGTERM" in err and "Traceback" not in err and "Pw-term-5" not in out + err
    assert passfile is None or not (passfile.exists() or passfile.parent.exists())
    assert not file.exists() and not list(folder.glob(".terminated*"))
