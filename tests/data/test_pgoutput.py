"""pgoutput messages (protocol 1) decoded into the stream's changes, without a server: the fast path for inserts
and the general one for updates and deletes give the same shape, secret columns are left out of every object
(new, old and key), and --tables filters."""

from __future__ import annotations

import json
import struct

from celora_cli.data.changes.pgoutput import Commit, Decoder

COLUMNS = [("id", 2950, True), ("name", 25, False), ("secret", 25, False), ("n", 20, False), ("ok", 16, False),
           ("meta", 3802, False)]


def relation(rel_id: int = 7, table: str = "things") -> bytes:
    body = b"R" + struct.pack("!I", rel_id) + b"public\0" + table.encode() + b"\0d" + struct.pack("!h", len(COLUMNS))
    for name, oid, key in COLUMNS:
        body += struct.pack("!b", 1 if key else 0) + name.encode() + b"\0" + struct.pack("!Ii", oid, -1)
    return body


def tuple_data(values: list[str | None]) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        out += b"n" if value is None else b"t" + struct.pack("!i", len(value.encode())) + value.encode()
    return out


ROW = ["a1", "caf\u00e9 \"q\"", "hunter2", "12345678901", "t", '{"k": [1, 2]}']


def decoder(tables: set[str] | None = None) -> Decoder:
    d = Decoder({"things": ("secret",)}, tables)
    assert d.feed(1, b"B" + struct.pack("!qqI", 0x30, 0, 42)) == []
    assert d.feed(0, relation()) == []
    return d


def test_an_insert_is_one_object_without_its_secret_column_and_json_values_where_exact():
    d = decoder()
    [line] = d.feed(0x20, b"I" + struct.pack("!I", 7) + b"N" + tuple_data(ROW))
    assert line == {"table": "things", "op": "insert", "key": {"id": "a1"},
                    "new": {"id": "a1", "name": "caf\u00e9 \"q\"", "n": 12345678901, "ok": True, "meta": {"k": [1, 2]}},
                    "old": None, "lsn": "0/20", "xid": 42, "commit_time": "2000-01-01T00:00:00+00:00"}
    assert "hunter2" not in json.dumps(line)
    assert d.feed(0x40, b"C\0" + struct.pack("!qqq", 0x30, 0x40, 0)) == Commit("0/40", 0x40)


def test_updates_and_deletes_keep_the_shape_and_leave_the_secret_out_of_old_and_key():
    d = decoder()
    [update] = d.feed("0/21", b"U" + struct.pack("!I", 7) + b"K" + tuple_data(["a1", None, None, None, None, None])
                      + b"N" + tuple_data(["a2", "x", "s3cret", None, "f", "{}"]))
    assert update["op"] == "update" and update["old"] == {"id": "a1"} and update["key"] == {"id": "a2"}
    assert update["new"] == {"id": "a2", "name": "x", "n": None, "ok": False, "meta": {}}
    [delete] = d.feed(0x22, b"D" + struct.pack("!I", 7) + b"O" + tuple_data(ROW))
    assert delete["op"] == "delete" and delete["new"] is None and "secret" not in delete["old"]
    assert delete["key"] == {"id": "a1"} and delete["lsn"] == "0/22"


def test_tables_not_selected_give_nothing():
    d = decoder(tables={"other"})
    assert d.feed(0x20, b"I" + struct.pack("!I", 7) + b"N" + tuple_data(ROW)) == []
    assert d.feed(0x21, b"D" + struct.pack("!I", 7) + b"O" + tuple_data(ROW)) == []
