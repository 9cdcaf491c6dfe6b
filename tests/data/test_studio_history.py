"""A row's history in the studio: its audit_log entries (the database's triggers wrote them), old -> new per
field, actor and time, newest first, paged by keyset; sensitive values never shown; a role that may not read
audit_log is told so, with the command that can."""

from __future__ import annotations

import re
from urllib.parse import quote

import psycopg
import pytest

from tests.support.roles import least_privilege_fixture  # noqa: F401 - the `least_privilege` fixture
from tests.support.studio_client import ORIGIN, make_client, query, seeded_database, text_of
from tests.support.studio_forms import form_values

pytestmark = pytest.mark.pgbouncer


@pytest.fixture(scope="module")
def seeded(pg_server, migrated_template, pgbouncer):
    with seeded_database(pg_server, migrated_template, pgbouncer, "t_studio_history") as (direct, pooled):
        yield direct, pooled


@pytest.fixture(scope="module")
def client(seeded):
    direct, pooled = seeded
    return make_client(pooled, direct)


def entries(html: str) -> list[dict]:
    found = []
    for match in re.finditer(r'<div class="card mb-2 celora-history-entry" data-audit-id="(\d+)" '
                             r'data-operation="(\w+)">(.*?)</table>|<div class="card mb-2 celora-history-entry" '
                             r'data-audit-id="(\d+)" data-operation="(\w+)">', html, re.S):
        body = match.group(3) or ""
        changes = {column: (text_of(old).strip(), text_of(new).strip()) for column, old, new in re.findall(
            r'<tr class="celora-change" data-column="([^"]+)">.*?celora-old">(.*?)</td>.*?celora-new">(.*?)</td>',
            body, re.S)}
        actor = re.search(r'class="celora-actor">([^<]*)<', body)
        found.append({"id": int(match.group(1) or match.group(4)), "operation": match.group(2) or match.group(5),
                      "changes": changes, "actor": actor.group(1) if actor else None})
    return found


def test_detail_and_edit_link_to_the_history_which_lists_old_to_new_newest_first(client, seeded):
    direct, _ = seeded
    (wallet_id, label), = query(direct, "SELECT id, label FROM wallets WHERE chain = 'solana'")
    form = form_values(client.get(f"/studio/wallet/edit?pk={wallet_id}").text)
    form["label"] = "Renamed <b>in</b> the studio"
    assert client.post(f"/studio/wallet/edit?pk={wallet_id}", data=form, headers={"Origin": ORIGIN}).status_code == 303
    for page in ("detail", "edit"):
        html = client.get(f"/studio/wallet/{page}?pk={wallet_id}").text
        link = re.search(r'class="celora-history[^"]*" href="([^"]+)"', html).group(1)
        assert link == f"../-/history/wallet?pk={wallet_id}"
    history = client.get(f"/studio/-/history/wallet?pk={wallet_id}")
    assert history.status_code == 200
    assert "<b>in</b>" not in history.text  # values are escaped
    listed = entries(history.text)
    expected = query(direct, "SELECT id, operation FROM audit_log WHERE table_name = 'wallets' AND row_key = "
                             "jsonb_build_object('id', %s::text) ORDER BY id DESC", (str(wallet_id),))
    assert [(e["id"], e["operation"]) for e in listed] == expected
    assert listed[0]["operation"] == "UPDATE" and listed[-1]["operation"] == "INSERT"
    assert listed[0]["changes"] == {"label": (label, "Renamed <b>in</b> the studio")}
    assert listed[0]["actor"] == "celora db studio"  # the studio's application_name
    assert "label" in listed[-1]["changes"] and listed[-1]["changes"]["label"][0] == "-"  # INSERT: no old value


