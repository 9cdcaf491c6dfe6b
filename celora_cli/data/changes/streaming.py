"""The stream: every committed change after a slot's position, written as it is decoded, then confirmed.

Read over the replication protocol (replication.ReplicationStream: START_REPLICATION on the direct URL); the SQL
session beside it (psycopg 3) checks the server, the publication and the slot first, and takes --from-start's
snapshot.

Delivery is at least once: the walsender sends only committed transactions, whole and in commit order (pgoutput
protocol 1 decodes at commit: rolled-back work never appears); each line is written as its message arrives, so
memory does not grow with a transaction's size (the CLI holds at most CELORA_CHANGES_BUFFER of lines); the
position confirmed to the server is the end of the last transaction whose lines were all written *and flushed*.
A crash, a kill or a lost connection in between repeats lines on the next run (or the follower's reconnect); it
never skips any.

A follower (--follow) that loses its server (a restart, a crash, the network) reconnects with backoff for up to
CELORA_CHANGES_RETRY_FOR seconds, saying so on stderr, and resumes from the slot. What a retry cannot fix (the slot
dropped, a privilege revoked, the publication gone) ends it with that error's exit code.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from celora_cli.data.changes.replication import ReplicationStream, driver_error
from celora_cli.data.changes.slots import announce_temporary, ensure_slot, slot_exists
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError, DatabaseUnreachable

notice = logging.getLogger("celora.notice")

SETTLE_SECONDS = 0.05  # at most this long between a commit's lines arriving and their flush (while busy)
IDLE_WAIT = 0.5  # seconds to wait for the next message when there is none
FEEDBACK_SECONDS = 0.1  # an idle stream tells the server its confirmed position at most this often (else: 1 s)
RESUME_GRACE = 75.0  # seconds a reconnecting follower waits for its previous walsender to release the slot
BACKOFF = (0.25, 5.0)  # a reconnecting follower's first and longest wait, in seconds

Emit = Callable[[dict[str, Any]], None]


@dataclass
class StreamResult:
    slot: str
    changes: int = 0
    transactions: int = 0
    position: str | None = None  # the slot's confirmed position after the last confirmation
    reconnects: int = 0


@dataclass
class _Plan:
    settings: Settings
    slot: str
    follow: bool
    tables: list[str]
    selected: set[str] | None
    excluded: dict[str, tuple[str, ...]]
    columns: dict[str, list[str]]
    emit: Emit
    flush: Callable[[], None]
    result: StreamResult
    written_to: int = 0  # end of the last transaction whose lines were all emitted
    last_commit_time: str | None = None
    streaming: bool = False  # reached START_REPLICATION (since the last loss): a loss is worth waiting out
    resumed: bool = False  # a reconnect: the slot must still be there (a new one would skip what was missed)
    stop: threading.Event = field(default_factory=threading.Event)


def stream(settings: Settings, *, slot: str = DEFAULT_SLOT, tables: list[str] | None = None, follow: bool = False,
           from_start: bool = False, emit: Emit, flush: Callable[[], None],
           on_ready: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> StreamResult:
    """Write every committed change after the slot's position through `emit`, `flush`, then confirm it.

    Without `follow` it stops once caught up with what was committed when it started. `stop` (set from a signal
    handler: the CLI's Ctrl-C and SIGTERM) ends it between two messages: what was emitted is flushed and the
    last transaction fully written is confirmed, then it returns. Stopping between messages, not inside a write,
    is what keeps the last line whole. A KeyboardInterrupt raised anyway (a second Ctrl-C) does the same as far
    as it can, and propagates."""
    check_slot_name(slot)
    all_tables, excluded, columns = schema_tables()
    selected = _selected(tables, all_tables)
    plan = _Plan(settings, slot, follow, all_tables, set(selected) if selected else None, excluded, columns, emit,
                 flush, StreamResult(slot), stop=stop or threading.Event())
    # The retry loop is written out rather than tenacity's: its stop_after_delay counts from a call's first
    # attempt, while a follower's bound runs from each loss (a stream that ran for a day and lost its server
    # still gets CELORA_CHANGES_RETRY_FOR seconds), and a reconnect that streamed again starts the count anew.
    outage: float | None = None  # when the connection was lost (a follower's retries are bounded from there)
    attempt = 0
    first = True
    while True:
        try:
            _run(plan, snapshot=from_start and first, on_ready=on_ready if first else None)
            return plan.result
        except DatabaseUnreachable as exc:
            # Only a stream that got going waits: a wrong host or a server down at the start is said at once.
            if not (follow and (plan.streaming or plan.resumed) and settings.changes_retry_for > 0):
                raise
            now = time.monotonic()
            if outage is None or plan.streaming:  # plan.streaming again: the last reconnect worked
                outage, attempt = now, 0
            plan.streaming = False
            waited = now - outage
            if waited >= settings.changes_retry_for:
                raise DatabaseUnreachable(
                    f"{exc.message} Gave up after {waited:.0f} s of reconnecting (CELORA_CHANGES_RETRY_FOR = "
                    f"{settings.changes_retry_for:g} s); the slot keeps its position.",
                    f"Start `celora db changes --follow --slot {slot}` again once the server is back: it resumes "
                    "from the slot.") from exc
            delay = min(BACKOFF[0] * 2 ** attempt, BACKOFF[1], settings.changes_retry_for - waited)
            attempt += 1
            notice.info(f"The stream lost its server ({exc.message}). Reconnecting in {delay:.1f} s (attempt "
                        f"{attempt}; gives up after CELORA_CHANGES_RETRY_FOR = {settings.changes_retry_for:g} s); "
                        f"it resumes from slot {slot}, so nothing confirmed is lost and nothing is skipped.")
            if plan.stop.wait(delay):
                return plan.result
            plan.result.reconnects += 1
            plan.resumed = True
        first = False


def _run(plan: _Plan, *, snapshot: bool, on_ready: Callable[[str], None] | None) -> None:
    """One session: the checks and the slot on the SQL session, then the replication stream until done."""
    settings, slot = plan.settings, plan.slot
    conn, url, setting = open_direct(settings)
    server = where(url)
    repl: ReplicationStream | None = None
    try:
        with translating(url, setting):
            check_prerequisites(conn, server, creating_slot=False)
            ensure_publication(conn, slot, plan.tables, plan.excluded, plan.columns, where=server)
            # One-shot on a slot that does not exist: a temporary one, so the run leaves nothing holding WAL.
            exists = slot_exists(conn, slot)
            if plan.resumed and not exists:
                raise ConfigError(
                    f"Replication slot {slot} no longer exists on {server}: it was dropped while the stream was "
                    "reconnecting, and its position with it (a new slot would skip every change in between).",
                    f"Start again from the rows as they are: `celora db changes --follow --from-start --slot {slot}`.")
            temporary = not plan.follow and not exists
            if not temporary:
                # After a network failure (not a restart) the server keeps the old walsender until its
                # wal_sender_timeout (60 s by default) notices: a reconnecting follower waits that out.
                ensure_slot(conn, slot, server, grace=RESUME_GRACE if plan.resumed else 0.0)
            repl = _guarded(plan, url, setting, lambda: ReplicationStream(url, settings, slot))
            if temporary:
                check_prerequisites(conn, server, creating_slot=True)
                _guarded(plan, url, setting, repl.create_temporary_slot)
                announce_temporary(slot, server)
            if on_ready is not None:
                on_ready(server)
            if snapshot:
                for change in _snapshot(conn, sorted(plan.selected or plan.tables), plan.excluded):
                    plan.emit(change)
                    plan.result.changes += 1
                plan.flush()
            # Stop when caught up with everything inserted into the WAL by now (a one-shot run).
            endpos = None if plan.follow else int(conn.execute(
                "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()[0])
            if not plan.follow:
                conn.close()  # a one-shot run needs no second session while it streams
        _guarded(plan, url, setting, repl.start)
        plan.streaming = True
        if plan.resumed:
            notice.info(f"Reconnected to {server}: streaming again from slot {slot}'s confirmed position.")
        _guarded(plan, url, setting, lambda: _pump(plan, repl, endpos, conn if plan.follow else None))
    finally:
        if repl is not None:
            repl.close()
        conn.close()


def _guarded(plan: _Plan, url, setting: str, action: Callable[[], Any]) -> Any:
    """Run a replication-session step; a psycopg2 error becomes the CeloraError a user acts on."""
    import psycopg2

    try:
        return action()
    except psycopg2.Error as exc:
        raise driver_error(exc, url, setting, plan.slot) from exc


def _pump(plan: _Plan, repl: ReplicationStream, endpos: int | None, sql_conn) -> None:
    """Messages -> lines, confirming at commits once their lines are flushed; until caught up (one-shot) or
    stopped (follow)."""
    decoder = Decoder(plan.excluded, plan.selected)
    result = plan.result
    emit = plan.emit
    settled = told = time.monotonic()
    caught_up = settled  # when the stream last had nothing waiting (a follower reports lag when it has not)
    try:
        stop = plan.stop
        read, feed = repl.read_message, decoder.feed  # once per message: looked up once
        while not stop.is_set():
            message = read()
            if message is not None:
                event = feed(message.data_start, message.payload)
                if type(event) is Commit:
                    result.transactions += 1
                    plan.written_to = event.end
                    if endpos is not None and event.end >= endpos:
                        _settle(plan, repl, now=True)
                        return
                    now = time.monotonic()
                    if now - settled > SETTLE_SECONDS:
                        _settle(plan, repl)
                        settled = now
                        if plan.follow and now - caught_up > plan.settings.changes_lag_report > 0:
                            _report_lag(plan, sql_conn, caught_up)
                            caught_up = now
                    continue
                if event:
                    if decoder.current is not None:
                        plan.last_commit_time = decoder.current.commit_time
                    for change in event:  # type: ignore[union-attr]
                        emit(change)
                    result.changes += len(event)  # type: ignore[arg-type]
                continue
            # Nothing waiting. Inside a transaction its rest is on the way (its lines are written as the buffer
            # fills; none can be confirmed before its commit): just wait. Between transactions: flush, confirm
            # (telling the server at once at most every FEEDBACK_SECONDS), and a one-shot run checks whether it
            # has caught up.
            if decoder.current is None:
                now = time.monotonic()
                tell = now - told > FEEDBACK_SECONDS
                _settle(plan, repl, now=tell)
                told = now if tell else told
                settled = caught_up = now
                if endpos is not None and repl.server_end >= endpos:
                    _settle(plan, repl, now=True)
                    return
            arrived = repl.wait(IDLE_WAIT if endpos is None else FEEDBACK_SECONDS)
            if not arrived and endpos is not None and decoder.current is None:
                repl.ask_position()  # an idle walsender says how far it has read only when asked
        _settle(plan, repl, now=True)
    except KeyboardInterrupt:
        _finish_interrupted(plan, repl)
        raise
    except Exception:
        # The server went away (or the output did): what was flushed may still be confirmed, as far as the
        # connection allows; the rest comes again from the slot.
        _finish_interrupted(plan, repl)
        raise


def _settle(plan: _Plan, repl: ReplicationStream, *, now: bool = False) -> None:
    """Flush what was written; then, and only then, confirm the last transaction whose lines are all out."""
    plan.flush()
    if plan.written_to > repl.confirmed or now:
        repl.confirm(plan.written_to, now=now)
        plan.result.position = _lsn_text(repl.confirmed) if repl.confirmed else plan.result.position


def _finish_interrupted(plan: _Plan, repl: ReplicationStream) -> None:
    """Ctrl-C, or a lost server: keep what was written. A failure here only means those lines come again."""
    try:
        _settle(plan, repl, now=True)
    except Exception:  # noqa: BLE001 - at least once: a repeat is allowed, so giving up the confirmation is safe
        pass


def _report_lag(plan: _Plan, sql_conn, since: float) -> None:
    """The follower has had changes waiting for longer than CELORA_CHANGES_LAG_REPORT: say how far behind it is,
    in WAL (the server's current position minus what it wrote) and in time (since the commit of the transaction
    it is writing)."""
    behind = ""
    if sql_conn is not None:
        try:
            current = int(sql_conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])
            behind = f"{_size(max(0, current - plan.written_to))} of WAL"
        except Exception:  # noqa: BLE001 - the report is a courtesy; the stream itself notices a lost server
            behind = ""
    age = ""
    if plan.last_commit_time:
        seconds = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(plan.last_commit_time)).total_seconds()
        age = f"the transaction being written committed {max(0.0, seconds):.1f} s ago"
    parts = " and ".join(p for p in (behind, age) if p) or "changes waiting"
    notice.info(f"Slot {plan.slot}: behind by {parts} (changes have been waiting for "
                f"{time.monotonic() - since:.0f} s; CELORA_CHANGES_LAG_REPORT = "
                f"{plan.settings.changes_lag_report:g} s).")


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _selected(tables: list[str] | None, all_tables: list[str]) -> list[str] | None:
    if not tables:
        return None
    names = [t.strip() for item in tables for t in item.split(",") if t.strip()]
    unknown = [t for t in names if t not in all_tables]
    if unknown:
        raise ConfigError(f"--tables {', '.join(unknown)}: not streamed (the stream covers {', '.join(all_tables)}).",
                          "Name tables from that list, comma-separated or with --tables repeated.")
    return names


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

