"""Throwaway PostgreSQL clusters (and a PgBouncer) that a test may kill, restart or re-configure.

The session `pg_server` is shared by every test, so nothing here ever touches it: each helper builds its own
cluster with celora's LocalServer (fsync off), and its own PgBouncer on a fixed port that survives a restart.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support import REPO, TEST_PROJECT, free_port, program, shared_tmpdir, wait_for_port


@contextlib.contextmanager
def throwaway_cluster(prefix: str) -> Iterator:
    """A running LocalServer of its own; destroyed (stopped, files deleted) afterwards."""
    from celora_cli.local.server import LocalServer

    base = shared_tmpdir(prefix)
    server = LocalServer(base / "cluster", fast=True, database="postgres")
    server.ensure_running()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def postmaster_pid(server) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError):  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def crash(server) -> None:
    """SIGKILL the postmaster, as the OOM killer would. Its backends notice the postmaster's death and exit on
    their own; any still there after a few seconds get SIGKILL too, so the restart finds no shared memory in
    use. No clean shutdown happens: the restart runs crash recovery."""
    pid = postmaster_pid(server)
    children = _children(pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_gone(p) for p in [pid, *children]):
        time.sleep(0.05)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    while not all(_gone(p) for p in [pid, *children]):
        time.sleep(0.05)
    # A dead postmaster stays a zombie until its parent (here whatever reaps orphans) collects it, and the new
    # postmaster reads a zombie's pid in postmaster.pid as "another server is running". Give the reaper a moment;
    # if there is none, the lock file of a dead process is stale, as after a power cut.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        (server.data_dir / "postmaster.pid").unlink()


def restart(server) -> None:
    """Start the cluster again on the same port (LocalServer keeps the previous port when it is free)."""
    server.ensure_running()


class PgBouncer:
    """A real PgBouncer (the repo's pgbouncer.ini, transaction mode, trust auth) in front of `server`, on one
    port for its whole life, so `restart()` looks to clients like a pooler that went away and came back."""

    def __init__(self, server) -> None:
        self.server = server
        self.base = shared_tmpdir("celora-faults-pgbouncer-")
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._write_config()

    def _write_config(self) -> None:
        config = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
        config.read(REPO / "pgbouncer.ini")
        config["databases"] = {"*": f"host=127.0.0.1 port={self.server.port}"}
        config["pgbouncer"].update({
            "listen_addr": "127.0.0.1", "listen_port": str(self.port), "unix_socket_dir": "",
            "auth_type": "trust", "auth_file": str(self.base / "users.txt"),
            "logfile": str(self.base / "pgbouncer.log"), "pidfile": str(self.base / "pgbouncer.pid"),
            "server_tls_sslmode": "disable", "min_pool_size": "0",
        })
        for key in ("admin_users", "stats_users"):
            config["pgbouncer"].pop(key, None)
        (self.base / "users.txt").write_text('"celora" ""\n')
        with open(self.base / "pgbouncer.ini", "w") as handle:
            config.write(handle)

    def url(self, database: str) -> str:
        return f"postgresql://celora@127.0.0.1:{self.port}/{database}?pgbouncer=true"

    def start(self) -> None:
        binary = program("pgbouncer")  # skips the test where PgBouncer is not installed
        kwargs: dict = {}
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            user = pwd.getpwnam(self.server.run_as)
            for path in (self.base, *self.base.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen([binary, str(self.base / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, **kwargs)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()  # abrupt: clients see their connections drop, as on a crash or a redeploy
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def celora_env(extra: dict | None = None) -> dict:
    """The environment tests.support.run_celora gives the CLI, for processes a test must start with Popen."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    clean.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1", "COLUMNS": "200",
                  "PYTHONPATH": str(REPO)})
    clean.update(extra or {})
    return clean


def start_celora(*args: str, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    """The real CLI in the background (run_celora waits; a fault test must act while it runs)."""
    return subprocess.Popen([sys.executable, "-m", "celora_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=celora_env(env), cwd=cwd or TEST_PROJECT,
                            stdin=subprocess.DEVNULL)
