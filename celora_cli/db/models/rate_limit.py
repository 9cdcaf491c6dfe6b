"""Rate limits: fixed-window request counters."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from celora_cli.db.models.base import Base


class RateLimit(Base):
    __tablename__ = "rate_limits"
    __table_args__ = (
        CheckConstraint("window_seconds > 0", name="window_seconds_positive"),
        CheckConstraint("count >= 0", name="count_non_negative"),
    )

    # The natural key is the primary key: it is the only lookup, and it is the conflict target of
    # INSERT ... ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limits.count + 1.
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    window_seconds: Mapped[int]
    count: Mapped[int] = mapped_column(server_default=text("0"))
    # Stored rather than derived so the cleanup sweep can use an index.
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)

    def __repr__(self) -> str:
        return f"<RateLimit key={self.key!r} window_start={self.window_start} count={self.count}>"
