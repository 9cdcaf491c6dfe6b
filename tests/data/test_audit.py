"""The audit log on a real PostgreSQL: the triggers of migration 20261126170000 record who changed what (secrets
left out), `celora db audit` shows it, auditing is skipped only explicitly and only by the owner, and pruning
deletes old entries in batches behind the destructive-action guard."""

from __future__ import annotations

import hashlib
import json
import os

import psycopg
import pytest

from celora_cli.data.audit import prune
from celora_cli.data.seed.apply import seed
from celora_cli.data.seed.volume import generate_volume
from celora_cli.db.models import Base
from celora_cli.db.models.audit_log import AUDIT_FUNCTION, sensitive_columns
from tests.support import REPO, admin_execute, db_name, run_celora, settings_for
from tests.support.roles import least_privilege_fixture  # noqa: F401


def rows(url: str, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def seeded(migrated_db) -> str:
    seed(settings_for(migrated_db), REPO / "fixtures")
    return migrated_db


def test_a_label_change_records_one_row_with_actor_and_old_new_and_db_audit_shows_it(seeded, pgbouncer):
    wallet_id, old_label = rows(seeded, "SELECT id, label FROM wallets WHERE label IS NOT NULL ORDER BY id LIMIT 1")[0]
    before = rows(seeded, "SELECT count(*) FROM audit_log")[0][0]
    with psycopg.connect(seeded) as conn:
        conn.execute("SET LOCAL celora.actor = 'user:alice@example.com'")
        conn.execute("UPDATE wallets SET label = 'Cold storage' WHERE id = %s", (wallet_id,))
    new_rows = rows(seeded, "SELECT table_name, operation, row_key, old_values, new_values, actor FROM audit_log "
                    "WHERE id > (SELECT max(id) FROM audit_log) - 5 ORDER BY id")
    assert rows(seeded, "SELECT count(*) FROM audit_log")[0][0] == before + 1
    assert new_rows[-1] == ("wallets", "UPDATE", {"id": str(wallet_id)}, {"label": old_label},
                            {"label": "Cold storage"}, "user:alice@example.com")

    env = {"DATABASE_URL": seeded}
    shown = run_celora("db", "audit", "--table", "wallets", "--id", str(wallet_id), env=env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "UPDATE wallets" in lines[0] and "by user:alice@example.com" in lines[0]  # newest first
    assert f'    label: "{old_label}" -> "Cold storage"' == lines[1]
    assert any("INSERT wallets" in line for line in lines[2:])  # the seed's insert, older

    # Reading needs no session of its own: through PgBouncer (transaction pooling) as well.
    pooled = {"DATABASE_URL": pgbouncer(db_name(seeded)), "DIRECT_DATABASE_URL": seeded}
    as_json = json.loads(run_celora("db", "audit", "--table", "wallets", "--id", str(wallet_id), "--actor",
                                    "user:alice@example.com", "--json", env=pooled).stdout)
    assert as_json["ok"] is True and as_json["count"] == 1
    assert as_json["entries"][0]["old"] == {"label": old_label}
    assert as_json["entries"][0]["new"] == {"label": "Cold storage"}


def test_every_column_the_models_mark_sensitive_is_excluded_by_the_triggers(migrated_db):
    marked = sensitive_columns(Base.metadata)
    assert marked == {"sessions": ("token_hash",), "idempotency_keys": ("response_body",)}
    arguments = dict(rows(migrated_db, """
        SELECT c.relname, encode(t.tgargs, 'escape') FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE p.proname = %s""", (AUDIT_FUNCTION,)))
    for table, columns in marked.items():
        excluded = arguments[table].split("\\000")[1:]  # tgargs: NUL-terminated; the first is the primary key
        assert set(columns) <= set(excluded), (table, arguments[table])
    assert "rate_limits" not in arguments and "audit_log" not in arguments


def test_no_token_hash_or_response_body_ever_reaches_the_audit_log(seeded):
    token_hash = hashlib.sha256(b"session-token").digest()
    new_hash = hashlib.sha256(b"rotated-token").digest()
    with psycopg.connect(seeded) as conn:
        user_id = conn.execute("SELECT id FROM users ORDER BY id LIMIT 1").fetchone()[0]
        session_id = conn.execute(
            "INSERT INTO sessions (user_id, token_hash, expires_at) VALUES (%s, %s, now() + interval '1 day') "
            "RETURNING id", (user_id, token_hash)).fetchone()[0]
        conn.execute("UPDATE sessions SET token_hash = %s WHERE id = %s", (new_hash, session_id))  # nothing else
        conn.execute("UPDATE sessions SET user_agent = 'curl' WHERE id = %s", (session_id,))
        conn.execute("INSERT INTO idempotency_keys (key, user_id, method, path, request_fingerprint, response_status, "
                     "response_body, expires_at) VALUES ('k1', %s, 'POST', '/pay', %s, 200, "
                     "'{\"access_token\": \"secret-xyz\"}', now() + interval '1 day')", (user_id, "a" * 64))
        conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,))
    logged = rows(seeded, "SELECT operation, old_values, new_values FROM audit_log WHERE table_name = 'sessions' "
                  "ORDER BY id")
    assert [op for op, _, _ in logged] == ["INSERT", "UPDATE", "DELETE"]  # the hash-only update records nothing
    assert logged[1][1:] == ({"user_agent": None}, {"user_agent": "curl"})
    everything = " ".join(str(r) for r in rows(seeded, "SELECT * FROM audit_log"))
    for secret in (token_hash.hex(), new_hash.hex(), "secret-xyz", "token_hash", "response_body"):
        assert secret not in everything


