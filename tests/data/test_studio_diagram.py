"""The schema diagram (every table, its columns with keys marked, every foreign key as an edge, each table linked to
its list, drawn from whatever models are mapped) and copying selected rows as CSV or Markdown."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, Text

from tests.support.studio_client import make_client, query, seeded_database

pytestmark = pytest.mark.pgbouncer
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def seeded(pg_server, migrated_template, pgbouncer):
    with seeded_database(pg_server, migrated_template, pgbouncer, "t_studio_diagram") as (direct, pooled):
        yield direct, pooled


@pytest.fixture(scope="module")
def client(seeded):
    direct, pooled = seeded
    return make_client(pooled, direct, read_only=True)


def svg_of(html: str) -> ET.Element:
    return ET.fromstring(re.search(r"<svg .*?</svg>", html, re.S).group(0))


def test_the_diagram_draws_every_table_column_key_and_relation_from_the_models(client):
    from celora_cli.data.studio.views import view_key
    from celora_cli.db.models import Base

    assert "/studio/-/diagram" in client.get("/studio/").text  # in the menu
    page = client.get("/studio/-/diagram")
    assert page.status_code == 200
    svg = svg_of(page.text)  # well-formed XML
    tables = {g.get("data-table"): g for g in svg.iter(f"{SVG}g") if g.get("class") == "celora-table"}
    assert set(tables) == set(Base.metadata.tables)
    for mapper in Base.registry.mappers:
        table = mapper.local_table
        group = tables[table.name]
        columns = {t.get("data-column"): t.get("data-key") for t in group.iter(f"{SVG}text")
                   if t.get("class") == "celora-column"}
        assert list(columns) == [c.name for c in table.columns]
        foreign = {fk.parent.name for fk in table.foreign_keys}
        for column in table.columns:
            assert ("PK" in columns[column.name]) == column.primary_key, (table.name, column.name)
            assert ("FK" in columns[column.name]) == (column.name in foreign), (table.name, column.name)
        links = [a.get("href") for a in group.iter(f"{SVG}a")]
        assert links == [f"../{view_key(mapper)}/list"]
    edges = {(p.get("data-from"), p.get("data-to")) for p in svg.iter(f"{SVG}path") if p.get("class") == "celora-edge"}
    assert edges == {(f"{t.name}.{fk.parent.name}", f"{fk.column.table.name}.{fk.column.name}")
                     for t in Base.metadata.tables.values() for fk in t.foreign_keys}
    assert ("wallets.user_id", "users.id") in edges and ("transactions.wallet_id", "wallets.id") in edges


def test_a_new_table_appears_with_no_new_code_and_a_referenced_one_sits_left():
    from celora_cli.data.studio.diagram import BOX_WIDTH, layout, render_svg

    metadata = MetaData()
    parent = Table("parent <&>", metadata, Column("id", Integer, primary_key=True))
    child = Table("child", metadata, Column("id", Integer, primary_key=True),
                  Column("parent_id", ForeignKey("parent <&>.id")), Column("self_id", ForeignKey("child.id")),
                  Column("note", Text))
    boxes, width, height = layout([parent, child], {})
    where = {box.table.name: box for box in boxes}
    assert where["parent <&>"].x + BOX_WIDTH < where["child"].x
    svg = ET.fromstring(str(render_svg([parent, child], {"child": "../child/list"})))  # names escaped
    edges = [p.get("data-to") for p in svg.iter(f"{SVG}path") if p.get("class") == "celora-edge"]
    assert sorted(edges) == ["child.id", "parent <&>.id"]  # the self-reference is drawn too


def test_copy_selected_rows_as_csv_and_markdown(client, seeded):
    direct, _ = seeded
    listing = client.get("/studio/transaction/list")
    assert "/studio/-/copy.js" in listing.text  # the list page loads the copy script
    script = client.get("/studio/-/copy.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    rows = query(direct, "SELECT id, tx_hash, amount FROM transactions ORDER BY amount DESC LIMIT 3")
    pks = "&".join(f"pk={r[0]}" for r in rows)
    response = client.get(f"/studio/-/copy/transaction?format=csv&{pks}")
    assert response.status_code == 200
    copied = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["id"], r["tx_hash"], r["amount"]) for r in copied] == [(str(a), b, str(c)) for a, b, c in rows]
    markdown = client.get(f"/studio/-/copy/transaction?format=markdown&{pks}").text.splitlines()
    assert markdown[0].startswith("| id |") and markdown[1].startswith("| --- |") and len(markdown) == 5
    assert str(rows[0][0]) in markdown[2]


def test_copy_never_includes_sensitive_columns_and_escapes_markdown(client, seeded):
    import psycopg

    direct, _ = seeded
    (user_id,), = query(direct, "SELECT id FROM users WHERE email = 'alice@celora.io'")
    with psycopg.connect(direct) as conn:
        (session_id,), = conn.execute(
            "INSERT INTO sessions (user_id, token_hash, expires_at, user_agent) VALUES (%s, sha256('copy-secret'), "
            "now() + interval '1 day', 'pipe | and\nnewline') RETURNING id", (user_id,)).fetchall()
    (token_hash,), = query(direct, "SELECT token_hash FROM sessions WHERE id = %s", (session_id,))
    for output in ("csv", "markdown"):
        text = client.get(f"/studio/-/copy/session?format={output}&pk={session_id}").text
        assert "token_hash" not in text and token_hash.hex() not in text
    markdown = client.get(f"/studio/-/copy/session?format=markdown&pk={session_id}").text
    assert "pipe \\| and<br>newline" in markdown and len(markdown.splitlines()) == 3


def test_copy_refuses_nonsense(client):
    assert client.get("/studio/-/copy/transaction?format=csv").status_code == 400
    assert client.get("/studio/-/copy/transaction?format=xml&pk=1").status_code == 400
    assert client.get("/studio/-/copy/no-such?format=csv&pk=1").status_code == 404
    many = "&".join(f"pk=00000000-0000-0000-0000-{n:012d}" for n in range(501))
    assert client.get(f"/studio/-/copy/transaction?{many}").status_code == 400
