"""`celora db push` (Prisma's `db push`): make the database match the models without writing a migration.

1. Plan (read only): Alembic's autogenerate compares the models with the database (the bookkeeping tables
   alembic_version and celora_metadata excluded), and celora adds what it misses on PostgreSQL enum types
   (celora_cli.schema.enums.postgres_extras: types created, labels added, types no model uses dropped). Each
   operation is checked for data loss: a dropped table (its rows), a dropped column (its non-null values), a
   type change that is not a known widening (its non-null values). A NOT NULL column without a server default
   added to a non-empty table, or a column made NOT NULL while rows hold NULL, can't succeed at all: that is a
   ConfigError naming the fix, before anything is asked or changed.
2. `confirm(plan)` decides (the CLI passes the guard with --accept-data-loss); nothing is changed before.
3. Apply, on the migration runtime's connection (direct URL, pooler refusal) under the migration lock:
   labels added to existing enum types first, committed in a transaction of their own, because PostgreSQL
   refuses a label in the transaction that added it ("unsafe use of new value"), e.g. as a new server default;
   then everything else in ONE transaction, re-planned under the lock (a plan that moved meanwhile stops it).
   A failure there rolls all of it back; only the (unused) new labels stay.

alembic_version is never touched: a pushed database drifts from the migration history, as in Prisma.
With force_reset, every object of the schema is dropped first (celora_cli.migrate.reset's, without
re-applying the migrations, alembic_version included), in the same transaction as the push.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from alembic.autogenerate import produce_migrations, render_python_code
from alembic.operations import Operations
from alembic.operations import ops as alembic_ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Enum

from celora_cli.config.settings import Settings
from celora_cli.db import admin
from celora_cli.db.connect import direct_url
from celora_cli.errors import ConfigError, DatabaseNotFound, Refused
from celora_cli.migrate.connection import migration_connection, unparsed
from celora_cli.migrate.lock import MigrationLock
from celora_cli.migrate.reset import drop_schema_objects, reset_plan
from celora_cli.safety.guard import PRODUCTION
from celora_cli.safety.stamp import database_environment, stamp_environment
from celora_cli.schema.drift import IGNORED_TABLES
from celora_cli.schema.enums import (
    add_label_sql,
    create_type_sql,
    postgres_extras,
    quote_identifier,
    render_enum_without_create,
    type_text,
)
from celora_cli.schema.generate import load_metadata, models_source

_COUNT_CAP = 1_000_000  # as the reset: a confirmation needs "a lot", not the exact size of a large table


@dataclass
class PushPlan:
    database: str  # masked URL
    schema: str
    database_env: str | None  # the celora_metadata stamp
    operations: list[str] = field(default_factory=list)
    data_loss: list[str] = field(default_factory=list)  # what the operations lose; needs a confirmation
    problems: list[str] = field(default_factory=list)  # what can't succeed at all
    warnings: list[str] = field(default_factory=list)
    force_reset: bool = False

    @property
    def in_sync(self) -> bool:
        return not self.operations and not self.force_reset


@dataclass
class PushResult:
    database: str
    schema: str
    created_database: bool = False
    in_sync: bool = False
    force_reset: bool = False
    reset_dropped: dict[str, int] = field(default_factory=dict)  # kind -> how many (with force_reset)
    operations: list[str] = field(default_factory=list)  # applied, in order
    enum_labels_committed_first: list[str] = field(default_factory=list)
    data_loss: list[str] = field(default_factory=list)  # what was accepted and lost
    warnings: list[str] = field(default_factory=list)


Confirm = Callable[[PushPlan], None]  # raises Refused to stop


@dataclass
class _Changes:
    """The comparison of the models with the database, as operations to run."""

    ops: list = field(default_factory=list)  # Alembic operation objects, flattened
    rendered: list[str] = field(default_factory=list)  # one line per op (what `db migrate` would write)
    new_types: dict[str, list[str]] = field(default_factory=dict)
    added_labels: list[tuple[str, str]] = field(default_factory=list)
    unused_types: list[str] = field(default_factory=list)
    data_loss: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    context: object = None

    def create_type_sql(self) -> list[str]:
        return [create_type_sql(name, labels) for name, labels in sorted(self.new_types.items())]

    def add_label_sql(self) -> list[str]:
        return [add_label_sql(name, label) for name, label in self.added_labels]

    def drop_type_sql(self) -> list[str]:
        return [f"DROP TYPE {quote_identifier(name)}" for name in self.unused_types]

    def identity(self) -> list:
        """What the plan does, object by object: a re-plan under the lock must match it. Not the rendered text,
        which also holds the existing types (an enum's labels grow once the new labels are committed)."""
        keys = [(type(op).__name__, getattr(op, "table_name", None), getattr(op, "column_name", None),
                 getattr(getattr(op, "column", None), "name", None), getattr(op, "index_name", None),
                 getattr(op, "constraint_name", None)) for op in self.ops]
        return [*keys, *self.create_type_sql(), *self.drop_type_sql()]

    def main_operations(self) -> list[str]:
        """What runs in the one transaction, in order."""
        return [*self.create_type_sql(), *self.rendered, *self.drop_type_sql()]


# -- the command -----------------------------------------------------------------------------------------

def push(settings: Settings, *, confirm: Confirm, force_reset: bool = False, metadata=None,
         models: str | None = None) -> PushResult:
    """Bring the database to the models. Raises ConfigError (a change that can't succeed), Refused (from
    `confirm`, or the database changed between the plan and the lock); changes nothing before `confirm`."""
    metadata = metadata if metadata is not None else load_metadata(models or models_source(settings))
    with contextlib.ExitStack() as stack:
        conn, url, created = _connect(stack, settings)
        if force_reset:
            result = _push_after_reset(conn, url.masked, settings, metadata, confirm)
            result.created_database = created
            return result
        plan, changes = _plan(conn, url.masked, metadata)
        conn.rollback()
        result = PushResult(database=plan.database, schema=plan.schema, warnings=plan.warnings,
                            created_database=created)
        if plan.in_sync:
            result.in_sync = True
            return result
        if plan.problems:
            raise _cannot_push(plan)
        confirm(plan)
        _lock(conn, settings)
        if changes.added_labels:
            conn.begin()  # the migration lock is taken here
            for statement in changes.add_label_sql():
                _unparsed(conn, statement)
            conn.commit()
            result.enum_labels_committed_first = changes.add_label_sql()
        again = _changes(conn, metadata)  # under the lock, in the transaction that applies it
        new_losses = _subjects(again.data_loss) - _subjects(changes.data_loss)  # not covered by the confirmation
        if again.identity() != changes.identity() or again.problems or new_losses:
            conn.rollback()
            added = " (only the new enum labels were added)" if changes.added_labels else ""
            raise Refused(f"Stopped before changing anything else{added}: the database changed between the plan "
                          "and the migration lock, so the confirmed plan no longer holds.",
                          "Run `celora db push` again; it plans from the database as it is now.")
        result.operations = _apply(conn, again)
        conn.commit()
        result.data_loss = plan.data_loss
        return result


def _connect(stack: contextlib.ExitStack, settings: Settings):
    """The migration runtime's connection (its pooler refusal first); a missing development database is
    created (announced), as Prisma's db push and `celora db migrate` do. Never with CELORA_ENV=production,
    where a missing database is an error to see, not to paper over. (conn, url, created)"""
    try:
        conn, url = stack.enter_context(migration_connection(settings, "db push"))
        return conn, url, False
    except DatabaseNotFound:
        if settings.env == PRODUCTION:
            raise
    created = admin.ensure_database(direct_url(settings), settings)
    conn, url = stack.enter_context(migration_connection(settings, "db push"))
    return conn, url, created


def _push_after_reset(conn, masked: str, settings: Settings, metadata, confirm: Confirm) -> PushResult:
    existing = reset_plan(conn, masked)
    conn.rollback()
    plan = PushPlan(database=masked, schema=existing.schema, database_env=existing.database_env,
                    operations=["drop every object of the schema, then create it from the models"],
                    data_loss=existing.losses(), force_reset=True)
    confirm(plan)
    _lock(conn, settings)
    result = PushResult(database=masked, schema=existing.schema, force_reset=True, data_loss=plan.data_loss)
    result.reset_dropped = drop_schema_objects(conn, existing.schema)
    if existing.database_env:  # the stamp went with the tables: keep the database protected
        stamp_environment(conn, existing.database_env)
    changes = _changes(conn, metadata)  # on the now empty schema, same transaction: new types only
    if changes.problems:  # an empty schema has no rows to block anything; kept as a safety net
        conn.rollback()
        raise _cannot_push(plan)
    result.operations = _apply(conn, changes)
    result.warnings = changes.warnings
    conn.commit()
    return result


def _subjects(losses: list[str]) -> set[str]:
    """'column t.c is dropped (3 non-null values)' -> 'column t.c is dropped': the counts may grow meanwhile."""
    return {re.sub(r" \(.*$", "", loss) for loss in losses}


def _lock(conn, settings: Settings) -> None:
    """The migration lock, taken by every transaction from here on (push and deploy must not interleave)."""
    MigrationLock(settings.lock_timeout).install(conn)


def _cannot_push(plan: PushPlan) -> ConfigError:
    problems = "; ".join(plan.problems)
    return ConfigError(
        f"`celora db push` can't bring {plan.database} to the models: {problems}. Nothing was changed.",
        "Give the new column a server default in the model (server_default=...), make it nullable, or fill the "
        "NULLs / empty the table first; `--force-reset` starts the schema over (all data lost).")


def _plan(conn, masked: str, metadata) -> tuple[PushPlan, _Changes]:
    schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
    if schema is None:
        raise ConfigError("No schema of the search_path exists in this database (current_schema() is NULL).",
                          "Check the URL's ?schema= parameter, or create the schema first.")
    changes = _changes(conn, metadata)
    plan = PushPlan(database=masked, schema=schema, database_env=database_environment(conn),
                    operations=[*changes.add_label_sql(), *changes.main_operations()],
                    data_loss=changes.data_loss, problems=changes.problems, warnings=changes.warnings)
    return plan, changes


# -- comparing -------------------------------------------------------------------------------------------

def _include_name(name, type_, parent_names) -> bool:
    return not (type_ == "table" and name in IGNORED_TABLES)


def _compare_enum_default(context, inspected_column, metadata_column, inspected_default, metadata_default,
                          rendered_metadata_default):
    """Enum defaults compared as text. Alembic evaluates `'red'::color = 'blue'` on the server, which fails
    while the label 'blue' is not there yet (the push adds it); None: Alembic's own comparison."""
    if not isinstance(metadata_column.type, Enum) or inspected_default is None or rendered_metadata_default is None:
        return None
    return _label_of(inspected_default) != _label_of(rendered_metadata_default)


def _label_of(default: str) -> str:
    """'red'::color (the catalog), 'red' (text()) and red (a plain string default) are the same label."""
    value = re.sub(r"::[\w.\"]+$", "", default.strip())
    if len(value) >= 2 and value[0] == value[-1] == "'":
        value = value[1:-1].replace("''", "'")
    return value


def _changes(conn, metadata) -> _Changes:


    context = MigrationContext.configure(connection=conn, opts={
        "target_metadata": metadata, "compare_type": True, "compare_server_default": _compare_enum_default,
        "include_name": _include_name})
    extras = postgres_extras(conn, metadata)
    migration = produce_migrations(context, metadata)
    assert migration.upgrade_ops is not None
    changes = _Changes(ops=list(_flatten(migration.upgrade_ops.ops)), new_types=extras.new_types,
                       added_labels=extras.added_labels, unused_types=extras.unused_types,
                       warnings=list(extras.warnings), context=context)
    changes.rendered = [_render(op, context) for op in changes.ops]
    for op in changes.ops:
        _check(conn, op, changes)
    return changes


def _flatten(ops) -> Iterator:
    for op in ops:
        if isinstance(op, alembic_ops.ModifyTableOps):
            yield from _flatten(op.ops)
        else:
            yield op


def _render(op, context) -> str:
    """The op as `db migrate` would write it, e.g. op.add_column('users', sa.Column('nickname', sa.Text()))."""


    code = render_python_code(alembic_ops.UpgradeOps(ops=[op]), migration_context=context,
                              render_item=render_enum_without_create)
    lines = [line.strip() for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]
    return " ".join(lines)


def _check(conn, op, changes: _Changes) -> None:
    """Data loss and impossible changes, with counts read from the database."""
    if isinstance(op, alembic_ops.DropTableOp):
        rows = _count(conn, op.table_name, op.schema)
        if rows:
            changes.data_loss.append(f"table {op.table_name} is dropped ({_many(rows, 'row')})")
    elif isinstance(op, alembic_ops.DropColumnOp):
        values = _count(conn, op.table_name, op.schema, f"{_quoted(conn, op.column_name)} IS NOT NULL")
        if values:
            changes.data_loss.append(f"column {op.table_name}.{op.column_name} is dropped "
                                     f"({_many(values, 'non-null value')})")
    elif isinstance(op, alembic_ops.AddColumnOp):
        column = op.column
        if not column.nullable and column.server_default is None and column.identity is None \
                and column.computed is None:
            rows = _count(conn, op.table_name, op.schema)
            if rows:
                changes.problems.append(
                    f"column {op.table_name}.{column.name} is new and NOT NULL without a server default, but "
                    f"table {op.table_name} has {_many(rows, 'row')} (PostgreSQL would have no value for them)")
    elif isinstance(op, alembic_ops.AlterColumnOp):
        where = f"{op.table_name}.{op.column_name}"
        if op.modify_type is not None and narrows(op.existing_type, op.modify_type):
            values = _count(conn, op.table_name, op.schema, f"{_quoted(conn, op.column_name)} IS NOT NULL")
            if values:
                changes.data_loss.append(
                    f"column {where} changes type {_type_text(op.existing_type)} -> "
                    f"{_type_text(op.modify_type)}, which may not hold every value ({_many(values, 'non-null value')}"
                    "; PostgreSQL fails the push rather than cut one)")
        if op.modify_nullable is False:
            nulls = _count(conn, op.table_name, op.schema, f"{_quoted(conn, op.column_name)} IS NULL")
            if nulls:
                changes.problems.append(f"column {where} becomes NOT NULL, but {_many(nulls, 'row')} hold NULL")


_INTEGERS = {"SMALLINT": 1, "INTEGER": 2, "BIGINT": 3}
_TEXTS = re.compile(r"(VARCHAR|CHAR|CHARACTER VARYING|CHARACTER|TEXT)(?:\((\d+)\))?")
_NUMERIC = re.compile(r"NUMERIC(?:\((\d+)(?:, *(\d+))?\))?")


def narrows(old, new) -> bool:
    """Whether changing a column from `old` to `new` may not keep every value: anything but a known widening
    (a longer or unbounded string, a larger integer, a numeric with room for every digit) counts."""
    before, after = _type_text(old).upper(), _type_text(new).upper()
    if before == after:
        return False
    old_text, new_text = _TEXTS.fullmatch(before), _TEXTS.fullmatch(after)
    if old_text and new_text:
        if new_text.group(1) == "TEXT" or (new_text.group(1) != "CHAR" and new_text.group(2) is None):
            return False
        if old_text.group(1) == "TEXT" or old_text.group(2) is None:
            return True
        return int(new_text.group(2)) < int(old_text.group(2))
    if before in _INTEGERS and after in _INTEGERS:
        return _INTEGERS[after] < _INTEGERS[before]
    old_numeric, new_numeric = _NUMERIC.fullmatch(before), _NUMERIC.fullmatch(after)
    if (old_numeric or before in _INTEGERS) and new_numeric:
        if new_numeric.group(1) is None:
            return False  # unconstrained numeric holds any number
        if old_numeric is None:
            return int(new_numeric.group(1)) - int(new_numeric.group(2) or 0) < 19  # bigint's 19 digits
        if old_numeric.group(1) is None:
            return True
        old_scale, new_scale = int(old_numeric.group(2) or 0), int(new_numeric.group(2) or 0)
        return new_scale < old_scale or (int(new_numeric.group(1)) - new_scale) < (int(old_numeric.group(1)) -
                                                                                     old_scale)
    return True


def _type_text(type_) -> str:
    return type_text(type_) if type_ is not None else "unknown"


def _many(count: int, noun: str) -> str:
    shown = f"more than {_COUNT_CAP:,}" if count > _COUNT_CAP else f"{count:,}"
    return f"{shown} {noun}{'' if count == 1 else 's'}"


def _quoted(conn, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _count(conn, table: str, schema: str | None, where: str | None = None) -> int:
    qualified = _quoted(conn, table) if schema is None else f"{_quoted(conn, schema)}.{_quoted(conn, table)}"
    condition = f" WHERE {where}" if where else ""
    row = _unparsed(conn, f"SELECT count(*) FROM (SELECT 1 FROM {qualified}{condition} LIMIT {_COUNT_CAP + 1}) t")
    return int(row[0])


def _unparsed(conn, sql: str):
    if not conn.in_transaction():
        conn.begin()
    return unparsed(conn, sql)


# -- applying --------------------------------------------------------------------------------------------

def _apply(conn, changes: _Changes) -> list[str]:
    """Run the operations in the current transaction (the caller commits); returns what ran, in order."""
    context = changes.context
    # Enum types are created and dropped here, not by create_table/drop_table: a type shared by two tables,
    # or one that already exists, would be created twice (SQLAlchemy skips the types in this memo).
    known = context.impl.memo.setdefault("pg_enum", set())  # type: ignore[attr-defined]
    for name in {*changes.new_types, *changes.unused_types, *_enum_names(changes)}:
        known.update({(None, name), (_schema(conn), name)})
    for statement in changes.create_type_sql():
        _unparsed(conn, statement)
    operations = Operations(context)  # type: ignore[arg-type]
    for op in changes.ops:
        operations.invoke(op)
    for statement in changes.drop_type_sql():
        _unparsed(conn, statement)
    return changes.main_operations()


def _enum_names(changes: _Changes) -> set[str]:
    """Every enum type the ops mention (existing ones included)."""
    names = set()
    for op in changes.ops:
        for column in [getattr(op, "column", None), *getattr(op, "columns", [])]:
            type_ = getattr(column, "type", None)
            if isinstance(type_, Enum) and type_.name:
                names.add(type_.name)
        for type_ in (getattr(op, "modify_type", None), getattr(op, "existing_type", None)):
            if isinstance(type_, Enum) and type_.name:
                names.add(type_.name)
    return names


def _schema(conn) -> str:
    return conn.exec_driver_sql("SELECT current_schema()").scalar()


__all__ = ["PushPlan", "PushResult", "narrows", "push"]
