"""Wallets: a blockchain address a user has linked to their account."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Index, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from celora_cli.db.models.base import Base, TimestampMixin
from celora_cli.db.models.enums import Chain, chain_enum, evm_lowercase_check

if TYPE_CHECKING:
    from celora_cli.db.models.transaction import Transaction
    from celora_cli.db.models.user import User


class Wallet(TimestampMixin, Base):
    __tablename__ = "wallets"
    __table_args__ = (
        # Addresses are compared as stored. EVM hex addresses are case-insensitive, so the database
        # only accepts their lowercase form (0xAb.. and 0xab.. would otherwise be two wallets); other
        # chains' formats (bech32, base58) are kept exactly as given.
        UniqueConstraint("chain", "address"),
        evm_lowercase_check("address"),
        # The target of transactions' (wallet_id, chain) foreign key: a transaction's chain is its
        # wallet's chain.
        UniqueConstraint("id", "chain"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    # CASCADE: deleting an account must erase the addresses linked to it; the on-chain history
    # itself stays public on the chain and can be re-indexed if ever needed.
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    chain: Mapped[Chain] = mapped_column(chain_enum)
    address: Mapped[str] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(Text)
    is_primary: Mapped[bool] = mapped_column(server_default=text("false"))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )

    user: Mapped[User] = relationship(back_populates="wallets")
    transactions: Mapped[list[Transaction]] = relationship(
        back_populates="wallet",
        cascade="all, delete-orphan",
        passive_deletes=True,
        primaryjoin="Wallet.id == foreign(Transaction.wallet_id)",
    )

    def __repr__(self) -> str:
        return f"<Wallet id={self.id} chain={self.chain} address={self.address!r}>"


# "A user's wallets", in the order they were added; also serves the user_id foreign key.
Index("ix_wallets_user_id_created_at", Wallet.user_id, Wallet.created_at)
# At most one primary wallet per user.
Index(
    "uq_wallets_user_id_primary",
    Wallet.user_id,
    unique=True,
    postgresql_where=text("is_primary"),
)
