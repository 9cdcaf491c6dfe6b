"""`celora db changes`: every committed change to the app tables as JSON lines, from PostgreSQL's logical decoding.

Output plugin: pgoutput, read through the SQL functions (pg_logical_slot_peek_binary_changes, then
pg_replication_slot_advance). Why pgoutput: it is built into every PostgreSQL server since 10 (test_decoding is a
contrib module, wal2json a separate package that managed services do not all offer); a publication chooses the
tables, and on PostgreSQL 15+ the columns, on the server, so secrets never reach its readers; its binary format
is documented and versioned, not a text format to re-parse; and it is what Debezium's PostgreSQL connector reads,
so the slot and publication `--setup-only` makes serve both. psycopg 3 has no replication-protocol client, which is
why the SQL functions are used (on the direct connection: a slot belongs to a server session).

What the column lists do not do (COLUMN_LISTS_LIMITS, printed by `--setup-only`): they filter what a reader of
*this* publication receives. A role with REPLICATION can create its own slot with any output plugin
(test_decoding, wal2json) and decode every column of every table from the WAL, SELECT privileges or not. So an
existing publication is checked column by column before it is called filtered (`publication_check`), and
`--setup-only` refuses one that sends a secret column unless --allow-secret-columns accepts it.

Slots: a one-shot run (no --follow) on a slot that does not exist reads through a temporary slot, which the
server drops when the session ends (peek and advance work on it from the session that created it, and only
there; the server also drops it on any error in that session, which ends a one-shot run anyway), so nothing is
left holding WAL. --follow and --setup-only create a persistent slot, as does Debezium.

Delivery is at least once: a batch of whole transactions is peeked (decoding only ever returns committed
transactions, in commit order: rolled-back work never appears), every line is written and flushed, and only then is
the slot advanced to the end of the last transaction fully written. A crash or Ctrl-C in between repeats lines on
the next run; it never skips any.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import struct
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.errors import ConfigError, Refused, UsageError

notice = logging.getLogger("celora.notice")

PLUGIN = "pgoutput"
DEFAULT_SLOT = "celora_changes"
APPLICATION_NAME = "celora db changes"
PUBLICATION_COMMENT = "celora db changes"
SECRETS_FLAG = "--allow-secret-columns"
COLUMN_LISTS_LIMITS = (
    "What the column lists protect: a reader of this publication (Debezium, `celora db changes`) never receives the "
    "secret columns; PostgreSQL leaves them out before the change leaves the server. What they do not: any role "
    "with REPLICATION can create its own slot with another output plugin (test_decoding, wal2json) and decode "
    "every column of every table from the WAL, whatever its SELECT grants, including the role below. So: give "
    "REPLICATION only to consumers you trust as much as the database owner; let other consumers read from a "
    "trusted relay (Debezium into Kafka with topic ACLs, or a service) instead of the database; keep secrets out of "
    "the database, or store them hashed or encrypted at rest in their columns (sessions.token_hash is a hash), so "
    "the WAL holds nothing usable.")
BATCH_CHANGES = 2_000  # rows per peek; whole transactions only, so a big one comes in one batch
POLL_SECONDS = 0.5
_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

Emit = Callable[[dict[str, Any]], None]


# -- prerequisites -------------------------------------------------------------------------------------------------

PROVIDERS_HINT = (
    "On your own server: `ALTER SYSTEM SET wal_level = logical;` then restart PostgreSQL. Managed services: AWS "
    "RDS/Aurora: set rds.logical_replication = 1 in the DB parameter group and reboot; Google Cloud SQL: set the "
    "flag cloudsql.logical_decoding = on (restarts the instance); Azure Database for PostgreSQL: set the server "
    "parameter wal_level = logical and restart. The local server celora manages starts with it (one started by an "
    "older celora gets it at its next start: `celora local stop`, then `celora local start`).")


def check_slot_name(slot: str, flag: str = "--slot") -> str:
    """`flag`: the option the name came from, named in the error (--slot, or --drop)."""
    if not _SLOT_NAME.match(slot or ""):
        raise UsageError(f"{flag} {slot!r} is not a valid replication slot name.",
                         f"Use 1 to 63 lowercase letters, digits and underscores, e.g. {flag} celora_changes.")
    return slot


def check_prerequisites(conn, where: str, *, creating_slot: bool) -> None:
    """wal_level, the REPLICATION privilege and, when a slot is to be created, a free slot: each named with the fix."""
    wal_level = conn.execute("SHOW wal_level").fetchone()[0]
    if wal_level != "logical":
        raise ConfigError(
            f"Logical decoding needs wal_level = logical; the server at {where} has wal_level = {wal_level} "
            "(checked with SHOW wal_level). wal_level only changes with a server restart.", PROVIDERS_HINT)
    allowed = conn.execute("""
        SELECT r.rolsuper OR r.rolreplication
               OR EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication'
                                                     AND pg_has_role(current_user, g.oid, 'MEMBER')),
               current_user
          FROM pg_roles r WHERE r.rolname = current_user""").fetchone()
    if not allowed[0]:
        raise ConfigError(
            f"Role {allowed[1]!r} may not use replication slots on {where}: it has neither REPLICATION nor "
            "superuser (checked pg_roles, and rds_replication membership).",
            f"As an administrator: `ALTER ROLE {allowed[1]} WITH REPLICATION;` (AWS RDS: `GRANT rds_replication TO "
            f"{allowed[1]};`), or point DIRECT_DATABASE_URL at a role that has it.")
    if creating_slot:
        used, maximum = conn.execute("SELECT (SELECT count(*) FROM pg_replication_slots), "
                                     "current_setting('max_replication_slots')::int").fetchone()
        if used >= maximum:
            raise ConfigError(
                f"No free replication slot on {where}: {used} of max_replication_slots = {maximum} are in use.",
                "Drop an abandoned slot (`celora db changes --list`, then `--drop SLOT`), or raise "
                "max_replication_slots (needs a restart).")


# -- set-up: publication and slot -------------------------------------------------------------------------------------

@dataclass
class SetupResult:
    database: str
    slot: str
    publication: str
    tables: list[str]
    excluded_columns: dict[str, list[str]]
    created_slot: bool
    created_publication: bool
    column_lists: bool  # the server leaves every secret column out (checked column by column)
    role_hint: str = ""
    debezium: dict[str, str] = field(default_factory=dict)
    # secret columns the publication sends anyway (accepted with --allow-secret-columns): {table: [column]}
    secret_columns_published: dict[str, list[str]] = field(default_factory=dict)
    limits: str = COLUMN_LISTS_LIMITS

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _schema_tables() -> tuple[list[str], dict[str, tuple[str, ...]], dict[str, list[str]]]:
    """(tables streamed, their sensitive columns, every column per table) from the models."""
    from celora_cli.db.models import Base
    from celora_cli.db.models.audit_log import audited_tables, sensitive_columns

    tables = audited_tables(Base.metadata)
    columns = {t: [c.name for c in Base.metadata.tables[t].columns] for t in tables}
    return tables, sensitive_columns(Base.metadata), columns


@dataclass
class PublicationCheck:
    """What a publication sends, table by table and column by column, against what the stream needs."""

    name: str
    exists: bool
    column_lists: bool  # the server can filter columns (PostgreSQL 15+)
    secrets: dict[str, list[str]] = field(default_factory=dict)  # secret columns it sends, by table
    missing: list[str] = field(default_factory=list)  # streamed tables it does not publish
    others: list[str] = field(default_factory=list)  # tables it publishes that celora does not stream

    def secrets_text(self) -> str:
        return ", ".join(f"{table}.{column}" for table, cols in self.secrets.items() for column in cols)


def publication_check(conn, name: str, tables: list[str], excluded: dict[str, tuple[str, ...]]) -> PublicationCheck:
    """Read what publication `name` publishes (pg_publication_tables: its attnames on PostgreSQL 15+; before 15
    there are no column lists, so every column of a published table is sent). A table of another schema than
    the search path's counts as another table."""
    column_lists = conn.info.server_version >= 150000
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone() is not None
    check = PublicationCheck(name, exists, column_lists)
    if not exists:
        return check
    columns = "attnames::text[]" if column_lists else "NULL::text[]"
    published: dict[str, list[str] | None] = {}
    for schema, table, attnames, ours in conn.execute(
            f"SELECT schemaname::text, tablename::text, {columns}, schemaname = ANY (current_schemas(false))"
            " FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2", (name,)):
        if ours and table in tables:
            published[table] = attnames
        else:
            check.others.append(f"{schema}.{table}")
    check.missing = [t for t in tables if t not in published]
    for table, attnames in published.items():
        sent = [c for c in excluded.get(table, ()) if attnames is None or c in attnames]
        if sent:
            check.secrets[table] = sent
    return check


