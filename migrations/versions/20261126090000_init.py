"""init: the whole Celora schema

Revision ID: 20261126090000
Revises:
Create Date: 2026-11-26 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "20261126090000"
down_revision = None
branch_labels = None
depends_on = None

# Every name goes through op.f(): the env's target_metadata has a naming convention, and
# "ck_%(table_name)s_%(constraint_name)s" would otherwise be applied a second time to these names.

# The enum types are created explicitly, once, in upgrade(). create_type=False stops create_table
# from creating them again: `chain` is used by two tables and would otherwise be created twice.
chain = postgresql.ENUM(
    "celo", "ethereum", "bitcoin", "solana", name="chain", create_type=False
)
transaction_direction = postgresql.ENUM(
    "incoming", "outgoing", "self", name="transaction_direction", create_type=False
)
transaction_status = postgresql.ENUM(
    "pending", "confirmed", "failed", "dropped", name="transaction_status", create_type=False
)
notification_channel = postgresql.ENUM(
    "push", "email", "in_app", name="notification_channel", create_type=False
)
notification_status = postgresql.ENUM(
    "pending", "sent", "delivered", "failed", name="notification_status", create_type=False
)
ENUMS = (
    chain,
    transaction_direction,
    transaction_status,
    notification_channel,
    notification_status,
)


def _uuid_pk() -> sa.Column:
    return sa.Column(
        "id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False
    )


def _tstz(name: str, *, nullable: bool, default_now: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.text("now()") if default_now else None,
        nullable=nullable,
    )


def _timestamps() -> list[sa.Column]:
    return [
        _tstz("created_at", nullable=False, default_now=True),
        _tstz("updated_at", nullable=False, default_now=True),
    ]


def _jsonb_object(name: str) -> sa.Column:
    return sa.Column(
        name, postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
    )


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete="CASCADE"
    )


def upgrade() -> None:
    bind = op.get_bind()
    for enum in ENUMS:
        enum.create(bind, checkfirst=False)

    op.create_table(
        "users",
        _uuid_pk(),
        sa.Column("firebase_uid", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("email_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("photo_url", sa.Text(), nullable=True),
        sa.Column("phone_number", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _tstz("last_login_at", nullable=True),
        _jsonb_object("metadata"),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("firebase_uid", name=op.f("uq_users_firebase_uid")),
    )
    # Case-insensitive email uniqueness without the citext extension.
    op.create_index(
        op.f("uq_users_email_lower"), "users", [sa.text("lower(email)")], unique=True
    )

    op.create_table(
        "sessions",
        _uuid_pk(),
        sa.Column("user_id", sa.UUID(), nullable=False),
        # SHA-256 digest of the token; the token itself is never stored.
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("ip_address", postgresql.INET(), nullable=True),
        _tstz("expires_at", nullable=False),
        _tstz("revoked_at", nullable=True),
        _tstz("created_at", nullable=False, default_now=True),
        _tstz("last_seen_at", nullable=False, default_now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        _user_fk("sessions"),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sessions_token_hash")),
        sa.CheckConstraint(
            "octet_length(token_hash) = 32", name=op.f("ck_sessions_token_hash_sha256")
        ),
    )
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"])
    op.create_index(op.f("ix_sessions_expires_at"), "sessions", ["expires_at"])

    op.create_table(
        "wallets",
        _uuid_pk(),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("chain", chain, nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("is_primary", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _jsonb_object("metadata"),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallets")),
        # CASCADE: deleting an account erases the addresses linked to it (history stays on-chain).
        _user_fk("wallets"),
        sa.UniqueConstraint("chain", "address", name=op.f("uq_wallets_chain_address")),
    )
    op.create_index(
        op.f("ix_wallets_user_id_created_at"), "wallets", ["user_id", "created_at"]
    )

    op.create_table(
        "transactions",
        _uuid_pk(),
        sa.Column("wallet_id", sa.UUID(), nullable=False),
        sa.Column("chain", chain, nullable=False),
        sa.Column("tx_hash", sa.Text(), nullable=False),
        sa.Column("direction", transaction_direction, nullable=False),
        sa.Column(
            "status", transaction_status, server_default=sa.text("'pending'"), nullable=False
        ),
        sa.Column("from_address", sa.Text(), nullable=True),
        sa.Column("to_address", sa.Text(), nullable=True),
        # Integer base units; 78 digits hold 2**256 - 1.
        sa.Column("amount", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("asset", sa.Text(), nullable=False),
        sa.Column("token_contract", sa.Text(), nullable=True),
        sa.Column("decimals", sa.SmallInteger(), nullable=False),
        sa.Column("fee", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        _tstz("block_timestamp", nullable=True),
        sa.Column("confirmations", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _jsonb_object("metadata"),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallets.id"],
            name=op.f("fk_transactions_wallet_id_wallets"),
            ondelete="CASCADE",
        ),
        # One row per wallet the on-chain transaction touches (sender and receiver).
        sa.UniqueConstraint(
            "chain", "tx_hash", "wallet_id", name=op.f("uq_transactions_chain_tx_hash_wallet_id")
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_transactions_amount_non_negative")),
        sa.CheckConstraint("fee >= 0", name=op.f("ck_transactions_fee_non_negative")),
        sa.CheckConstraint("decimals >= 0", name=op.f("ck_transactions_decimals_non_negative")),
        sa.CheckConstraint(
            "confirmations >= 0", name=op.f("ck_transactions_confirmations_non_negative")
        ),
    )
    op.create_index(
        op.f("ix_transactions_wallet_id_created_at"),
        "transactions",
        ["wallet_id", sa.text("created_at DESC")],
    )
    op.create_index(
        op.f("ix_transactions_pending"),
        "transactions",
        ["created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )

    op.create_table(
        "notifications",
        _uuid_pk(),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("channel", notification_channel, nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _jsonb_object("data"),
        sa.Column(
            "status", notification_status, server_default=sa.text("'pending'"), nullable=False
        ),
        _tstz("read_at", nullable=True),
        _tstz("sent_at", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        _user_fk("notifications"),
    )
    op.create_index(
        op.f("ix_notifications_user_id_created_at"),
        "notifications",
        ["user_id", sa.text("created_at DESC")],
    )
    op.create_index(
        op.f("ix_notifications_user_unread"),
        "notifications",
        ["user_id", sa.text("created_at DESC")],
        postgresql_where=sa.text("read_at IS NULL"),
    )
    op.create_index(
        op.f("ix_notifications_pending"),
        "notifications",
        ["created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )

    op.create_table(
        "idempotency_keys",
        _uuid_pk(),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("request_fingerprint", sa.Text(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", postgresql.JSONB(), nullable=True),
        _tstz("locked_at", nullable=True),
        _tstz("expires_at", nullable=False),
        _tstz("created_at", nullable=False, default_now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        _user_fk("idempotency_keys"),
        # Global, not (user_id, key): NULL user_ids never collide in a unique constraint on PG14.
        sa.UniqueConstraint("key", name=op.f("uq_idempotency_keys_key")),
        sa.CheckConstraint(
            "request_fingerprint ~ '^[0-9a-f]{64}$'",
            name=op.f("ck_idempotency_keys_request_fingerprint_sha256_hex"),
        ),
    )
    op.create_index(op.f("ix_idempotency_keys_user_id"), "idempotency_keys", ["user_id"])
    op.create_index(op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"])

    op.create_table(
        "rate_limits",
        sa.Column("key", sa.Text(), nullable=False),
        _tstz("window_start", nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _tstz("expires_at", nullable=False),
        # The lookup key is the primary key: the ON CONFLICT target of the counter upsert.
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_rate_limits")),
        sa.CheckConstraint(
            "window_seconds > 0", name=op.f("ck_rate_limits_window_seconds_positive")
        ),
        sa.CheckConstraint("count >= 0", name=op.f("ck_rate_limits_count_non_negative")),
    )
    op.create_index(op.f("ix_rate_limits_expires_at"), "rate_limits", ["expires_at"])


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints; children go before their parents.
    for table in (
        "rate_limits",
        "idempotency_keys",
        "notifications",
        "transactions",
        "wallets",
        "sessions",
        "users",
    ):
        op.drop_table(table)

    bind = op.get_bind()
    for enum in reversed(ENUMS):
        enum.drop(bind, checkfirst=False)
