"""pgoutput's binary protocol (version 1), as the replication protocol delivers it, decoded into changes.

Why pgoutput: it is built into every PostgreSQL server since 10 (test_decoding is a contrib module, wal2json a
separate package that managed services do not all offer); a publication chooses the tables, and on PostgreSQL 15+
the columns, on the server, so secrets never reach its readers; its binary format is documented and versioned, not
a text format to re-parse; and it is what Debezium's PostgreSQL connector reads, so the slot and publication
`--setup-only` makes serve both.

A change is one JSON object: {"table", "op", "key", "new", "old", "lsn", "xid", "commit_time"}.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from dataclasses import dataclass, field
from typing import Any

_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass
class Relation:
    table: str
    columns: list[str]
    type_oids: list[int]
    key: list[str]
    # Per column, how its text becomes a JSON value (None: it stays text): decided once per relation message,
    # not once per value.
    converters: list[Any] = field(default_factory=list)
    pairs: list[tuple[str, Any]] = field(default_factory=list)  # (column, converter), what tuple_data walks

    def __post_init__(self) -> None:
        if not self.converters:
            self.converters = [_converter(oid) for oid in self.type_oids]
        self.pairs = list(zip(self.columns, self.converters, strict=True))


_INT_OIDS = {20, 21, 23, 26}
_FLOAT_OIDS = {700, 701}
_JSON_OIDS = {114, 3802}
_EMPTY_JSON = {"{}": dict, "[]": list}  # most metadata columns: no parser needed


def _json_text(text: str) -> Any:
    return _EMPTY_JSON[text]() if text in _EMPTY_JSON else json.loads(text)


def _converter(type_oid: int) -> Any:
    if type_oid == 16:
        return "t".__eq__
    if type_oid in _INT_OIDS:
        return int
    if type_oid in _FLOAT_OIDS:
        return float
    if type_oid in _JSON_OIDS:
        return _json_text
    return None


def json_value(type_oid: int, text: str | None) -> Any:
    """pgoutput sends values as text: integers, booleans and JSON become JSON values; numeric stays a string (a
    uint256 keeps every digit), timestamps and everything else stay PostgreSQL's text."""
    if text is None:
        return None
    if type_oid == 16:
        return text == "t"
    if type_oid in _INT_OIDS:
        return int(text)
    if type_oid in _FLOAT_OIDS:
        return float(text)
    if type_oid in _JSON_OIDS:
        return _EMPTY_JSON[text]() if text in _EMPTY_JSON else json.loads(text)
    return text


_FORMATS: dict[str, struct.Struct] = {}


