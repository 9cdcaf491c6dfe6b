"""The Celora schema on a real PostgreSQL at head: exact amounts, case-insensitive email, cascades, downgrade."""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from celora_cli.db.engine import get_engine, session_scope
from celora_cli.db.models import (
    Chain,
    Notification,
    NotificationChannel,
    Session,
    Transaction,
    TransactionDirection,
    User,
    Wallet,
)
from tests.conftest import settings_for

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
                    expires_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)),
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
                                expires_at=dt.datetime.now(dt.timezone.utc)))


def test_downgrade_to_base_removes_everything(migrated_db):
    from alembic import command

    from celora_cli.db.engine import get_direct_engine
    from celora_cli.migrations import alembic_config

    settings = settings_for(migrated_db)
    engine = get_direct_engine(settings)
    with engine.connect() as conn:
        command.downgrade(alembic_config(settings, connection=conn), "base")
        conn.commit()
    engine.dispose()
    with psycopg.connect(migrated_db) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        enums = conn.execute("SELECT count(*) FROM pg_type WHERE typtype = 'e'").fetchone()[0]
    assert tables == {"alembic_version"} and enums == 0
