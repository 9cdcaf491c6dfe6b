"""celora db studio's list pages at any depth, over HTTP (Starlette's test client, httpx) through a real PgBouncer:
keyset next / previous / last with ties and NULLs in the sort key (walked end to end and compared with SQL's
ORDER BY), multi-column sort, typed deep pages, page sizes, counts bounded in time, slow pages that explain
themselves (and stop explaining once the index they name exists)."""

from __future__ import annotations

import base64
import html
import json
import re
import warnings
from urllib.parse import quote

import psycopg
import pytest

from tests.support import settings_for
from tests.support.studio_client import seeded_database

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.pgbouncer

HOST, PORT, TOKEN = "127.0.0.1", 5555, "test-token-paging"
ORIGIN = f"http://{HOST}:{PORT}"
WALK_ROWS = 61  # asset 'WALK': ties in amount (4 values), NULLs in fee and block_number
BULK_ROWS = 50_000  # asset 'BULK': enough rows for a count or a search to outlast a 1 ms bound

ROWS = """
INSERT INTO transactions (wallet_id, chain, tx_hash, direction, status, amount, asset, decimals, fee, block_number)
SELECT w.id, w.chain, '0x' || lpad(to_hex(%(base)s + i), 64, '0'), 'incoming',
       (CASE WHEN i %% 1000 = 0 THEN 'failed' ELSE 'confirmed' END)::transaction_status,
       i %% 4, %(asset)s, 18, CASE WHEN i %% 3 = 0 THEN NULL ELSE i %% 5 END,
       CASE WHEN i %% 4 = 0 THEN NULL ELSE i %% 6 END
FROM generate_series(1, %(rows)s) AS i, (SELECT id, chain FROM wallets ORDER BY address LIMIT 1) AS w
"""


@pytest.fixture(scope="module")
def seeded(pg_server, migrated_template, pgbouncer):
    """(direct URL, pooled URL): the fixtures, plus the WALK and BULK transactions."""
    with seeded_database(pg_server, migrated_template, pgbouncer, "t_studio_paging") as (direct, pooled):
        with psycopg.connect(direct) as conn:
            conn.execute("SET LOCAL celora.audit = 'off'")
            conn.execute(ROWS, {"base": 10_000_000, "asset": "WALK", "rows": WALK_ROWS})
            conn.execute(ROWS, {"base": 20_000_000, "asset": "BULK", "rows": BULK_ROWS})
        with psycopg.connect(direct, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE transactions")
        yield direct, pooled


def make_client(seeded, **tuning) -> TestClient:
    from celora_cli.data.studio.app import StudioOptions, create_app
    from celora_cli.data.studio.pages import StudioTuning
    from celora_cli.db.connect import resolve_urls
    from celora_cli.db.engine import build_engine

    direct, pooled = seeded
    settings = settings_for(pooled, direct)
    url = resolve_urls(settings).pooled
    engine = build_engine(url, settings, application_name="celora db studio")
    app = create_app(engine, url, StudioOptions(host=HOST, port=PORT, token=TOKEN, read_only=True,
                                                tuning=StudioTuning(**tuning)))
    client = TestClient(app, base_url=ORIGIN, follow_redirects=False)
    assert client.get(f"/studio/?token={TOKEN}").status_code == 303
    return client


@pytest.fixture(scope="module")
def client(seeded):
    return make_client(seeded)


def query(direct: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(direct) as conn:
        return conn.execute(sql, params or None).fetchall()


def ids(direct: str, where: str, order: str) -> list[str]:
    return [str(row[0]) for row in query(direct, f"SELECT id FROM transactions WHERE {where} ORDER BY {order}")]


def row_pks(page: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r'data-sa-pk="([^"]+)"', page)))


def text_of(page: str) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def pager_link(page: str, kind: str) -> str | None:
    """The pager's First / prev / next / Last link, or None when it is disabled."""
    match = re.search(rf'<a class="page-link" data-celora-page="{kind}" href="([^"]+)"([^>]*)>', page)
    assert match, f"no {kind} link"
    return None if "aria-disabled" in match.group(2) else html.unescape(match.group(1))


