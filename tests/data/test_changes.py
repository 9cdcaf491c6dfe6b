"""`celora db changes` on a real PostgreSQL with wal_level=logical (the session cluster; celora's local server
starts with it): at-least-once JSON lines across SIGINT and SIGKILL, whole committed transactions only, secrets
left out, slots listed and dropped, the Debezium set-up usable by the role it describes, and a clear refusal on a
server without wal_level=logical (a small throwaway cluster)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from celora_cli.data.seed.apply import seed
from celora_cli.local.server import LocalServer
from tests.support import REPO, TEST_PROJECT, admin_execute, db_name, run_celora, settings_for, shared_tmpdir


def rows(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def setup_only(url: str) -> tuple[str, ...]:
    """`--setup-only`, with --allow-secret-columns where a publication cannot leave a column out (PostgreSQL < 15
    has no column lists, so --setup-only refuses without it): for tests that only need the slot made."""
    return ("--setup-only", "--allow-secret-columns") if before_column_lists(url) else ("--setup-only",)


def before_column_lists(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.info.server_version < 150000


def drop_slots(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for (slot,) in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                                    (db_name(url),)).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


@pytest.fixture
def db(migrated_db):
    yield migrated_db
    drop_slots(migrated_db)  # a forgotten slot would keep the session cluster's WAL


class Follower:
    """`celora db changes --follow` in a subprocess, its stdout lines collected by a thread."""

    def __init__(self, url: str, *args: str, pause_after: int | None = None, env: dict | None = None) -> None:
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_") and k != "DATABASE_URL"}
        env.update({"DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1",
                    "PYTHONPATH": str(REPO), **extra})
        self.process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "changes", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                        stdin=subprocess.DEVNULL)
        self.lines: list[dict] = []
        # Reading stops after `pause_after` lines until resume(): the pipe fills and the follower blocks in the
        # middle of writing, so a signal then really arrives mid-stream.
        self.pause_after = pause_after
        self.resumed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))
            if self.pause_after is not None and len(self.lines) == self.pause_after:
                self.resumed.wait(60)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
            assert time.monotonic() < deadline, f"only {len(self.lines)} of {count} lines"
            time.sleep(0.05)

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        self.resumed.set()
        code = self.process.wait(30)
        self.reader.join(10)
        return code


def keys(lines: list[dict], table: str, op: str = "insert") -> set[str]:
    return {line["key"]["id"] for line in lines if line["table"] == table and line["op"] == op}


def test_interrupted_and_killed_followers_together_miss_no_row_and_never_show_a_rollback(db):
    assert run_celora("db", "changes", *setup_only(db), env={"DATABASE_URL": db}).returncode == 0
    # Lines written 4 kB at a time (CELORA_CHANGES_BUFFER): the stop lands with most of the seed still to come.
    first = Follower(db, "--follow", pause_after=20, env={"CELORA_CHANGES_BUFFER": "4kB"})
    # Small transactions, the seed (one transaction: fixtures plus a generated volume), small ones again.
    with psycopg.connect(db, autocommit=True) as conn:
        for i in range(15):
            conn.execute("INSERT INTO users (firebase_uid) VALUES (%s)", (f"small-{i}",))
        result = seed(settings_for(db), REPO / "fixtures", volume_users=10, volume_seed=5)
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO users (firebase_uid) VALUES ('rolled-back')")
        for i in range(15, 30):
            conn.execute("INSERT INTO users (firebase_uid) VALUES (%s)", (f"small-{i}",))
    total_users = 30 + 2 + 10
    assert result.volume and result.volume["users"] == 10
    first.wait_for(20)
    time.sleep(0.5)  # let it fill the pipe and block mid-stream
    assert first.stop(signal.SIGINT) == 130
    assert "Traceback" not in first.process.stderr.read()
    second = Follower(db, "--follow")
    second.wait_for(1)
    second.stop(signal.SIGKILL)  # no chance to advance anything
    third = run_celora("db", "changes", env={"DATABASE_URL": db})  # drains, then stops when caught up
    assert third.returncode == 0, third.stderr
    lines = first.lines + second.lines + [json.loads(line) for line in third.stdout.splitlines()]

    expected = {str(r[0]) for r in rows(db, "SELECT id FROM users")}
    assert len(expected) == total_users and keys(lines, "users") == expected
    expected_tx = {str(r[0]) for r in rows(db, "SELECT id FROM transactions")}
    assert keys(lines, "transactions") == expected_tx
    assert keys(first.lines, "transactions") < expected_tx  # the first run was stopped mid-stream
    assert not [line for line in lines if line["new"] and line["new"].get("firebase_uid") == "rolled-back"]
    sample = next(line for line in lines if line["table"] == "users")
    assert set(sample) == {"table", "op", "key", "new", "old", "lsn", "xid", "commit_time"}
    # Transactions arrive whole and in commit order: one xid's lines are contiguous in each run's output.
    for run in (first.lines, [json.loads(line) for line in third.stdout.splitlines()]):
        xids = [line["xid"] for line in run]
        assert len({x for i, x in enumerate(xids) if i == 0 or xids[i - 1] != x}) == len(set(xids))


def test_secrets_never_reach_the_stream_and_old_values_come_with_deletes(db):
    env = {"DATABASE_URL": db}
    assert run_celora("db", "changes", *setup_only(db), "--slot", "s_secrets", env=env).returncode == 0
    token_hash = bytes(range(32))
    with psycopg.connect(db, autocommit=True) as conn:
        user_id = conn.execute("INSERT INTO users (firebase_uid) VALUES ('u') RETURNING id").fetchone()[0]
        session_id = conn.execute("INSERT INTO sessions (user_id, token_hash, expires_at) VALUES (%s, %s, now()) "
                                  "RETURNING id", (user_id, token_hash)).fetchone()[0]
        conn.execute("UPDATE sessions SET user_agent = 'curl' WHERE id = %s", (session_id,))
        conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,))
        conn.execute("TRUNCATE sessions")
    out = run_celora("db", "changes", "--slot", "s_secrets", "--tables", "sessions", env=env)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["op"] for line in lines] == ["insert", "update", "delete", "truncate"]  # --tables: no users line
    assert "token_hash" not in out.stdout and token_hash.hex() not in out.stdout
    assert lines[1]["new"]["user_agent"] == "curl"
    assert lines[2]["old"] == {"id": str(session_id)} and lines[2]["key"] == {"id": str(session_id)}
    again = run_celora("db", "changes", "--slot", "s_secrets", env=env)
    assert again.returncode == 0 and again.stdout == ""  # the slot advanced past what was written


def test_setup_only_makes_what_debezium_needs_and_the_described_role_can_read_it(pg_server, db):
    out = run_celora("db", "changes", *setup_only(db), "--slot", "dbz", "--json", env={"DATABASE_URL": db})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["debezium"]["plugin.name"] == "pgoutput" and result["debezium"]["slot.name"] == "dbz"
    assert rows(db, "SELECT plugin, slot_type FROM pg_replication_slots WHERE slot_name = 'dbz'") == \
        [("pgoutput", "logical")]
    published = dict(rows(db, "SELECT tablename, attnames FROM pg_publication_tables WHERE pubname = 'dbz'"))
    assert set(published) == {"users", "sessions", "wallets", "transactions", "notifications", "idempotency_keys"}
    assert "token_hash" not in published["sessions"] and "response_body" not in published["idempotency_keys"]

    role = f"dbz_{os.getpid()}"
    hint = result["role_hint"].replace("debezium", role).replace("<choose one>", "pw")
    admin_execute(pg_server, hint, db_name(db))
    try:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = on")  # the session cluster runs without it; decoding reads
            conn.execute("INSERT INTO users (firebase_uid) VALUES ('for-debezium')")  # only flushed WAL
        with psycopg.connect(db.replace("celora@", f"{role}:pw@"), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_logical_slot_peek_binary_changes('dbz', NULL, NULL, "
                                "'proto_version', '1', 'publication_names', 'dbz')").fetchone()[0] >= 3
            assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1  # the snapshot's SELECT
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT token_hash FROM sessions")
        # A new slot's publication needs the tables' owner: the role is told to run --setup-only as it once.
        other = run_celora("db", "changes", "--slot", "not_set_up", env={"DATABASE_URL": db.replace(
            "celora@", f"{role}:pw@")})
        assert other.returncode == 3 and "--setup-only" in other.stderr, other.stderr
        admin_execute(pg_server, f"ALTER ROLE {role} NOREPLICATION")
        denied = run_celora("db", "changes", "--slot", "dbz", env={"DATABASE_URL": db.replace(
            "celora@", f"{role}:pw@")})
        assert denied.returncode == 3 and "REPLICATION" in denied.stderr and f"ALTER ROLE {role}" in denied.stderr
    finally:
        admin_execute(pg_server, f"DROP OWNED BY {role}; DROP ROLE {role}", db_name(db))


def test_list_shows_retained_wal_and_drop_asks_first(db):
    env = {"DATABASE_URL": db}
    assert run_celora("db", "changes", *setup_only(db), "--slot", "s_list", env=env).returncode == 0
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO users (firebase_uid) SELECT 'bulk-' || g FROM generate_series(1, 200) g")
    listed = json.loads(run_celora("db", "changes", "--list", "--json", env=env).stdout)
    slot = next(s for s in listed["slots"] if s["slot"] == "s_list")
    assert slot["active"] is False and slot["retained_wal_bytes"] > 0 and slot["lag_bytes"] > 0
    assert "s_list" in run_celora("db", "changes", "--list", env=env).stdout
    # db health (its own check) names the abandoned slot once its WAL passes the threshold.
    health = run_celora("db", "health", "--json", env={**env, "CELORA_SLOT_WAL_THRESHOLD": "1024"})
    assert health.returncode == 1, health.stdout + health.stderr  # degraded
    assert "s_list" in health.stdout and "inactive" in health.stdout
    assert "celora db changes --drop s_list" in health.stdout  # the fix for a logical slot

    # A publication made before a table existed (or by hand) is used as it is, and the gap is named.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ALTER PUBLICATION s_list DROP TABLE notifications")
    partial = run_celora("db", "changes", "--slot", "s_list", env=env)
    assert partial.returncode == 0 and "does not publish notifications" in partial.stderr, partial.stderr

    refused = run_celora("db", "changes", "--drop", "s_list", env=env)
    assert refused.returncode == 12 and "--force" in refused.stderr
    dropped = run_celora("db", "changes", "--drop", "s_list", "--force", env=env)
    assert dropped.returncode == 0, dropped.stderr
    assert rows(db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_list'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM pg_publication WHERE pubname = 's_list'") == [(0,)]


class ReplicaServer(LocalServer):
    wal_level = "replica"


def test_a_server_without_logical_wal_level_gets_a_clear_refusal_naming_the_setting(pg_server):
    base = shared_tmpdir("celora-test-replica-")
    server = ReplicaServer(base / "cluster", fast=True, database="postgres", bin_dir=pg_server.bin_dir)
    try:
        server.ensure_running()
        out = run_celora("db", "changes", env={"DATABASE_URL": server.url("postgres")})
        assert out.returncode == 3, out.stderr
        assert "wal_level = logical" in out.stderr and "wal_level = replica" in out.stderr
        assert "restart" in out.stderr and "rds.logical_replication" in out.stderr
        assert "Traceback" not in out.stderr
        both = run_celora("db", "changes", "--list", "--drop", "x", env={"DATABASE_URL": server.url("postgres")})
        assert both.returncode == 64 and "give one" in both.stderr
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def test_from_start_prints_the_rows_that_existed_before_the_slot_then_only_new_changes(db):
    from celora_cli.data.changes import setup, stream

    with psycopg.connect(db, autocommit=True) as conn:
        user_id = conn.execute("INSERT INTO users (firebase_uid) VALUES ('before-slot') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO sessions (user_id, token_hash, expires_at) VALUES (%s, %s, now())",
                     (user_id, bytes(32)))
    # A one-shot run on a slot that does not exist prints the rows through a temporary slot and leaves none.
    once: list[dict] = []
    stream(settings_for(db), slot="s_once", from_start=True, emit=once.append, flush=lambda: None)
    assert sorted((c["table"], c["op"]) for c in once) == [("sessions", "read"), ("users", "read")]
    assert rows(db, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_once'") == [(0,)]
    # A persistent slot (as --setup-only or --follow make) keeps its position between one-shot runs.
    setup(settings_for(db), slot="s_start", allow_secret_columns=before_column_lists(db))
    first: list[dict] = []
    stream(settings_for(db), slot="s_start", from_start=True, emit=first.append, flush=lambda: None)
    assert sorted((c["table"], c["op"]) for c in first) == [("sessions", "read"), ("users", "read")]
    assert next(c for c in first if c["table"] == "users")["key"] == {"id": str(user_id)}
    assert all("token_hash" not in c["new"] for c in first)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")  # decoding reads only flushed WAL
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('after-slot')")
    second: list[dict] = []
    stream(settings_for(db), slot="s_start", emit=second.append, flush=lambda: None)
    assert [(c["op"], c["new"]["firebase_uid"]) for c in second] == [("insert", "after-slot")]
