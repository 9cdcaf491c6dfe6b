"""The statement classifier behind `migrate-deploy --plan` (pure, no database): the lock each DDL form takes per
PostgreSQL's documentation, and which ones rewrite or scan the table while holding it."""

from __future__ import annotations

import pytest

from celora_cli.migrate.plan_statements import Catalog, classify, conflicts, mode_from_pg_locks
from celora_cli.migrate.plan_types import binary_coercible, normalise_type


def one(sql: str, catalog: Catalog | None = None):
    [statement] = classify(sql, catalog)
    return statement


def effect(sql: str, catalog: Catalog | None = None, table: str | None = None):
    statement = one(sql, catalog)
    assert statement.understood, statement
    found = [e for e in statement.effects if table is None or e.table == table]
    assert len(found) == 1, statement
    return found[0]


def summary(sql: str, catalog: Catalog | None = None, table: str | None = None) -> tuple:
    e = effect(sql, catalog, table)
    return e.table, e.lock, e.rewrite, e.scan


@pytest.mark.parametrize(("sql", "expected"), [
    # ADD COLUMN: a volatile default rewrites; a constant or stable one is catalog-only since PostgreSQL 11
    ("ALTER TABLE users ADD COLUMN token UUID DEFAULT gen_random_uuid()", ("users", "ACCESS EXCLUSIVE", True, True)),
    ("ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT clock_timestamp() NOT NULL",
     ("users", "ACCESS EXCLUSIVE", True, True)),
    ("ALTER TABLE users ADD COLUMN n bigserial", ("users", "ACCESS EXCLUSIVE", True, True)),
    ("ALTER TABLE users ADD COLUMN total int GENERATED ALWAYS AS (a + b) STORED",
     ("users", "ACCESS EXCLUSIVE", True, True)),
    ("ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT now()", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("ALTER TABLE users ADD COLUMN flag boolean DEFAULT false NOT NULL", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("ALTER TABLE users ADD COLUMN note text", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("ALTER TABLE users ADD COLUMN code text NOT NULL", ("users", "ACCESS EXCLUSIVE", False, True)),
    ("ALTER TABLE users DROP COLUMN note", ("users", "ACCESS EXCLUSIVE", False, False)),
    # constraints: validated in place = a full scan; NOT VALID = none; VALIDATE = a scan that blocks no writes
    ("ALTER TABLE users ALTER COLUMN email SET NOT NULL", ("users", "ACCESS EXCLUSIVE", False, True)),
    ("ALTER TABLE users ALTER COLUMN email DROP NOT NULL", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("ALTER TABLE users ADD CONSTRAINT ck CHECK (length(email) < 300)", ("users", "ACCESS EXCLUSIVE", False, True)),
    ("ALTER TABLE users ADD CONSTRAINT ck CHECK (length(email) < 300) NOT VALID",
     ("users", "ACCESS EXCLUSIVE", False, False)),
    ("ALTER TABLE users VALIDATE CONSTRAINT ck", ("users", "SHARE UPDATE EXCLUSIVE", False, True)),
    ("ALTER TABLE users ADD CONSTRAINT uq UNIQUE (email)", ("users", "ACCESS EXCLUSIVE", False, True)),
    ("ALTER TABLE users ADD CONSTRAINT uq UNIQUE USING INDEX uq_idx", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("ALTER TABLE users ALTER COLUMN email SET DEFAULT 'x'", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("ALTER TABLE users ALTER COLUMN email SET STATISTICS 500", ("users", "SHARE UPDATE EXCLUSIVE", False, False)),
    ("ALTER TABLE users SET (fillfactor = 70)", ("users", "SHARE UPDATE EXCLUSIVE", False, False)),
    ("ALTER TABLE users SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)",
     ("users", "SHARE UPDATE EXCLUSIVE", False, False)),
    ("ALTER TABLE users SET LOGGED", ("users", "ACCESS EXCLUSIVE", True, True)),
    ("ALTER TABLE users SET TABLESPACE fast", ("users", "ACCESS EXCLUSIVE", True, True)),
    ("ALTER TABLE users RENAME COLUMN email TO mail", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("ALTER TABLE users DISABLE TRIGGER audit", ("users", "SHARE ROW EXCLUSIVE", False, False)),
    ("ALTER TABLE users ENABLE ROW LEVEL SECURITY", ("users", "ACCESS EXCLUSIVE", False, False)),
    # indexes: without CONCURRENTLY the build holds SHARE (writes wait) for the whole scan
    ("CREATE INDEX ix ON users (email)", ("users", "SHARE", False, True)),
    ("CREATE UNIQUE INDEX IF NOT EXISTS ix ON ONLY public.users USING btree (email)",
     ("public.users", "SHARE", False, True)),
    ("CREATE INDEX CONCURRENTLY ix ON users (email)", ("users", "SHARE UPDATE EXCLUSIVE", False, True)),
    # maintenance and data
    ("VACUUM FULL users", ("users", "ACCESS EXCLUSIVE", True, True)),
    ("VACUUM (VERBOSE, ANALYZE) users", ("users", "SHARE UPDATE EXCLUSIVE", False, True)),
    ("ANALYZE users", ("users", "SHARE UPDATE EXCLUSIVE", False, True)),
    ("CLUSTER users USING users_pkey", ("users", "ACCESS EXCLUSIVE", True, True)),
    ("TRUNCATE TABLE users", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE", ("users", "SHARE ROW EXCLUSIVE", False, False)),
    ("LOCK users", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("UPDATE users SET disabled = false", ("users", "ROW EXCLUSIVE", False, True)),
    ("UPDATE users SET disabled = false WHERE id = '1'", ("users", "ROW EXCLUSIVE", False, False)),
    ("DELETE FROM users WHERE disabled", ("users", "ROW EXCLUSIVE", False, False)),
    ("INSERT INTO users (firebase_uid) VALUES ('a')", ("users", "ROW EXCLUSIVE", False, False)),
    ("CREATE TRIGGER t AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()",
     ("users", "SHARE ROW EXCLUSIVE", False, False)),
    ("DROP TRIGGER t ON users", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("CREATE POLICY p ON users USING (true)", ("users", "ACCESS EXCLUSIVE", False, False)),
    ("COMMENT ON COLUMN users.email IS 'primary address'", ("users", "SHARE UPDATE EXCLUSIVE", False, False)),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY totals", ("totals", "EXCLUSIVE", False, True)),
    ("DROP TABLE IF EXISTS old_things", ("old_things", "ACCESS EXCLUSIVE", False, False)),
])
def test_lock_and_rewrite_per_form(sql, expected):
    assert summary(sql) == expected


def test_a_foreign_key_locks_both_tables_and_not_valid_skips_the_scan():
    sql = "ALTER TABLE wallets ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)"
    assert summary(sql, table="wallets") == ("wallets", "SHARE ROW EXCLUSIVE", False, True)
    assert summary(sql, table="users") == ("users", "SHARE ROW EXCLUSIVE", False, False)
    assert summary(sql + " NOT VALID", table="wallets") == ("wallets", "SHARE ROW EXCLUSIVE", False, False)


def test_a_new_table_is_created_and_its_reference_locks_the_referenced_table():
    statement = one('CREATE TABLE "Odd ""name""" (id int PRIMARY KEY, user_id uuid REFERENCES users (id))')
    new, referenced = statement.effects
    assert (new.table, new.created, new.stalls_writes) == ('Odd "name"', True, False)
    assert (referenced.table, referenced.lock, referenced.created) == ("users", "SHARE ROW EXCLUSIVE", False)


def test_several_subcommands_take_the_strongest_lock_and_any_rewrite():
    e = effect("ALTER TABLE users SET (fillfactor = 70), ADD COLUMN t uuid DEFAULT uuid_generate_v4()")
    assert (e.lock, e.rewrite) == ("ACCESS EXCLUSIVE", True)
    assert "uuid_generate_v4" in e.reason


def test_volatility_and_column_types_come_from_the_catalog_when_given():
    sql = "ALTER TABLE users ADD COLUMN x int DEFAULT my_counter()"
    assert effect(sql).rewrite is False  # unknown function: PostgreSQL's own list says nothing about it
    assert effect(sql, Catalog(volatility={"my_counter": "v"})).rewrite is True
    widen = "ALTER TABLE users ALTER COLUMN name TYPE varchar(200)"
    assert effect(widen).rewrite is True  # the current type unknown: assume the worst
    assert effect(widen, Catalog(column_types={"users.name": "character varying(100)"})).rewrite is False
    assert effect(widen, Catalog(column_types={"users.name": "character varying(300)"})).rewrite is True
    int_to_big = "ALTER TABLE users ALTER COLUMN n TYPE bigint"
    assert effect(int_to_big, Catalog(column_types={"users.n": "integer"})).rewrite is True
    using = "ALTER TABLE users ALTER COLUMN n TYPE integer USING n::integer"
    assert effect(using, Catalog(column_types={"users.n": "integer"})).rewrite is True


def test_drop_index_finds_its_table_through_the_catalog():
    assert one("DROP INDEX ix_users_email").effects == ()  # not in the database: nothing to lock
    catalog = Catalog(index_tables={"ix_users_email": "users"})
    assert summary("DROP INDEX ix_users_email", catalog) == ("users", "ACCESS EXCLUSIVE", False, False)
    assert summary("DROP INDEX CONCURRENTLY IF EXISTS ix_users_email", catalog) == (
        "users", "SHARE UPDATE EXCLUSIVE", False, False)


@pytest.mark.parametrize(("old", "new", "coercible"), [
    ("character varying(20)", "VARCHAR(50)", True),
    ("character varying(20)", "text", True),
    ("text", "varchar", True),
    ("text", "varchar(10)", False),
    ("character varying(50)", "varchar(20)", False),
    ("numeric(10,2)", "NUMERIC(12, 2)", True),
    ("numeric(10,2)", "numeric(12,3)", False),
    ("numeric(10,2)", "numeric", True),
    ("integer", "bigint", False),
    ("timestamp(3) without time zone", "timestamp(6)", True),
    ("timestamp without time zone", "timestamptz", False),
    ("cidr", "inet", True),
    ("integer", "int4", True),
])
def test_binary_coercible_type_changes(old, new, coercible):
    assert binary_coercible(old, new) is coercible


def test_types_are_normalised_like_format_type():
    assert normalise_type("TIMESTAMPTZ") == "timestamp with time zone"
    assert normalise_type("varchar( 20 )") == "character varying(20)"
    assert normalise_type("int8[]") == "bigint[]"


def test_statements_that_lock_no_table_and_ones_not_understood():
    for sql in ("SET lock_timeout = '2s'", "CREATE TYPE mood AS ENUM ('a')", "ALTER TYPE mood ADD VALUE 'b'",
                "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$", "GRANT SELECT ON "
                "users TO app", "CREATE EXTENSION IF NOT EXISTS pgcrypto", "SELECT set_config('a.b', 'c', true)"):
        statement = one(sql)
        assert statement.understood and statement.effects == (), sql
    for sql in ("DO $$ BEGIN PERFORM 1; END $$", "SELECT do_everything() FROM users", "ALTER TABLE users FROB"):
        assert one(sql).understood is False, sql


def test_one_text_with_several_statements_and_semicolons_inside_strings():
    statements = classify("UPDATE users SET note = 'a;b' WHERE id = 1; CREATE INDEX ix ON users (note);"
                          " -- a comment; not a statement")
    assert [s.action for s in statements] == ["UPDATE", "CREATE INDEX"]
    assert statements[0].sql == "UPDATE users SET note = 'a;b' WHERE id = 1"


def test_quoted_and_qualified_names_keep_their_case_and_a_hostile_name_is_just_a_name():
    assert effect('ALTER TABLE "Billing"."Invoices" ADD COLUMN x int').table == "Billing.Invoices"
    assert effect('ALTER TABLE "users; DROP TABLE x" DROP COLUMN a').table == "users; DROP TABLE x"


def test_lock_conflicts_follow_postgresqls_table():
    assert conflicts("ACCESS EXCLUSIVE", "ACCESS SHARE")
    assert not conflicts("SHARE UPDATE EXCLUSIVE", "ROW EXCLUSIVE")  # CONCURRENTLY lets writes go on
    assert conflicts("SHARE", "ROW EXCLUSIVE") and not conflicts("SHARE", "SHARE")
    assert conflicts("SHARE ROW EXCLUSIVE", "SHARE ROW EXCLUSIVE")
    assert not conflicts("ROW EXCLUSIVE", "ROW EXCLUSIVE")
    assert mode_from_pg_locks("ShareUpdateExclusiveLock") == "SHARE UPDATE EXCLUSIVE"
    assert mode_from_pg_locks("AccessShareLock") == "ACCESS SHARE"