class _Reader:
    """A cursor over one message. The struct formats are compiled once: a catching-up stream decodes every
    column of every row through here, so it is the stream's hottest loop."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        packer = _FORMATS.get(fmt)
        if packer is None:
            packer = _FORMATS[fmt] = struct.Struct("!" + fmt)
        value = packer.unpack_from(self.data, self.pos)
        self.pos += packer.size
        return value[0]

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        text = self.data[self.pos:end].decode()
        self.pos = end + 1
        return text

    def tuple_data(self, relation: Relation) -> dict[str, Any]:
        values: dict[str, Any] = {}
        data, pos = self.data, self.pos
        count = _INT16.unpack_from(data, pos)[0]
        pos += 2
        pairs = relation.pairs
        if count != len(pairs):  # a column the relation message did not name: never seen, but never a crash
            pairs = (pairs + [(f"column_{i}", None) for i in range(len(pairs), count)])[:count]
        unpack = _INT32.unpack_from
        for name, convert in pairs:
            kind = data[pos]
            pos += 1
            if kind == 0x74:  # t: a value, as text
                size = unpack(data, pos)[0]
                pos += 4
                raw = data[pos:pos + size].decode()
                pos += size
                values[name] = raw if convert is None else convert(raw)
            elif kind == 0x6E:  # n: null
                values[name] = None
            # u: an unchanged TOASTed value, not sent: left out of the object
        self.pos = pos
        return values


_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")


@dataclass
class Transaction:
    xid: int
    commit_time: str


@dataclass(frozen=True)
class Commit:
    """The end of a transaction: once every line before it is written, the slot may advance to `end_lsn`."""

    end_lsn: str
    end: int = 0  # the same position as a number (what the replication protocol's status updates carry)


def _lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class Decoder:
    """pgoutput messages (one per replication-protocol XLogData message) -> changes and commits.

    Decoding returns only committed transactions, each whole and in commit order, so a change can be written as
    soon as it is decoded: nothing is held per transaction (a million-row transaction streams in constant memory)."""

    def __init__(self, excluded: dict[str, tuple[str, ...]], tables: set[str] | None) -> None:
        self.relations: dict[int, Relation] = {}
        self.excluded = excluded
        self.tables = tables
        self.current: Transaction | None = None

    def feed(self, lsn: str | int, data: bytes) -> list[dict[str, Any]] | Commit:
        """One message at `lsn` (text, or the replication protocol's number): the changes to write (none for
        bookkeeping or a table not selected), or a commit."""
        if type(data) is not bytes:
            data = bytes(data)
        if data[0] == 0x49 and data[5] == 0x4E:  # "I", then "N": an insert, most of any stream
            return self._insert(lsn, data)
        if isinstance(lsn, int):
            lsn = _lsn(lsn)
        r = _Reader(data)
        kind = r.take("c")
        if kind == b"B":
            r.take("q")  # final LSN
            commit_ts = r.take("q")
            xid = r.take("I")
            when = _PG_EPOCH + dt.timedelta(microseconds=commit_ts)
            self.current = Transaction(xid=xid, commit_time=when.isoformat())
        elif kind == b"C":
            r.take("b")  # flags
            r.take("q")  # commit LSN
            end_lsn = r.take("q")
            self.current = None
            return Commit(_lsn(end_lsn), end_lsn)
        elif kind == b"T":
            count = r.take("i")
            r.take("b")  # options: CASCADE, RESTART IDENTITY
            tables = [self.relations[r.take("I")].table for _ in range(count)]
            return [self._line(table, "truncate", {}, None, None, lsn) for table in tables if self._wanted(table)]
        elif kind == b"R":
            rel_id = r.take("I")
            r.string()  # namespace
            table = r.string()
            r.take("b")  # replica identity setting
            names, oids, key = [], [], []
            for _ in range(r.take("h")):
                flags = r.take("b")
                name = r.string()
                oids.append(r.take("I"))
                r.take("i")  # typmod
                names.append(name)
                if flags & 1:
                    key.append(name)
            self.relations[rel_id] = Relation(table, names, oids, key)
        elif kind in (b"I", b"U", b"D"):
            change = self._change(kind, r, lsn)
            return [] if change is None else [change]
        # Y (types), O (origin), M (messages): nothing to emit
        return []

    def _insert(self, lsn: str | int, data: bytes) -> list[dict[str, Any]]:
        """What _change makes of an insert, with less work per row: a catching-up stream spends most of its time
        here."""
        relation = self.relations[_UINT32.unpack_from(data, 1)[0]]
        current = self.current
        if current is None or (self.tables is not None and relation.table not in self.tables):
            return []
        r = _Reader(data)
        r.pos = 6
        new = r.tuple_data(relation)
        secret = self.excluded.get(relation.table)
        if secret:
            new = {c: v for c, v in new.items() if c not in secret}
        key = {c: new.get(c) for c in relation.key if not secret or c not in secret}
        return [{"table": relation.table, "op": "insert", "key": key, "new": new, "old": None,
                 "lsn": lsn if isinstance(lsn, str) else _lsn(lsn), "xid": current.xid,
                 "commit_time": current.commit_time}]

    def _wanted(self, table: str) -> bool:
        return self.current is not None and (self.tables is None or table in self.tables)

    def _line(self, table: str, op: str, key: dict[str, Any], new: dict[str, Any] | None,
              old: dict[str, Any] | None, lsn: str) -> dict[str, Any]:
        assert self.current is not None
        return {"table": table, "op": op, "key": key, "new": new, "old": old, "lsn": lsn, "xid": self.current.xid,
                "commit_time": self.current.commit_time}

    def _change(self, kind: bytes, r: _Reader, lsn: str) -> dict[str, Any] | None:
        relation = self.relations[r.take("I")]
        old = new = None
        marker = r.take("c")
        if marker in (b"K", b"O"):
            old = r.tuple_data(relation)
            if marker == b"K":  # only the key columns are sent; the others arrive as nulls
                old = {c: v for c, v in old.items() if c in relation.key}
            if kind == b"U":
                marker = r.take("c")
        if marker == b"N":
            new = r.tuple_data(relation)
        if not self._wanted(relation.table):
            return None
        secret = self.excluded.get(relation.table, ())
        if secret:
            new = None if new is None else {c: v for c, v in new.items() if c not in secret}
            old = None if old is None else {c: v for c, v in old.items() if c not in secret}
        source = new if new is not None else old or {}
        key = {c: source.get(c) for c in relation.key if c not in secret}
        return self._line(relation.table, {b"I": "insert", b"U": "update", b"D": "delete"}[kind], key, new, old, lsn)

