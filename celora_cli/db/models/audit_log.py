"""The audit log: every change to the app tables, written by the database itself (triggers), so raw SQL, the
indexer's upserts and ON DELETE CASCADE are recorded like ORM writes.

One generic plpgsql function, attached to each audited table by one row trigger. Its arguments are the
table's primary key columns (comma-separated) and then the columns it must never record: those the models
mark ``info={"sensitive": True}`` (session token hashes, idempotency response bodies). Migration
20261126170000 writes the same SQL out with the list stated in it (history is a snapshot, not an import);
tests/integration/test_audit.py checks that every column the models mark sensitive is excluded on the server.

Bulk loads skip auditing only when they ask, per transaction: ``SET LOCAL celora.audit = 'off'``. The row
function decides for every row, when the row's event fires at the end of the statement, and skips only when the
session's role (session_user) is a member of the table's owner (the migration role): anyone else's statement is
refused, even when it turned the setting off inside itself (a function in WHERE or VALUES). A statement trigger
refuses a plain SET LOCAL early. The row function is SECURITY DEFINER with a pinned search_path (pg_temp last) and
no EXECUTE for PUBLIC, so no other role needs, or may hold, a privilege on audit_log: the app can neither silence
nor forge it. (The owner can still edit history: `celora db audit --seal` / `--verify`, over audit_seal, makes that
evident.) Migration 20261207023000 made it so.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    DDL,
    BigInteger,
    CheckConstraint,
    Index,
    LargeBinary,
    MetaData,
    Text,
    event,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from celora_cli.db.models.base import Base

AUDIT_TABLE = "audit_log"
AUDIT_FUNCTION = "celora_audit_row"
AUDIT_OFF_CHECK_FUNCTION = "celora_audit_off_check"
AUDIT_MAY_SKIP_FUNCTION = "celora_audit_may_skip"
SEAL_TABLE = "audit_seal"
# rate_limits is a counter bumped on every API request: auditing it would double the write load of the
# hottest table and record nothing anyone asks about ("who changed this wallet"). audit_log never audits itself,
# nor the seals over it.
NOT_AUDITED = ("rate_limits", AUDIT_TABLE, SEAL_TABLE)
# Never recorded whatever the models say: the row's modification time is the audit row's own time.
ALWAYS_SKIPPED_IN_UPDATES = ("updated_at",)


class AuditLog(Base):
    __tablename__ = AUDIT_TABLE
    __table_args__ = (
        CheckConstraint("operation IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')", name="operation_known"),
        # `celora db studio` shows it but never writes it: a log edited by hand is no longer evidence.
        {"info": {"studio_read_only": True}},
    )

    # bigserial, not an identity column: Alembic's server-default comparison (used by db push) fails on Identity.
    # Only the owner writes it (the trigger function runs as the owner): no other role needs a privilege on it.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # clock_timestamp() in the trigger: the moment of the change, not of its transaction's start.
    changed_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    table_name: Mapped[str] = mapped_column(Text)
    operation: Mapped[str] = mapped_column(Text)
    # The primary key as an object, e.g. {"id": "5f0c..."}: `db audit --table T --id X` is one index lookup.
    row_key: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # INSERT: new_values only; DELETE: old_values only; UPDATE: only the columns that changed, in both;
    # TRUNCATE: one entry for the table (row_key {}), no values.
    old_values: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    new_values: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # celora.actor (set per transaction by the app: SET LOCAL celora.actor = 'user:42'), else
    # application_name, else the database role.
    actor: Mapped[str] = mapped_column(Text)
    db_role: Mapped[str] = mapped_column(Text)
    application_name: Mapped[str | None] = mapped_column(Text)
    # pg_current_xact_id(): the rows one transaction wrote share it (and the change stream's xid).
    transaction_id: Mapped[int] = mapped_column(BigInteger)

    def __repr__(self) -> str:
        return f"<AuditLog id={self.id} {self.operation} {self.table_name} {self.row_key}>"


class AuditSeal(Base):
    """One link of the tamper-evidence chain (`celora db audit --seal`, celora_cli/data/audit_seal.py): a hash over the
    audit entries with after_id < id <= last_id, chained to the previous link. kind 'prune' records a retention
    sweep (entries up to last_id may be missing from then on)."""

    __tablename__ = SEAL_TABLE
    __table_args__ = (
        CheckConstraint("kind IN ('seal', 'prune')", name="kind_known"),
        CheckConstraint("last_id >= after_id", name="range_ordered"),
        {"info": {"studio_read_only": True}},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sealed_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    sealed_by: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    after_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    entries: Mapped[int] = mapped_column(BigInteger)
    # Per entry, in id order: its id (8 bytes) and the first 8 bytes of its SHA-256, so --verify can name the
    # first entry changed, removed or inserted; the link's hash covers the full digests.
    digests: Mapped[bytes] = mapped_column(LargeBinary)
    previous_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)

    def __repr__(self) -> str:
        return f"<AuditSeal id={self.id} {self.kind} ({self.after_id}, {self.last_id}]>"


# A row's history, newest first; and the retention sweep / --since by time.
Index("ix_audit_log_table_name_row_key", AuditLog.table_name, AuditLog.row_key)
Index("ix_audit_log_changed_at", AuditLog.changed_at)


# SECURITY DEFINER: it runs as its owner (the migration role), so no writing role needs a privilege on audit_log.
# Its search_path is pinned by PIN_AUDIT_SEARCH_PATH below.
CREATE_AUDIT_FUNCTION = f"""\
CREATE OR REPLACE FUNCTION {AUDIT_FUNCTION}() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    AS $$
DECLARE
    -- TG_ARGV[0]: the primary key columns, comma-separated; TG_ARGV[1..]: columns never recorded.
    excluded text[] := TG_ARGV[1:TG_NARGS - 1];
    full_row jsonb;
    old_row jsonb;
    new_row jsonb;
    old_changed jsonb;
    new_changed jsonb;
    row_key jsonb := '{{}}';
    key_column text;
