"""generate_volume() on a real migrated database: the schema's constraints accept every row, the rows relate
as they should, the same seed gives the same rows, and nothing is committed by the function itself."""

from __future__ import annotations

import os
import re

import psycopg
import pytest

from celora_cli.data.seed.volume import BASE_TIME, TABLES, generate_volume, planned_counts
from celora_cli.errors import InternalError, Refused

USERS = 30

ADDRESS_PATTERNS = {
    "celo": r"^0x[0-9a-f]{40}$",
    "ethereum": r"^0x[0-9a-f]{40}$",
    "bitcoin": r"^bc1q[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{38}$",
    "solana": r"^[1-9A-HJ-NP-Za-km-z]{32,44}$",
}
HASH_PATTERNS = {
    "celo": r"^0x[0-9a-f]{64}$",
    "ethereum": r"^0x[0-9a-f]{64}$",
    "bitcoin": r"^[0-9a-f]{64}$",
    "solana": r"^[1-9A-HJ-NP-Za-km-z]{86,88}$",
}


def load(url: str, *, users: int = USERS, seed: int = 7, progress=None) -> dict[str, int]:
    with psycopg.connect(url) as conn:  # autocommit off: the function runs in the transaction we commit
        counts = generate_volume(conn, users=users, seed=seed, progress=progress)
        conn.commit()
    return counts


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def dump(url: str) -> dict[str, list[str]]:
    return {table: [row[0] for row in query(url, f"SELECT row_to_json(t)::text FROM {table} t ORDER BY id")]
            for table in TABLES}


@pytest.fixture
def second_migrated_db(pg_server, migrated_template):
    name = f"t_seed_second_{os.getpid()}"
    url = pg_server.create_database(name, template=migrated_template)
    yield url
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_rows_satisfy_the_schema_and_relate_as_a_wallet_app_expects(migrated_db):
    counts = load(migrated_db)  # every CHECK, unique index and foreign key accepted every row

    assert counts == planned_counts(users=USERS, seed=7)
    for table in TABLES:
        assert query(migrated_db, f"SELECT count(*) FROM {table}")[0][0] == counts[table], table
    assert counts["users"] == USERS

    emails = [row[0] for row in query(migrated_db, "SELECT email FROM users")]
    assert all(e == e.lower() and e.endswith("@s7.volume.celora.test") for e in emails)
    assert len({e.lower() for e in emails}) == USERS

    per_user = query(migrated_db, """
        SELECT count(*), count(DISTINCT chain), count(*) FILTER (WHERE is_primary)
        FROM users u JOIN wallets w ON w.user_id = u.id GROUP BY u.id""")
    assert len(per_user) == USERS  # every user has a wallet
    assert all(1 <= n <= 4 and chains == n and primaries <= 1 for n, chains, primaries in per_user)

    for chain, address in query(migrated_db, "SELECT chain, address FROM wallets"):
        assert re.match(ADDRESS_PATTERNS[chain], address), (chain, address)

    rows = query(migrated_db, """
        SELECT t.chain, t.tx_hash, t.direction, t.status, t.from_address, t.to_address, w.address,
               t.amount, t.block_number, t.block_timestamp, t.confirmations, t.created_at, t.updated_at
        FROM transactions t JOIN wallets w ON w.id = t.wallet_id""")
    fewest = query(migrated_db, "SELECT min(n) FROM (SELECT count(*) n FROM transactions GROUP BY wallet_id) c")
    assert fewest[0][0] >= 2  # several per wallet
    seen = {(status, direction) for _, _, direction, status, *_ in rows}
    assert {"pending", "confirmed", "failed"} <= {status for status, _ in seen}
    assert {"incoming", "outgoing"} <= {direction for _, direction in seen}
    for chain, tx_hash, direction, status, source, target, own, amount, block, block_time, confirmations, \
            created, updated in rows:
        assert re.match(HASH_PATTERNS[chain], tx_hash), (chain, tx_hash)
        assert (source if direction == "outgoing" else target) == own
        assert re.match(ADDRESS_PATTERNS[chain], source if direction == "incoming" else target)
        assert amount > 0 and amount == int(amount)
        assert created <= updated <= BASE_TIME
        if status == "confirmed":
            assert block is not None and block_time is not None and confirmations > 0
            assert created <= block_time <= updated
        if status == "pending":
            assert block is None and block_time is None and confirmations == 0

    channels = query(migrated_db, "SELECT DISTINCT channel, read_at IS NULL FROM notifications")
    assert {c for c, _ in channels} == {"push", "email", "in_app"}
    assert {unread for _, unread in channels} == {True, False}  # read and unread
    for table in TABLES:
        newest = query(migrated_db, f"SELECT max(created_at), max(updated_at) FROM {table}")[0]
        assert all(stamp <= BASE_TIME for stamp in newest), table  # from the fixed base time, not now()


