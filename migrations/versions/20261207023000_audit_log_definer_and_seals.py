"""audit log the app cannot silence or forge: the trigger functions become SECURITY DEFINER with a pinned
search_path, the skip decision moves into the row trigger (per row, against the session's role), writes on
audit_log are revoked from everyone but its owner, and audit_seal (the tamper-evidence chain) is created

Revision ID: 20261207023000
Revises: 20261126170000
Create Date: 2026-12-07 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "20261207023000"
down_revision = "20261126170000"
branch_labels = None
depends_on = None

# A snapshot of history, not an import of the models (celora_cli/db/models/audit_log.py builds the same;
# tests/integration/test_schema_matches_models.py checks it).
#
# Why this migration: in 20261126170000 the owner-only check on celora.audit = 'off' ran once per statement, before
# it, while the row trigger's WHEN read the setting per row: a role that did not own the tables could turn the
# setting off *inside* its statement (a function in WHERE, in VALUES, in COPY ... WHERE) and leave no audit row.
# And the trigger function ran as the writing role, so that role needed INSERT on audit_log: it could forge rows.
#
# Now the row trigger's function decides, for every row, when it runs (at the end of the statement),
# whether the setting says 'off', and if so whether the *session's* role (session_user, which neither SET ROLE
# inside a function nor a SECURITY DEFINER function nor the owner-run ON DELETE CASCADE changes) is a member of
# the table's owner: the owner's bulk load skips; anyone else's statement is refused. (The trigger's WHEN makes
# the same test as each row changes, only to spare the owner's rows the call.) The function is SECURITY
# DEFINER (it runs as its owner, the migration role, so nobody else needs any privilege on audit_log), with a
# search_path pinned to pg_catalog, the migration schema, then pg_temp last (else a session's temporary table
# named audit_log would be found first), and EXECUTE revoked from PUBLIC (so nobody can attach it to a table of
# their own, a temporary one, and forge entries through it).
AUDITED = {
    "idempotency_keys": ("id", "response_body"),
    "notifications": ("id",),
    "sessions": ("id", "token_hash"),
    "transactions": ("id",),
    "users": ("id",),
    "wallets": ("id",),
}

AUDIT_ROW_BODY = """\
DECLARE
    -- TG_ARGV[0]: the primary key columns, comma-separated; TG_ARGV[1..]: columns never recorded.
    excluded text[] := TG_ARGV[1:TG_NARGS - 1];
    full_row jsonb;
    old_row jsonb;
    new_row jsonb;
    old_changed jsonb;
    new_changed jsonb;
    row_key jsonb := '{}';
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
"""

# The row trigger's WHEN: skip queueing the row's event only when auditing is off *and* the session's role may
# skip it. Evaluated as each row changes; the function re-checks when the event fires, so a setting turned off
# later in the statement is still caught. It saves the owner's bulk load an after-trigger event and a plpgsql call
# per row (the volume seed ran 1.44x slower without it). Catalog names qualified: pg_temp cannot shadow them.
CREATE_MAY_SKIP = """\
CREATE FUNCTION celora_audit_may_skip(regclass) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
SELECT pg_catalog.pg_has_role(session_user, c.relowner, 'MEMBER') FROM pg_catalog.pg_class c WHERE c.oid = $1
$$"""


def _when(table: str) -> str:
    return (f"WHEN (current_setting('celora.audit', true) IS DISTINCT FROM 'off' "
            f"OR NOT celora_audit_may_skip('{table}'::regclass))")


# The early, per-statement refusal of a plain SET LOCAL celora.audit = 'off' (the row trigger would refuse at the
# statement's end anyway). SECURITY INVOKER, so its catalog names are qualified and its search_path pinned: a
# temporary table named pg_class would otherwise be found first.
AUDIT_OFF_CHECK_BODY = """\
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
"""

# 20261126170000's definitions, restored by downgrade().
PREVIOUS_AUDIT_ROW_BODY = AUDIT_ROW_BODY.replace("""\
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
""", "")

PREVIOUS_AUDIT_OFF_CHECK_BODY = """\
BEGIN
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
        RAISE EXCEPTION USING
            MESSAGE = 'celora.audit = off is reserved for the owner of table ' || TG_TABLE_NAME,
            ERRCODE = 'insufficient_privilege',
                  HINT = 'Only bulk loads run by the migration role may skip the audit log; reset celora.audit.';
    END IF;
    RETURN NULL;
END;
"""

# Every privilege on audit_log (and its sequence) that a role other than the owner holds, except SELECT (a
# reader's), is revoked: the README used to ask operators to grant the app INSERT, which let it forge entries.
REVOKE_WRITES = """\
DO $$
DECLARE
    grant_row record;
BEGIN
    FOR grant_row IN
        SELECT DISTINCT a.grantee, c.relname, c.relkind
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid IN ('audit_log'::regclass, pg_get_serial_sequence('audit_log', 'id')::regclass)
           AND a.grantee <> c.relowner AND a.privilege_type <> 'SELECT'
    LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON %s %I FROM %s',
                       CASE WHEN grant_row.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, grant_row.relname,
                       CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_get_userbyid(grant_row.grantee)) END);
    END LOOP;
