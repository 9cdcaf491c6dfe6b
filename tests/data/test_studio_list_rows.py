"""The studio's fast list rows (celora_cli/data/studio/list_rows.py) draw exactly what the library's path drew.

Each list page is fetched twice from the same real app over a real database (seeded, plus rows with hostile
values: markup, quotes, ampersands, `</script>` in JSON, non-ASCII, empty and nested JSON, NULLs): once as served,
once with the fast parts swapped for the reference (starlette-admin's own `serialize` and `static_url`, and the
row template as it was before, kept in tests/support/studio_reference/). The two pages must be the same, tag for
tag and character for character, apart from whitespace between and inside tags.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg
import pytest
from jinja2 import ChoiceLoader, FileSystemLoader

from tests.support.studio_client import make_client, seeded_database

pytestmark = pytest.mark.pgbouncer

REFERENCE = Path(__file__).resolve().parent.parent / "support" / "studio_reference"
HOSTILE = '<script>alert("x")</script> & \'q\' \u00e9\u2713 %2F /a?b=c#d'


@pytest.fixture(scope="module")
def seeded(pg_server, migrated_template, pgbouncer):
    with seeded_database(pg_server, migrated_template, pgbouncer, "t_studio_list_rows") as (direct, pooled):
        with psycopg.connect(direct) as conn:
            conn.execute("SET celora.audit = 'off'")
            user = conn.execute(
                "INSERT INTO users (firebase_uid, email, display_name, photo_url, metadata) "
                "VALUES (%s, %s, %s, NULL, %s::jsonb) RETURNING id",
                ("hostile-" + uuid.uuid4().hex, "a+b&c@example.com", HOSTILE,
                 '{"note": "</script><b>&amp;", "nested": {"list": [1, "two", null]}, "empty": {}}'),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO wallets (user_id, chain, address, label, metadata) VALUES (%s, 'celo', %s, %s, "
                "'[]'::jsonb)", (user, "0x" + "ab" * 20, HOSTILE))
            # A composite text key that quoting changes: its row actions are drawn by the template.
            conn.execute("INSERT INTO rate_limits (key, window_start, window_seconds, count, expires_at) "
                         "VALUES (%s, now(), 60, 1, now() + interval '1 minute')", (HOSTILE,))
        yield direct, pooled


def _admin(client):
    """The starlette-admin instance behind the app (its routes are the admin's bound methods)."""
    for route in client.app.routes:
        for inner in getattr(getattr(route, "app", None), "routes", []):
            owner = getattr(getattr(inner, "endpoint", None), "__self__", None)
            if owner is not None and hasattr(owner, "templates"):
                return owner
    raise AssertionError("no admin mounted")


def _normal(html: str) -> str:
    html = re.sub(r"\s+", " ", html)
    html = re.sub(r"\s*>\s*", ">", html)
    return re.sub(r"\s*<", "<", html)


def _pages(client, paths: list[str]) -> dict[str, str]:
    pages = {}
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[-500:])
        pages[path] = _normal(response.text)
    return pages


def test_list_pages_are_drawn_exactly_as_the_library_drew_them(seeded, monkeypatch):
    from starlette_admin.contrib.sqla import ModelView
    from starlette_admin.helpers import static_url

    from celora_cli.data.studio import list_rows

    direct, pooled = seeded
    client = make_client(pooled, direct)
    home = client.get("/studio/").text
    keys = sorted(set(re.findall(r'href="[^"]*/studio/([a-z0-9-]+)/list"', home)))
    assert {"user", "wallet", "transaction"} <= set(keys), keys
    paths = [f"/studio/{key}/list" for key in keys]
    paths += ["/studio/user/list?page_size=100&sort=display_name__desc", "/studio/wallet/list?last=1",
              "/studio/transaction/list?sort=amount__desc&page_size=50"]
    # The row the inline editor swaps in after a save: the same row template, under another URL.
    with psycopg.connect(direct) as conn:
        hostile_user = conn.execute("SELECT id FROM users WHERE firebase_uid LIKE 'hostile-%'").fetchone()[0]
    paths += [f"/studio/_api/user/inline-edit/row?pk={hostile_user}",
              f"/studio/_api/user/inline-edit/row?pk={hostile_user}&cols=id&cols=display_name"]
    served = _pages(client, paths)
    assert any("&lt;script&gt;alert(&#34;x&#34;)" in page for page in served.values())  # the hostile row is shown
    assert "/studio/rate-limit/list" in paths

    admin = _admin(client)
    env = admin.templates.env
    monkeypatch.setattr(list_rows.FastListRows, "serialize", ModelView.serialize)
    monkeypatch.setitem(env.globals, "static_url", static_url)
    monkeypatch.setattr(env, "loader", ChoiceLoader([FileSystemLoader(str(REFERENCE)), env.loader]))
    env.cache.clear()  # the row template is compiled already
    try:
        reference = _pages(client, paths)
    finally:
        env.cache.clear()
    for path in paths:
        assert served[path] == reference[path], _first_difference(served[path], reference[path])


def _first_difference(a: str, b: str) -> str:
    index = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"served:    ...{a[max(0, index - 200):index + 200]}\nreference: ...{b[max(0, index - 200):index + 200]}"
