"""`celora local pgbouncer start|status|stop`: the shipped pgbouncer.ini run in front of the local PostgreSQL
(here: the test cluster, through CELORA_LOCAL_DIR), with SCRAM authentication whose password is never written
anywhere but a private env file."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
from pathlib import Path

import psycopg
import pytest

from celora_cli.errors import LocalServerError
from celora_cli.local.pgbouncer import LocalPgBouncer, find_pgbouncer, scram_secret
from tests.support import REPO, TEST_PROJECT, free_port, run_celora


def env_values(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


@pytest.fixture
def local_env(pg_server):
    """Settings that make the test cluster celora's "local server" (no DATABASE_URL), and the shipped ini."""
    shipped = TEST_PROJECT / "pgbouncer.ini"
    if not shipped.exists():
        shipped.symlink_to(REPO / "pgbouncer.ini")
    return {"CELORA_LOCAL_DIR": str(pg_server.base_dir)}


def test_start_status_stop_with_scram_and_no_plaintext_password(pgbouncer_binary, pg_server, local_env):
    port = free_port()  # not 6432: another test run (or the developer's own PgBouncer) may hold it
    started = run_celora("local", "pgbouncer", "start", "--port", str(port), env=local_env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        runtime = pg_server.base_dir / "pgbouncer"
        values = env_values(runtime / "pgbouncer.env")
        pooled, direct = values["DATABASE_URL"], values["DIRECT_DATABASE_URL"]
        password = pooled.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert len(password) >= 24
        assert pooled.endswith("/celora?pgbouncer=true") and f":{pg_server.port}/" in direct
        assert password not in started.stdout + started.stderr  # printed masked
        assert "DATABASE_URL=postgresql://celora:****@127.0.0.1:" in started.stdout

        # The runtime folder and its secrets are private; the auth file holds a SCRAM secret, not the password.
        for path, mode in ((runtime, 0o700), (runtime / "userlist.txt", 0o600), (runtime / "pgbouncer.env", 0o600)):
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
        userlist = (runtime / "userlist.txt").read_text()
        assert "SCRAM-SHA-256$4096:" in userlist and password not in userlist
        assert password not in (runtime / "pgbouncer.ini").read_text()
        if os.geteuid() == 0:  # PgBouncer refuses root: it runs as the local server's unprivileged user
            assert (runtime / "userlist.txt").stat().st_uid == pwd.getpwnam(pg_server.run_as).pw_uid
        config = (runtime / "pgbouncer.ini").read_text()
        assert "pool_mode = transaction" in config and "default_pool_size = 20" in config  # the shipped pooling

        with psycopg.connect(pooled.split("?")[0], prepare_threshold=None) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "celora"
        with psycopg.connect(values["CELORA_PGBOUNCER_ADMIN_URL"], autocommit=True) as admin:
            assert any(row[0] == "celora" for row in admin.execute("SHOW POOLS").fetchall())  # it is PgBouncer
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(pooled.split("?")[0].replace(password, "wrong-password")).close()

        status = run_celora("local", "pgbouncer", "status", "--json", env=local_env)
        assert status.returncode == 0, status.stdout + status.stderr
        data = json.loads(status.stdout)
        assert data["running"] and data["port"] == port and f"@127.0.0.1:{port}/" in pooled
        assert password not in status.stdout
    finally:
        stopped = run_celora("local", "pgbouncer", "stop", env=local_env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    after = run_celora("local", "pgbouncer", "status", env=local_env)
    assert after.returncode == 32 and "not running" in after.stdout
    # `celora local destroy` removes it with the cluster: its folder (and the secrets in it) go.
    assert LocalPgBouncer(pg_server).destroy() and not (pg_server.base_dir / "pgbouncer").exists()


def test_missing_pgbouncer_is_a_clear_refusal(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LocalServerError, match="PgBouncer is not installed") as caught:
        find_pgbouncer(search=("/nonexistent",))
    assert "apt-get install pgbouncer" in caught.value.hint and "brew install pgbouncer" in caught.value.hint


def test_scram_secret_matches_rfc_7677_test_vector():
    """RFC 7677's example: user 'user', password 'pencil', salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations."""
    import base64

    secret = scram_secret("pencil", salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    assert secret == ("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                      "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=")


def _root_file(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(f"{name}: root's, not to be touched\n")
    path.chmod(0o640)
    return path


def _fingerprint(path: Path) -> tuple:
    info = os.lstat(path)
    return path.read_bytes(), info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="PgBouncer's user and root differ only when run as root")
def test_links_planted_in_the_runtime_folder_are_replaced_and_their_targets_untouched(pg_server, local_env,
                                                                                      tmp_path):
    """As root, celora hands the runtime folder to PgBouncer's user, then writes the auth file, the config, the
    env file and the port there and chowns the log and pid files: links that user planted are never followed."""
    runtime = pg_server.base_dir / "pgbouncer"
    shutil.rmtree(runtime, ignore_errors=True)
    runtime.mkdir(mode=0o700)
    names = ("userlist.txt", "pgbouncer.ini", "pgbouncer.env", "port", "pgbouncer.log", "pgbouncer.pid")
    targets = {name: _root_file(tmp_path, name) for name in names}
    before = {name: _fingerprint(path) for name, path in targets.items()}
    for name, target in targets.items():
        (runtime / name).symlink_to(target)
    started = run_celora("local", "pgbouncer", "start", "--port", str(free_port()), env=local_env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        for name, target in targets.items():
            assert _fingerprint(target) == before[name], name
        for name in ("userlist.txt", "pgbouncer.ini", "pgbouncer.env", "port"):
            assert not (runtime / name).is_symlink() and (runtime / name).is_file(), name
        assert "SCRAM-SHA-256$" in (runtime / "userlist.txt").read_text()
        assert "root's" not in started.stdout + started.stderr
    finally:
        run_celora("local", "pgbouncer", "stop", env=local_env)
        LocalPgBouncer(pg_server).destroy()


@pytest.mark.skipif(os.geteuid() != 0, reason="PgBouncer's user and root differ only when run as root")
def test_a_link_planted_as_the_runtime_folder_is_refused(pg_server, local_env, tmp_path):
    runtime = pg_server.base_dir / "pgbouncer"
    shutil.rmtree(runtime, ignore_errors=True)
    outside = tmp_path / "root-only"
    outside.mkdir(mode=0o700)
    runtime.symlink_to(outside)
    try:
        started = run_celora("local", "pgbouncer", "start", "--port", str(free_port()), env=local_env)
        assert started.returncode == 11, started.stdout + started.stderr
        assert f"{runtime} is a symbolic link (to {outside})" in started.stderr and f"rm {runtime}" in started.stderr
        info = os.stat(outside)
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o700) and not list(outside.iterdir())
    finally:
        runtime.unlink()
