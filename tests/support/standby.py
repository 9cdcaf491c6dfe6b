"""Real streaming replication for tests: a throwaway primary (celora's own LocalServer) and standbys made from it
with pg_basebackup -R, for the modules that need them (db health in depth, read replicas). The session's shared
server is never used: these clusters get restarted, paused and stopped.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from tests.support import settings_for, shared_tmpdir


def until(condition: Callable[[], object], what: str, timeout: float = 20.0):
    """Poll until `condition()` is truthy (a state the test made, reached when the server gets there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def query(url: str, sql: str, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchone()


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def start_standby(primary, base_dir: Path):
    """A hot standby of `primary` in `base_dir`, streaming from it (pg_basebackup -R writes primary_conninfo)."""
    from celora_cli.local.server import LocalServer

    standby = LocalServer(base_dir, fast=True, database=primary.database)
    standby._prepare_dirs()
    standby._run([standby.bin_dir / "pg_basebackup", "-D", standby.data_dir, "-R", "-X", "stream",
                  "-c", "fast", "--no-sync", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "celora"])
    standby.ensure_running()  # the database exists already (copied), so nothing is written
    return standby


def streaming_count(primary) -> int:
    return query(primary.url("postgres"), "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")[0]


def caught_up(standby) -> bool:
    """The standby replayed all the WAL it received."""
    return query(standby.url(), "SELECT pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()")[0]


def stop_immediately(server) -> None:
    """No shutdown checkpoint to wait for: the data is thrown away, or the test wants a server gone at once."""
    if server.is_running():
        server._run([server.bin_dir / "pg_ctl", "stop", "-D", server.data_dir, "-m", "immediate"], check=False)


@contextlib.contextmanager
def replication(prefix: str, *, standbys: int = 1, migrate: bool = True) -> Iterator[tuple]:
    """(primary, [standby, ...]): a throwaway primary with database "app" (at head when `migrate`) and
    `standbys` streaming standbys of it; all stopped and deleted afterwards."""
    from celora_cli.local.server import LocalServer

    base = shared_tmpdir(prefix)
    primary = LocalServer(base / "primary", fast=True, database="app")
    started: list = []
    try:
        # initdb and pg_basebackup without fsync (throwaway clusters): a few seconds less on a busy machine.
        primary._prepare_dirs()
        primary._run([primary.bin_dir / "initdb", "-D", primary.data_dir, "-U", "celora", "--auth=trust",
                      "-E", "UTF8", "--locale=C", "--no-instructions", "--no-sync"])
        primary.ensure_running()
        if migrate:
            from celora_cli.migrate.deploy import deploy

            deploy(settings_for(primary.url("app")))
        for number in range(1, standbys + 1):
            started.append(start_standby(primary, base / f"standby{number}"))
        until(lambda: streaming_count(primary) == standbys, f"{standbys} standby(s) streaming")
        yield primary, started
    finally:
        for server in (*started, primary):
            stop_immediately(server)
        shutil.rmtree(base, ignore_errors=True)
