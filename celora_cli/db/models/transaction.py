"""Transactions: blockchain history, one row per (transaction, wallet it concerns)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    Numeric,
    SmallInteger,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from celora_cli.db.models.base import Base, TimestampMixin
from celora_cli.db.models.enums import (
    Chain,
    TransactionDirection,
    TransactionStatus,
    chain_enum,
    evm_lowercase_check,
    transaction_direction_enum,
    transaction_status_enum,
)

if TYPE_CHECKING:
    from celora_cli.db.models.wallet import Wallet

# Amounts are integers in the asset's base units (wei, satoshi, lamports). 78 digits hold
# 2**256 - 1, the largest ERC-20 / EVM uint256 value. Never a float.
BASE_UNITS = Numeric(78, 0)


class Transaction(TimestampMixin, Base):
    __tablename__ = "transactions"
    __table_args__ = (
        # The same on-chain transaction is stored once per wallet it touches (sender and receiver).
        UniqueConstraint("chain", "tx_hash", "wallet_id"),
        # (wallet_id, chain), not wallet_id alone: a transaction's chain must be its wallet's chain.
        ForeignKeyConstraint(
            ["wallet_id", "chain"], ["wallets.id", "wallets.chain"], ondelete="CASCADE"
        ),
        CheckConstraint("amount >= 0", name="amount_non_negative"),
        CheckConstraint("fee >= 0", name="fee_non_negative"),
        CheckConstraint("decimals >= 0", name="decimals_non_negative"),
        CheckConstraint("confirmations >= 0", name="confirmations_non_negative"),
        # EVM hashes and addresses are hex: lowercase only, like wallets.address.
        *(
            evm_lowercase_check(column)
            for column in ("tx_hash", "from_address", "to_address", "token_contract")
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    wallet_id: Mapped[uuid.UUID]
    chain: Mapped[Chain] = mapped_column(chain_enum)
    tx_hash: Mapped[str] = mapped_column(Text)
    direction: Mapped[TransactionDirection] = mapped_column(transaction_direction_enum)
    status: Mapped[TransactionStatus] = mapped_column(
        transaction_status_enum, server_default=text("'pending'")
    )
    from_address: Mapped[str | None] = mapped_column(Text)
    to_address: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Decimal] = mapped_column(BASE_UNITS)
    asset: Mapped[str] = mapped_column(Text)
    # NULL for the chain's native coin.
    token_contract: Mapped[str | None] = mapped_column(Text)
    decimals: Mapped[int] = mapped_column(SmallInteger)
    fee: Mapped[Decimal | None] = mapped_column(BASE_UNITS)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_timestamp: Mapped[dt.datetime | None]
    confirmations: Mapped[int] = mapped_column(server_default=text("0"))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )

    # Joined on wallet_id alone, so the ORM fills in wallet_id but never overwrites `chain` with the
    # wallet's: a contradicting chain is rejected by the foreign key instead of silently corrected.
    wallet: Mapped[Wallet] = relationship(
        back_populates="transactions",
        primaryjoin="Wallet.id == foreign(Transaction.wallet_id)",
    )

    def __repr__(self) -> str:
        return f"<Transaction id={self.id} chain={self.chain} tx_hash={self.tx_hash!r}>"


# A wallet's history, newest on-chain first, paged by keyset:
#   WHERE wallet_id = :w AND (block_timestamp, id) < (:t, :id) ORDER BY block_timestamp DESC, id DESC
# id breaks ties between transactions of one block, so no page repeats or skips a row, and the index
# order is the query's order (no sort step). Pending transactions (no block yet, NULL) come first
# (DESC is NULLS FIRST, in the index too); a keyset condition on NULL matches nothing, so the app
# lists them apart (they are few). Also serves the (wallet_id, chain) foreign key.
Index(
    "ix_transactions_wallet_id_block_timestamp_id",
    Transaction.wallet_id,
    Transaction.block_timestamp.desc(),
    Transaction.id.desc(),
)
# The confirmation poller only ever scans pending rows, a small slice of the table.
Index(
    "ix_transactions_pending",
    Transaction.created_at,
    postgresql_where=text("status = 'pending'"),
)
