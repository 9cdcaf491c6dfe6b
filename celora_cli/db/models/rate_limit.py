"""Rate limits: fixed-window request counters."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, PrimaryKeyConstraint, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from celora_cli.db.models.base import Base


class RateLimit(Base):
    __tablename__ = "rate_limits"
    __table_args__ = (
        # The natural key is the primary key: it is the only lookup, and it is the conflict target of
        # INSERT ... ON CONFLICT (key, window_seconds, window_start) DO UPDATE SET count = count + 1.
        # window_seconds belongs to it: a 60-second and a 1-hour limit on the same key whose windows
        # start at the same instant are two counters, not one.
        PrimaryKeyConstraint("key", "window_seconds", "window_start"),
        CheckConstraint("window_seconds > 0", name="window_seconds_positive"),
        CheckConstraint("count >= 0", name="count_non_negative"),
    )

    key: Mapped[str] = mapped_column(Text)
    window_start: Mapped[dt.datetime]
    window_seconds: Mapped[int]
    count: Mapped[int] = mapped_column(server_default=text("0"))
    # Stored rather than derived so the cleanup sweep can use an index.
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)

    def __repr__(self) -> str:
        return (
            f"<RateLimit key={self.key!r} window_seconds={self.window_seconds} "
            f"window_start={self.window_start} count={self.count}>"
        )
