"""The Celora schema on a real PostgreSQL at head: exact amounts, case-insensitive email, cascades, downgrade,
and the rules the database itself enforces (rate-limit windows, updated_at, a transaction's chain, one primary
wallet, lowercase EVM hex, keyset history order, idempotency keys per user)."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError

from celora_cli.db.engine import get_engine, session_scope
from celora_cli.db.models import (
    Chain,
    IdempotencyKey,
    Notification,
    NotificationChannel,
    Session,
    Transaction,
    TransactionDirection,
    User,
    Wallet,
)
from tests.support import settings_for

MAX_UINT256 = 2**256 - 1


@pytest.fixture
def settings(migrated_db):
    settings = settings_for(migrated_db)
    yield settings
    get_engine(settings).dispose()


def make_user(session, uid: str, email: str | None = None) -> User:
    user = User(firebase_uid=uid, email=email)
    session.add(user)
    session.flush()
    return user


def test_amounts_keep_every_digit_of_a_uint256(settings):
    with session_scope(settings) as session:
        wallet = Wallet(user=make_user(session, "u1"), chain=Chain.ETHEREUM, address="0xabc")
        session.add(Transaction(wallet=wallet, chain=Chain.ETHEREUM, tx_hash="0x1", amount=Decimal(MAX_UINT256),
                                fee=Decimal(MAX_UINT256), direction=TransactionDirection.INCOMING,
                                from_address="0xdef", to_address="0xabc", asset="ETH", decimals=18))
    with session_scope(settings) as session:
        tx = session.scalars(select(Transaction)).one()
        assert tx.amount == Decimal(MAX_UINT256) and int(tx.amount) == MAX_UINT256
        assert tx.created_at.tzinfo is not None  # timestamptz


def test_email_is_unique_regardless_of_case(settings):
    with session_scope(settings) as session:
        make_user(session, "u1", "Alice@Example.com")
        make_user(session, "u2", None)
        make_user(session, "u3", None)  # several accounts without email are fine
    with pytest.raises(IntegrityError, match="uq_users_email_lower"):
        with session_scope(settings) as session:
            make_user(session, "u4", "alice@EXAMPLE.com")


def test_address_is_unique_per_chain(settings):
    with session_scope(settings) as session:
        user = make_user(session, "u1")
        session.add_all([Wallet(user=user, chain=Chain.CELO, address="0xsame"),
                         Wallet(user=user, chain=Chain.ETHEREUM, address="0xsame")])
    with pytest.raises(IntegrityError, match="uq_wallets_chain_address"):
        with session_scope(settings) as session:
            other = make_user(session, "u2")
            session.add(Wallet(user=other, chain=Chain.CELO, address="0xsame"))


def test_deleting_a_user_cascades_in_the_database(settings):
    with session_scope(settings) as session:
        user = make_user(session, "u1", "a@b.c")
        wallet = Wallet(user=user, chain=Chain.SOLANA, address="So1")
        session.add_all([
            wallet,
            Transaction(wallet=wallet, chain=Chain.SOLANA, tx_hash="sig", amount=Decimal(5),
                        direction=TransactionDirection.OUTGOING, from_address="So1", to_address="So2",
                        asset="SOL", decimals=9),
            Notification(user=user, channel=NotificationChannel.PUSH, type="tx", title="t", body="b"),
            Session(user=user, token_hash=hashlib.sha256(b"token").digest(),
                    expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)),
        ])
    with session_scope(settings) as session:
        session.execute(delete(User))  # a bulk SQL delete: only ON DELETE CASCADE can clean up
    with session_scope(settings) as session:
        for model in (Wallet, Transaction, Notification, Session):
            assert session.scalar(select(func.count()).select_from(model)) == 0, model.__name__


def test_session_stores_a_hash_never_a_token(settings):
    with pytest.raises(IntegrityError, match="token_hash"):
        with session_scope(settings) as session:
            session.add(Session(user=make_user(session, "u1"), token_hash=b"raw-firebase-token",
                                expires_at=dt.datetime.now(dt.UTC)))


def test_downgrade_to_base_removes_everything(migrated_db):
    from alembic import command

    from celora_cli.db.engine import get_direct_engine
    from celora_cli.migrate.scripts import alembic_config

    settings = settings_for(migrated_db)
    engine = get_direct_engine(settings)
    with engine.connect() as conn:
        command.downgrade(alembic_config(settings, connection=conn), "base")
        conn.commit()
    engine.dispose()
    with psycopg.connect(migrated_db) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        enums = conn.execute("SELECT count(*) FROM pg_type WHERE typtype = 'e'").fetchone()[0]
    # the env stamp and the migration journal are outside the history
    assert tables == {"alembic_version", "celora_metadata", "celora_migrations"} and enums == 0


# -- rules added by 20261126150000_schema_corrections -----------------------------------------------------

INIT = "20261126090000"
EVM_ADDRESS = "0x" + "ab" * 20
EVM_TX_HASH = "0x" + "cd" * 32
PLAN_SORT_NODES = {"Sort", "Incremental Sort"}


def raw(url: str, sql: str, params=None) -> list[tuple]:
    """One statement in its own committed transaction, outside the ORM (the indexer's path)."""
    with psycopg.connect(url) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def make_wallet(settings, chain: Chain = Chain.CELO, address: str = EVM_ADDRESS, **kwargs) -> Wallet:
    with session_scope(settings) as session:
        wallet = Wallet(user=make_user(session, f"owner-{address}"), chain=chain, address=address, **kwargs)
        session.add(wallet)
    return wallet


def evm_transaction(wallet: Wallet, **overrides) -> Transaction:
    values = dict(wallet_id=wallet.id, chain=wallet.chain, tx_hash=EVM_TX_HASH, amount=Decimal(1),
                  direction=TransactionDirection.INCOMING, from_address="0x" + "01" * 20,
                  to_address=wallet.address, asset="CELO", decimals=18)
    return Transaction(**{**values, **overrides})


def test_rate_limits_with_different_windows_are_separate_counters(migrated_db):
    upsert = ("INSERT INTO rate_limits (key, window_start, window_seconds, count, expires_at) "
              "VALUES ('login:1.2.3.4', '2026-11-26 15:00+00', %s, 1, '2026-11-26 16:00+00') "
              "ON CONFLICT (key, window_seconds, window_start) DO UPDATE SET count = rate_limits.count + 1")
    for window in (60, 60, 3600):
        raw(migrated_db, upsert, (window,))
    counts = raw(migrated_db, "SELECT window_seconds, count FROM rate_limits ORDER BY window_seconds")
    assert counts == [(60, 2), (3600, 1)]


def test_updated_at_moves_on_raw_update_and_upsert(migrated_db, settings):
    # now() is the transaction's start time, so each statement below runs in its own transaction.
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    raw(migrated_db, "INSERT INTO users (firebase_uid, updated_at) VALUES ('u1', %s)", (long_ago,))
    raw(migrated_db, "UPDATE users SET display_name = 'raw' WHERE firebase_uid = 'u1'")
    (after_update,), = raw(migrated_db, "SELECT updated_at FROM users")
    assert after_update > long_ago

    raw(migrated_db, "UPDATE users SET updated_at = %s", (long_ago,))  # the trigger wins over any value
    assert raw(migrated_db, "SELECT updated_at > %s FROM users", (long_ago,)) == [(True,)]

    (user_id,), = raw(migrated_db, "SELECT id FROM users")
    upsert = ("INSERT INTO wallets (user_id, chain, address, updated_at) VALUES (%s, 'celo', %s, %s) "
              "ON CONFLICT (chain, address) DO UPDATE SET label = 'upserted'")
    raw(migrated_db, upsert, (user_id, EVM_ADDRESS, long_ago))  # an insert: updated_at stays as given
    assert raw(migrated_db, "SELECT label, updated_at FROM wallets") == [(None, long_ago)]
    raw(migrated_db, upsert, (user_id, EVM_ADDRESS, long_ago))  # the conflict path updates the row
    assert raw(migrated_db, "SELECT label, updated_at > %s FROM wallets", (long_ago,)) == [("upserted", True)]

    # The ORM knows the database sets it (server_onupdate) and reads the new value back.
    with session_scope(settings) as session:
        user = session.scalars(select(User)).one()
        user.display_name = "orm"
        session.flush()
        assert user.updated_at == session.scalar(text("SELECT updated_at FROM users"))


def test_every_table_with_updated_at_has_the_trigger(migrated_db):
    missing = raw(migrated_db, """
        SELECT c.table_name FROM information_schema.columns c
        WHERE c.table_schema = 'public' AND c.column_name = 'updated_at'
          AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                          WHERE t.tgrelid = format('public.%I', c.table_name)::regclass
                            AND t.tgfoid = 'celora_set_updated_at'::regproc AND t.tgenabled = 'O')""")
    assert missing == []


def test_a_transaction_cannot_contradict_its_wallets_chain(migrated_db, settings):
    wallet = make_wallet(settings, Chain.CELO)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_transactions_wallet_id_wallets"):
        raw(migrated_db, "INSERT INTO transactions (wallet_id, chain, tx_hash, direction, amount, asset, decimals) "
                         "VALUES (%s, 'bitcoin', 'abc', 'incoming', 1, 'BTC', 8)", (wallet.id,))
    with pytest.raises(IntegrityError, match="fk_transactions_wallet_id_wallets"):
        with session_scope(settings) as session:  # the ORM does not overwrite the chain it was given
            session.add(evm_transaction(wallet, chain=Chain.BITCOIN, tx_hash="abc"))
    with session_scope(settings) as session:
        session.add(evm_transaction(wallet))
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_transactions_wallet_id_wallets"):
        raw(migrated_db, "UPDATE wallets SET chain = 'ethereum'")  # would strand its celo transactions


def test_a_user_has_at_most_one_primary_wallet(settings):
    with session_scope(settings) as session:
        user, other = make_user(session, "u1"), make_user(session, "u2")
        session.add_all([Wallet(user=user, chain=Chain.CELO, address="0x01", is_primary=True),
                         Wallet(user=user, chain=Chain.CELO, address="0x02"),
                         Wallet(user=user, chain=Chain.CELO, address="0x03"),
                         Wallet(user=other, chain=Chain.CELO, address="0x04", is_primary=True)])
    with pytest.raises(IntegrityError, match="uq_wallets_user_id_primary"):
        with session_scope(settings) as session:
            second = session.scalars(select(Wallet).where(Wallet.address == "0x02")).one()
            second.is_primary = True


@pytest.mark.parametrize("chain", [Chain.CELO, Chain.ETHEREUM])
def test_evm_wallet_addresses_are_lowercase_only(settings, chain):
    make_wallet(settings, chain, EVM_ADDRESS)
    with pytest.raises(IntegrityError, match="ck_wallets_evm_address_lowercase"):
        make_wallet(settings, chain, EVM_ADDRESS.upper().replace("0X", "0x"))


@pytest.mark.parametrize("column", ["tx_hash", "from_address", "to_address", "token_contract"])
def test_evm_transaction_hex_is_lowercase_only(settings, column):
    wallet = make_wallet(settings, Chain.ETHEREUM)
    with pytest.raises(IntegrityError, match=f"ck_transactions_evm_{column}_lowercase"):
        with session_scope(settings) as session:
            session.add(evm_transaction(wallet, **{column: "0x" + "AB" * 20}))


def test_non_evm_values_keep_their_case(settings):
    # Base58 (Solana, legacy Bitcoin) is case-sensitive: lowercasing would make another address.
    solana = "So1anaMixedCaseAddre55Base58xyzABC"
    for chain, address in ((Chain.SOLANA, solana), (Chain.BITCOIN, "1BoatSLRHtKNngkdXEeobR76b53LETtpyT")):
        wallet = make_wallet(settings, chain, address)
        with session_scope(settings) as session:
            session.add(evm_transaction(wallet, tx_hash="5VfYmGC9L2VTBkUXGy", from_address=address,
                                        to_address=address, token_contract="EPjFWdd5AufqSSqeM2qN"))
    with session_scope(settings) as session:
        assert session.scalar(select(Wallet.address).where(Wallet.chain == Chain.SOLANA)) == solana
        assert set(session.scalars(select(Transaction.tx_hash))) == {"5VfYmGC9L2VTBkUXGy"}


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_wallet_history_keyset_page_reads_the_index_in_order(migrated_db, settings):
    wallets = [make_wallet(settings, Chain.CELO, f"0x{n:040x}") for n in range(4)]
    with psycopg.connect(migrated_db) as conn:
        for wallet in wallets:  # 2,000 rows per wallet, three per block time (ties broken by id)
            conn.execute("""
                INSERT INTO transactions (wallet_id, chain, tx_hash, direction, amount, asset, decimals,
                                          block_timestamp, created_at)
                SELECT %s, 'celo', '0x' || lpad(to_hex(g), 64, '0'), 'incoming', 1, 'CELO', 18,
                       timestamptz '2026-01-01' + (g / 3) * interval '1 minute', now() - g * interval '1 second'
                FROM generate_series(1, 2000) AS g""", (wallet.id,))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE transactions")
        page = ("SELECT * FROM transactions WHERE wallet_id = %(w)s AND (block_timestamp, id) < (%(t)s, %(id)s) "
                "ORDER BY block_timestamp DESC, id DESC LIMIT 50")
        params = {"w": wallets[1].id, "t": dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC),
                  "id": "ffffffff-ffff-ffff-ffff-ffffffffffff"}
        (plan,), = conn.execute("EXPLAIN (FORMAT JSON) " + page, params).fetchone()
        rows = conn.execute(page, params).fetchall()
    nodes = list(plan_nodes(plan["Plan"]))
    assert not [n for n in nodes if n["Node Type"] in PLAN_SORT_NODES], plan
    assert any(n.get("Index Name") == "ix_transactions_wallet_id_block_timestamp_id" for n in nodes), plan
    assert len(rows) == 50


