"""The stream: every committed change after a slot's position, written as it is decoded, then the slot advanced.

Read through the SQL functions (pg_logical_slot_peek_binary_changes, then pg_replication_slot_advance): psycopg 3
has no replication-protocol client, so the session is the direct connection (a slot belongs to a server session).

Delivery is at least once: a batch of whole transactions is peeked (decoding only ever returns committed
transactions, in commit order: rolled-back work never appears), every line is written and flushed, and only then is
the slot advanced to the end of the last transaction fully written. A crash or Ctrl-C in between repeats lines on
the next run; it never skips any.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from celora_cli.config.settings import Settings
from celora_cli.data.changes.connection import (
    DEFAULT_SLOT,
    check_prerequisites,
    check_slot_name,
    open_direct,
    schema_tables,
    where,
)
from celora_cli.data.changes.pgoutput import Commit, Decoder, json_value
from celora_cli.data.changes.publication import ensure_publication
from celora_cli.data.changes.slots import ensure_slot, slot_exists
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError

BATCH_CHANGES = 2_000  # rows per peek; whole transactions only, so a big one comes in one batch
POLL_SECONDS = 0.5

Emit = Callable[[dict[str, Any]], None]


@dataclass
class StreamResult:
    slot: str
    changes: int = 0
    transactions: int = 0
    position: str | None = None  # the slot's confirmed position after the last advance


def stream(settings: Settings, *, slot: str = DEFAULT_SLOT, tables: list[str] | None = None, follow: bool = False,
           from_start: bool = False, emit: Emit, flush: Callable[[], None], poll_seconds: float = POLL_SECONDS,
           on_ready: Callable[[str], None] | None = None) -> StreamResult:
    """Write every committed change after the slot's position through `emit`, `flush`, then advance the slot.

    Without `follow` it stops when caught up. KeyboardInterrupt: what was emitted is flushed, the slot advances to
    the last transaction fully written, and the interrupt propagates (the CLI exits 130)."""
    check_slot_name(slot)
    all_tables, excluded, columns = schema_tables()
    selected = _selected(tables, all_tables)
    conn, url, setting = open_direct(settings)
    server = where(url)
    result = StreamResult(slot)
    written_to: str | None = None  # end LSN of the last transaction whose lines were all emitted
    batch: Generator[tuple[str, bytes]] | None = None
    try:
        with translating(url, setting):
            check_prerequisites(conn, server, creating_slot=False)
            ensure_publication(conn, slot, all_tables, excluded, columns, where=server)
            # One-shot on a slot that does not exist: a temporary one, so the run leaves nothing holding WAL.
            ensure_slot(conn, slot, server, temporary=not follow and not slot_exists(conn, slot))
            if on_ready is not None:
                on_ready(server)
            if from_start:
                for change in _snapshot(conn, selected or all_tables, excluded):
                    emit(change)
                    result.changes += 1
                flush()
            decoder = Decoder(excluded, set(selected) if selected else None)
            try:
                while True:
                    messages = 0
                    batch = _peek(conn, slot)
                    for lsn, data in batch:
                        messages += 1
                        event = decoder.feed(lsn, data)
                        if isinstance(event, Commit):
                            result.transactions += 1
                            written_to = event.end_lsn
                            continue
                        for change in event:
                            emit(change)
                            result.changes += 1
                    if written_to is not None:
                        flush()
                        _advance(conn, slot, written_to)
                        result.position, written_to = written_to, None
                    if not messages and not follow:
                        return result
                    if not messages:
                        time.sleep(poll_seconds)
            except KeyboardInterrupt:
                _finish_interrupted(conn, slot, written_to, flush, batch)
                raise
    finally:
        conn.close()


def _selected(tables: list[str] | None, all_tables: list[str]) -> list[str] | None:
    if not tables:
        return None
    names = [t.strip() for item in tables for t in item.split(",") if t.strip()]
    unknown = [t for t in names if t not in all_tables]
    if unknown:
        raise ConfigError(f"--tables {', '.join(unknown)}: not streamed (the stream covers {', '.join(all_tables)}).",
                          "Name tables from that list, comma-separated or with --tables repeated.")
    return names


def _peek(conn, slot: str) -> Generator[tuple[str, bytes]]:
    """One batch of whole transactions, fetched in chunks through a server-side cursor (its transaction only
    reads: peeking consumes nothing)."""
    with conn.transaction(), conn.cursor(name="celora_changes_peek") as cursor:
        cursor.itersize = 1_000
        cursor.execute(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, 'proto_version', '1', "
            "'publication_names', %s)", (slot, BATCH_CHANGES, slot))
        yield from cursor


def _advance(conn, slot: str, lsn: str) -> None:
    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))


def _finish_interrupted(conn, slot: str, written_to: str | None, flush: Callable[[], None],
                        batch: Generator[tuple[str, bytes]] | None) -> None:
    """Ctrl-C: keep what was written. A failure here only means those lines come again next time."""
    try:
        if batch is not None:
            batch.close()  # ends the peek's cursor and transaction before the slot moves
        flush()
        if written_to is not None:
            _advance(conn, slot, written_to)
    except Exception:  # noqa: BLE001 - at least once: a repeat is allowed, so giving up the advance is safe
        pass


def _snapshot(conn, tables: list[str], excluded: dict[str, tuple[str, ...]]) -> Iterator[dict[str, Any]]:
    """--from-start: the rows as they are now (op "read"), after the slot exists: a row changed in between comes
    twice (here and in the stream), never zero times."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for table in tables:
            cols = [(n, oid) for n, oid in conn.execute(
                "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum", (table,)) if n not in excluded.get(table, ())]
            key = [r[0] for r in conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary", (table,))]
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n, _ in cols),
                sql.Identifier(table))
            with conn.cursor(name=f"celora_snapshot_{table}") as cursor:
                for row in cursor.execute(query):
                    new = {n: json_value(oid, v) for (n, oid), v in zip(cols, row, strict=True)}
                    yield {"table": table, "op": "read", "key": {k: new.get(k) for k in key}, "new": new,
                           "old": None, "lsn": None, "xid": None, "commit_time": None}

