"""The Celora schema. Importing this package registers every table on ``Base.metadata``."""

from celora_cli.db.models.audit_log import AuditLog
from celora_cli.db.models.base import Base, TimestampMixin
from celora_cli.db.models.enums import (
    Chain,
    NotificationChannel,
    NotificationStatus,
    TransactionDirection,
    TransactionStatus,
)
from celora_cli.db.models.idempotency_key import IdempotencyKey
from celora_cli.db.models.notification import Notification
from celora_cli.db.models.rate_limit import RateLimit
from celora_cli.db.models.session import Session
from celora_cli.db.models.transaction import Transaction
from celora_cli.db.models.user import User
from celora_cli.db.models.wallet import Wallet

__all__ = [
    "AuditLog",
    "Base",
    "Chain",
    "IdempotencyKey",
    "Notification",
    "NotificationChannel",
    "NotificationStatus",
    "RateLimit",
    "Session",
    "TimestampMixin",
    "Transaction",
    "TransactionDirection",
    "TransactionStatus",
    "User",
    "Wallet",
]
