"""Edits that cannot overwrite someone else's change: the edit page and the inline-edit popover carry the hashes
of the values they loaded; a save over a newer change is refused with both values shown and nothing written, for
every model (uuid and composite primary keys alike)."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import psycopg
import pytest

from tests.support.studio_client import ORIGIN, csrf, make_client, query, seeded_database, text_of
from tests.support.studio_forms import form_values

pytestmark = pytest.mark.pgbouncer


@pytest.fixture(scope="module")
def seeded(pg_server, migrated_template, pgbouncer):
    """The fixtures, plus a row in each table the seed leaves empty (sessions, idempotency keys, rate limits)."""
    with seeded_database(pg_server, migrated_template, pgbouncer, "t_studio_conflicts") as (direct, pooled):
        with psycopg.connect(direct) as conn:
            (user_id,), = conn.execute("SELECT id FROM users WHERE email = 'alice@celora.io'").fetchall()
            conn.execute("INSERT INTO sessions (user_id, token_hash, expires_at) "
                         "VALUES (%s, sha256('conflict-secret'), now() + interval '1 day')", (user_id,))
            conn.execute("INSERT INTO idempotency_keys (key, method, path, request_fingerprint, response_status, "
                         "response_body, expires_at) VALUES ('k1', 'POST', '/x', repeat('a', 64), 200, "
                         "'{\"secret\": 1}', now() + interval '1 day')")
            conn.execute("INSERT INTO rate_limits (key, window_start, window_seconds, count, expires_at) "
                         "VALUES ('ip:1.2.3.4', date_trunc('minute', now()), 60, 3, now() + interval '1 hour')")
        yield direct, pooled


@pytest.fixture(scope="module")
def client(seeded):
    direct, pooled = seeded
    return make_client(pooled, direct)


def edit(client, key: str, pk: str, form: dict):
    return client.post(f"/studio/{key}/edit?pk={quote(pk)}", data=form, headers={"Origin": ORIGIN})


def test_a_save_over_another_sessions_change_is_refused_and_theirs_stays(client, seeded):
    direct, _ = seeded
    (wallet_id,), = query(direct, "SELECT id FROM wallets WHERE chain = 'solana'")
    form = form_values(client.get(f"/studio/wallet/edit?pk={wallet_id}").text)
    assert "_celora_loaded" in form
    with psycopg.connect(direct) as other:  # another session saves first
        other.execute("UPDATE wallets SET label = 'theirs' WHERE id = %s", (wallet_id,))
    form["label"] = "mine"
    refused = edit(client, "wallet", str(wallet_id), form)
    assert refused.status_code == 422
    conflict = re.search(r'<tr class="celora-conflict-field" data-field="label">.*?</tr>', refused.text, re.S)
    assert conflict is not None, text_of(refused.text)[-1500:]
    assert "theirs" in text_of(conflict.group(0)) and "mine" in text_of(conflict.group(0))
    assert "Nothing was saved" in text_of(refused.text)
    assert query(direct, "SELECT label FROM wallets WHERE id = %s", (wallet_id,)) == [("theirs",)]

    # The form that came back compares with the row as it is now: saving it again replaces theirs, on purpose.
    again = form_values(refused.text)
    assert again["label"] == "mine"
    saved = edit(client, "wallet", str(wallet_id), again)
    assert saved.status_code == 303, text_of(saved.text)[-1500:]
    assert query(direct, "SELECT label FROM wallets WHERE id = %s", (wallet_id,)) == [("mine",)]


def test_a_change_to_a_field_the_form_did_not_load_is_no_conflict(client, seeded):
    direct, _ = seeded
    (session_id,), = query(direct, "SELECT id FROM sessions")
    form = form_values(client.get(f"/studio/session/edit?pk={session_id}").text)
    assert "token_hash" not in form  # sensitive: never in a form, never compared
    with psycopg.connect(direct) as other:
        other.execute("UPDATE sessions SET token_hash = sha256('rotated') WHERE id = %s", (session_id,))
    form["user_agent"] = "studio-test"
    response = edit(client, "session", str(session_id), form)
    assert response.status_code == 303, text_of(response.text)[-1500:]
    assert query(direct, "SELECT user_agent, token_hash = sha256('rotated') FROM sessions WHERE id = %s",
                 (session_id,)) == [("studio-test", True)]


def test_a_save_without_the_loaded_values_is_refused(client, seeded):
    direct, _ = seeded
    (wallet_id, label), = query(direct, "SELECT id, label FROM wallets WHERE chain = 'ethereum' LIMIT 1")
    form = form_values(client.get(f"/studio/wallet/edit?pk={wallet_id}").text)
    del form["_celora_loaded"]
    form["label"] = "blind write"
    response = edit(client, "wallet", str(wallet_id), form)
    assert response.status_code == 422
    assert "does not say which values it was loaded with" in text_of(response.text)
    assert query(direct, "SELECT label FROM wallets WHERE id = %s", (wallet_id,)) == [(label,)]


def test_inline_edit_refuses_a_cell_changed_meanwhile(client, seeded):
    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'bob@celora.io'")
    url = f"/studio/_api/user/inline-edit?pk={user_id}&field=display_name"
    popover = form_values(client.get(url).text)
    assert "_celora_loaded" in popover
    with psycopg.connect(direct) as other:
        other.execute("UPDATE users SET display_name = 'Their Bob' WHERE id = %s", (user_id,))
    response = client.post(url, data={**popover, "display_name": "My Bob"},
                           headers={"Origin": ORIGIN, "X-CSRFToken": csrf(client)})
    assert response.status_code == 422
    assert "Their Bob" in text_of(response.text) and "My Bob" in text_of(response.text)
    assert query(direct, "SELECT display_name FROM users WHERE id = %s", (user_id,)) == [("Their Bob",)]


EDITABLE = ["idempotency-key", "notification", "rate-limit", "session", "transaction", "user", "wallet"]


def test_every_editable_model_is_covered(client):
    from celora_cli.data.studio.views import build_views
    from celora_cli.db.models import Base

    assert sorted(view.key for view in build_views(Base, read_only=False) if not view.read_only) == EDITABLE


@pytest.mark.parametrize("key", EDITABLE)
def test_every_model_saves_an_unchanged_form_and_refuses_a_stale_one(client, seeded, key):
    """Generic over the mappers: the hashes are stable for every column type (no false conflict), and every
    field the form loaded is compared under the row lock (a stale hash is caught), uuid and composite keys alike."""
    direct, _ = seeded
    listing = client.get(f"/studio/{key}/list").text
    pk = re.search(r'data-sa-pk="([^"]+)"', listing).group(1)
    page = client.get(f"/studio/{key}/edit?pk={quote(pk)}")
    assert page.status_code == 200
    form = form_values(page.text)
    loaded = json.loads(form["_celora_loaded"])
    assert loaded, key
    stale = {**form, "_celora_loaded": json.dumps({name: "0" * 24 for name in loaded})}
    refused = edit(client, key, pk, stale)
    assert refused.status_code == 422, text_of(refused.text)[-800:]
    assert {m for m in re.findall(r'class="celora-conflict-field" data-field="([^"]+)"', refused.text)} == set(loaded)
    saved = edit(client, key, pk, form)
    assert saved.status_code == 303, (key, text_of(saved.text)[-1500:])
