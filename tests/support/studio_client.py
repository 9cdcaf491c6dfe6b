"""The studio in-process for HTTP tests: the real app (create_app) over a real database reached through a real
PgBouncer, driven by Starlette's test client with the token cookie already adopted."""

from __future__ import annotations

import contextlib
import html as html_module
import re
import warnings
from collections.abc import Iterator

import psycopg

from tests.support import REPO, drop_database, settings_for

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

HOST, PORT, TOKEN = "127.0.0.1", 5555, "test-token-0123456789"
ORIGIN = f"http://{HOST}:{PORT}"


def make_client(pooled: str, direct: str, *, read_only: bool = False, console_timeout: float = 5.0) -> TestClient:
    from celora_cli.data.studio.app import StudioOptions, create_app
    from celora_cli.db.connect import resolve_urls
    from celora_cli.db.engine import build_engine

    settings = settings_for(pooled, direct)
    url = resolve_urls(settings).pooled
    engine = build_engine(url, settings, application_name="celora db studio")
    app = create_app(engine, url, StudioOptions(host=HOST, port=PORT, token=TOKEN, read_only=read_only,
                                                console_timeout=console_timeout))
    client = TestClient(app, base_url=ORIGIN, follow_redirects=False)
    assert client.get(f"/studio/?token={TOKEN}").status_code == 303
    return client


def csrf(client: TestClient) -> str:
    if "starlette_admin_csrftoken" not in client.cookies:
        client.get("/studio/")
    return client.cookies["starlette_admin_csrftoken"]


def query(direct: str, sql: str, params: tuple = ()):
    with psycopg.connect(direct) as conn:
        return conn.execute(sql, params or None).fetchall()


def text_of(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return html_module.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


@contextlib.contextmanager
def seeded_database(pg_server, migrated_template, pgbouncer, name: str) -> Iterator[tuple[str, str]]:
    """A database copied from the migrated template, seeded with fixtures/ and behind PgBouncer: yields (direct URL,
    pooled URL); dropped afterwards."""
    from celora_cli.data.seed.apply import seed

    direct = pg_server.create_database(name, template=migrated_template)
    try:
        pooled = pgbouncer(name)
        seed(settings_for(pooled, direct), REPO / "fixtures")
        yield direct, pooled
    finally:
        drop_database(pg_server, name)
