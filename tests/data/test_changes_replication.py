"""`celora db changes` over the replication protocol, as the consumer of a stream relies on it: a follower waits
out a server that stops abruptly (`pg_ctl stop -m immediate`) and starts again, and the union of its lines holds
every committed row; a slot dropped under it ends it with its exit code; a 200,000-row transaction streams
through a small CELORA_CHANGES_BUFFER without the process growing with it. (Whole transactions in commit order,
rollbacks, secrets and at-least-once across signals: tests/data/test_changes.py, which runs over the same
protocol.)"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from celora_cli.config.settings import load_settings
from tests.data.test_changes import Follower, db, setup_only  # noqa: F401 - db is a fixture
from tests.support import REPO, run_celora
from tests.support.cluster import throwaway_cluster


@pytest.fixture(scope="module")
def own_server():
    """A cluster this module may stop and start; one database at head."""
    from celora_cli.migrate.deploy import deploy

    with throwaway_cluster("celora-test-changes-") as server:
        url = server.create_database("changes")
        deploy(load_settings(environ={"DATABASE_URL": url, "CELORA_ENV": "test"}, project_root=REPO))
        yield server, url


def stop_immediately(server) -> None:
    """As a crash: no checkpoint, every session cut; the start runs crash recovery."""
    server._run([Path(server.bin_dir) / "pg_ctl", "stop", "-D", server.data_dir, "-m", "immediate", "-w"])


def test_a_follower_waits_out_an_immediate_stop_and_its_lines_hold_every_committed_row(own_server):
    server, url = own_server
    env = {"DATABASE_URL": url}
    assert run_celora("db", "changes", *setup_only(url), "--slot", "restart", env=env).returncode == 0
    follower = Follower(url, "--follow", "--slot", "restart", "--tables", "users",
                        env={"CELORA_CHANGES_RETRY_FOR": "120"})
    done = threading.Event()

    def write() -> None:
        """Single-row commits until told to stop; failures while the server is down are expected."""
        i = 0
        while not done.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
                    while not done.is_set():
                        conn.execute("INSERT INTO users (firebase_uid) VALUES (%s)", (f"r-{i}",))
                        i += 1
                        time.sleep(0.01)
            except psycopg.OperationalError:
                time.sleep(0.1)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        follower.wait_for(50)
        stop_immediately(server)
        time.sleep(1)
        server.ensure_running()
        follower.wait_for(len(follower.lines) + 50, timeout=120)  # it streams again after the restart
    finally:
        done.set()
        writer.join(30)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('last')")  # flushes the WAL before it
        committed = {str(r[0]) for r in conn.execute("SELECT id FROM users")}
    deadline = time.monotonic() + 60
    while {line["key"]["id"] for line in follower.lines} < committed and time.monotonic() < deadline:
        time.sleep(0.2)
    assert follower.stop(signal.SIGTERM) == 0  # a service manager's stop: a normal end
    stderr = follower.process.stderr.read()
    assert "lost its server" in stderr and "Reconnected" in stderr, stderr
    assert "Traceback" not in stderr
    streamed = {line["key"]["id"] for line in follower.lines}
    assert committed <= streamed, f"{len(committed - streamed)} committed rows never streamed"
    assert streamed <= committed  # and nothing that did not commit (crash recovery drops the rest)


def test_a_slot_dropped_under_a_follower_ends_it_with_its_exit_code(own_server):
    server, url = own_server
    env = {"DATABASE_URL": url}
    assert run_celora("db", "changes", *setup_only(url), "--slot", "dropped", env=env).returncode == 0
    follower = Follower(url, "--follow", "--slot", "dropped")
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while not conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 'dropped'").fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while True:  # the follower reconnects between the two: drop it while it waits
            conn.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                         "WHERE slot_name = 'dropped' AND active_pid IS NOT NULL")
            try:
                conn.execute("SELECT pg_drop_replication_slot('dropped')")
                break
            except psycopg.errors.ObjectInUse:
                assert time.monotonic() < deadline
    code = follower.process.wait(60)
    stderr = follower.process.stderr.read()
    assert code == 3, stderr
    assert "dropped" in stderr and "--from-start" in stderr and "Traceback" not in stderr


def peak_rss_mb(process: subprocess.Popen) -> float:
    """The process's high-water mark of resident memory (VmHWM), read until it exits."""
    peak = 0.0
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            break
        time.sleep(0.05)
    return peak


def test_a_200k_row_transaction_streams_through_a_small_buffer_in_bounded_memory(db):  # noqa: F811
    env = {"DATABASE_URL": db}
    assert run_celora("db", "changes", *setup_only(db), "--slot", "big", env=env).returncode == 0
    rows = 200_000
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("INSERT INTO users (firebase_uid) SELECT 'big-' || g FROM generate_series(1, %s) g", (rows,))
    from tests.support.cluster import start_celora

    process = start_celora("db", "changes", "--slot", "big", "--tables", "users",
                           env={"DATABASE_URL": db, "CELORA_CHANGES_BUFFER": "64kB"})
    count = 0
    xids = set()

    def read() -> None:
        nonlocal count
        assert process.stdout is not None
        for line in process.stdout:
            xids.add(json.loads(line)["xid"])
            count += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak = peak_rss_mb(process)
    reader.join(60)
    assert process.wait(10) == 0, process.stderr.read() if process.stderr else ""
    assert count == rows and len(xids) == 1
    assert 0 < peak < 150, f"peak RSS {peak:.0f} MB"


def test_lag_is_visible_in_list_in_health_and_from_a_follower_that_is_behind(db):  # noqa: F811
    env = {"DATABASE_URL": db}
    assert run_celora("db", "changes", *setup_only(db), "--slot", "lagging", env=env).returncode == 0
    with psycopg.connect(db, autocommit=True) as conn:
        for t in range(200):  # a backlog of small transactions, as the app writes them
            conn.execute("INSERT INTO users (firebase_uid) SELECT 'lag-' || %s || '-' || g "
                         "FROM generate_series(1, 100) g", (t,))
    listed = json.loads(run_celora("db", "changes", "--list", "--json", env=env).stdout)
    waiting = next(s for s in listed["slots"] if s["slot"] == "lagging")
    assert waiting["active"] is False and waiting["lag_bytes"] > 0 and waiting["lag_seconds"] is None
    health = json.loads(run_celora("db", "health", "--json", env=env).stdout)
    slot = next(s for s in health["replication"]["slots"] if s["name"] == "lagging")
    assert slot["lag_bytes"] > 0

    follower = Follower(db, "--follow", "--slot", "lagging", env={"CELORA_CHANGES_LAG_REPORT": "0.1"})
    follower.wait_for(20_000, timeout=180)
    with psycopg.connect(db, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while True:  # the follower confirms what it flushed; its walsender measures the lag of it
            row = conn.execute("SELECT confirmed_flush_lsn >= pg_current_wal_lsn() FROM pg_replication_slots "
                               "WHERE slot_name = 'lagging'").fetchone()
            if row[0] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    attached = json.loads(run_celora("db", "changes", "--list", "--json", env=env).stdout)
    active = next(s for s in attached["slots"] if s["slot"] == "lagging")
    assert active["active"] is True and active["lag_seconds"] is not None and active["lag_seconds"] >= 0
    assert follower.stop(signal.SIGTERM) == 0
    stderr = follower.process.stderr.read()
    assert "Slot lagging: behind by" in stderr and "CELORA_CHANGES_LAG_REPORT" in stderr, stderr