def test_idempotency_keys_are_unique_per_user_and_among_anonymous_requests(settings):
    def key(user, value: str) -> IdempotencyKey:
        return IdempotencyKey(key=value, user_id=user.id if user else None, method="POST", path="/v1/transfers",
                              request_fingerprint="0" * 64,
                              expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))

    with session_scope(settings) as session:
        alice, bob = make_user(session, "alice"), make_user(session, "bob")
        session.add_all([key(alice, "k1"), key(bob, "k1"), key(None, "k1"), key(alice, "k2")])
    with pytest.raises(IntegrityError, match="uq_idempotency_keys_user_id_key"):
        with session_scope(settings) as session:
            session.add(key(alice, "k1"))
    with pytest.raises(IntegrityError, match="uq_idempotency_keys_anonymous_key"):
        with session_scope(settings) as session:
            session.add(key(None, "k1"))


def test_deleting_a_user_finds_its_idempotency_keys_by_index(migrated_db):
    # ix_idempotency_keys_user_id was dropped: the partial (user_id, key) index serves the cascade,
    # whose generic plan (user_id = $1) must still prove the index's "user_id IS NOT NULL".
    with psycopg.connect(migrated_db) as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE cascade_delete(uuid) AS DELETE FROM idempotency_keys WHERE user_id = $1")
        (plan,), = conn.execute("EXPLAIN (FORMAT JSON) EXECUTE cascade_delete(gen_random_uuid())").fetchone()
    nodes = list(plan_nodes(plan["Plan"]))
    assert any(n.get("Index Name") == "uq_idempotency_keys_user_id_key" for n in nodes), plan