def test_same_seed_gives_identical_rows_in_two_databases(migrated_db, second_migrated_db):
    load(migrated_db, seed=11)
    load(second_migrated_db, seed=11)
    first, second = dump(migrated_db), dump(second_migrated_db)
    assert all(first[table] for table in TABLES)
    assert first == second


def test_another_seed_gives_other_rows_that_coexist_with_the_first(migrated_db, second_migrated_db):
    load(migrated_db, seed=11)
    load(second_migrated_db, seed=12)
    first, second = dump(migrated_db), dump(second_migrated_db)
    for table in TABLES:
        assert set(first[table]).isdisjoint(second[table]), table
    load(migrated_db, seed=12)  # a second seed in the same database: no email, address or hash collides
    assert query(migrated_db, "SELECT count(*) FROM users")[0][0] == 2 * USERS


def test_a_second_run_of_the_same_seed_is_refused_and_writes_nothing(migrated_db):
    with psycopg.connect(migrated_db) as conn:  # the fixtures' users are elsewhere: no collision with them
        conn.execute("INSERT INTO users (firebase_uid, email) VALUES ('alice-uid', 'alice@celora.io')")
        conn.commit()
    load(migrated_db, users=5, seed=3)
    before = {table: query(migrated_db, f"SELECT count(*) FROM {table}")[0][0] for table in TABLES}

    with psycopg.connect(migrated_db) as conn, pytest.raises(Refused) as caught:
        generate_volume(conn, users=20, seed=3)  # a different size, the same seed
    assert "seed 3 is already loaded" in caught.value.message and "--seed" in caught.value.hint
    assert {table: query(migrated_db, f"SELECT count(*) FROM {table}")[0][0] for table in TABLES} == before


def test_progress_reports_each_table_from_zero_to_its_total(migrated_db):
    calls: list[tuple[str, int, int]] = []
    counts = load(migrated_db, progress=lambda table, done, total: calls.append((table, done, total)))

    assert [c[0] for c in calls if c[1] == 0] == list(TABLES)  # started in dependency order
    for table in TABLES:
        mine = [(done, total) for name, done, total in calls if name == table]
        assert mine[0] == (0, counts[table]) and mine[-1] == (counts[table], counts[table])
        assert [done for done, _ in mine] == sorted(done for done, _ in mine)


def test_nothing_is_committed_by_the_function(migrated_db):
    with psycopg.connect(migrated_db) as conn:
        counts = generate_volume(conn, users=USERS, seed=7)
        assert conn.execute("SELECT count(*) FROM transactions").fetchone()[0] == counts["transactions"]
        conn.rollback()
    for table in TABLES:
        assert query(migrated_db, f"SELECT count(*) FROM {table}")[0][0] == 0, table

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        with pytest.raises(InternalError, match="autocommit"):
            generate_volume(conn, users=USERS, seed=7)  # each COPY would commit on its own
        with conn.transaction():  # an explicit transaction block is fine, and the caller's to end
            generate_volume(conn, users=2, seed=7)
            raise psycopg.Rollback()
    assert query(migrated_db, "SELECT count(*) FROM users")[0][0] == 0
