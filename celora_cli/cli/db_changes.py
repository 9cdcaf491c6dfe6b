"""`celora db changes`: the change stream (one JSON object per line on stdout), and its slots (--list, --drop,
--setup-only). The core is celora_cli.data.changes (imported inside the command, so `celora --help` stays light)."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, confirmation, force_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe


@app.command("changes")
def changes(
    ctx: typer.Context,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new changes until Ctrl-C or SIGTERM, "
                                "waiting out a server restart (CELORA_CHANGES_RETRY_FOR); without it, stop once "
                                "caught up."),
    slot: str = typer.Option("celora_changes", "--slot", metavar="NAME", help="Replication slot (and publication) "
                             "name; created on first use. Each consumer needs its own."),
    tables: list[str] = typer.Option(None, "--tables", metavar="T,...", help="Only these tables (comma-separated or "
                                     "repeated)."),
    from_start: bool = typer.Option(False, "--from-start", help="First print every current row (op \"read\"), then "
                                    "the stream: a consumer starting from nothing misses no row."),
    list_slots: bool = typer.Option(False, "--list", help="Show the server's replication slots: active, lag (WAL "
                                    "bytes, and seconds for an attached consumer) and retained WAL. Changes "
                                    "nothing."),
    drop: str | None = typer.Option(None, "--drop", metavar="SLOT", help="Drop replication slot SLOT (and celora's "
                                    "publication of that name). Asks first."),
    setup_only: bool = typer.Option(False, "--setup-only", help="Create the publication and slot (for Debezium's "
                                    "PostgreSQL connector, or a later run) and print the role to create; stream "
                                    "nothing."),
    allow_secret_columns: bool = typer.Option(False, "--allow-secret-columns", help="With --setup-only: accept a "
                                              "publication that sends secret columns (the models' sensitive ones) "
                                              "to its readers, e.g. on PostgreSQL < 15, which has no column "
                                              "lists. Refused without it."),
    force: bool = force_option("With --drop: no confirmation prompt"),
    allow_production: bool = allow_production_option("With --drop: allow it on a PRODUCTION database"),
    as_json: bool = json_option("With --list, --drop or --setup-only: the result as one JSON object (the stream "
                                "itself is always JSON lines)."),
) -> None:
    """Stream committed changes as JSON lines (CDC).

    Every committed change to the app tables as JSON lines (table, op, key, new, old, lsn, xid, commit_time),
    streamed from a logical replication slot (pgoutput, the replication protocol) on the direct connection. At
    least once: the slot is confirmed only after the lines are written and flushed; Ctrl-C (exit 130), SIGTERM
    (exit 0) and a restart resume without a gap.

    Example: celora db changes --follow --tables wallets,transactions | my-consumer
    """
    from celora_cli.errors import UsageError

    modes = [flag for flag, on in (("--list", list_slots), ("--drop", drop is not None),
                                   ("--setup-only", setup_only)) if on]
    if len(modes) > 1 or (modes and (follow or from_start)):
        raise UsageError(f"{' and '.join(modes + ['--follow'] * follow + ['--from-start'] * from_start)} do "
                         "different things; give one.",
                         "Stream (optionally --follow, --from-start), or --list, --drop SLOT, --setup-only alone.")
    if allow_secret_columns and not setup_only:
        raise UsageError("--allow-secret-columns is for --setup-only (the publication a Debezium connector reads); "
                         "the stream itself always leaves secret columns out of its lines.",
                         "Drop --allow-secret-columns, or add --setup-only.")
    if as_json and not modes:
        raise UsageError("--json is for --list, --drop and --setup-only: the stream is already one JSON object per "
                         "line.", "Drop --json to stream.")
    settings = load_settings_from(ctx)
    if list_slots:
        _list(settings, as_json)
    elif drop is not None:
        _drop(settings, drop, force=force, allow_production=allow_production, as_json=as_json)
    elif setup_only:
        _setup(settings, slot, as_json, allow_secret_columns=allow_secret_columns)
    else:
        _stream(settings, slot=slot, tables=tables, follow=follow, from_start=from_start)


def _stream(settings, *, slot: str, tables: list[str] | None, follow: bool, from_start: bool) -> None:
    import signal
    import threading

    from celora_cli.data.changes import stream

    lines = _Lines(settings.changes_buffer, _line_encoder())

    def ready(where: str) -> None:
        output.notice(f"Streaming changes from slot {slot} on {where}" + (" (Ctrl-C to stop)." if follow else "."))

    # Ctrl-C and SIGTERM end the stream between two messages (never inside a write, which would cut a line):
    # what was written is confirmed. A second one stops at once (a consumer that stopped reading leaves the
    # write blocked). SIGTERM, a service manager's stop, is a normal end (exit 0); Ctrl-C exits 130.
    stop = threading.Event()
    received: list[int] = []

    def stopping(signum, _frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stream(settings, slot=slot, tables=tables, follow=follow, from_start=from_start, emit=lines.emit,
               flush=lines.flush, on_ready=ready, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received and received[0] == signal.SIGINT:
        raise KeyboardInterrupt
    if received:
        output.notice(f"Stopped by SIGTERM; slot {slot} is confirmed up to the last transaction written.")


def _line_encoder():
    """json.dumps(change, default=str), the text of every stream line, at half its cost: json.dumps builds a new
    encoder for every call, a catching-up stream calls it once per row. The C encoder is made once (no circular
    check: a change is a tree of plain values) and proven to write exactly what json.dumps writes; where it is
    missing or differs (another Python), json.dumps it is."""
    import json
    from functools import partial

    plain = partial(json.dumps, default=str)
    try:
        from json.encoder import c_make_encoder, encode_basestring_ascii

        make = c_make_encoder(None, str, encode_basestring_ascii, None, ": ", ", ", False, False, True)
        join = "".join

        def encode(change: dict) -> str:
            return join(make(change, 0))

        sample = {"table": "t", "op": "insert", "key": {"id": 1}, "new": {"a": "caf\u00e9 \"q\"", "b": None,
                  "c": True, "d": 1.5, "e": {"f": [1, "x"]}}, "old": None, "lsn": "0/1", "xid": 7,
                  "commit_time": "2026-01-01T00:00:00+00:00"}
        if encode(sample) == plain(sample):
            return encode
    except Exception:  # noqa: BLE001 - no C encoder, or another signature: the plain way is always right
        pass
    return plain


class _Lines:
    """The stream's lines, held until CELORA_CHANGES_BUFFER bytes (then written) or a flush: the only place the
    stream's memory grows with its output, so it is bounded by the setting, not by a transaction's size."""

    def __init__(self, limit: int, encode) -> None:
        self.limit, self.encode = max(limit, 1), encode
        self.held: list[str] = []
        self.size = 0

    def emit(self, change: dict) -> None:
        text = self.encode(change)  # a row for a consumer: no envelope; masked when written
        self.held.append(text)
        self.size += len(text) + 1
        if self.size >= self.limit:
            self.write()

    def write(self) -> None:
        output.encoded_json_lines(self.held)
        self.held, self.size = [], 0

    def flush(self) -> None:
        self.write()
        output.flush()


def _list(settings, as_json: bool) -> None:
    from celora_cli.data.changes import list_slots

    database, slots = list_slots(settings)
    if as_json:
        output.print_json({"database": database, "slots": slots})
        return
    if not slots:
        output.out.print(f"No replication slots on {safe(database)}.")
        return
    output.out.print(f"Replication slots on {safe(database)}:")
    for s in slots:
        state = f"active (pid {s.active_pid})" if s.active else "inactive"
        if s.inactive_seconds is not None:
            state += f" for {_duration(s.inactive_seconds)}"
        lag = _size(s.lag_bytes) + (f" / {s.lag_seconds:.1f} s" if s.lag_seconds is not None else "")
        output.out.print(f"  {safe(s.slot)}  {safe(s.slot_type)} {safe(s.plugin or '-')} on {safe(s.database or '-')}"
                         f"  {state}  retained WAL {_size(s.retained_wal_bytes)}  lag {lag}"
                         f"  {safe(s.wal_status or '')}")
    if any(not s.active and (s.retained_wal_bytes or 0) > 0 for s in slots):
        output.out.print("An inactive slot keeps its WAL until read or dropped: `celora db changes --drop SLOT`.")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _drop(settings, slot: str, *, force: bool, allow_production: bool, as_json: bool) -> None:
    from celora_cli.data.changes import drop_slot

    confirm = confirmation(f"drop replication slot {slot}", f"celora db changes --drop {slot}", settings,
                           force=force, allow_production=allow_production)

    plan = drop_slot(settings, slot, confirm=confirm)
    if as_json:
        output.print_json({"database": plan.database, "dropped": slot})
        return
    output.out.print(f"Dropped replication slot {safe(slot)} on {safe(plan.database)}.")


def _setup(settings, slot: str, as_json: bool, *, allow_secret_columns: bool) -> None:
    from celora_cli.data.changes import setup

    output.emit(setup(settings, slot=slot, allow_secret_columns=allow_secret_columns), as_json)


@output.renders("celora_cli.data.changes.configure.SetupResult")
def render_setup(result) -> None:
    made = "created" if result.created_slot else "exists"
    output.out.print(f"Slot {safe(result.slot)} ({made}) and publication {safe(result.publication)} "
                     f"({'created' if result.created_publication else 'exists'}) on {safe(result.database)}: "
                     f"{safe(', '.join(result.tables))}.")
    excluded = ", ".join(f"{t}.{c}" for t, cols in result.excluded_columns.items() for c in cols)
    if result.column_lists:
        output.out.print(f"Secrets excluded by the publication's column lists (checked column by column): "
                         f"{safe(excluded)}.")
    else:
        sent = ", ".join(f"{t}.{c}" for t, cols in result.secret_columns_published.items() for c in cols)
        output.out.print(f"Secret columns this publication SENDS to its readers (accepted with "
                         f"--allow-secret-columns): {safe(sent)}. `celora db changes` leaves them out of its lines; "
                         "Debezium receives them (its column.exclude.list drops them only in the connector).")
    output.out.print(safe(result.limits))
    output.out.print("A role for Debezium's PostgreSQL connector (run as an administrator):")
    output.out.print(safe(result.role_hint))
    output.out.print("Connector settings:")
    for key, value in result.debezium.items():
        output.out.print(f"  {safe(key)}={safe(value)}")