def test_actor_falls_back_to_application_name_then_the_role(migrated_db):
    with psycopg.connect(migrated_db, application_name="indexer") as conn:
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('by-app')")
    with psycopg.connect(migrated_db, application_name="") as conn:
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('by-role')")
    logged = rows(migrated_db, "SELECT new_values->>'firebase_uid', actor, db_role, application_name FROM audit_log "
                  "ORDER BY id")
    assert logged == [("by-app", "indexer", "celora", "indexer"), ("by-role", "celora", "celora", None)]
    with psycopg.connect(migrated_db, application_name="ops") as conn:
        conn.execute("TRUNCATE users CASCADE")  # one entry per table emptied, cascades included
    truncated = rows(migrated_db, "SELECT table_name, row_key, old_values, actor FROM audit_log "
                     "WHERE operation = 'TRUNCATE' ORDER BY table_name")
    assert truncated == [(t, {}, None, "ops") for t in ("idempotency_keys", "notifications", "sessions",
                                                        "transactions", "users", "wallets")]


def test_skipping_is_explicit_per_transaction_and_refused_to_a_non_owner(pg_server, migrated_db):
    with psycopg.connect(migrated_db) as conn:
        conn.execute("SET LOCAL celora.audit = 'off'")  # the owner (the migration role) may
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('bulk')")
    with psycopg.connect(migrated_db) as conn:
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('after')")  # SET LOCAL ended with its transaction
    assert rows(migrated_db, "SELECT new_values->>'firebase_uid' FROM audit_log") == [("after",)]

    role = f"audit_app_{os.getpid()}"
    admin_execute(pg_server, f"CREATE ROLE {role} LOGIN; GRANT INSERT, SELECT ON users, audit_log TO {role}; "
                  f"GRANT USAGE ON SEQUENCE audit_log_id_seq TO {role}", db_name(migrated_db))
    try:
        app_url = migrated_db.replace("celora@", f"{role}@")
        with psycopg.connect(app_url) as conn:
            conn.execute("INSERT INTO users (firebase_uid) VALUES ('by-app-role')")  # audited like anyone's
        with psycopg.connect(app_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege,
                                                             match="reserved for the owner of table users"):
            conn.execute("SET LOCAL celora.audit = 'off'")
            conn.execute("INSERT INTO users (firebase_uid) VALUES ('hidden')")
        assert rows(migrated_db, "SELECT count(*) FROM users WHERE firebase_uid = 'hidden'") == [(0,)]
        assert rows(migrated_db, "SELECT db_role FROM audit_log WHERE new_values->>'firebase_uid' = 'by-app-role'") \
            == [(role,)]
        # The volume seed run by such a role is audited, not refused: it asks to skip only as the owner.
        admin_execute(pg_server, f"GRANT INSERT, SELECT ON wallets, transactions, notifications TO {role}",
                      db_name(migrated_db))
        with psycopg.connect(app_url) as conn:
            assert generate_volume(conn, users=2, seed=11)["users"] == 2
        assert rows(migrated_db, "SELECT count(*) FROM audit_log WHERE table_name = 'users' AND db_role = %s",
                    (role,)) == [(3,)]
    finally:
        admin_execute(pg_server, f"DROP OWNED BY {role}; DROP ROLE {role}", db_name(migrated_db))