BEGIN
    -- Decided per row, when the row's event fires: a setting changed anywhere in the statement is seen here.
    IF current_setting('celora.audit', true) = 'off' THEN
        IF pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION USING
            MESSAGE = 'celora.audit = off is reserved for the owner of table ' || TG_TABLE_NAME,
            ERRCODE = 'insufficient_privilege',
            HINT = 'Only bulk loads run by the migration role may skip the audit log; reset celora.audit.';
    END IF;
    -- TRUNCATE (a statement trigger): one entry for the table, no row, no values.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_row := to_jsonb(OLD);
        full_row := old_row;
        old_row := old_row - excluded;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_row := to_jsonb(NEW);
        full_row := new_row;
        new_row := new_row - excluded;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(n.key, o.value), jsonb_object_agg(n.key, n.value)
          INTO old_changed, new_changed
          FROM jsonb_each(new_row) AS n
          JOIN jsonb_each(old_row) AS o ON o.key = n.key
         WHERE n.value IS DISTINCT FROM o.value AND n.key <> 'updated_at';
        IF new_changed IS NULL THEN
            RETURN NULL;  -- nothing recorded changed (a no-op update, or only excluded columns)
        END IF;
        old_row := old_changed;
        new_row := new_changed;
    END IF;
    IF full_row IS NOT NULL THEN
        FOREACH key_column IN ARRAY string_to_array(TG_ARGV[0], ',') LOOP
            row_key := row_key || jsonb_build_object(key_column, full_row -> key_column);
        END LOOP;
    END IF;
    INSERT INTO audit_log (changed_at, table_name, operation, row_key, old_values, new_values, actor, db_role,
                           application_name, transaction_id)
    VALUES (clock_timestamp(), TG_TABLE_NAME, TG_OP, row_key, old_row, new_row,
            coalesce(nullif(current_setting('celora.actor', true), ''),
                     nullif(current_setting('application_name'), ''), session_user),
            session_user, nullif(current_setting('application_name'), ''),
            pg_current_xact_id()::text::bigint);
    RETURN NULL;
END;
$$"""

# pg_catalog first, then the schema the function is created in (a URL's ?schema=app), then pg_temp *last*: left
# out, pg_temp is searched first for tables, and a session's temporary table named audit_log would be written
# instead. Built on the server (current_schema()), so the same DDL serves any schema.
PIN_AUDIT_SEARCH_PATH = (f"DO $$ BEGIN EXECUTE 'ALTER FUNCTION {AUDIT_FUNCTION}() SET search_path = pg_catalog, ' "
                         "|| quote_ident(current_schema()) || ', pg_temp'; END $$")
# Nobody may attach the function to a table of their own (a temporary one) and forge entries through it.
REVOKE_AUDIT_FUNCTION = f"REVOKE ALL ON FUNCTION {AUDIT_FUNCTION}() FROM PUBLIC"
REVOKE_AUDIT_TABLES = (f"REVOKE ALL ON {AUDIT_TABLE} FROM PUBLIC", f"REVOKE ALL ON {SEAL_TABLE} FROM PUBLIC")

# The row trigger's WHEN: skip queueing the row's event only when auditing is off *and* the session's role may
# skip it. Evaluated as each row changes; the row function re-checks when the event fires, so a setting turned off
# later in the statement is still caught. It saves the owner's bulk load an after-trigger event and a plpgsql call
# per row. Catalog names qualified: pg_temp cannot shadow them.
CREATE_AUDIT_MAY_SKIP_FUNCTION = f"""\
CREATE OR REPLACE FUNCTION {AUDIT_MAY_SKIP_FUNCTION}(regclass) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
SELECT pg_catalog.pg_has_role(session_user, c.relowner, 'MEMBER') FROM pg_catalog.pg_class c WHERE c.oid = $1
$$"""

# The early, per-statement refusal of a plain SET LOCAL celora.audit = 'off' (the row function refuses at the
# statement's end anyway). SECURITY INVOKER, so its catalog names are qualified and its search_path pinned: a
# temporary table named pg_class would otherwise be found first.
CREATE_AUDIT_OFF_CHECK_FUNCTION = f"""\
CREATE OR REPLACE FUNCTION {AUDIT_OFF_CHECK_FUNCTION}() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(session_user,
                                  (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID),
                                  'MEMBER') THEN
        RAISE EXCEPTION USING
            MESSAGE = 'celora.audit = off is reserved for the owner of table ' || TG_TABLE_NAME,
            ERRCODE = 'insufficient_privilege',
            HINT = 'Only bulk loads run by the migration role may skip the audit log; reset celora.audit.';
    END IF;
    RETURN NULL;
