"""Replication slots: created when missing (persistent, or temporary for a one-shot run), listed, dropped.

A one-shot run (no --follow) on a slot that does not exist reads through a temporary slot, which the server drops
when the session ends (its replication session creates it and streams it, the only session that can; the server
also drops it on any error in that session, which ends a one-shot run anyway), so nothing is left holding WAL.
--follow and --setup-only create a persistent slot, as does Debezium.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.data.changes.connection import (
    APPLICATION_NAME,
    PLUGIN,
    check_prerequisites,
    check_slot_name,
    open_direct,
)
from celora_cli.data.changes.publication import PUBLICATION_COMMENT
from celora_cli.db.admin import with_database
from celora_cli.db.connect import connect
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError, Refused
from celora_cli.safety.stamp import PRODUCTION, database_environment

notice = logging.getLogger("celora.notice")
IN_USE_GRACE = 3.0  # seconds a slot's previous walsender gets to go away


def slot_exists(conn, slot: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None


def ensure_slot(conn, slot: str, where: str, *, grace: float = 0.0) -> bool:
    """The slot, created (persistent) when missing. A one-shot run's temporary slot is created by its replication
    session instead (replication.ReplicationStream), the only session that can then stream it. `grace`: seconds
    a walsender still holding the slot gets to go away (at least IN_USE_GRACE)."""
    row = _slot_row(conn, slot)
    # A consumer that just stopped (or was killed) leaves its walsender behind for a moment: give it that moment.
    deadline = time.monotonic() + max(grace, IN_USE_GRACE)
    while row is not None and row[3] is not None and row[3] != conn.info.backend_pid and time.monotonic() < deadline:
        time.sleep(0.1)
        row = _slot_row(conn, slot)
    if row is not None:
        plugin, kind, database, active_pid = row
        if kind != "logical" or plugin != PLUGIN or database != conn.info.dbname:
            raise ConfigError(
                f"Replication slot {slot} on {where} is a {kind} slot with plugin {plugin} on database "
                f"{database}; celora db changes needs a logical {PLUGIN} slot on {conn.info.dbname}.",
                "Pick another --slot name (or drop that slot if it is abandoned: --drop).")
        if active_pid is not None and active_pid != conn.info.backend_pid:
            raise ConfigError(
                f"Replication slot {slot} on {where} is in use by server process {active_pid} (another consumer, "
                "or a one-shot run's temporary slot): a slot serves one reader at a time.",
                "Give each consumer its own --slot, or wait for the other one to finish.")
        return False
    check_prerequisites(conn, where, creating_slot=True)
    conn.execute("SELECT pg_create_logical_replication_slot(%s, %s, false)", (slot, PLUGIN))
    notice.info(f"Created logical replication slot {slot} ({PLUGIN}) on {where}: it keeps WAL until it is "
                f"read; drop it when no longer used (`celora db changes --drop {slot}`).")
    return True


def _slot_row(conn, slot: str):
    return conn.execute("SELECT plugin, slot_type, database, active_pid FROM pg_replication_slots "
                        "WHERE slot_name = %s", (slot,)).fetchone()


def announce_temporary(slot: str, where: str) -> None:
    notice.info(f"Slot {slot} does not exist on {where}: this one-shot run reads through a temporary slot, "
                f"dropped when it ends, so it sees only what is committed from now on (with --from-start, the "
                f"current rows first). For a position kept between runs, create the slot once with `celora db "
                f"changes --setup-only --slot {slot}`, or use --follow.")


@dataclass
class SlotInfo:
    slot: str
    plugin: str | None
    slot_type: str
    database: str | None
    active: bool
    active_pid: int | None
    wal_status: str | None
    restart_lsn: str | None
    confirmed_flush_lsn: str | None
    retained_wal_bytes: int | None
    lag_bytes: int | None  # current WAL position minus what its consumer confirmed (confirmed_flush_lsn)
    # The lag in time, where the server measures one: for an attached consumer, its walsender's flush lag
    # (pg_stat_replication.flush_lag, how long a position took from sent to confirmed; NULL there once it has
    # caught up, so 0). With no consumer attached nothing measures it: `inactive_seconds` (PostgreSQL 17+,
    # pg_replication_slots.inactive_since) says how long the slot has been waiting for one instead.
    lag_seconds: float | None = None
    inactive_seconds: float | None = None


def list_slots(settings: Settings) -> tuple[str, list[SlotInfo]]:
    conn, url, setting = open_direct(settings)
    try:
        with translating(url, setting):
            inactive = ("extract(epoch FROM now() - s.inactive_since)::float8"
                        if conn.info.server_version >= 170000 else "NULL::float8")
            rows = conn.execute(f"""
                SELECT s.slot_name, s.plugin, s.slot_type, s.database, s.active, s.active_pid, s.wal_status,
                       s.restart_lsn::text, s.confirmed_flush_lsn::text,
                       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint,
                       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
                       CASE WHEN s.active THEN coalesce(extract(epoch FROM r.flush_lag)::float8, 0) END,
                       CASE WHEN NOT s.active THEN {inactive} END
                  FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
                 ORDER BY s.slot_name""").fetchall()
    finally:
        conn.close()
    return url.masked, [SlotInfo(*row) for row in rows]


@dataclass(frozen=True)
class DropPlan:
    database: str
    slot: SlotInfo
    database_env: str | None

    def losses(self) -> list[str]:
        retained = self.slot.retained_wal_bytes or 0
        return [f"replication slot {self.slot.slot}: its position; a consumer that resumes from it would miss every "
                f"change made until it is recreated (it retains {retained} bytes of WAL now)"]


def _slot_environment(settings: Settings, conn, url: DatabaseURL, slot: SlotInfo) -> str | None:
    """The environment stamp the guard weighs before a slot is dropped: a slot is the server's, not one schema's,
    so every schema's stamp is read (safety.stamp.database_environment), in the database the URL names and,
    for a logical slot of another database, in that one too (the strictest wins). A database that cannot be read
    counts as production: its slot may be production's. A physical slot serves the whole cluster; celora reads the
    stamp of the database it is connected to (it does not visit every database)."""
    found = [database_environment(conn)]
    if slot.database and slot.database != conn.info.dbname:
        other = with_database(url, slot.database)
        try:
            with connect(other, settings, application_name=APPLICATION_NAME, autocommit=True) as theirs:
                found.append(database_environment(theirs))
        except Exception as exc:  # noqa: BLE001 - whatever stops the reading, the slot may be production's
            notice.info(f"Could not read the environment stamp of database {slot.database}, where slot {slot.slot} "
                        f"decodes ({type(exc).__name__}): it is treated as '{PRODUCTION}'.")
            found.append(PRODUCTION)
    if PRODUCTION in found:
        return PRODUCTION
    return next((env for env in found if env), None)


def drop_slot(settings: Settings, slot: str, *, confirm: Callable[[DropPlan], None] | None = None) -> DropPlan:
    """Drop `slot` (and celora's publication of the same name). `confirm(plan)` raises to stop."""
    check_slot_name(slot, "--drop")
    _, slots = list_slots(settings)
    found = next((s for s in slots if s.slot == slot), None)
    if found is None:
        raise ConfigError(f"No replication slot named {slot} ({', '.join(s.slot for s in slots) or 'there are none'}).",
                          "`celora db changes --list` shows the slots.")
    if found.active:
        raise Refused(f"Replication slot {slot} is in use by server process {found.active_pid}; nothing was dropped.",
                      "Stop its consumer first (or `SELECT pg_terminate_backend(pid)` if it is stuck), then retry.")
    conn, url, setting = open_direct(settings)
    try:
        with translating(url, setting):
            plan = DropPlan(url.masked, found, _slot_environment(settings, conn, url, found))
            if confirm is not None:
                confirm(plan)
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            ours = conn.execute("SELECT obj_description(oid, 'pg_publication') = %s,"
                                " pg_has_role(pubowner, 'USAGE'), pubowner::regrole::text FROM pg_publication "
                                "WHERE pubname = %s", (PUBLICATION_COMMENT, slot)).fetchone()
            if ours and ours[0] and ours[1]:
                conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(slot)))
            elif ours and ours[0]:  # a replication role may drop the slot; the publication is its owner's
                notice.info(f"Publication {slot} stays: it belongs to {ours[2]}, and only its owner may drop it "
                            f"(`DROP PUBLICATION {slot}` as {ours[2]}). It holds no WAL.")
    finally:
        conn.close()
    return plan