def test_the_volume_seed_skips_auditing_and_the_fixtures_in_its_transaction_do_not(migrated_db):
    result = seed(settings_for(migrated_db), REPO / "fixtures", volume_users=5, volume_seed=3)
    assert result.volume["users"] == 5
    audited_users = rows(migrated_db, "SELECT count(*) FROM audit_log WHERE table_name = 'users'")[0][0]
    assert audited_users == result.tables["users"].created == 2  # the fixtures' users only
    with psycopg.connect(migrated_db) as conn:
        conn.execute("UPDATE users SET display_name = 'x' WHERE email LIKE %s", ("%volume.celora.test",))
    assert rows(migrated_db, "SELECT count(*) FROM audit_log WHERE operation = 'UPDATE'") == [(5,)]


def test_prune_deletes_old_entries_in_batches_after_confirmation(seeded):
    total = rows(seeded, "SELECT count(*) FROM audit_log")[0][0]
    admin = psycopg.connect(seeded, autocommit=True)
    admin.execute("UPDATE audit_log SET changed_at = now() - interval '100 days' WHERE id IN "
                  "(SELECT id FROM audit_log ORDER BY id LIMIT 12)")
    admin.close()
    env = {"DATABASE_URL": seeded}

    refused = run_celora("db", "audit", "--prune-older-than", "90", env=env)
    assert refused.returncode == 12, refused.stderr
    assert "--force" in refused.stderr and rows(seeded, "SELECT count(*) FROM audit_log")[0][0] == total

    result = prune(settings_for(seeded), older_than_days=90, batch_size=5, confirm=lambda plan: None)
    assert (result.deleted, result.batches) == (12, 3)
    assert rows(seeded, "SELECT count(*) FROM audit_log")[0][0] == total - 12
    again = run_celora("db", "audit", "--prune-older-than", "90", "--force", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["deleted"] == 0


def test_an_unknown_table_or_a_bad_since_is_a_clear_error(migrated_db):
    env = {"DATABASE_URL": migrated_db}
    unknown = run_celora("db", "audit", "--table", "rate_limits", env=env)
    assert unknown.returncode == 3 and "not an audited table" in unknown.stderr and "Traceback" not in unknown.stderr
    bad = run_celora("db", "audit", "--since", "yesterday-ish", env=env)
    assert bad.returncode == 64 and "--since" in bad.stderr


# -- as the app's own role (a login in the celora_app group, after `celora db roles --apply`) -------------------

QUIET = "set_config('celora.audit', 'off', true) IS NOT NULL"  # turns auditing off in the middle of a statement


def _refused_or_recorded(roles, sql: str, *, copy_rows=None) -> None:
    """Run `sql` as the app login: either the database refuses it (nothing changed) or an audit row shows it."""
    before = rows(roles.database_url, "SELECT count(*) FROM audit_log")[0][0]
    with roles.connect("app") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege,
                                                     match="reserved for the owner"):
        if copy_rows is None:
            conn.execute(sql)
        else:
            with conn.cursor().copy(sql) as copy:
                for row in copy_rows:
                    copy.write_row(row)
    assert rows(roles.database_url, "SELECT count(*) FROM audit_log")[0][0] == before
    assert rows(roles.database_url, "SELECT count(*) FROM users WHERE firebase_uid LIKE %s", ("quiet%",)) == [(0,)]


def test_the_app_role_cannot_turn_auditing_off_before_or_inside_a_statement(least_privilege):
    roles = least_privilege
    user_id = rows(roles.database_url, "INSERT INTO users (firebase_uid) VALUES ('target') RETURNING id")[0][0]
    with roles.connect("app") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SET LOCAL celora.audit = 'off'")
        conn.execute("UPDATE users SET display_name = 'hidden' WHERE id = %s", (user_id,))
    _refused_or_recorded(roles, f"UPDATE users SET display_name = 'hidden' WHERE id = '{user_id}' AND {QUIET}")
    _refused_or_recorded(roles, f"INSERT INTO users (firebase_uid) VALUES (CASE WHEN {QUIET} THEN 'quiet-v' END)")
    _refused_or_recorded(roles, f"DELETE FROM users WHERE id = '{user_id}' AND {QUIET}")  # cascades as owner
    _refused_or_recorded(roles, f"COPY users (firebase_uid) FROM STDIN WHERE {QUIET}", copy_rows=[("quiet-c",)])
    with roles.connect("app") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(f"CREATE FUNCTION pg_temp.quiet() RETURNS boolean LANGUAGE sql AS $$ SELECT {QUIET} $$")
        conn.execute(f"UPDATE users SET display_name = 'hidden' WHERE id = '{user_id}' AND pg_temp.quiet()")
    assert rows(roles.database_url, "SELECT display_name FROM users WHERE id = %s", (user_id,)) == [(None,)]

    # Off and on again inside the statement: the rows' events fire at its end, with auditing on: recorded.
    with roles.connect("app") as conn:
        conn.execute(f"UPDATE users SET display_name = 'seen' WHERE id = %s AND {QUIET} "
                     "AND set_config('celora.audit', '', true) IS NOT NULL", (user_id,))
    assert rows(roles.database_url, "SELECT new_values, db_role FROM audit_log WHERE operation = 'UPDATE' AND "
                "row_key = %s", (json.dumps({"id": str(user_id)}),)) == [({"display_name": "seen"},
                                                                          roles.logins["app"])]


