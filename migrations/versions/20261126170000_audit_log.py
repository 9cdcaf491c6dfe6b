"""audit log: audit_log table, one generic trigger function, a row trigger (and a TRUNCATE trigger) on each app
table (secrets excluded), and a statement trigger that lets only the table owner skip auditing
(SET LOCAL celora.audit = 'off')

Revision ID: 20261126170000
Revises: 20261126150000
Create Date: 2026-11-26 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "20261126170000"
down_revision = "20261126150000"
branch_labels = None
depends_on = None

# The SQL is written out here, not imported from the models (celora_cli/db/models/audit_log.py): a migration is
# a snapshot of history. tests/integration/test_schema_matches_models.py checks both build the same schema.

# Each audited table: its primary key columns, then the columns never copied into audit_log. The second list is
# the models' columns marked info={"sensitive": True} when this migration was written (a session's token hash; a
# stored API response, which may hold tokens). tests/integration/test_audit.py checks that every column the
# models mark sensitive is excluded by the triggers on a migrated database.
# rate_limits is not audited: a counter bumped on every API request, nobody's "who changed what".
AUDITED = {
    "idempotency_keys": ("id", "response_body"),
    "notifications": ("id",),
    "sessions": ("id", "token_hash"),
    "transactions": ("id",),
    "users": ("id",),
    "wallets": ("id",),
}

# SET search_path FROM CURRENT: audit_log is found in the schema the migration runs in, whatever search_path the
# writing session has.
CREATE_AUDIT_ROW = """\
CREATE FUNCTION celora_audit_row() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path FROM CURRENT
    AS $$
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

CREATE_AUDIT_OFF_CHECK = """\
CREATE FUNCTION celora_audit_off_check() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER') THEN
        RAISE EXCEPTION USING
            MESSAGE = 'celora.audit = off is reserved for the owner of table ' || TG_TABLE_NAME,
            ERRCODE = 'insufficient_privilege',
                  HINT = 'Only bulk loads run by the migration role may skip the audit log; reset celora.audit.';
    END IF;
    RETURN NULL;
END;
$$"""


def _trigger_arguments(key: str, *excluded: str) -> str:
    return ", ".join(f"'{argument}'" for argument in (key, *excluded))


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("row_key", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("old_values", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("new_values", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("db_role", sa.Text(), nullable=False),
        sa.Column("application_name", sa.Text(), nullable=True),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "operation IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')", name=op.f("ck_audit_log_operation_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_table_name_row_key"), "audit_log", ["table_name", "row_key"])
    op.create_index(op.f("ix_audit_log_changed_at"), "audit_log", ["changed_at"])

    op.execute(CREATE_AUDIT_ROW)
    op.execute(CREATE_AUDIT_OFF_CHECK)
    for table, (key, *excluded) in AUDITED.items():
        op.execute(
            f"CREATE TRIGGER trg_{table}_audit AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW WHEN (current_setting('celora.audit', true) IS DISTINCT FROM 'off') "
            f"EXECUTE FUNCTION celora_audit_row({_trigger_arguments(key, *excluded)})"
        )
        op.execute(
            f"CREATE TRIGGER trg_{table}_audit_truncate AFTER TRUNCATE ON {table} "
            f"FOR EACH STATEMENT WHEN (current_setting('celora.audit', true) IS DISTINCT FROM 'off') "
            f"EXECUTE FUNCTION celora_audit_row({_trigger_arguments(key, *excluded)})"
        )
        op.execute(
            f"CREATE TRIGGER trg_{table}_audit_off_check BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT WHEN (current_setting('celora.audit', true) = 'off') "
            f"EXECUTE FUNCTION celora_audit_off_check()"
        )


def downgrade() -> None:
    for table in AUDITED:
        op.execute(f"DROP TRIGGER trg_{table}_audit_off_check ON {table}")
        op.execute(f"DROP TRIGGER trg_{table}_audit_truncate ON {table}")
        op.execute(f"DROP TRIGGER trg_{table}_audit ON {table}")
    op.execute("DROP FUNCTION celora_audit_off_check()")
    op.execute("DROP FUNCTION celora_audit_row()")
    op.drop_index(op.f("ix_audit_log_changed_at"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_table_name_row_key"), table_name="audit_log")
    op.drop_table("audit_log")
