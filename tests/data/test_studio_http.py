"""celora db studio, in-process: each feature and each security rule, over HTTP (Starlette's test client) against
a real database seeded with celora's fixtures, reached through a real PgBouncer (the studio is app traffic)."""

from __future__ import annotations

import csv
import html as html_module
import io
import re
import warnings
from urllib.parse import quote

import psycopg
import pytest

from tests.support import REPO, drop_database, settings_for
from tests.support.studio_forms import form_values

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.pgbouncer

HOST, PORT, TOKEN = "127.0.0.1", 5555, "test-token-0123456789"
ORIGIN = f"http://{HOST}:{PORT}"


@pytest.fixture(scope="module")
def seeded(pg_server, migrated_template, pgbouncer):
    """A database at head with the fixtures loaded: (direct URL, pooled URL through PgBouncer)."""
    from celora_cli.data.seed.apply import seed

    name = "t_studio_http"
    direct = pg_server.create_database(name, template=migrated_template)
    pooled = pgbouncer(name)
    seed(settings_for(pooled, direct), REPO / "fixtures")
    yield direct, pooled
    drop_database(pg_server, name)


def make_client(pooled: str, direct: str, *, read_only: bool = False, token: str | None = TOKEN) -> TestClient:
    from celora_cli.data.studio.app import StudioOptions, create_app
    from celora_cli.db.connect import resolve_urls
    from celora_cli.db.engine import build_engine

    settings = settings_for(pooled, direct)
    url = resolve_urls(settings).pooled
    engine = build_engine(url, settings, application_name="celora db studio")
    app = create_app(engine, url, StudioOptions(host=HOST, port=PORT, token=TOKEN, read_only=read_only))
    client = TestClient(app, base_url=ORIGIN, follow_redirects=False)
    if token:
        assert client.get(f"/studio/?token={token}").status_code == 303
    return client


@pytest.fixture(scope="module")
def client(seeded):
    direct, pooled = seeded
    return make_client(pooled, direct)


@pytest.fixture(scope="module")
def read_only_client(seeded):
    direct, pooled = seeded
    return make_client(pooled, direct, read_only=True)


def query(direct: str, sql: str, params: tuple = ()):
    with psycopg.connect(direct) as conn:
        return conn.execute(sql, params or None).fetchall()


def row_pks(html: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r'data-sa-pk="([^"]+)"', html)))


def listing(client: TestClient, key: str, **params: str) -> list[str]:
    query_string = "&".join(f"{k}={quote(v)}" for k, v in params.items())
    response = client.get(f"/studio/{key}/list?{query_string}")
    assert response.status_code == 200, response.text[-2000:]
    return row_pks(response.text)