def _publish_clause(tables: list[str], excluded: dict[str, tuple[str, ...]], columns: dict[str, list[str]],
                    column_lists: bool):
    """`users, sessions (id, user_id, ...), ...`: each table, with the columns kept when it has secrets."""
    from psycopg import sql

    parts = []
    for table in tables:
        part: Any = sql.Identifier(table)
        if column_lists and excluded.get(table):
            kept = [c for c in columns[table] if c not in excluded[table]]
            part = sql.SQL("{} ({})").format(part, sql.SQL(", ").join(map(sql.Identifier, kept)))
        parts.append(part)
    return sql.SQL(", ").join(parts)


def _secrets_refused(check: PublicationCheck, tables: list[str], excluded: dict[str, tuple[str, ...]],
                     columns: dict[str, list[str]], where: str) -> Refused:
    """--setup-only on a publication that would send secret columns to its readers."""
    from psycopg import sql

    what = f"Publication {check.name}" + (" (it exists)" if check.exists else " (as it would be created)")
    if check.column_lists:
        clause = _publish_clause(tables, excluded, columns, True).as_string(None)
        fix = (f"As the tables' owner, make it leave them out: `ALTER PUBLICATION "
               f"{sql.Identifier(check.name).as_string(None)} SET TABLE {clause}`; or drop it (`DROP PUBLICATION "
               f"{check.name}`) and let `celora db changes --setup-only` create it")
    else:
        fix = ("PostgreSQL before 15 has no column lists, so no publication can leave a column out: upgrade to 15+ "
               "to filter on the server (Debezium's column.exclude.list drops them only in the connector, after "
               "they left the server)")
    return Refused(
        f"{what} on {where} sends secret columns to every reader of the slot (Debezium, or anything with "
        f"REPLICATION that reads it): {check.secrets_text()} (the models mark them info={{'sensitive': True}}). "
        "Nothing was created.",
        f"{fix}; or accept it with `celora db changes --setup-only {SECRETS_FLAG}`.")


