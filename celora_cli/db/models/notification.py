"""Notifications: push, email and in-app messages to a user."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column, relationship

from celora_cli.db.models.base import Base, TimestampMixin
from celora_cli.db.models.enums import (
    NotificationChannel,
    NotificationStatus,
    notification_channel_enum,
    notification_status_enum,
)

if TYPE_CHECKING:
    from celora_cli.db.models.user import User


class Notification(TimestampMixin, Base):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[NotificationChannel] = mapped_column(notification_channel_enum)
    type: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status: Mapped[NotificationStatus] = mapped_column(
        notification_status_enum, server_default=text("'pending'")
    )
    read_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]
    # Last delivery error, for failed rows.
    error: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship(back_populates="notifications")

    def __repr__(self) -> str:
        return f"<Notification id={self.id} user_id={self.user_id} status={self.status}>"


# "A user's notifications, newest first"; also serves the user_id foreign key (cascade deletes).
Index(
    "ix_notifications_user_id_created_at",
    Notification.user_id,
    Notification.created_at.desc(),
)
# "A user's unread notifications" (badge count, inbox): only unread rows are indexed.
Index(
    "ix_notifications_user_unread",
    Notification.user_id,
    Notification.created_at.desc(),
    postgresql_where=text("read_at IS NULL"),
)
# The delivery worker only ever scans pending rows.
Index(
    "ix_notifications_pending",
    Notification.created_at,
    postgresql_where=text("status = 'pending'"),
)
