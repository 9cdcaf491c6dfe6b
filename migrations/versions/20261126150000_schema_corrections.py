"""schema corrections: rate-limit key, updated_at trigger, wallet/transaction chain, one primary wallet,
lowercase EVM hex, keyset history index, idempotency keys per user

Revision ID: 20261126150000
Revises: 20261126090000
Create Date: 2026-11-26 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261126150000"
down_revision = "20261126090000"
branch_labels = None
depends_on = None

# Every name goes through op.f(), as in the init migration: the names are final already.
# The SQL is written out here, not imported from the models: a migration is a snapshot of history.
# tests/integration/test_schema_matches_models.py checks that the result equals the models' schema.

TIMESTAMPED_TABLES = ("users", "wallets", "transactions", "notifications")
EVM_CHAINS = "'celo', 'ethereum'"
TRANSACTION_HEX_COLUMNS = ("tx_hash", "from_address", "to_address", "token_contract")

CREATE_SET_UPDATED_AT = """\
CREATE FUNCTION celora_set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$"""


def _evm_lowercase(column: str) -> str:
    return f"chain NOT IN ({EVM_CHAINS}) OR {column} = lower({column})"


def upgrade() -> None:
    # rate_limits: a 1-hour and a 60-second limit on one key are different counters.
    op.drop_constraint(op.f("pk_rate_limits"), "rate_limits", type_="primary")
    op.create_primary_key(
        op.f("pk_rate_limits"), "rate_limits", ["key", "window_seconds", "window_start"]
    )

    # EVM hex is case-insensitive: bring rows written against the old convention to lowercase first
    # (a clash with an existing lowercase twin fails the migration on the unique constraint, which
    # rolls it back: such duplicates need a person to merge them).
    op.execute(
        f"UPDATE wallets SET address = lower(address) "
        f"WHERE chain IN ({EVM_CHAINS}) AND address <> lower(address)"
    )
    changed = " OR ".join(f"{c} <> lower({c})" for c in TRANSACTION_HEX_COLUMNS)
    assignments = ", ".join(f"{c} = lower({c})" for c in TRANSACTION_HEX_COLUMNS)
    op.execute(
        f"UPDATE transactions SET {assignments} WHERE chain IN ({EVM_CHAINS}) AND ({changed})"
    )
    op.create_check_constraint(
        op.f("ck_wallets_evm_address_lowercase"), "wallets", _evm_lowercase("address")
    )
    for column in TRANSACTION_HEX_COLUMNS:
        op.create_check_constraint(
            op.f(f"ck_transactions_evm_{column}_lowercase"), "transactions", _evm_lowercase(column)
        )

    # updated_at is kept by the database, whatever path the UPDATE takes.
    op.execute(CREATE_SET_UPDATED_AT)
    for table in TIMESTAMPED_TABLES:
        op.execute(
            f"CREATE TRIGGER trg_{table}_set_updated_at BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION celora_set_updated_at()"
        )

    # A transaction's chain is its wallet's chain: (wallet_id, chain) references (id, chain).
    op.create_unique_constraint(op.f("uq_wallets_id_chain"), "wallets", ["id", "chain"])
    op.drop_constraint(op.f("fk_transactions_wallet_id_wallets"), "transactions", type_="foreignkey")
    op.create_foreign_key(
        op.f("fk_transactions_wallet_id_wallets"),
        "transactions",
        "wallets",
        ["wallet_id", "chain"],
        ["id", "chain"],
        ondelete="CASCADE",
    )

    # At most one primary wallet per user.
    op.create_index(
        op.f("uq_wallets_user_id_primary"),
        "wallets",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("is_primary"),
    )

    # A wallet's history is paged by on-chain time with id as tie-breaker, in index order.
    op.drop_index(op.f("ix_transactions_wallet_id_created_at"), table_name="transactions")
    op.create_index(
        op.f("ix_transactions_wallet_id_block_timestamp_id"),
        "transactions",
        ["wallet_id", sa.text("block_timestamp DESC"), sa.text("id DESC")],
    )

    # Idempotency keys are scoped by user; anonymous keys stay unique among themselves.
    op.drop_constraint(op.f("uq_idempotency_keys_key"), "idempotency_keys", type_="unique")
    op.drop_index(op.f("ix_idempotency_keys_user_id"), table_name="idempotency_keys")
    op.create_index(
        op.f("uq_idempotency_keys_user_id_key"),
        "idempotency_keys",
        ["user_id", "key"],
        unique=True,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_index(
        op.f("uq_idempotency_keys_anonymous_key"),
        "idempotency_keys",
        ["key"],
        unique=True,
        postgresql_where=sa.text("user_id IS NULL"),
    )


def downgrade() -> None:
    # The old keys are narrower: rows the new ones allow (two users sharing an idempotency key, a
    # 60-second and a 1-hour counter with the same start) make this fail and roll back, not lose data.
    op.drop_index(op.f("uq_idempotency_keys_anonymous_key"), table_name="idempotency_keys")
    op.drop_index(op.f("uq_idempotency_keys_user_id_key"), table_name="idempotency_keys")
    op.create_index(op.f("ix_idempotency_keys_user_id"), "idempotency_keys", ["user_id"])
    op.create_unique_constraint(op.f("uq_idempotency_keys_key"), "idempotency_keys", ["key"])

    op.drop_index(op.f("ix_transactions_wallet_id_block_timestamp_id"), table_name="transactions")
    op.create_index(
        op.f("ix_transactions_wallet_id_created_at"),
        "transactions",
        ["wallet_id", sa.text("created_at DESC")],
    )

    op.drop_index(op.f("uq_wallets_user_id_primary"), table_name="wallets")

    op.drop_constraint(op.f("fk_transactions_wallet_id_wallets"), "transactions", type_="foreignkey")
    op.create_foreign_key(
        op.f("fk_transactions_wallet_id_wallets"),
        "transactions",
        "wallets",
        ["wallet_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.drop_constraint(op.f("uq_wallets_id_chain"), "wallets", type_="unique")

    for table in TIMESTAMPED_TABLES:
        op.execute(f"DROP TRIGGER trg_{table}_set_updated_at ON {table}")
    op.execute("DROP FUNCTION celora_set_updated_at()")

    # Lowercased hex stays lowercase: it was always the convention.
    for column in TRANSACTION_HEX_COLUMNS:
        op.drop_constraint(
            op.f(f"ck_transactions_evm_{column}_lowercase"), "transactions", type_="check"
        )
    op.drop_constraint(op.f("ck_wallets_evm_address_lowercase"), "wallets", type_="check")

    op.drop_constraint(op.f("pk_rate_limits"), "rate_limits", type_="primary")
    op.create_primary_key(op.f("pk_rate_limits"), "rate_limits", ["key", "window_start"])