def text_of(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return html_module.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


# --- security ---------------------------------------------------------------------------------------------------

def test_no_token_is_refused(seeded):
    direct, pooled = seeded
    anonymous = make_client(pooled, direct, token=None)
    for path in ("/studio/", "/studio/user/list", "/studio/statics/css/tabler.min.css", "/"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert "Token required" in response.text
    wrong = anonymous.get("/studio/?token=not-the-token")
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


def test_token_in_the_url_becomes_a_strict_httponly_cookie_and_leaves_the_url(seeded):
    direct, pooled = seeded
    browser = make_client(pooled, direct, token=None)
    response = browser.get(f"/studio/user/list?token={TOKEN}&page=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/studio/user/list?page=1"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN.lower() in cookie
    assert browser.get("/studio/user/list").status_code == 200


def test_foreign_host_is_refused_even_with_the_token(client):
    for host in ("evil.example", f"evil.example:{PORT}", f"127.0.0.1:{PORT + 1}"):
        response = client.get("/studio/user/list", headers={"Host": host})
        assert response.status_code == 421, host
    assert client.get("/studio/user/list", headers={"Host": f"localhost:{PORT}"}).status_code == 200


def test_foreign_origin_is_refused_and_writes_nothing(client, seeded):
    direct, _ = seeded
    assert client.get("/studio/user/list", headers={"Origin": "http://evil.example"}).status_code == 403
    wallet_id, label = query(direct, "SELECT id, label FROM wallets ORDER BY address LIMIT 1")[0]
    form = form_values(client.get(f"/studio/wallet/edit?pk={wallet_id}").text)
    form["label"] = "written by another site"
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}):
        response = client.post(f"/studio/wallet/edit?pk={wallet_id}", data=form, headers=headers)
        assert response.status_code == 403, headers
    assert query(direct, "SELECT label FROM wallets WHERE id = %s", (wallet_id,))[0][0] == label


def test_read_only_refuses_every_write_and_the_row_is_unchanged(read_only_client, seeded):
    direct, _ = seeded
    wallet_id, label = query(direct, "SELECT id, label FROM wallets ORDER BY address LIMIT 1")[0]
    page = read_only_client.get(f"/studio/wallet/detail?pk={wallet_id}")
    assert page.status_code == 200 and "(read-only)" in page.text
    form = form_values(read_only_client.get(f"/studio/wallet/edit?pk={wallet_id}").text)
    form["label"] = "read-only edit"
    headers = {"Origin": ORIGIN}
    attempts = [
        read_only_client.post(f"/studio/wallet/edit?pk={wallet_id}", data=form, headers=headers),
        read_only_client.post("/studio/wallet/create", data=form, headers=headers),
        read_only_client.post(f"/studio/_api/wallet/row-action?name=delete&pk={wallet_id}", headers=headers),
        read_only_client.post(f"/studio/_api/wallet/action?name=delete&pks={wallet_id}", headers=headers),
        read_only_client.post(f"/studio/_api/wallet/inline-edit?pk={wallet_id}&field=label",
                              data={"label": "x"}, headers=headers),
    ]
    assert [response.status_code for response in attempts] == [403] * len(attempts)
    assert all("runs read-only" in response.text for response in attempts)  # refused before the admin ran
    assert query(direct, "SELECT label FROM wallets WHERE id = %s", (wallet_id,)) == [(label,)]
    assert query(direct, "SELECT count(*) FROM wallets") == [(4,)]


def test_the_audit_log_is_shown_but_never_written_even_when_the_studio_is_writable(client, seeded):
    direct, _ = seeded
    audit_id, table_name = query(direct, "SELECT id, table_name FROM audit_log ORDER BY id LIMIT 1")[0]
    assert listing(client, "audit-log"), "the seed's changes are listed"
    assert client.get(f"/studio/audit-log/detail?pk={audit_id}").status_code == 200
    headers = {"Origin": ORIGIN}
    attempts = [
        client.get(f"/studio/audit-log/edit?pk={audit_id}"),
        client.post(f"/studio/audit-log/edit?pk={audit_id}", data={"table_name": "forged"}, headers=headers),
        client.post("/studio/audit-log/create", data={"table_name": "forged"}, headers=headers),
        client.post(f"/studio/_api/audit-log/row-action?name=delete&pk={audit_id}", headers=headers),
        client.post(f"/studio/_api/audit-log/action?name=delete&pks={audit_id}", headers=headers),
        client.post(f"/studio/_api/audit-log/inline-edit?pk={audit_id}&field=table_name",
                    data={"table_name": "forged"}, headers=headers),
    ]
    assert all(response.status_code in (400, 403, 404) for response in attempts), [
        (response.request.url, response.status_code) for response in attempts]
    assert query(direct, "SELECT table_name FROM audit_log WHERE id = %s", (audit_id,)) == [(table_name,)]
    assert client.get(f"/studio/wallet/edit?pk={query(direct, 'SELECT id FROM wallets LIMIT 1')[0][0]}"
                      ).status_code == 200  # the other tables stay writable


def test_read_only_transactions_refuse_writes_in_postgresql_too(seeded):
    """Defence in depth: a write that got past the guard still fails, through PgBouncer in transaction mode."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import sessionmaker

    from celora_cli.data.studio.app import _read_only_transactions
    from celora_cli.db.connect import resolve_urls
    from celora_cli.db.engine import build_engine

    direct, pooled = seeded
    settings = settings_for(pooled, direct)
    engine = build_engine(resolve_urls(settings).pooled, settings)
    sessions = sessionmaker(engine)
    _read_only_transactions(sessions)
    with sessions() as session, pytest.raises(DBAPIError, match="read-only transaction"):
        session.execute(text("UPDATE wallets SET label = 'x'"))
    engine.dispose()
    assert query(direct, "SELECT count(*) FROM wallets WHERE label = 'x'") == [(0,)]


# --- features ---------------------------------------------------------------------------------------------------

def test_home_lists_every_model_with_its_row_count(client):
    from celora_cli.data.studio.views import view_key
    from celora_cli.db.models import Base

    page = client.get("/studio/")
    assert page.status_code == 200
    for mapper in Base.registry.mappers:  # a new model shows up without any studio code
        assert f"/studio/{view_key(mapper)}/list" in page.text, mapper.class_.__name__
    text = text_of(page.text)
    assert re.search(r"Users 2 total records", text) and re.search(r"Transactions 8 total records", text)


def test_big_tables_are_counted_by_estimate_and_pages_are_bounded(client, seeded, monkeypatch):
    from celora_cli.data.studio import views

    direct, _ = seeded
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute("ANALYZE transactions")
        # A planner statistic only: what a 1,000,000-row table would report, without the rows.
    monkeypatch.setattr(views, "ESTIMATE_ABOVE_ROWS", 5)
    monkeypatch.setattr(views, "COUNT_LIMIT", 3)
    monkeypatch.setattr(views, "MAX_OFFSET", 4)
    reltuples = query(direct, "SELECT reltuples::bigint FROM pg_class WHERE relname = 'transactions'")[0][0]
    assert reltuples == 8
    # 5 of the 8 rows: a page that reaches the end knows the exact count itself, this one does not.
    text = text_of(client.get("/studio/transaction/list?page_size=5").text)
    assert "of about 8 (PostgreSQL's estimate)" in text  # exact here: ANALYZE just ran
    assert "Transactions about 8 (PostgreSQL's estimate) total records" in text_of(client.get("/studio/").text)
    filtered = text_of(client.get(f"/studio/transaction/list?page_size=5&filter={quote('asset__neq=BTC')}").text)
    assert re.search(r"of about \d+ \(PostgreSQL's estimate\)", filtered)  # > COUNT_LIMIT: the planner's
    # Past MAX_OFFSET a typed page is reached by a walk over the keys, bounded in time, and says so.
    deep = client.get("/studio/transaction/list?page=2&page_size=5")
    assert deep.status_code == 200 and "walked past 5 rows to start at row 6" in text_of(deep.text)


def test_sorting_on_any_column(client, seeded):
    direct, _ = seeded
    expected = [str(r[0]) for r in query(direct, "SELECT id FROM transactions ORDER BY amount DESC")]
    assert listing(client, "transaction", sort="amount__desc") == expected
    expected = [str(r[0]) for r in query(direct, "SELECT id FROM users ORDER BY email")]
    assert listing(client, "user", sort="email__asc") == expected


@pytest.mark.parametrize(("rule", "where"), [
    ("asset__eq=BTC", "asset = 'BTC'"),
    ("asset__neq=BTC", "asset <> 'BTC'"),
    ("amount__lt=1000000", "amount < 1000000"),
    ("amount__gt=1000000000", "amount > 1000000000"),
    ("asset__contains=US", "asset LIKE '%US%'"),
    ("fee__is_null", "fee IS NULL"),
    ("block_number__is_null", "block_number IS NULL"),
    ("status__eq=failed", "status = 'failed'"),
    ("amount__gt=1000000 AND direction__eq=incoming", "amount > 1000000 AND direction = 'incoming'"),
])
def test_per_column_filters(client, seeded, rule, where):
    direct, _ = seeded
    expected = {str(r[0]) for r in query(direct, f"SELECT id FROM transactions WHERE {where}")}
    assert expected, "each case must select something"
    assert set(listing(client, "transaction", filter=rule)) == expected


def test_search_box(client, seeded):
    direct, _ = seeded
    expected = {str(r[0]) for r in query(direct, "SELECT id FROM users WHERE email ILIKE '%alice%'")}
    assert len(expected) == 1 and set(listing(client, "user", q="alice")) == expected


def test_related_records_both_ways(client, seeded):
    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'alice@celora.io'")
    detail = client.get(f"/studio/user/detail?pk={user_id}").text
    links = {m.group(2): m.group(1).replace("&amp;", "&")
             for m in re.finditer(r'class="celora-related" href="([^"]+)">([^<]+)<', detail)}
    assert set(links) == {"wallets of this user", "sessions of this user", "notifications of this user"}
    wallets = row_pks(client.get(links["wallets of this user"]).text)
    assert set(wallets) == {str(r[0]) for r in query(direct, "SELECT id FROM wallets WHERE user_id = %s",
                                                     (user_id,))}
    notifications = row_pks(client.get(links["notifications of this user"]).text)
    assert len(notifications) == query(direct, "SELECT count(*) FROM notifications WHERE user_id = %s",
                                       (user_id,))[0][0] > 0
    # wallet -> transactions
    wallet_detail = client.get(f"/studio/wallet/detail?pk={wallets[0]}").text
    to_transactions = re.search(r'class="celora-related" href="([^"]+)">transactions of this wallet<',
                                wallet_detail).group(1).replace("&amp;", "&")
    transactions = row_pks(client.get(to_transactions).text)
    assert set(transactions) == {str(r[0]) for r in query(
        direct, "SELECT id FROM transactions WHERE wallet_id = %s", (wallets[0],))}
    # transaction -> wallet -> user
    transaction_detail = client.get(f"/studio/transaction/detail?pk={transactions[0]}").text
    assert f"/studio/wallet/detail?pk={wallets[0]}" in transaction_detail
    assert f"/studio/user/detail?pk={user_id}" in wallet_detail


def test_detail_shows_json_enums_and_timestamps_with_their_time_zone(client, seeded):
    direct, _ = seeded
    (transaction_id, created), = query(direct, "SELECT id, created_at FROM transactions ORDER BY amount LIMIT 1")
    text = text_of(client.get(f"/studio/transaction/detail?pk={transaction_id}").text)
    assert created.strftime("%Y-%m-%d %H:%M:%S") + " UTC" in text
    edit = client.get(f"/studio/transaction/edit?pk={transaction_id}").text
    status_select = re.search(r'<select[^>]*name="status".*?</select>', edit, re.S).group(0)
    options = dict(re.findall(r'<option value="(\w+)"[^>]*>\s*([^<]*?)\s*<', status_select))
    assert {"pending", "confirmed", "failed"} <= set(options) and options["failed"] == "failed"  # the stored value
    assert 'name="metadata_"' in edit  # the JSON editor's field


def test_edit_saves_to_postgresql_including_json(client, seeded):
    direct, _ = seeded
    (wallet_id,), = query(direct, "SELECT id FROM wallets WHERE chain = 'solana'")
    form = form_values(client.get(f"/studio/wallet/edit?pk={wallet_id}").text)
    form["label"] = "Edited in the studio"
    form["metadata_"] = '{"source": "studio", "tags": [1, 2]}'
    response = client.post(f"/studio/wallet/edit?pk={wallet_id}", data=form, headers={"Origin": ORIGIN})
    assert response.status_code == 303, text_of(response.text)[-1500:]
    assert query(direct, "SELECT label, metadata FROM wallets WHERE id = %s", (wallet_id,)) == [
        ("Edited in the studio", {"source": "studio", "tags": [1, 2]})]


def test_a_value_the_database_refuses_is_a_readable_message_and_nothing_changes(client, seeded):
    direct, _ = seeded
    (wallet_id, address), = query(direct, "SELECT id, address FROM wallets WHERE chain = 'ethereum'")
    form = form_values(client.get(f"/studio/wallet/edit?pk={wallet_id}").text)
    form["address"] = address.upper().replace("0X", "0x")  # EVM addresses must be lowercase (a CHECK)
    response = client.post(f"/studio/wallet/edit?pk={wallet_id}", data=form, headers={"Origin": ORIGIN})
    assert response.status_code == 422
    text = text_of(response.text)
    assert "violates check constraint" in text and "Traceback" not in response.text
    assert query(direct, "SELECT address FROM wallets WHERE id = %s", (wallet_id,)) == [(address,)]


def test_create_then_delete_with_confirmation(client, seeded):
    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'bob@celora.io'")
    form = form_values(client.get("/studio/notification/create").text)
    form.update({"user_id": str(user_id), "channel": "email", "type": "studio_test", "title": "Hello",
                 "body": "From the studio", "data": '{"k": "v"}', "status": "pending"})
    created = client.post("/studio/notification/create", data=form, headers={"Origin": ORIGIN})
    assert created.status_code == 303, text_of(created.text)[-1500:]
    (notification_id,), = query(direct, "SELECT id FROM notifications WHERE type = 'studio_test'")
    # The delete button asks first: its row action carries a confirmation text.
    detail = client.get(f"/studio/notification/detail?pk={notification_id}").text
    assert "Are you sure you want to delete" in detail
    deleted = client.post(f"/studio/_api/notification/row-action?name=delete&pk={notification_id}",
                          headers={"Origin": ORIGIN, "X-CSRFToken": client.cookies["starlette_admin_csrftoken"]})
    assert deleted.status_code == 200, deleted.text
    assert query(direct, "SELECT count(*) FROM notifications WHERE type = 'studio_test'") == [(0,)]


@pytest.mark.parametrize("mode", ["writable", "read_only"])
def test_csv_export_of_the_filtered_view(client, read_only_client, seeded, mode):
    direct, _ = seeded
    browser = client if mode == "writable" else read_only_client
    browser.get("/studio/transaction/list")  # sets the CSRF cookie
    list_query = "?filter=" + quote("asset__eq=BTC")
    response = browser.post(
        f"/studio/_api/transaction/action?name=export&all=1&_list_query={quote(list_query)}",
        data={"scope": "all", "format": "csv", "csrftoken": browser.cookies["starlette_admin_csrftoken"]},
        headers={"Origin": ORIGIN})
    assert response.status_code == 200, response.text[-1000:]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    expected = {str(r[0]) for r in query(direct, "SELECT id FROM transactions WHERE asset = 'BTC'")}
    assert {row.get("Id") or row.get("id") for row in rows} == expected
    assert {row.get("Asset") or row.get("asset") for row in rows} == {"BTC"}


def test_sensitive_columns_are_never_shown_exported_or_filterable(client, seeded):
    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'alice@celora.io'")
    with psycopg.connect(direct) as conn:
        conn.execute("INSERT INTO sessions (user_id, token_hash, expires_at) "
                     "VALUES (%s, sha256('secret-session'), now() + interval '1 day')", (user_id,))
        conn.execute("INSERT INTO idempotency_keys (key, method, path, request_fingerprint, response_status, "
                     "response_body, expires_at) VALUES ('k1', 'POST', '/x', repeat('a', 64), 200, "
                     "'{\"secret\": \"response-secret\"}', now() + interval '1 day')")
    (session_id, token_hash), = query(direct, "SELECT id, token_hash FROM sessions")
    pages = [client.get("/studio/session/list").text, client.get(f"/studio/session/detail?pk={session_id}").text,
             client.get("/studio/idempotency-key/list").text]
    (key_id,), = query(direct, "SELECT id FROM idempotency_keys")
    pages.append(client.get(f"/studio/idempotency-key/detail?pk={key_id}").text)
    client.get("/studio/session/list")
    export = client.post("/studio/_api/session/action?name=export&all=1",
                         data={"scope": "all", "format": "csv",
                               "csrftoken": client.cookies["starlette_admin_csrftoken"]},
                         headers={"Origin": ORIGIN})
    assert export.status_code == 200
    pages.append(export.text)
    for page in pages:
        assert "Token hash" not in page and "token_hash" not in page
        assert token_hash.hex() not in page and "response-secret" not in page
    assert str(session_id) in pages[0]
    probe = client.get(f"/studio/session/list?filter={quote('token_hash__is_null')}")
    assert probe.status_code == 400


def test_a_database_error_while_reading_is_a_page_with_the_cause_not_a_traceback(seeded):
    from celora_cli.config.settings import parse_database_url
    from celora_cli.data.studio.app import StudioOptions, create_app
    from celora_cli.db.engine import build_engine
    from tests.support import free_port

    direct, pooled = seeded
    settings = settings_for(pooled, direct)
    down = parse_database_url(f"postgresql://celora:pw-secret@127.0.0.1:{free_port()}/nowhere", "DATABASE_URL")
    app = create_app(build_engine(down, settings), down, StudioOptions(HOST, PORT, TOKEN, read_only=False))
    browser = TestClient(app, base_url=ORIGIN, follow_redirects=False)
    browser.get(f"/studio/?token={TOKEN}")
    response = browser.get("/studio/user/list")
    assert response.status_code == 500
    assert "Can&#x27;t reach database server" in response.text or "Can't reach database server" in response.text
    assert "Traceback" not in response.text and "pw-secret" not in response.text


def test_inline_edit_of_one_cell_saves_only_that_column(client, seeded):
    direct, _ = seeded
    (user_id, name, email), = query(direct, "SELECT id, display_name, email FROM users WHERE email = 'bob@celora.io'")
    grid = client.get("/studio/user/list").text
    assert 'data-sa-inline-editable="1" data-sa-field="display_name"' in grid
    # As the grid does: the popover's form first (it carries the loaded value's hash, see conflicts.py), then its post.
    popover = form_values(client.get(f"/studio/_api/user/inline-edit?pk={user_id}&field=display_name").text)
    response = client.post(f"/studio/_api/user/inline-edit?pk={user_id}&field=display_name",
                           data={**popover, "display_name": "Robert"},
                           headers={"Origin": ORIGIN, "X-CSRFToken": client.cookies["starlette_admin_csrftoken"]})
    assert response.status_code == 200, response.text
    assert query(direct, "SELECT display_name, email FROM users WHERE id = %s", (user_id,)) == [("Robert", email)]
    assert name != "Robert"
