"""Python enums and the PostgreSQL ENUM types that store them.

Each database enum type is defined exactly once here and shared by every column that uses it
(``chain`` is used by both wallets and transactions), so ``metadata.create_all`` creates it once.
"""

from __future__ import annotations

import enum

from sqlalchemy import CheckConstraint, Enum

from celora_cli.db.models.base import Base


class Chain(enum.StrEnum):
    CELO = "celo"
    ETHEREUM = "ethereum"
    BITCOIN = "bitcoin"
    SOLANA = "solana"


# Chains whose addresses and hashes are hex, hence case-insensitive: stored lowercase only.
EVM_CHAINS = (Chain.CELO, Chain.ETHEREUM)


def evm_lowercase_check(column: str) -> CheckConstraint:
    """CHECK that `column` is lowercase on EVM chains (the row's `chain` column); NULL passes."""
    evm = ", ".join(f"'{chain.value}'" for chain in EVM_CHAINS)
    return CheckConstraint(
        f"chain NOT IN ({evm}) OR {column} = lower({column})", name=f"evm_{column}_lowercase"
    )


class TransactionDirection(enum.StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"
    SELF = "self"


class TransactionStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    DROPPED = "dropped"


class NotificationChannel(enum.StrEnum):
    PUSH = "push"
    EMAIL = "email"
    IN_APP = "in_app"


class NotificationStatus(enum.StrEnum):
    # Delivery lifecycle only; whether the user has read it is `read_at`, because reading is
    # orthogonal to delivery (an in-app notification is read without ever being "sent").
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


def _values(enum_cls: type[enum.Enum]) -> list[str]:
    # Store the lowercase values, not the member names, as the database labels.
    return [member.value for member in enum_cls]


def _pg_enum(enum_cls: type[enum.Enum], name: str) -> Enum:
    # metadata=Base.metadata makes the type a metadata-level object: created before the tables and
    # dropped after them by create_all/drop_all, instead of with whichever table happens to use it.
    return Enum(enum_cls, name=name, values_callable=_values, metadata=Base.metadata)


chain_enum = _pg_enum(Chain, "chain")
transaction_direction_enum = _pg_enum(TransactionDirection, "transaction_direction")
transaction_status_enum = _pg_enum(TransactionStatus, "transaction_status")
notification_channel_enum = _pg_enum(NotificationChannel, "notification_channel")
notification_status_enum = _pg_enum(NotificationStatus, "notification_status")