END;
$$"""


REVOKE_SEAL = """\
DO $$
DECLARE
    grant_row record;
BEGIN
    FOR grant_row IN
        SELECT DISTINCT a.grantee, c.relname, c.relkind
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid IN ('audit_seal'::regclass, pg_get_serial_sequence('audit_seal', 'id')::regclass)
           AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON %s %I FROM %s',
                       CASE WHEN grant_row.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, grant_row.relname,
                       CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_get_userbyid(grant_row.grantee)) END);
    END LOOP;
END;
$$"""


# pg_catalog, the schema the migration runs in, then pg_temp last. Worked out by the server (a DO block), not read
# by the migration: `celora db lint` and `alembic upgrade --sql` render this migration offline, with no database.
PIN_AUDIT_ROW_SEARCH_PATH = """\
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION celora_audit_row() SET search_path = pg_catalog, %I, pg_temp', current_schema());
END;
$$"""


def _arguments(key: str, *excluded: str) -> str:
    return ", ".join(f"'{argument}'" for argument in (key, *excluded))


def upgrade() -> None:
    # SET search_path = pg_catalog, pg_temp until the next statement pins the migration's schema between them.
    op.execute(f"CREATE OR REPLACE FUNCTION celora_audit_row() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
               f"SET search_path = pg_catalog, pg_temp AS $$\n{AUDIT_ROW_BODY}$$")
    op.execute(PIN_AUDIT_ROW_SEARCH_PATH)
    op.execute("CREATE OR REPLACE FUNCTION celora_audit_off_check() RETURNS trigger LANGUAGE plpgsql "
               f"SET search_path = pg_catalog, pg_temp AS $$\n{AUDIT_OFF_CHECK_BODY}$$")
    op.execute("REVOKE ALL ON FUNCTION celora_audit_row() FROM PUBLIC")
    op.execute(CREATE_MAY_SKIP)
    for table, (key, *excluded) in AUDITED.items():
        op.execute(f"CREATE OR REPLACE TRIGGER trg_{table}_audit AFTER INSERT OR UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW {_when(table)} EXECUTE FUNCTION celora_audit_row({_arguments(key, *excluded)})")
        op.execute(f"CREATE OR REPLACE TRIGGER trg_{table}_audit_truncate AFTER TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION celora_audit_row({_arguments(key, *excluded)})")
    op.execute("REVOKE ALL ON audit_log FROM PUBLIC")
    op.execute(REVOKE_WRITES)

    op.create_table(
        "audit_seal",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sealed_by", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("after_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("digests", sa.LargeBinary(), nullable=False),
        sa.Column("previous_hash", sa.LargeBinary(), nullable=True),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("kind IN ('seal', 'prune')", name=op.f("ck_audit_seal_kind_known")),
        sa.CheckConstraint("last_id >= after_id", name=op.f("ck_audit_seal_range_ordered")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_seal")),
    )
    op.execute("REVOKE ALL ON audit_seal FROM PUBLIC")
    # Default privileges (`celora db roles`: ALTER DEFAULT PRIVILEGES FOR ROLE celora_migrator) may just have
    # given the app its DML on the new table: nobody but the owner holds anything on the seals.
    op.execute(REVOKE_SEAL)


def downgrade() -> None:
    # Privileges revoked by upgrade() are not re-granted: which roles held them is not recorded anywhere.
    op.drop_table("audit_seal")
    for table, (key, *excluded) in AUDITED.items():
        op.execute(f"CREATE OR REPLACE TRIGGER trg_{table}_audit AFTER INSERT OR UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW WHEN (current_setting('celora.audit', true) IS DISTINCT FROM 'off') "
                   f"EXECUTE FUNCTION celora_audit_row({_arguments(key, *excluded)})")
        op.execute(f"CREATE OR REPLACE TRIGGER trg_{table}_audit_truncate AFTER TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT WHEN (current_setting('celora.audit', true) IS DISTINCT FROM 'off') "
                   f"EXECUTE FUNCTION celora_audit_row({_arguments(key, *excluded)})")
    op.execute("DROP FUNCTION celora_audit_may_skip(regclass)")
    op.execute("GRANT EXECUTE ON FUNCTION celora_audit_row() TO PUBLIC")
    op.execute("CREATE OR REPLACE FUNCTION celora_audit_off_check() RETURNS trigger LANGUAGE plpgsql "
               f"AS $$\n{PREVIOUS_AUDIT_OFF_CHECK_BODY}$$")
    op.execute("CREATE OR REPLACE FUNCTION celora_audit_row() RETURNS trigger LANGUAGE plpgsql "
               f"SET search_path FROM CURRENT AS $$\n{PREVIOUS_AUDIT_ROW_BODY}$$")
