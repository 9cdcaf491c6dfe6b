"""The replication-protocol session a slot streams through: `START_REPLICATION SLOT ... LOGICAL` on the direct URL.

Why psycopg2 (psycopg2-binary) and not psycopg 3: psycopg 3 (3.3) has no replication client. Since 3.3 it lets
START_REPLICATION run and hands back a cursor in COPY_BOTH state (psycopg/psycopg#1219), but it neither reads the
stream's XLogData and keepalive messages nor sends standby status updates, and its maintainers say no further
replication support is planned (psycopg/psycopg#71 stays open). psycopg2's LogicalReplicationConnection does all
three, on libpq, and is maintained. It is used for this session only: everything else stays psycopg 3.

Why the replication protocol and not pg_logical_slot_peek_binary_changes: every peek builds a new decoding context
and decodes again from the slot's restart point, so many small transactions cost far more than their rows (15x
pg_recvlogical for 2,000 transactions of 100 rows); a walsender decodes each WAL record once and streams as it goes.

Status updates say only what the caller confirms (`confirm`): what was written and flushed to stdout. psycopg2
moves the flushed position on by itself only to a keepalive's WAL end, and only when every data message received
was confirmed (pqpath.c), which skips nothing a reader was sent.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.data.changes.connection import APPLICATION_NAME, PLUGIN
from celora_cli.db.connect import STARTUP_MARKER, connect_args, libpq_params, sends_startup_options
from celora_cli.db.errors import translate
from celora_cli.errors import CeloraError, ConfigError, DatabaseUnreachable

# How often the server hears the confirmed position even when nothing new was confirmed (seconds): it is what
# `db changes --list` and pg_stat_replication show as the consumer's position and lag.
STATUS_INTERVAL = 1


def driver_error(exc: BaseException, url: DatabaseURL, setting: str, slot: str) -> CeloraError:
    """A psycopg2 error as the CeloraError a user can act on: the slot or publication gone and a missing
    privilege are named (ConfigError, not transient); a lost server is DatabaseUnreachable (a follower retries)."""
    import psycopg2

    state = getattr(exc, "pgcode", None)
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or " ".join(str(exc).strip().splitlines()[:1])
    where = url.display_host
    if state == "42704" and "replication slot" in primary:
        return ConfigError(f"Replication slot {slot} no longer exists on {where} ({primary}); it was dropped while "
                           "the stream ran, and its position with it.",
                           f"Start again from the rows as they are: `celora db changes --follow --from-start --slot "
                           f"{slot}` creates it anew.")
    if state == "42704" and "publication" in primary:
        return ConfigError(f"Publication {slot} no longer exists on {where} ({primary}).",
                           f"Run `celora db changes --setup-only --slot {slot}` as the tables' owner to create it.")
    if state == "42501":
        return ConfigError(f"Permission denied streaming slot {slot} on {where}: {primary}.",
                           "Stream as a role with REPLICATION (the celora_cdc group role of `celora db roles`), "
                           "on DIRECT_DATABASE_URL.")
    if state == "55006":
        return ConfigError(f"Replication slot {slot} on {where} is in use: {primary}.",
                           "Give each consumer its own --slot, or wait for the other one to finish.")
    if isinstance(exc, psycopg2.Error):
        # db.errors.translate reads a SQLSTATE as psycopg 3 spells it; psycopg2 calls it pgcode.
        shim = _Shim(str(exc))
        shim.sqlstate = state
        shim.diag = diag
        # No SQLSTATE: the client saw the connection end (psycopg2 says "error with status PGRES_COPY_BOTH and
        # no message from the libpq" when the server vanishes mid-stream); 08xxx and 57P0x: the server said so.
        if state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03"):
            return DatabaseUnreachable(
                f"Lost the replication connection to {where} ({setting}={url.masked}): {primary or exc}",
                f"Is PostgreSQL running? Try `{url.pg_isready}`; `db changes --follow` waits out a restart "
                "for CELORA_CHANGES_RETRY_FOR seconds.")
        return translate(shim, url, setting)
    return translate(exc, url, setting)


class _Shim(Exception):
    sqlstate: str | None = None
    diag: Any = None


class ReplicationStream:
    """One walsender session on `slot`, in the database of `url`; messages are (lsn, payload) pairs."""

    def __init__(self, url: DatabaseURL, settings: Settings, slot: str) -> None:
        import psycopg2
        import psycopg2.extras

        self.url, self.slot = url, slot
        kwargs = {**libpq_params(url), **connect_args(url, settings, application_name=APPLICATION_NAME)}
        kwargs.pop("prepare_threshold", None)  # a psycopg 3 keyword
        self.conn = psycopg2.connect(connection_factory=psycopg2.extras.LogicalReplicationConnection, **kwargs)
        self.cursor = self.conn.cursor()
        if sends_startup_options(url):
            # replication=database sessions run plain SQL too: proven a PostgreSQL session of its own, as the
            # SQL session is (PgBouncer 1.23+ can pass replication connections through).
            self.cursor.execute(f"SELECT current_setting('{STARTUP_MARKER}', true)")
            if (self.cursor.fetchone() or [None])[0] != "on":
                self.close()
                raise ConfigError(
                    f"{url.setting} ({url.masked}) goes through a connection pooler (celora's startup marker did "
                    "not arrive on the replication connection): a slot streams to a PostgreSQL session of its own.",
                    f"Point {url.setting} at PostgreSQL itself (DIRECT_DATABASE_URL), not at PgBouncer.")
        self.confirmed = 0  # the last position sent as written and flushed

    def create_temporary_slot(self) -> None:
        """A slot this session owns: the server drops it when the session ends (a one-shot run leaves nothing)."""
        self.cursor.execute(f'CREATE_REPLICATION_SLOT "{self.slot}" TEMPORARY LOGICAL {PLUGIN} NOEXPORT_SNAPSHOT')
        self.cursor.fetchall()

    def start(self) -> None:
        """From the slot's confirmed position. proto_version 1: transactions arrive only once committed (the
        walsender decodes at commit), so a rolled-back one is never sent, and no `streaming` option is passed:
        in-progress transactions (protocol 2+) are off, so no stream-abort can ever need undoing."""
        self.cursor.start_replication(slot_name=self.slot, decode=False, status_interval=STATUS_INTERVAL,
                                      options={"proto_version": "1", "publication_names": self.slot})

    @property
    def read_message(self) -> Callable[[], Any]:
        """The next message (`.data_start`, `.payload`), or None when none has arrived yet: psycopg2's own
        method, handed out so the stream's loop calls it without a wrapper per message."""
        return self.cursor.read_message

    def wait(self, seconds: float) -> bool:
        """Until a message may have arrived (True) or `seconds` passed (False)."""
        return bool(select.select([self.cursor], [], [], seconds)[0])

    @property
    def server_end(self) -> int:
        """The server's WAL position in its last message or keepalive: what it had read when it said so."""
        return int(self.cursor.wal_end or 0)

    def confirm(self, lsn: int, *, now: bool = False) -> None:
        """Tell the server everything up to `lsn` is written and flushed (the slot may advance to it)."""
        if lsn > self.confirmed:
            self.confirmed = lsn
            self.cursor.send_feedback(write_lsn=lsn, flush_lsn=lsn, apply_lsn=lsn, force=now)
        elif now:
            self.cursor.send_feedback(force=True)

    def ask_position(self) -> None:
        """Ask the server for a keepalive now: it carries how far the walsender has read."""
        self.cursor.send_feedback(reply=True)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a connection that already broke: nothing left to do
            pass
