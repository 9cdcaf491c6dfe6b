"""The studio's SQL console over HTTP: reads page through a cursor, writes only in a writable studio, PostgreSQL's
own message on error, the statement timeout, masking of sensitive columns, and the same guard as every page."""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.support.studio_client import ORIGIN, csrf, make_client, query, seeded_database, text_of

pytestmark = pytest.mark.pgbouncer

CONSOLE = "/studio/-/console"


@pytest.fixture(scope="module")
def seeded(pg_server, migrated_template, pgbouncer):
    with seeded_database(pg_server, migrated_template, pgbouncer, "t_studio_console") as (direct, pooled):
        yield direct, pooled


@pytest.fixture(scope="module")
def writable(seeded):
    direct, pooled = seeded
    return make_client(pooled, direct)


@pytest.fixture(scope="module")
def read_only(seeded):
    direct, pooled = seeded
    return make_client(pooled, direct, read_only=True, console_timeout=0.5)


def run(client, sql: str, **fields):
    return client.post(CONSOLE, data={"sql": sql, "csrftoken": csrf(client), **fields},
                       headers={"Origin": ORIGIN})


def cells(html: str) -> list[list[str]]:
    table = re.search(r'<table class="[^"]*celora-console-result.*?</table>', html, re.S)
    if table is None:
        return []
    body = table.group(0).split("<tbody>", 1)[1]
    return [[text_of(cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_the_console_is_in_the_menu_and_a_select_is_answered(read_only, seeded):
    direct, _ = seeded
    home = read_only.get("/studio/")
    assert CONSOLE in home.text
    page = run(read_only, "SELECT email, display_name FROM users ORDER BY email")
    assert page.status_code == 200, text_of(page.text)[-800:]
    assert cells(page.text) == [[email, name] for email, name in
                                query(direct, "SELECT email, display_name FROM users ORDER BY email")]


def test_results_are_paged_and_the_page_size_is_bounded(read_only):
    first = run(read_only, "SELECT g FROM generate_series(1, 60) AS g", page_size="25")
    assert [row[0] for row in cells(first.text)] == [str(n) for n in range(1, 26)]
    assert "Rows 1-25 (more follow)" in text_of(first.text) and "celora-console-next" in first.text
    third = run(read_only, "SELECT g FROM generate_series(1, 60) AS g", page_size="25", offset="50")
    assert [row[0] for row in cells(third.text)] == [str(n) for n in range(51, 61)]
    assert "celora-console-next" not in third.text and "celora-console-previous" in third.text
    assert run(read_only, "SELECT 1", page_size="100000").status_code == 400
    assert run(read_only, "SELECT 1", offset="99999999").status_code == 400
    assert run(read_only, "SELECT 1", offset="-1").status_code == 400


def test_the_next_page_form_carries_the_statement_as_typed(read_only):
    from tests.support.studio_forms import FormReader

    statement = "SELECT g\n  FROM generate_series(1, 30) AS g -- <b>&amp;\nWHERE g > 0"
    page = run(read_only, statement, page_size="25").text
    form = re.search(r'<form method="POST" action="" class="d-inline">.*?</form>', page, re.S).group(0)
    reader = FormReader()
    reader.feed(form)
    assert reader.values["sql"].removeprefix("\n") == statement and reader.values["offset"] == "25"
    nxt = run(read_only, reader.values["sql"].removeprefix("\n"), page_size="25", offset="25")
    assert [row[0] for row in cells(nxt.text)] == [str(n) for n in range(26, 31)]


def test_a_huge_result_holds_one_page(read_only):
    """A cursor: ten million rows exist only as the 25 fetched (within a 0.5 s statement timeout)."""
    page = run(read_only, "SELECT generate_series(1, 10000000) AS g", page_size="25")
    assert page.status_code == 200, text_of(page.text)[-500:]
    assert len(cells(page.text)) == 25


@pytest.mark.parametrize("sql", [
    "UPDATE wallets SET label = 'console'",
    "  /* a comment */ -- and another\n DELETE FROM wallets",
    "INSERT INTO wallets (user_id) VALUES (NULL)",
])
def test_read_only_refuses_a_write_with_403_and_nothing_changes(read_only, seeded, sql):
    direct, _ = seeded
    before = query(direct, "SELECT id, label FROM wallets ORDER BY id")
    response = run(read_only, sql)
    assert response.status_code == 403
    assert "runs read-only" in text_of(response.text)
    assert query(direct, "SELECT id, label FROM wallets ORDER BY id") == before


def test_a_write_hidden_in_a_read_is_refused_by_postgresql(read_only, seeded):
    """The word check is a courtesy: the READ ONLY transaction is the enforcement."""
    direct, _ = seeded
    before = query(direct, "SELECT id, label FROM wallets ORDER BY id")
    response = run(read_only, "WITH changed AS (UPDATE wallets SET label = 'sneaky' RETURNING id) "
                              "SELECT * FROM changed")
    assert response.status_code == 400
    assert query(direct, "SELECT id, label FROM wallets ORDER BY id") == before


@pytest.mark.parametrize("sql", ["SET statement_timeout = 0", "BEGIN", "COMMIT", "DROP TABLE wallets",
                                 "TRUNCATE wallets", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                                 "COPY wallets TO STDOUT"])
def test_session_state_transaction_control_and_ddl_are_refused_in_every_mode(writable, seeded, sql):
    direct, _ = seeded
    response = run(writable, sql)
    assert response.status_code == 403, text_of(response.text)[-500:]
    assert query(direct, "SELECT count(*) FROM wallets") == [(4,)]


def test_postgresql_errors_are_its_own_message_without_a_traceback(read_only):
    response = run(read_only, "SELECT no_such_column FROM users")
    assert response.status_code == 400
    text = text_of(response.text)
    assert 'ERROR: column "no_such_column" does not exist (SQLSTATE 42703' in text
    assert "Traceback" not in response.text
    two = run(read_only, "SELECT 1; SELECT 2")
    assert two.status_code == 400 and "multiple commands" in text_of(two.text)


def test_the_statement_timeout_stops_a_slow_statement(read_only):
    response = run(read_only, "SELECT pg_sleep(3)")
    assert response.status_code == 400
    text = text_of(response.text)
    assert "canceling statement due to statement timeout" in text and "CELORA_STUDIO_CONSOLE_TIMEOUT" in text


def test_sensitive_columns_are_masked_by_name(writable, seeded):
    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'alice@celora.io'")
    with psycopg.connect(direct) as conn:
        conn.execute("INSERT INTO sessions (user_id, token_hash, expires_at) "
                     "VALUES (%s, sha256('console-secret'), now() + interval '1 day')", (user_id,))
    (token_hash,), = query(direct, "SELECT token_hash FROM sessions")
    page = run(writable, "SELECT id, token_hash FROM sessions")
    assert page.status_code == 200
    assert token_hash.hex() not in page.text and "•••• (sensitive)" in page.text
    assert "Masked (sensitive): token_hash" in text_of(page.text)


def test_writable_studio_commits_a_write_and_reports_the_rows(writable, seeded):
    direct, _ = seeded
    (wallet_id,), = query(direct, "SELECT id FROM wallets WHERE chain = 'solana'")
    page = run(writable, f"UPDATE wallets SET label = 'from the console' WHERE id = '{wallet_id}' RETURNING id")
    assert page.status_code == 200, text_of(page.text)[-500:]
    assert "UPDATE 1: 1 row(s) changed, committed." in text_of(page.text)
    assert cells(page.text) == [[str(wallet_id)]]
    assert query(direct, "SELECT label FROM wallets WHERE id = %s", (wallet_id,)) == [("from the console",)]


def test_a_read_in_a_writable_studio_still_runs_read_only(writable, seeded):
    direct, _ = seeded
    response = run(writable, "SELECT set_config('transaction_read_only', 'off', true)")
    assert response.status_code == 400  # the snapshot is taken: the mode can no longer change
    assert "read-write" in text_of(response.text) or "read-only" in text_of(response.text)


def test_the_console_is_behind_the_same_guard(writable, seeded):
    direct, pooled = seeded
    assert writable.post(CONSOLE, data={"sql": "SELECT 1", "csrftoken": csrf(writable)},
                         headers={"Origin": "http://evil.example"}).status_code == 403
    assert writable.post(CONSOLE, data={"sql": "SELECT 1", "csrftoken": csrf(writable)}).status_code == 403
    assert writable.post(CONSOLE, data={"sql": "SELECT 1"}, headers={"Origin": ORIGIN}).status_code == 403  # CSRF
    from starlette.testclient import TestClient

    stranger = TestClient(writable.app, base_url=ORIGIN, follow_redirects=False)
    assert stranger.get(CONSOLE).status_code == 401
    assert stranger.post(CONSOLE, data={"sql": "SELECT 1"}, headers={"Origin": ORIGIN}).status_code == 401


def test_explain_and_show_run(read_only):
    page = run(read_only, "EXPLAIN SELECT * FROM users")
    assert page.status_code == 200 and "Scan on users" in text_of(page.text)
    show = run(read_only, "SHOW transaction_read_only")
    assert cells(show.text) == [["on"]]


def test_an_advisory_lock_taken_in_the_console_does_not_outlive_the_statement(read_only, seeded):
    """A session-level advisory lock is no write and survives a rollback: left on a pooled server connection it
    could be celora's own migration lock. The console releases it, after success and after an error alike."""
    direct, _ = seeded
    for sql in ("SELECT pg_advisory_lock(4242)", "SELECT pg_advisory_lock(4242), 1 / 0"):
        run(read_only, sql)
        with psycopg.connect(direct) as conn:
            assert conn.execute("SELECT pg_try_advisory_lock(4242)").fetchone() == (True,), sql
            conn.execute("SELECT pg_advisory_unlock(4242)")


def test_hostile_statements(read_only):
    percent = run(read_only, "SELECT '100%' AS pct, '%s' AS placeholder")
    assert cells(percent.text) == [["100%", "%s"]]  # no parameter processing
    nul = run(read_only, "SELECT 'a\x00b'")  # a NUL character: psycopg refuses to send it
    assert nul.status_code == 400 and "Traceback" not in nul.text
    huge = run(read_only, "SELECT 1 -- " + "x" * 200_000)
    assert huge.status_code == 400 and "longer than 100,000 bytes" in text_of(huge.text)
    assert run(read_only, "   ").status_code == 400
    assert run(read_only, "SELECT 1", page_size="many").status_code == 400
    long_value = run(read_only, "SELECT repeat('x', 100000)")
    assert "(100,000 characters)" in text_of(long_value.text) and len(long_value.text) < 50_000
