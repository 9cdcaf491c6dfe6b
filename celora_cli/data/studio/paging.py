"""Keyset paging for the studio's lists: a page is "the rows after (or before) this row in this order", so the
1,000th page costs what the first does (an index on the sort key makes it a range scan, no OFFSET to walk).

An order is the requested sort columns, then the primary key (no two rows tie, so no row is skipped or shown
twice). A cursor carries the edge row's values of every column of the order, plus a fingerprint of the list it
belongs to (sort, search, filter, page size): a cursor from another list is ignored, never misapplied.

The "after" condition: with every column NOT NULL and every direction the same, one row-value comparison
`(a, b, id) > (:a, :b, :id)` (an index on (a, b, id) is scanned from there). Otherwise the expanded form
`a > :a OR (a = :a AND (b < :b OR (b = :b AND id > :id)))`, which also places NULLs as PostgreSQL sorts them
(last ascending, first descending), led by a bound on the first column when it is NOT NULL so an index on it
still starts at the edge. "Before" is "after" in the reversed order, whose rows are then flipped.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, cast, false, literal, or_, true, tuple_
from sqlalchemy.sql.elements import ColumnElement


class BadCursor(ValueError):
    """A cursor that is not one this studio made (edited by hand, or truncated)."""


@dataclass(frozen=True)
class OrderKey:
    name: str  # the model attribute
    column: Any  # the mapped Column
    descending: bool

    @property
    def nullable(self) -> bool:
        return bool(self.column.nullable)

    def reversed(self) -> OrderKey:
        return OrderKey(self.name, self.column, not self.descending)

    def clause(self) -> Any:
        # PostgreSQL's default NULL placement (last ascending, first descending): reversing the direction is
        # then an exact reversal of the order, which "last page" and "previous page" rely on.
        return self.column.desc() if self.descending else self.column.asc()


def order_keys(model: Any, sorts: Sequence[tuple[str, str]], pk_keys: Sequence[str]) -> list[OrderKey]:
    """The requested sorts, then the primary key in the direction of the last sort: a single-column sort is then
    uniform (one row-value comparison; an index on (column, id) serves it both ways)."""
    keys: list[OrderKey] = []
    for names, direction in sorts:
        # starlette-admin names a composite primary key "key,window_start,window_seconds" (its pk_attr); a name
        # that is no column of the model (a hand-edited URL) orders nothing rather than failing the page
        for name in names.split(","):
            if name in {key.name for key in keys} or not _is_column(model, name):
                continue
            keys.append(OrderKey(name, _column(model, name), direction == "desc"))
    tie_desc = keys[-1].descending if keys else False
    keys += [OrderKey(name, _column(model, name), tie_desc) for name in pk_keys
             if name not in {key.name for key in keys}]
    return keys


def _is_column(model: Any, name: str) -> bool:
    prop = getattr(getattr(model, name, None), "property", None)
    return bool(getattr(prop, "columns", None))


def _column(model: Any, name: str) -> Any:
    return getattr(model, name).property.columns[0]


def reverse(keys: Sequence[OrderKey]) -> list[OrderKey]:
    return [key.reversed() for key in keys]


def uniform(keys: Sequence[OrderKey]) -> bool:
    return len({key.descending for key in keys}) == 1 and not any(key.nullable for key in keys)


def after(keys: Sequence[OrderKey], values: Sequence[Any]) -> ColumnElement:
    """Rows strictly after the row with these `values` in the order `keys`."""
    bound = [_bind(key, value) for key, value in zip(keys, values, strict=True)]
    if uniform(keys):
        columns = tuple_(*(key.column for key in keys))
        edge = tuple_(*bound)
        return columns < edge if keys[0].descending else columns > edge
    clauses = []
    for index, key in enumerate(keys):
        equal_before = [_equal(k, v, b) for k, v, b in zip(keys[:index], values[:index], bound[:index], strict=True)]
        clauses.append(and_(*equal_before, _beyond(key, values[index], bound[index])))
    condition = or_(*clauses)
    first, first_value = keys[0], values[0]
    if not first.nullable and first_value is not None:
        # Redundant for the result, but it is what lets an index on the first column start at the edge.
        lead = first.column <= bound[0] if first.descending else first.column >= bound[0]
        condition = and_(lead, condition)
    return condition


def _equal(key: OrderKey, value: Any, bound: Any) -> ColumnElement:
    return key.column.is_(None) if value is None else key.column == bound


def _beyond(key: OrderKey, value: Any, bound: Any) -> ColumnElement:
    if key.descending:  # NULLS FIRST: after a NULL come the values; after a value, smaller values
        if value is None:
            return key.column.is_not(None) if key.nullable else true()
        return key.column < bound
    if value is None:  # NULLS LAST: nothing comes after a NULL
        return false()
    return or_(key.column > bound, key.column.is_(None)) if key.nullable else key.column > bound


def _bind(key: OrderKey, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, _Raw):  # a type this module does not parse: PostgreSQL reads the text
        return cast(literal(value.text), key.column.type)
    return literal(value, key.column.type)


# --- cursors ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Raw:
    text: str


def fingerprint(*parts: Any) -> str:
    """What a cursor is valid for: the list's sort, search, filter and page size."""
    return hashlib.blake2s(json.dumps(parts, default=str).encode(), digest_size=6).hexdigest()


def encode_cursor(list_id: str, keys: Sequence[OrderKey], row: Any) -> str:
    values = [_encode(getattr(row, key.name)) for key in keys]
    raw = json.dumps([list_id, values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(token: str, list_id: str, keys: Sequence[OrderKey]) -> list[Any] | None:
    """The edge row's values; None when the cursor belongs to another list (sort, filter or page size changed).
    Raises BadCursor for anything that is not a cursor of this list's shape."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        made_for, values = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadCursor("not a page cursor") from exc
    if made_for != list_id:
        return None
    if not isinstance(values, list) or len(values) != len(keys):
        raise BadCursor("the cursor does not match the list's order")
    try:
        return [None if value is None else _decode(key, value) for key, value in zip(keys, values, strict=True)]
    except (ValueError, TypeError, InvalidOperation, KeyError) as exc:
        raise BadCursor(f"a value in the cursor is not valid: {exc}") from exc


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)  # Decimal, UUID, and anything PostgreSQL reads back from its text


def _decode(key: OrderKey, value: Any) -> Any:
    try:
        python_type = key.column.type.python_type
    except NotImplementedError:
        return _Raw(str(value))
    if python_type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value
    if python_type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not text")
    if isinstance(python_type, type) and issubclass(python_type, enum.Enum):
        return python_type(value)
    parsers: dict[Any, Any] = {
        uuid.UUID: uuid.UUID, Decimal: Decimal, float: float, str: str, bytes: bytes.fromhex,
        dt.datetime: dt.datetime.fromisoformat, dt.date: dt.date.fromisoformat, dt.time: dt.time.fromisoformat,
        dict: json.loads, list: json.loads,
    }
    parser = parsers.get(python_type)
    parsed = parser(value) if parser is not None else _Raw(value)
    if isinstance(parsed, Decimal) and not parsed.is_finite():
        raise ValueError(f"{value!r} is not a number")
    return parsed