def test_the_app_role_cannot_write_the_audit_log_nor_touch_its_triggers(least_privilege):
    roles = least_privilege
    for sql in ("INSERT INTO audit_log (table_name, operation, row_key, actor, db_role, transaction_id) "
                "VALUES ('users', 'INSERT', '{}', 'forged', 'forged', 1)",
                "UPDATE audit_log SET actor = 'forged'", "DELETE FROM audit_log", "TRUNCATE audit_log",
                "SELECT * FROM audit_log", "INSERT INTO audit_seal (sealed_by, kind, after_id, last_id, entries, "
                "digests, hash) VALUES ('x', 'seal', 0, 0, 0, '', '')",
                "DROP TRIGGER trg_users_audit ON users", "ALTER TABLE users DISABLE TRIGGER trg_users_audit",
                "ALTER TABLE users DISABLE TRIGGER ALL",
                # Forging through the trigger function on a table of its own: no EXECUTE on it.
                "CREATE TEMP TABLE users (id uuid); CREATE TRIGGER forge AFTER INSERT ON pg_temp.users FOR EACH ROW "
                "EXECUTE FUNCTION celora_audit_row('id')"):
        with roles.connect("app") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql)
    # A temporary table named audit_log does not catch the trigger's writes (pg_temp is searched last).
    with roles.connect("app") as conn:
        conn.execute("CREATE TEMP TABLE audit_log (LIKE pg_catalog.pg_class)")
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('temp-shadow')")
    assert rows(roles.database_url, "SELECT db_role FROM audit_log WHERE new_values->>'firebase_uid' = "
                "'temp-shadow'") == [(roles.logins["app"],)]


def test_the_owners_bulk_load_still_skips_auditing(least_privilege):
    roles = least_privilege
    with roles.connect("migrator") as conn:
        assert generate_volume(conn, users=3, seed=5)["users"] == 3
    assert rows(roles.database_url, "SELECT count(*) FROM audit_log WHERE table_name = 'users'") == [(0,)]


# -- tamper evidence: --seal and --verify ------------------------------------------------------------------------

def test_verify_passes_after_a_seal_and_names_the_entry_the_owner_edited(seeded):
    env = {"DATABASE_URL": seeded}
    sealed = run_celora("db", "audit", "--seal", "--json", env=env)
    assert sealed.returncode == 0, sealed.stderr
    link = json.loads(sealed.stdout)
    total = rows(seeded, "SELECT count(*), max(id) FROM audit_log")[0]
    assert (link["entries"], link["last_id"]) == total and len(link["hash"]) == 64
    assert run_celora("db", "audit", "--verify", env=env).returncode == 0

    with psycopg.connect(seeded) as conn:  # audited after the seal: unsealed, not a problem
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('after-seal')")
    second = json.loads(run_celora("db", "audit", "--seal", "--json", env=env).stdout)
    assert (second["after_id"], second["entries"]) == (link["last_id"], 1)
    verified = json.loads(run_celora("db", "audit", "--verify", "--json", env=env).stdout)
    assert (verified["seals"], verified["entries"], verified["unsealed"]) == (2, total[0] + 1, 0)
    assert verified["last_hash"] == second["hash"]

    edited, removed = rows(seeded, "SELECT id FROM audit_log ORDER BY id LIMIT 2 OFFSET 3")
    with psycopg.connect(seeded) as conn:  # the owner rewrites history
        conn.execute("UPDATE audit_log SET actor = 'someone else' WHERE id = %s", edited)
        conn.execute("DELETE FROM audit_log WHERE id = %s", removed)
    tampered = run_celora("db", "audit", "--verify", env=env)
    assert tampered.returncode == 17, tampered.stdout + tampered.stderr
    assert f"entry {edited[0]} was changed after seal #" in tampered.stderr and "Traceback" not in tampered.stderr
    problems = json.loads(run_celora("db", "audit", "--verify", "--json", env=env).stdout)["error"]["problems"]
    assert [(p["entry_id"], p["problem"]) for p in problems] == [(edited[0], "changed"), (removed[0], "removed")]