def test_a_long_history_is_paged_by_keyset(client, seeded):
    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'bob@celora.io'")
    with psycopg.connect(direct) as conn:
        for n in range(30):
            conn.execute("UPDATE users SET display_name = %s WHERE id = %s", (f"Bob {n}", user_id))
    all_ids = [r[0] for r in query(direct, "SELECT id FROM audit_log WHERE table_name = 'users' AND row_key = "
                                           "jsonb_build_object('id', %s::text) ORDER BY id DESC", (str(user_id),))]
    first = client.get(f"/studio/-/history/user?pk={user_id}").text
    assert [e["id"] for e in entries(first)] == all_ids[:25]
    assert entries(first)[0]["changes"] == {"display_name": ("Bob 28", "Bob 29")}
    older = re.search(r'class="btn btn-outline-secondary celora-history-older" href="([^"]+)"', first).group(1)
    second = client.get(f"/studio/-/history/user{older.replace('&amp;', '&')}").text
    assert [e["id"] for e in entries(second)] == all_ids[25:]
    assert "celora-history-older" not in second


def test_a_deleted_rows_history_stays_reachable(client, seeded):
    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'alice@celora.io'")
    with psycopg.connect(direct) as conn:
        (notification_id,), = conn.execute("SELECT id FROM notifications WHERE user_id = %s LIMIT 1",
                                           (user_id,)).fetchall()
        conn.execute("DELETE FROM notifications WHERE id = %s", (notification_id,))
    assert client.get(f"/studio/notification/detail?pk={notification_id}").status_code == 404
    listed = entries(client.get(f"/studio/-/history/notification?pk={notification_id}").text)
    assert [e["operation"] for e in listed] == ["DELETE", "INSERT"]
    assert listed[0]["changes"]["title"][1] == "-"  # DELETE: old values only


def test_sensitive_values_never_appear(client, seeded):
    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'alice@celora.io'")
    with psycopg.connect(direct) as conn:
        (session_id,), = conn.execute("INSERT INTO sessions (user_id, token_hash, expires_at) VALUES "
                                      "(%s, sha256('history-secret'), now() + interval '1 day') RETURNING id",
                                      (user_id,)).fetchall()
        conn.execute("UPDATE sessions SET token_hash = sha256('rotated'), user_agent = 'x' WHERE id = %s",
                     (session_id,))
    (token_hash,), = query(direct, "SELECT token_hash FROM sessions WHERE id = %s", (session_id,))
    page = client.get(f"/studio/-/history/session?pk={session_id}").text
    listed = entries(page)
    assert [e["operation"] for e in listed] == ["UPDATE", "INSERT"]
    assert listed[0]["changes"] == {"user_agent": ("NULL", "x")}
    assert "token_hash" not in page and token_hash.hex() not in page


def test_tables_without_history_and_wrong_keys(client, seeded):
    direct, _ = seeded
    (pk,), = query(direct, "SELECT id FROM wallets LIMIT 1")
    assert client.get(f"/studio/-/history/wallet?pk={quote('not-a-uuid')}").status_code == 400
    assert client.get("/studio/-/history/wallet").status_code == 404
    assert client.get(f"/studio/-/history/no-such-model?pk={pk}").status_code == 404
    (audit_id,), = query(direct, "SELECT id FROM audit_log LIMIT 1")
    assert client.get(f"/studio/-/history/audit-log?pk={audit_id}").status_code == 404  # never audited
    assert "celora-history" not in client.get(f"/studio/audit-log/detail?pk={audit_id}").text
    missing = client.get("/studio/-/history/wallet?pk=00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 200 and "No entry in audit_log for this row" in text_of(missing.text)


def test_a_role_that_may_not_read_the_audit_log_is_told_so(least_privilege, pg_server):
    """As the app's role of `celora db roles` (no privilege on audit_log): a page saying why, and which command
    reads the history instead; the rest of the studio works."""
    with psycopg.connect(least_privilege.database_url) as conn:
        (user_id,), = conn.execute("INSERT INTO users (firebase_uid, email) VALUES ('carol-uid', 'carol@celora.io') "
                                   "RETURNING id").fetchall()
    app_url = least_privilege.url("app")
    studio = make_client(app_url, app_url)
    assert studio.get(f"/studio/user/detail?pk={user_id}").status_code == 200
    page = studio.get(f"/studio/-/history/user?pk={user_id}")
    assert page.status_code == 403
    text = text_of(page.text)
    assert "permission denied for table audit_log" in text
    assert f"celora db audit --table users --id {user_id}" in text and "Traceback" not in page.text
