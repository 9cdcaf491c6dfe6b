"""Idempotency keys: deduplication of retried API requests (the Idempotency-Key header)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Text, func, text
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
    # Globally unique rather than unique per user: (user_id, key) would let any number of
    # anonymous (NULL user_id) rows share a key on PostgreSQL 14, which lacks NULLS NOT DISTINCT.
    # On a hit, callers must still check that user_id and request_fingerprint match.
    key: Mapped[str] = mapped_column(Text, unique=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    method: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    request_fingerprint: Mapped[str] = mapped_column(Text)
    # NULL until the first request completes; a replay returns the stored response.
    response_status: Mapped[int | None]
    response_body: Mapped[Any | None] = mapped_column(JSONB)
    # Set while the first request is in flight, so a concurrent retry can answer 409.
    locked_at: Mapped[dt.datetime | None]
    # Indexed for the periodic "delete expired keys" sweep.
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    def __repr__(self) -> str:
        return f"<IdempotencyKey key={self.key!r} user_id={self.user_id}>"