def test_upgrade_lowercases_existing_evm_hex_and_keeps_other_chains_case(migrated_db):
    from alembic import command

    from celora_cli.db.engine import get_direct_engine
    from celora_cli.migrate.scripts import alembic_config

    settings = settings_for(migrated_db)
    engine = get_direct_engine(settings)

    def alembic(action, target: str) -> None:
        with engine.connect() as conn:
            action(alembic_config(settings, connection=conn), target)
            conn.commit()

    mixed = "0x" + "aB" * 20
    try:
        alembic(command.downgrade, INIT)  # rows written under the old convention
        (user_id,), = raw(migrated_db, "INSERT INTO users (firebase_uid) VALUES ('u1') RETURNING id")
        for chain, value in (("celo", mixed), ("solana", "So1MiXed")):
            (wallet_id,), = raw(migrated_db, "INSERT INTO wallets (user_id, chain, address) VALUES (%s, %s, %s) "
                                             "RETURNING id", (user_id, chain, value))
            raw(migrated_db, "INSERT INTO transactions (wallet_id, chain, tx_hash, direction, amount, asset, "
                             "decimals, from_address, to_address, token_contract) "
                             "VALUES (%s, %s, %s, 'incoming', 1, 'X', 0, %s, %s, %s)",
                (wallet_id, chain, value, value, value, value))
        alembic(command.upgrade, "head")
    finally:
        engine.dispose()
    assert raw(migrated_db, "SELECT chain::text, address FROM wallets ORDER BY chain") == [
        ("celo", mixed.lower()), ("solana", "So1MiXed")]
    assert raw(migrated_db, "SELECT chain::text, tx_hash, from_address, to_address, token_contract "
                            "FROM transactions ORDER BY chain") == [
        ("celo", *[mixed.lower()] * 4), ("solana", *["So1MiXed"] * 4)]