def test_an_entry_inserted_into_a_sealed_range_and_a_rewritten_seal_are_named(seeded):
    env = {"DATABASE_URL": seeded}
    with psycopg.connect(seeded) as conn:  # a rolled-back write leaves a gap in the ids
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('rolled-back')")
        gap = conn.execute("SELECT max(id) FROM audit_log").fetchone()[0]
        conn.rollback()
        conn.execute("INSERT INTO users (firebase_uid) VALUES ('kept')")
    assert run_celora("db", "audit", "--seal", env=env).returncode == 0
    with psycopg.connect(seeded) as conn:  # the owner slips an entry into the sealed range
        conn.execute("INSERT INTO audit_log (id, table_name, operation, row_key, actor, db_role, transaction_id) "
                     "VALUES (%s, 'users', 'INSERT', '{}', 'forged', 'forged', 1)", (gap,))
    problems = json.loads(run_celora("db", "audit", "--verify", "--json", env=env).stdout)["error"]["problems"]
    assert [(p["entry_id"], p["problem"]) for p in problems] == [(gap, "inserted")]
    with psycopg.connect(seeded) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = %s", (gap,))
    assert run_celora("db", "audit", "--verify", env=env).returncode == 0
    with psycopg.connect(seeded) as conn:
        conn.execute("UPDATE audit_seal SET hash = sha256(hash)")  # the seal itself rewritten
    rewritten = run_celora("db", "audit", "--verify", env=env)
    assert rewritten.returncode == 17 and "seal #1 itself was changed" in rewritten.stderr


def test_pruning_is_recorded_in_the_chain_and_verify_still_passes(seeded):
    env = {"DATABASE_URL": seeded}
    assert run_celora("db", "audit", "--seal", env=env).returncode == 0
    with psycopg.connect(seeded) as conn:
        conn.execute("UPDATE audit_log SET changed_at = now() - interval '100 days' WHERE id IN "
                     "(SELECT id FROM audit_log ORDER BY id LIMIT 4)")
    assert run_celora("db", "audit", "--verify", env=env).returncode == 17  # changed_at is part of an entry
    assert run_celora("db", "audit", "--prune-older-than", "90", "--force", env=env).returncode == 0
    verified = run_celora("db", "audit", "--verify", "--json", env=env)
    assert verified.returncode == 0, verified.stdout
    assert rows(seeded, "SELECT kind FROM audit_seal ORDER BY id") == [("seal",), ("prune",)]


def test_since_beyond_the_limit_and_an_id_that_is_not_a_uuid_are_usage_errors(migrated_db):
    env = {"DATABASE_URL": migrated_db}
    for since in ("99999999999d", "1000000d"):
        result = run_celora("db", "audit", "--since", since, env=env)
        assert result.returncode == 64 and "100,000 days" in result.stderr, result.stderr
    not_uuid = run_celora("db", "audit", "--id", "not-a-uuid", "--json", env=env)
    assert not_uuid.returncode == 64 and json.loads(not_uuid.stdout)["error"]["type"] == "UsageError"
    upper = run_celora("db", "audit", "--id", "5F0C2A4E8D1B4C3E9A570D2A3B4C5D6E", env=env)  # any uuid spelling
    assert upper.returncode == 0 and "5f0c2a4e-8d1b-4c3e-9a57-0d2a3b4c5d6e" in upper.stdout


def test_reading_the_log_as_the_apps_role_is_a_clear_error_and_the_readonly_role_may(least_privilege):
    roles = least_privilege
    as_app = run_celora("db", "audit", "--json", env={"DATABASE_URL": roles.url("app")})
    assert as_app.returncode == 13, as_app.stdout + as_app.stderr
    error = json.loads(as_app.stdout)["error"]
    assert error["sqlstate"] == "42501" and "DIRECT_DATABASE_URL" in error["hint"]
    as_reader = run_celora("db", "audit", "--json", env={"DATABASE_URL": roles.url("app"),
                                                         "DIRECT_DATABASE_URL": roles.url("readonly")})
    assert as_reader.returncode == 0 and json.loads(as_reader.stdout)["ok"] is True
    # The migration role seals; the app's role may not.
    sealed = run_celora("db", "audit", "--seal", env={"DATABASE_URL": roles.url("migrator")})
    assert sealed.returncode == 0, sealed.stderr
    refused = run_celora("db", "audit", "--seal", env={"DATABASE_URL": roles.url("app")})
    assert refused.returncode == 13 and "Only the migration role" in refused.stderr, refused.stderr