def get(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.text[-1500:])
    return response.text


def walk(client: TestClient, url: str, step: str) -> tuple[list[str], int]:
    """Every row from `url` on, following `step` ("next" or "prev") to the end: (row ids in list order, pages)."""
    seen: list[str] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        page = get(client, next_url)
        pages += 1
        assert pages < 100, "the walk never ends"
        rows = row_pks(page)
        seen = seen + rows if step == "next" else rows + seen
        next_url = pager_link(page, step)
    return seen, pages


WALK = f"filter={quote('asset__eq=WALK')}"


@pytest.mark.parametrize(("sort", "order"), [
    ("", "id"),
    ("sort=amount__desc", "amount DESC, id DESC"),  # ties, NOT NULL: one row-value comparison
    ("sort=fee__asc", "fee ASC, id ASC"),  # ties and NULLs (last when ascending)
    ("sort=block_number__desc", "block_number DESC, id DESC"),  # NULLs first when descending
    ("sort=amount__asc&sort=block_number__desc", "amount ASC, block_number DESC, id DESC"),  # mixed directions
])
def test_next_and_previous_walk_every_row_once_in_sql_order(client, seeded, sort, order):
    direct, _ = seeded
    expected = ids(direct, "asset = 'WALK'", order)
    assert len(expected) == WALK_ROWS
    forward, pages = walk(client, f"/studio/transaction/list?{WALK}&page_size=7&{sort}", "next")
    assert forward == expected  # no row skipped, none repeated, ties and NULLs in SQL's order
    assert pages == -(-WALK_ROWS // 7)
    last_page = get(client, f"/studio/transaction/list?{WALK}&page_size=7&{sort}&last=1")
    assert pager_link(last_page, "next") is None and pager_link(last_page, "last") is None
    backward, _ = walk(client, f"/studio/transaction/list?{WALK}&page_size=7&{sort}&last=1", "prev")
    assert backward == expected


def test_last_page_of_an_exactly_counted_list_lines_up_with_the_page_numbers(client, seeded):
    direct, _ = seeded
    expected = ids(direct, "asset = 'WALK'", "amount DESC, id DESC")
    page = get(client, f"/studio/transaction/list?{WALK}&page_size=7&sort=amount__desc&last=1")
    assert row_pks(page) == expected[56:]  # page 9: rows 57 to 61, as OFFSET would have it
    text = text_of(page)
    assert "Rows 57 to 61 of 61" in text and "Page 9 of 9" in text


def test_last_page_of_an_estimated_table_is_served_and_steps_back_by_keyset(seeded, monkeypatch):
    from celora_cli.data.studio import views

    direct, _ = seeded
    monkeypatch.setattr(views, "ESTIMATE_ABOVE_ROWS", 5)  # the table counts as big: its count is an estimate
    client = make_client(seeded)
    expected = ids(direct, "true", "id")
    page = get(client, "/studio/transaction/list?last=1")
    assert row_pks(page) == expected[-25:]
    assert "The last 25 rows of about" in text_of(page) and "Last page" in text_of(page)
    previous = get(client, pager_link(page, "prev"))
    assert row_pks(previous) == expected[-50:-25] and "Page 2 from the end" in text_of(previous)
    again = get(client, pager_link(previous, "next"))
    assert row_pks(again) == expected[-25:]


def test_a_typed_deep_page_is_walked_to_and_says_so(seeded, monkeypatch):
    from celora_cli.data.studio import views

    direct, _ = seeded
    monkeypatch.setattr(views, "MAX_OFFSET", 10)
    client = make_client(seeded)
    expected = ids(direct, "true", "id")
    page = get(client, "/studio/transaction/list?page=801&page_size=10")
    assert row_pks(page) == expected[8000:8010]
    assert "walked past 8,000 rows to start at row 8,001" in text_of(page)
    following = get(client, pager_link(page, "next"))  # from here on, by keyset
    assert row_pks(following) == expected[8010:8020] and "Rows 8,011 to 8,020" in text_of(following)


def test_a_typed_deep_page_that_would_cost_too_much_says_what_it_would_cost(seeded, monkeypatch):
    from celora_cli.data.studio import views

    monkeypatch.setattr(views, "MAX_OFFSET", 10)
    client = make_client(seeded, jump_timeout=0.001)
    page = get(client, "/studio/transaction/list?page=4000&page_size=10&sort=amount__desc", 400)
    text = text_of(page)
    assert "Page 4,000 starts at row 39,991" in text and "did not finish within 0.001 s" in text
    assert re.search(r"reading and sorting all of about [\d,]+ rows \(no index serves this order\)", text)
    assert "CELORA_STUDIO_JUMP_TIMEOUT" in text and "last page" in text
    # "Last page" is never an error, whatever the bound.
    assert len(row_pks(get(client, "/studio/transaction/list?page_size=10&sort=amount__desc&last=1"))) == 10


def test_a_cursor_from_another_list_is_ignored_and_a_forged_one_refused(client, seeded):
    direct, _ = seeded
    first = get(client, f"/studio/transaction/list?{WALK}&page_size=7&sort=amount__desc")
    following = pager_link(first, "next")
    assert following and "after=" in following
    # The same cursor on another sort: the page number stands (page 2 of the new order), the cursor is ignored.
    resorted = following.replace("sort=amount__desc", "sort=fee__asc")
    assert row_pks(get(client, resorted)) == ids(direct, "asset = 'WALK'", "fee ASC, id ASC")[7:14]
    cursor = re.search(r"after=([^&]+)", following).group(1)
    for forged in ("not-a-cursor", cursor[:-6], "WyJ4IiwgWzFdXQ"):
        response = client.get(f"/studio/transaction/list?{WALK}&page_size=7&sort=amount__desc&after={forged}")
        assert response.status_code in (200, 400), forged
        if response.status_code == 400:
            assert "page link is not valid" in text_of(response.text)
    response = client.get(f"/studio/transaction/list?{WALK}&page_size=7&sort=amount__desc&after=%%%")
    assert response.status_code == 400 and "page link is not valid" in text_of(response.text)
    # A cursor of this very list with values edited by hand: refused before any SQL, never a 500.
    list_id, values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for edited in (["1e999999", values[1]], [values[0], "not-a-uuid"], [True, values[1]], [values[0]],
                   ["'; DROP TABLE transactions; --", values[1]]):
        forged = base64.urlsafe_b64encode(json.dumps([list_id, edited]).encode()).decode().rstrip("=")
        response = client.get(f"/studio/transaction/list?{WALK}&page_size=7&sort=amount__desc&after={forged}")
        assert response.status_code == 400, (edited, response.status_code)
        assert "page link is not valid" in text_of(response.text)
    assert query(direct, "SELECT count(*) FROM transactions WHERE asset = 'WALK'") == [(WALK_ROWS,)]


def test_multi_column_sort_from_the_column_headers(client, seeded):
    direct, _ = seeded
    page = get(client, f"/studio/transaction/list?{WALK}&page_size=100&sort=amount__asc")
    # Shift-click on a header: the library's multi-sort link appends the column.
    multi = re.search(r'href="[^"]*"\s+data-sa-multi-sort-href="([^"]*sort=fee__asc[^"]*)"', page)
    assert multi, "no multi-sort link for fee"
    rows = row_pks(get(client, html.unescape(multi.group(1))))
    assert rows == ids(direct, "asset = 'WALK'", "amount ASC, fee ASC, id ASC")


def test_page_sizes_up_to_500_and_a_clear_refusal_past_it(client, seeded):
    direct, _ = seeded
    page = get(client, "/studio/transaction/list?page_size=500")
    assert row_pks(page) == ids(direct, "true", "id")[:500]
    assert len(row_pks(get(client, "/studio/transaction/list?page_size=37"))) == 37
    for size in ("501", "0", "-1", "100000000000000000000", "abc"):
        response = client.get(f"/studio/transaction/list?page_size={size}")
        assert response.status_code == 400, size
        assert "a page holds 1 to 500 rows" in text_of(response.text)


def test_a_count_that_outlasts_its_bound_is_a_labelled_estimate(seeded):
    direct, _ = seeded
    (failures,), = query(direct, "SELECT count(*) FROM transactions WHERE status = 'failed'")
    slow = make_client(seeded, count_timeout=0.001)
    failed = f"filter={quote('status__eq=failed')}"  # 50 rows spread over 50,000: the count reads them all
    text = text_of(get(slow, f"/studio/transaction/list?{failed}&page_size=5"))
    assert re.search(r"Rows 1 to 5 of about [\d,]+ \(PostgreSQL's estimate\)", text)
    exact = text_of(get(make_client(seeded), f"/studio/transaction/list?{failed}&page_size=5"))
    assert f"Rows 1 to 5 of {failures}" in exact  # within the default bound: counted


def test_a_slow_page_explains_itself_and_the_index_it_names_cures_it(seeded):
    direct, _ = seeded
    client = make_client(seeded, slow_page=0)  # every page is checked
    statement = "CREATE INDEX CONCURRENTLY ix_transactions_amount_id ON transactions (amount, id);"
    page = get(client, "/studio/transaction/list?sort=amount__desc")
    text = text_of(page)
    assert "Sorted by amount: no index serves this order" in text and statement in text
    assert "This page took" in text
    assert "data-celora-slow-page" not in get(client, "/studio/transaction/list")  # the primary key's order
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute(statement)
    try:
        for sort in ("amount__desc", "amount__asc"):  # one index, walked either way
            assert "data-celora-slow-page" not in get(client, f"/studio/transaction/list?sort={sort}"), sort
    finally:
        with psycopg.connect(direct, autocommit=True) as conn:
            conn.execute("DROP INDEX ix_transactions_amount_id")


def test_a_substring_filter_names_the_trigram_index_and_pg_trgm(seeded):
    direct, _ = seeded
    client = make_client(seeded, slow_page=0)
    statement = ("CREATE INDEX CONCURRENTLY ix_transactions_tx_hash_trgm ON transactions USING gin "
                 "(tx_hash gin_trgm_ops);")
    contains = f"/studio/transaction/list?filter={quote('tx_hash__contains=abc1')}"
    text = text_of(get(client, contains))
    assert "`tx_hash` contains" in text and statement in text and "pg_trgm" in text
    available = query(direct, "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    if not available:
        assert "the server does not ship it" in text
        return
    assert "Needs the pg_trgm extension, not installed in this database: CREATE EXTENSION pg_trgm;" in text
    with psycopg.connect(direct, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_trgm")
        conn.execute(statement)
    try:
        assert "data-celora-slow-page" not in get(client, contains)
        assert "data-celora-slow-page" not in get(client, contains.replace("abc1", "1234"))  # LIKE, no letters
    finally:
        with psycopg.connect(direct, autocommit=True) as conn:
            conn.execute("DROP INDEX ix_transactions_tx_hash_trgm")
            conn.execute("DROP EXTENSION pg_trgm")


def test_substring_filters_take_the_term_literally(client, seeded):
    direct, _ = seeded
    for term, where in (("0x", "tx_hash LIKE '%%0x%%'"), ("%", "false"), ("_", "false"),
                        ("ABC1", "tx_hash ILIKE '%%abc1%%'")):
        expected = ids(direct, f"{where}", "id")[:25]
        assert row_pks(get(client, f"/studio/transaction/list?filter={quote(f'tx_hash__contains={term}')}")) \
            == expected, term


def test_a_search_that_outlasts_its_bound_says_it_is_partial(seeded):
    slow = make_client(seeded, search_timeout=0.001)
    text = text_of(get(slow, "/studio/transaction/list?q=zzzz-nowhere"))
    assert "(partial: the search stopped at its time bound)" in text
    assert "CELORA_STUDIO_SEARCH_TIMEOUT" in text and "every text column" in text
    fast = text_of(get(make_client(seeded), "/studio/transaction/list?q=alice"))
    assert "partial" not in fast
