"""Sessions: metadata about a Firebase session cookie / ID token seen by the API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import CheckConstraint, Dialect, ForeignKey, LargeBinary, Text, func, text
from sqlalchemy.dialects.postgresql import INET, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from celora_cli.db.models.base import Base

if TYPE_CHECKING:
    from celora_cli.db.models.user import User


class InetText(TypeDecorator[str]):
    """INET read back as ``str`` whatever the driver does.

    psycopg 3 returns ``ipaddress`` objects for INET unless the engine was created with
    ``native_inet_types=False``; this keeps ``Session.ip_address`` a ``str`` either way.
    Binds accept a ``str`` or an ``ipaddress`` object.
    """

    impl = INET
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        # Only a SHA-256 digest of the token is stored, never the token itself.
        CheckConstraint("octet_length(token_hash) = 32", name="token_hash_sha256"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # sensitive: never copied into audit_log or the change stream (celora db audit / changes).
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True, info={"sensitive": True})
    user_agent: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(InetText)
    # Indexed for the periodic "delete expired sessions" sweep.
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    revoked_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())

    user: Mapped[User] = relationship(back_populates="sessions")

    def __repr__(self) -> str:
        return f"<Session id={self.id} user_id={self.user_id}>"
