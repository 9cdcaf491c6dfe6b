"""Idempotency keys: deduplication of retried API requests (the Idempotency-Key header)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from celora_cli.db.models.base import Base


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        CheckConstraint(
            "request_fingerprint ~ '^[0-9a-f]{64}$'", name="request_fingerprint_sha256_hex"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    # Unique per user (two users may pick the same key), and among anonymous requests: see the two
    # partial unique indexes below. On a hit, callers must still check request_fingerprint.
    key: Mapped[str] = mapped_column(Text)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    request_fingerprint: Mapped[str] = mapped_column(Text)
    # NULL until the first request completes; a replay returns the stored response.
    response_status: Mapped[int | None]
    # sensitive (a replay returns it verbatim: it may hold tokens): never in audit_log or the change stream.
    response_body: Mapped[Any | None] = mapped_column(JSONB, info={"sensitive": True})
    # Set while the first request is in flight, so a concurrent retry can answer 409.
    locked_at: Mapped[dt.datetime | None]
    # Indexed for the periodic "delete expired keys" sweep.
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    def __repr__(self) -> str:
        return f"<IdempotencyKey key={self.key!r} user_id={self.user_id}>"


# Two partial indexes rather than UNIQUE (user_id, key): NULL user_ids never collide in a unique
# constraint, and NULLS NOT DISTINCT needs PostgreSQL 15. Upserts name the matching one, e.g.
#   ON CONFLICT (user_id, key) WHERE user_id IS NOT NULL DO NOTHING
# The first also serves the user_id foreign key (user_id = $1 implies user_id IS NOT NULL).
Index(
    "uq_idempotency_keys_user_id_key",
    IdempotencyKey.user_id,
    IdempotencyKey.key,
    unique=True,
    postgresql_where=text("user_id IS NOT NULL"),
)
Index(
    "uq_idempotency_keys_anonymous_key",
    IdempotencyKey.key,
    unique=True,
    postgresql_where=text("user_id IS NULL"),
)