def _ensure_publication(conn, name: str, tables: list[str], excluded: dict[str, tuple[str, ...]],
                        columns: dict[str, list[str]], *, where: str = "the server",
                        refuse_secrets: bool = False) -> tuple[bool, PublicationCheck]:
    """(created, what it publishes). An existing publication is used as it is, after its tables and columns are
    checked. refuse_secrets (--setup-only without --allow-secret-columns): a publication that sends a secret
    column is refused (Refused), before anything is created. The stream itself leaves secret columns out of its
    lines whatever the publication sends, so for it they are only named (a notice)."""
    import psycopg
    from psycopg import sql

    check = publication_check(conn, name, tables, excluded)
    if not check.exists and not check.column_lists:  # what a new one would send: every column
        check.secrets = {t: list(excluded[t]) for t in tables if excluded.get(t)}
    if check.secrets and refuse_secrets:
        raise _secrets_refused(check, tables, excluded, columns, where)
    if check.exists:
        if check.missing:  # e.g. a table added by a later migration: its changes never reach this slot
            notice.info(f"Publication {name} does not publish {', '.join(check.missing)}: no change to "
                        f"{'it' if len(check.missing) == 1 else 'them'} is streamed. Add with `ALTER PUBLICATION "
                        f"{name} ADD TABLE {', '.join(check.missing)}` (as the tables' owner).")
        if check.others:
            notice.info(f"Publication {name} also publishes {', '.join(check.others)}, which celora does not "
                        f"stream: every reader of the slot receives their changes.")
        if check.secrets and check.column_lists:  # before 15 it is how every publication is (said at creation)
            notice.info(f"Publication {name} sends secret columns ({check.secrets_text()}) to every reader of the "
                        f"slot; this stream leaves them out of its lines. `celora db changes --setup-only --slot "
                        f"{name}` says how to filter them on the server.")
        return False, check
    try:
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
            sql.Identifier(name), _publish_clause(tables, excluded, columns, check.column_lists)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            f"Publication {name} does not exist yet and this role may not create it: {exc.diag.message_primary} "
            "(a publication for a table needs the table's owner).",
            f"Run `celora db changes --setup-only --slot {name}` once as the migration role (the tables' owner); "
            "the stream then works as any role with REPLICATION.") from exc
    conn.execute(sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(sql.Identifier(name),
                                                                   sql.Literal(PUBLICATION_COMMENT)))
    notice.info(f"Created publication {name} for {', '.join(tables)} (secrets excluded"
                f"{'' if check.column_lists else ' by celora only: PostgreSQL < 15 has no column lists'}).")
    return True, check


