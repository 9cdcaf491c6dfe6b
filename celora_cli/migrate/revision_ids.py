"""Revision ids: the UTC timestamp a migration was written at (20261126090000), always after every timestamp-like id
in the history, for `celora db migrate` and a hand-run `alembic revision` alike."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from celora_cli.errors import MigrationHistoryError

TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"


def timestamp_revision_id(now: datetime.datetime | None = None) -> str:
    """Revision ids are the file's timestamp (UTC), as in 20261126090000_init.py."""
    return (now or datetime.datetime.now(datetime.UTC)).strftime(TIMESTAMP_FORMAT)


def next_revision_id(existing: Iterable[str], now: datetime.datetime | None = None) -> str:
    """The id of a new revision: the current UTC timestamp, unless the history already holds a timestamp-like
    id (14 digits) at or past it (a clock that was ahead, a hand-picked `--rev-id 29990101000199`, even one
    that is no valid time): then the first valid timestamp after the highest of them, so the files keep
    sorting in the order they were written. Ids of any other form (Alembic's hex `ae1027a6acf`) say nothing
    about time and leave the current timestamp as it is. Never an id the history already holds."""
    taken = set(existing)
    candidate = timestamp_revision_id(now)
    stamps = [rev for rev in taken if _stamp_like(rev)]
    latest = max(stamps, default="")
    if latest >= candidate:
        candidate = _first_timestamp_after(latest)
    while candidate in taken:  # e.g. a 14-digit id that was no timestamp, between the head and now
        candidate = _first_timestamp_after(candidate)
    return candidate


# The units of a 14-digit stamp, year to second: (where in the stamp, the smallest valid value).
_STAMP_FIELDS = ((slice(0, 4), 1), (slice(4, 6), 1), (slice(6, 8), 1), (slice(8, 10), 0), (slice(10, 12), 0),
                 (slice(12, 14), 0))


def _first_timestamp_after(stamp: str) -> str:
    """The earliest valid YYYYMMDDHHMMSS that sorts after `stamp` (14 digits, maybe an impossible time such as
    second 99 or month 13)."""
    values = [int(stamp[part]) for part, _ in _STAMP_FIELDS]
    lowest = [low for _, low in _STAMP_FIELDS]
    for unit in range(len(values)):
        head = values[: unit + 1] + lowest[unit + 1:]
        if _valid(head):
            continue
        if values[unit] < lowest[unit]:  # e.g. month 00: the smallest valid value there already sorts after
            return _stamp(values[:unit] + lowest[unit:])
        # Too large for its unit (second 99, month 13, 31 February): carry into the unit on its left.
        return _stamp_or_fail(_carry(values[:unit] + lowest[unit:], unit - 1), stamp)
    return _stamp_or_fail(_carry(values, len(values) - 1), stamp)


def _valid(fields: list[int]) -> bool:
    try:
        _moment(fields)
    except ValueError:
        return False
    return True


def _moment(fields: list[int]) -> datetime.datetime:
    year, month, day, hour, minute, second = fields
    return datetime.datetime(year, month, day, hour, minute, second)


def _carry(fields: list[int], unit: int) -> datetime.datetime | None:
    """fields (valid) plus one of `unit` (0 = year ... 5 = second), the units right of it at their lowest."""
    moment = _moment(fields)
    try:
        if unit == 0:
            return moment.replace(year=moment.year + 1)
        if unit == 1:
            return (moment.replace(day=1) + datetime.timedelta(days=32)).replace(day=1)
        return moment + datetime.timedelta(**{("days", "hours", "minutes", "seconds")[unit - 2]: 1})
    except (ValueError, OverflowError):  # past 9999-12-31 23:59:59
        return None


def _stamp(fields: list[int]) -> str:
    return _digits(_moment(fields))


def _digits(moment: datetime.datetime) -> str:
    # Not strftime: glibc's %Y does not pad a year below 1000 to four digits.
    return (f"{moment.year:04d}{moment.month:02d}{moment.day:02d}{moment.hour:02d}{moment.minute:02d}"
            f"{moment.second:02d}")


def _stamp_or_fail(moment: datetime.datetime | None, stamp: str) -> str:
    if moment is None or moment.year > 9999:
        raise MigrationHistoryError(
            f"The migration history holds revision {stamp}, and no 14-digit timestamp comes after it, so celora "
            "cannot give a new revision an id that sorts after the history's.",
            "Give the new revision an id yourself (`alembic revision --rev-id ...`).")
    return _digits(moment)


def timestamp_rev_ids(context, revision, directives) -> None:
    """process_revision_directives: `alembic revision` gets a timestamp id (after every timestamp in the
    history, next_revision_id) unless --rev-id was given."""
    cmd_opts = getattr(context.config, "cmd_opts", None)
    if cmd_opts is not None and getattr(cmd_opts, "rev_id", None):
        return
    script = getattr(context, "script", None)
    existing = [s.revision for s in script.walk_revisions()] if script is not None else []
    for directive in directives:
        if getattr(directive, "rev_id", None) is not None:
            directive.rev_id = next_revision_id(existing)
            existing.append(directive.rev_id)


def squash_revision_id(last: str, following: str | None, existing: Iterable[str],
                       now: datetime.datetime | None = None) -> str:
    """The id of a squashed revision that ends at `last` (`celora db squash`): the first free timestamp after
    `last` when that still sorts before `following` (the revision after the range), so the squash's file sorts
    where the range was; otherwise (ids that are no timestamps, no room before `following`) a new revision's id."""
    taken = set(existing)
    if _stamp_like(last):
        candidate = _first_timestamp_after(last)
        while candidate in taken:
            candidate = _first_timestamp_after(candidate)
        if following is None or not _stamp_like(following) or candidate < following:
            return candidate
    return next_revision_id(taken, now)


def _stamp_like(revision: str) -> bool:
    return len(revision) == 14 and revision.isascii() and revision.isdigit()
