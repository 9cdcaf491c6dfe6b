"""An honest change stream (issue 16, item 6), as a non-superuser role that owns the tables and has REPLICATION:
an existing publication is checked column by column before it is called filtered, and one sending a secret
column is refused by --setup-only unless --allow-secret-columns; a one-shot run leaves no slot behind (a
temporary slot, streamed and advanced in its own session) while --follow keeps a persistent one; what column
lists do not protect against is said, and shown true (a REPLICATION role decodes every column with
test_decoding)."""

from __future__ import annotations

import json
import signal
import time

import psycopg
import pytest

from celora_cli.data.changes import stream
from tests.data.test_changes import Follower, before_column_lists, setup_only
from tests.safety.test_guard_search_path import owner  # noqa: F401 - the fixture
from tests.support import run_celora, settings_for

SECRETS = ("sessions.token_hash", "idempotency_keys.response_body")


def query(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def slots(url: str, name: str) -> list[tuple]:
    return query(url, "SELECT slot_name, temporary FROM pg_replication_slots WHERE slot_name = %s", (name,))


@pytest.fixture
def app(owner):  # noqa: F811 - the fixture imported above
    _, database = owner
    return database("development", "dev@celora.io")


def add_session(url: str, token: bytes) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")  # decoding reads only flushed WAL
        user_id = conn.execute("SELECT id FROM users LIMIT 1").fetchone()[0]
        conn.execute("INSERT INTO sessions (user_id, token_hash, expires_at) VALUES (%s, %s, now())",
                     (user_id, token))


def test_an_existing_publication_with_secret_columns_is_named_and_refused_unless_accepted(app):
    query(app, "CREATE PUBLICATION s_pub FOR TABLE users, sessions, idempotency_keys")  # every column
    refused = run_celora("db", "changes", "--setup-only", "--slot", "s_pub", env={"DATABASE_URL": app})
    assert refused.returncode == 12, refused.stdout + refused.stderr
    for secret in SECRETS:
        assert secret in refused.stderr
    old_server = before_column_lists(app)  # before 15 the fix is an upgrade, not a column list
    assert "--allow-secret-columns" in refused.stderr
    flat = " ".join(refused.stderr.split())  # the console wraps long lines
    assert ("no column lists" if old_server else 'ALTER PUBLICATION "s_pub" SET TABLE "idempotency_keys" ("id"') \
        in flat, flat
    assert "Nothing was created" in refused.stderr and slots(app, "s_pub") == []

    as_json = run_celora("db", "changes", "--setup-only", "--slot", "s_pub", "--json", env={"DATABASE_URL": app})
    assert as_json.returncode == 12 and json.loads(as_json.stdout)["error"]["type"] == "Refused"

    accepted = run_celora("db", "changes", "--setup-only", "--slot", "s_pub", "--allow-secret-columns", "--json",
                          env={"DATABASE_URL": app})
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    result = json.loads(accepted.stdout)
    assert result["column_lists"] is False
    assert result["secret_columns_published"] == {"sessions": ["token_hash"], "idempotency_keys": ["response_body"]}
    assert "does not publish notifications, transactions, wallets" in accepted.stderr  # table by table
    assert slots(app, "s_pub") == [("s_pub", False)]

    # The stream itself reads it (the notice names the secrets) and still leaves them out of its lines.
    token = bytes(range(32))
    add_session(app, token)
    streamed = run_celora("db", "changes", "--slot", "s_pub", env={"DATABASE_URL": app})
    assert streamed.returncode == 0, streamed.stderr
    assert old_server or "sessions.token_hash" in streamed.stderr  # before 15 it was said when it was created
    assert '"sessions"' in streamed.stdout
    assert "token_hash" not in streamed.stdout and token.hex() not in streamed.stdout


def test_celoras_own_publication_passes_the_check_and_setup_says_what_it_does_not_protect(app):
    if before_column_lists(app):
        pytest.skip("PostgreSQL < 15 has no column lists: no publication passes (the next test covers it)")
    first = run_celora("db", "changes", "--setup-only", "--slot", "s_own", env={"DATABASE_URL": app})
    assert first.returncode == 0, first.stdout + first.stderr
    again = run_celora("db", "changes", "--setup-only", "--slot", "s_own", env={"DATABASE_URL": app})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "checked column by column" in again.stdout
    assert "any role with REPLICATION can create its own slot" in again.stdout
    assert "trusted relay" in again.stdout
    # A column list widened by hand is caught on the next run.
    query(app, "ALTER PUBLICATION s_own SET TABLE sessions")
    widened = run_celora("db", "changes", "--setup-only", "--slot", "s_own", env={"DATABASE_URL": app})
    assert widened.returncode == 12 and "sessions.token_hash" in widened.stderr, widened.stderr
    assert "response_body" not in widened.stderr  # idempotency_keys is no longer published at all


def test_before_postgresql_15_setup_only_refuses_the_publication_it_would_create(app):
    if not before_column_lists(app):
        pytest.skip("PostgreSQL 15+ has column lists (the tests above)")
    refused = run_celora("db", "changes", "--setup-only", "--slot", "s_old", env={"DATABASE_URL": app})
    assert refused.returncode == 12 and "as it would be created" in refused.stderr, refused.stderr
    assert "sessions.token_hash" in refused.stderr and "no column lists" in refused.stderr
    assert slots(app, "s_old") == [] and query(app, "SELECT count(*) FROM pg_publication") == [(0,)]
    accepted = run_celora("db", "changes", "--setup-only", "--allow-secret-columns", "--slot", "s_old",
                          env={"DATABASE_URL": app})
    assert accepted.returncode == 0 and "SENDS" in accepted.stdout, accepted.stdout + accepted.stderr


def test_a_replication_role_decodes_every_column_whatever_the_publication(app):
    """Why the README says column lists are not a boundary against a REPLICATION role: its own slot with
    test_decoding shows token_hash, though it may not SELECT it."""
    assert run_celora("db", "changes", *setup_only(app), "--slot", "s_limit", env={"DATABASE_URL": app}).returncode == 0
    role = query(app, "SELECT current_user")[0][0]
    query(app, f"REVOKE SELECT ON sessions FROM {role}")  # even the owner, stripped of SELECT
    with psycopg.connect(app, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT token_hash FROM sessions")
    # (A temporary slot is dropped on any error in its session: the refused SELECT ran on another one.)
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot('s_own_plugin', 'test_decoding', true)")
        add_session(app, b"\x42" * 32)
        decoded = " ".join(row[0] for row in conn.execute(
            "SELECT data FROM pg_logical_slot_get_changes('s_own_plugin', NULL, NULL)"))
    assert "token_hash[bytea]:'\\x" + "42" * 32 in decoded


def test_a_one_shot_run_leaves_no_slot_and_streams_through_its_temporary_one(app):
    before = run_celora("db", "changes", "--slot", "s_once", env={"DATABASE_URL": app})
    assert before.returncode == 0, before.stderr
    assert "temporary slot" in before.stderr and "--setup-only --slot s_once" in before.stderr
    assert slots(app, "s_once") == []

    # While it runs: the slot is temporary; what is committed after it was made is streamed, and the advance (in
    # the creating session, the only one that may use it) works.
    seen: list[dict] = []
    during: list[list[tuple]] = []

    def ready(where: str) -> None:
        during.append(slots(app, "s_core"))
        add_session(app, b"\x01" * 32)

    result = stream(settings_for(app), slot="s_core", emit=seen.append, flush=lambda: None, on_ready=ready)
    assert during == [[("s_core", True)]]
    assert [(c["table"], c["op"]) for c in seen] == [("sessions", "insert")] and result.position is not None
    assert slots(app, "s_core") == []


def test_follow_keeps_a_persistent_slot(app):
    follower = Follower(app, "--follow", "--slot", "s_kept")
    try:
        deadline = time.monotonic() + 60
        while not slots(app, "s_kept"):
            assert follower.process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        assert follower.stop(signal.SIGINT) == 130
    assert slots(app, "s_kept") == [("s_kept", False)]


def test_bad_names_name_their_flag_and_the_secrets_flag_belongs_to_setup(app):
    drop = run_celora("db", "changes", "--drop", "Bad Slot", env={"DATABASE_URL": app})
    assert drop.returncode == 64, drop.stdout + drop.stderr
    assert "--drop 'Bad Slot'" in drop.stderr and "--slot" not in drop.stderr
    slot = run_celora("db", "changes", "--slot", "Bad Slot", env={"DATABASE_URL": app})
    assert slot.returncode == 64 and "--slot 'Bad Slot'" in slot.stderr
    misplaced = run_celora("db", "changes", "--allow-secret-columns", env={"DATABASE_URL": app})
    assert misplaced.returncode == 64 and "--setup-only" in misplaced.stderr


def test_health_names_an_attached_slot_whose_consumer_is_behind_in_json_and_metrics(app):
    """Retained WAL is weighed for every slot, not only inactive ones: a consumer that is attached but does not
    read holds WAL just the same."""
    env = {"DATABASE_URL": app, "CELORA_SLOT_WAL_THRESHOLD": "1kB"}
    with psycopg.connect(app, autocommit=True) as holder:  # the "consumer": attached, never reading
        holder.execute("SELECT pg_create_logical_replication_slot('s_behind', 'pgoutput', true)")
        query(app, "INSERT INTO users (firebase_uid) SELECT 'bulk-' || g FROM generate_series(1, 200) g")
        health = run_celora("db", "health", "--json", env=env)
        metrics = run_celora("db", "health", "--format", "prometheus", env=env)
        calm = run_celora("db", "health", "--json", env={"DATABASE_URL": app})  # the 1GB default
    assert health.returncode == 1, health.stdout + health.stderr
    report = json.loads(health.stdout)
    slot = next(s for s in report["replication"]["slots"] if s["name"] == "s_behind")
    assert slot["active"] is True and slot["retained_bytes"] > 1024 and slot["over_threshold"] is True
    finding = next(p for p in report["problems"] if "'s_behind'" in p)
    assert "CELORA_SLOT_WAL_THRESHOLD is 1.0 kB" in finding and "consumer is attached" in finding
    assert 'celora_replication_slot_over_threshold{slot="s_behind",slot_type="logical"} 1.0' in metrics.stdout
    assert 'celora_replication_slot_retained_bytes{slot="s_behind",slot_type="logical"}' in metrics.stdout
    calm_slot = next(s for s in json.loads(calm.stdout)["replication"]["slots"] if s["name"] == "s_behind")
    assert calm_slot["over_threshold"] is False