def _slot_exists(conn, slot: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None


def _ensure_slot(conn, slot: str, where: str, *, temporary: bool = False) -> bool:
    """The slot, created when missing: persistent, or `temporary` (dropped by the server when this session ends)."""
    row = conn.execute("SELECT plugin, slot_type, database, active_pid FROM pg_replication_slots "
                       "WHERE slot_name = %s", (slot,)).fetchone()
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
    conn.execute("SELECT pg_create_logical_replication_slot(%s, %s, %s)", (slot, PLUGIN, temporary))
    if temporary:
        notice.info(f"Slot {slot} does not exist on {where}: this one-shot run reads through a temporary slot, "
                    f"dropped when it ends, so it sees only what is committed from now on (with --from-start, the "
                    f"current rows first). For a position kept between runs, create the slot once with `celora db "
                    f"changes --setup-only --slot {slot}`, or use --follow.")
    else:
        notice.info(f"Created logical replication slot {slot} ({PLUGIN}) on {where}: it keeps WAL until it is "
                    f"read; drop it when no longer used (`celora db changes --drop {slot}`).")
    return True


def role_hint(database: str, tables: list[str], excluded: dict[str, tuple[str, ...]],
              columns: dict[str, list[str]], role: str = "debezium") -> str:
    grants = []
    for table in tables:
        if excluded.get(table):
            kept = ", ".join(c for c in columns[table] if c not in excluded[table])
            grants.append(f"GRANT SELECT ({kept}) ON {table} TO {role};")
        else:
            grants.append(f"GRANT SELECT ON {table} TO {role};")
    return "\n".join([f"CREATE ROLE {role} WITH LOGIN REPLICATION PASSWORD '<choose one>';",
                      f'GRANT CONNECT ON DATABASE "{database}" TO {role};',
                      f"GRANT USAGE ON SCHEMA public TO {role};", *grants])


def setup(settings: Settings, *, slot: str = DEFAULT_SLOT, allow_secret_columns: bool = False) -> SetupResult:
    """Publication + slot for celora's stream or Debezium's PostgreSQL connector, and the role it needs.

    A publication (existing, or new on PostgreSQL < 15) that sends a secret column is refused unless
    `allow_secret_columns`: Debezium receives whatever the publication sends."""
    from celora_cli.db.errors import translating

    check_slot_name(slot)
    tables, excluded, columns = _schema_tables()
    conn, url, setting = _open(settings)
    where = _where(url)
    try:
        with translating(url, setting):
            check_prerequisites(conn, where, creating_slot=False)
            created_pub, check = _ensure_publication(conn, slot, tables, excluded, columns, where=where,
                                                     refuse_secrets=not allow_secret_columns)
            created_slot = _ensure_slot(conn, slot, where)
            database = conn.info.dbname
    finally:
        conn.close()
    exclude_list = ",".join(f"public.{t}.{c}" for t in tables for c in excluded.get(t, ()))
    return SetupResult(
        database=url.masked, slot=slot, publication=slot, tables=tables,
        excluded_columns={t: list(c) for t, c in excluded.items()}, created_slot=created_slot,
        created_publication=created_pub, column_lists=not check.secrets,
        secret_columns_published=check.secrets,
        role_hint=role_hint(database, tables, excluded, columns),
        debezium={"connector.class": "io.debezium.connector.postgresql.PostgresConnector", "plugin.name": PLUGIN,
                  "slot.name": slot, "publication.name": slot, "publication.autocreate.mode": "disabled",
                  "database.dbname": database,
                  "table.include.list": ",".join(f"public.{t}" for t in tables),
                  "column.exclude.list": exclude_list})


# -- connection -----------------------------------------------------------------------------------------------------

def _where(url: DatabaseURL) -> str:
    return url.display_host  # host:port, or the unix socket file


def _open(settings: Settings):
    """The direct connection, proven to be a server session of its own (a slot's functions through a transaction
    pooler could land on another server connection each time)."""
    from celora_cli.db.connect import connect, direct_url, sends_startup_options, startup_options_applied
    from celora_cli.db.errors import translating
    from celora_cli.migrate.connection import setting_name

    url = direct_url(settings)
    setting = setting_name(settings)
    with translating(url, setting):
        conn = connect(url, settings, application_name=APPLICATION_NAME, autocommit=True)
        if sends_startup_options(url) and not startup_options_applied(conn):
            conn.close()
            raise ConfigError(
                f"{setting} ({url.masked}) goes through a connection pooler (celora's startup marker did not "
                "arrive): logical decoding needs a PostgreSQL session of its own.",
                f"Point {setting} at PostgreSQL itself (DIRECT_DATABASE_URL), not at PgBouncer.")
        # Decoding a large transaction can take longer than the app's statement timeout; it is not app traffic.
        conn.execute("SET statement_timeout = 0")
    return conn, url, setting


# -- pgoutput protocol (version 1) ----------------------------------------------------------------------------------

@dataclass
class Relation:
    table: str
    columns: list[str]
    type_oids: list[int]
    key: list[str]


_INT_OIDS = {20, 21, 23, 26}
_FLOAT_OIDS = {700, 701}
_JSON_OIDS = {114, 3802}


def _convert(type_oid: int, text: str | None) -> Any:
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
        return json.loads(text)
    return text


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from("!" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("!" + fmt)
        return value[0]

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        text = self.data[self.pos:end].decode()
        self.pos = end + 1
        return text

    def tuple_data(self, relation: Relation) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for i in range(self.take("h")):
            kind = self.take("c")
            name = relation.columns[i] if i < len(relation.columns) else f"column_{i}"
            if kind == b"t":
                size = self.take("i")
                raw = self.data[self.pos:self.pos + size].decode()
                self.pos += size
                values[name] = _convert(relation.type_oids[i], raw)
            elif kind == b"n":
                values[name] = None
            # b"u": an unchanged TOASTed value, not sent: left out of the object
        return values


@dataclass
class Transaction:
    xid: int
    commit_time: str


@dataclass(frozen=True)
class Commit:
    """The end of a transaction: once every line before it is written, the slot may advance to `end_lsn`."""

    end_lsn: str


def _lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class Decoder:
    """pgoutput messages (as pg_logical_slot_peek_binary_changes returns them) -> changes and commits.

    Decoding returns only committed transactions, each whole and in commit order, so a change can be written as
    soon as it is decoded: nothing is held per transaction (a million-row transaction streams in constant memory)."""

    def __init__(self, excluded: dict[str, tuple[str, ...]], tables: set[str] | None) -> None:
        self.relations: dict[int, Relation] = {}
        self.excluded = excluded
        self.tables = tables
        self.current: Transaction | None = None

    def feed(self, lsn: str, data: bytes) -> list[dict[str, Any]] | Commit:
        """One message: the changes to write (none for bookkeeping or a table not selected), or a commit."""
        r = _Reader(bytes(data))
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
            return Commit(_lsn(end_lsn))
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
        new = None if new is None else {c: v for c, v in new.items() if c not in secret}
        old = None if old is None else {c: v for c, v in old.items() if c not in secret}
        source = new if new is not None else old or {}
        key = {c: source.get(c) for c in relation.key if c not in secret}
        return self._line(relation.table, {b"I": "insert", b"U": "update", b"D": "delete"}[kind], key, new, old, lsn)


# -- the stream -----------------------------------------------------------------------------------------------------

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
    from celora_cli.db.errors import translating

    check_slot_name(slot)
    all_tables, excluded, columns = _schema_tables()
    selected = _selected(tables, all_tables)
    conn, url, setting = _open(settings)
    where = _where(url)
    result = StreamResult(slot)
    written_to: str | None = None  # end LSN of the last transaction whose lines were all emitted
    batch: Generator[tuple[str, bytes]] | None = None
    try:
        with translating(url, setting):
            check_prerequisites(conn, where, creating_slot=False)
            _ensure_publication(conn, slot, all_tables, excluded, columns, where=where)
            # One-shot on a slot that does not exist: a temporary one, so the run leaves nothing holding WAL.
            _ensure_slot(conn, slot, where, temporary=not follow and not _slot_exists(conn, slot))
            if on_ready is not None:
                on_ready(where)
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
    from psycopg import sql

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
                    new = {n: _convert(oid, v) for (n, oid), v in zip(cols, row, strict=True)}
                    yield {"table": table, "op": "read", "key": {k: new.get(k) for k in key}, "new": new,
                           "old": None, "lsn": None, "xid": None, "commit_time": None}


# -- slots: list and drop ---------------------------------------------------------------------------------------------

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
    lag_bytes: int | None


def list_slots(settings: Settings) -> tuple[str, list[SlotInfo]]:
    from celora_cli.db.errors import translating

    conn, url, setting = _open(settings)
    try:
        with translating(url, setting):
            rows = conn.execute("""
                SELECT slot_name, plugin, slot_type, database, active, active_pid, wal_status, restart_lsn::text,
                       confirmed_flush_lsn::text,
                       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
                       pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                  FROM pg_replication_slots ORDER BY slot_name""").fetchall()
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
    so every schema's stamp is read (environment_stamp.database_environment), in the database the URL names and,
    for a logical slot of another database, in that one too (the strictest wins). A database that cannot be read
    counts as production: its slot may be production's. A physical slot serves the whole cluster; celora reads the
    stamp of the database it is connected to (it does not visit every database)."""
    from celora_cli.db.admin import with_database
    from celora_cli.db.connect import connect
    from celora_cli.safety.stamp import PRODUCTION, database_environment

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
    from psycopg import sql

    from celora_cli.db.errors import translating

    check_slot_name(slot, "--drop")
    _, slots = list_slots(settings)
    found = next((s for s in slots if s.slot == slot), None)
    if found is None:
        raise ConfigError(f"No replication slot named {slot} ({', '.join(s.slot for s in slots) or 'there are none'}).",
                          "`celora db changes --list` shows the slots.")
    if found.active:
        raise Refused(f"Replication slot {slot} is in use by server process {found.active_pid}; nothing was dropped.",
                      "Stop its consumer first (or `SELECT pg_terminate_backend(pid)` if it is stuck), then retry.")
    conn, url, setting = _open(settings)
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


__all__ = ["DEFAULT_SLOT", "PLUGIN", "Decoder", "SetupResult", "SlotInfo", "StreamResult", "check_prerequisites",
           "drop_slot", "list_slots", "setup", "stream"]