END;
$$"""

DROP_AUDIT_FUNCTIONS = (
    f"DROP FUNCTION IF EXISTS {AUDIT_FUNCTION}()",
    f"DROP FUNCTION IF EXISTS {AUDIT_OFF_CHECK_FUNCTION}()",
    f"DROP FUNCTION IF EXISTS {AUDIT_MAY_SKIP_FUNCTION}(regclass)",
)


def audit_trigger_name(table: str) -> str:
    return f"trg_{table}_audit"


def audit_truncate_trigger_name(table: str) -> str:
    return f"trg_{table}_audit_truncate"


def audit_off_trigger_name(table: str) -> str:
    return f"trg_{table}_audit_off_check"


def sensitive_columns(metadata: MetaData) -> dict[str, tuple[str, ...]]:
    """{table: columns the models mark info={"sensitive": True}}, for every table that has one."""
    found: dict[str, tuple[str, ...]] = {}
    for table in metadata.tables.values():
        columns = tuple(c.name for c in table.columns if c.info.get("sensitive"))
        if columns:
            found[table.name] = columns
    return found


def audited_tables(metadata: MetaData) -> list[str]:
    return sorted(name for name in metadata.tables if name not in NOT_AUDITED)


def trigger_arguments(metadata: MetaData, table: str) -> list[str]:
    primary_key = ",".join(c.name for c in metadata.tables[table].primary_key.columns)
    return [primary_key, *sensitive_columns(metadata).get(table, ())]


def create_audit_triggers(table: str, arguments: list[str]) -> list[str]:
    quoted = ", ".join("'" + argument.replace("'", "''") + "'" for argument in arguments)
    return [
        # The function decides per row whether skipping is allowed (see the module's docstring); the WHEN only
        # spares the owner's bulk loads the call.
        f"CREATE OR REPLACE TRIGGER {audit_trigger_name(table)} AFTER INSERT OR UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW WHEN (current_setting('celora.audit', true) IS DISTINCT FROM 'off' "
        f"OR NOT {AUDIT_MAY_SKIP_FUNCTION}('{table}'::regclass)) "
        f"EXECUTE FUNCTION {AUDIT_FUNCTION}({quoted})",
        f"CREATE OR REPLACE TRIGGER {audit_truncate_trigger_name(table)} AFTER TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {AUDIT_FUNCTION}({quoted})",
        f"CREATE OR REPLACE TRIGGER {audit_off_trigger_name(table)} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE "
        f"ON {table} "
        f"FOR EACH STATEMENT WHEN (current_setting('celora.audit', true) = 'off') "
        f"EXECUTE FUNCTION {AUDIT_OFF_CHECK_FUNCTION}()",
    ]


def _create_audit(target: MetaData, connection: Any, **kw: Any) -> None:
    """After create_all: the functions, then the triggers on every audited table (OR REPLACE: a second
    create_all on the same database is not an error)."""
    statements = [CREATE_AUDIT_FUNCTION, PIN_AUDIT_SEARCH_PATH, REVOKE_AUDIT_FUNCTION, CREATE_AUDIT_OFF_CHECK_FUNCTION,
                  CREATE_AUDIT_MAY_SKIP_FUNCTION, *REVOKE_AUDIT_TABLES]
    for table in audited_tables(target):
        statements += create_audit_triggers(table, trigger_arguments(target, table))
    for statement in statements:
        connection.execute(DDL(statement))


def _drop_audit(target: MetaData, connection: Any, **kw: Any) -> None:
    for statement in DROP_AUDIT_FUNCTIONS:
        connection.execute(DDL(statement))


event.listen(Base.metadata, "after_create", _create_audit)
event.listen(Base.metadata, "after_drop", _drop_audit)
