"""The models compared with a database, as named operations and as SQL: what `db migrate --check` reports and
`db diff --sql` prints.

The comparison `db migrate` writes revisions from (celora_cli.schema.autogenerate): Alembic's autogenerate with
compare_type and compare_server_default, plus celora's enum extras (celora_cli.schema.enums.postgres_extras: new
types, new labels, labels the models dropped, types no model uses). Alembic compares tables, columns, types,
nullability, server defaults, indexes, unique and foreign-key constraints and table and column comments; it does
not compare CHECK constraints, so they are compared here by name (the naming convention makes names stable; a
changed expression under the same name is not seen).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from alembic.autogenerate import produce_migrations
from alembic.operations import Operations
from alembic.operations import ops as alembic_ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Enum, inspect, text

from celora_cli.schema.drift import IGNORED_TABLES
from celora_cli.schema.enums import Extras, add_label_sql, create_type_sql, postgres_extras, quote_identifier, type_text


@dataclass(frozen=True)
class Change:
    """One operation that brings the database to the models, e.g. "add column wallets.nickname (TEXT)"."""

    action: str  # "add column", "drop index", "add enum label", "change server default of column", ...
    name: str  # "wallets.nickname", "transaction_status.stuck"
    detail: str = ""  # the type, the labels, "'a' -> 'b'"
    text: str = ""  # the whole operation in words

    def describe(self) -> str:
        return self.text or " ".join(part for part in (self.action, self.name) if part) + \
            (f" ({self.detail})" if self.detail else "")

    def to_json(self) -> dict:
        return {"action": self.action, "name": self.name, "detail": self.detail, "description": self.describe()}


@dataclass
class ModelChanges:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ops: list = field(default_factory=list)  # Alembic operations, flattened, in order
    extras: Extras = field(default_factory=Extras)
    enum_names: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not self.changes


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    return not (type_ == "table" and name in IGNORED_TABLES)


def _enum_default_as_text(context, inspected_column, metadata_column, inspected_default, metadata_default,
                          rendered_metadata_default):
    """On a database celora may not change (a live one): enum defaults compared as text, because Alembic's own
    comparison evaluates `'a'::t = 'b'::t` on the server, which fails while the label is missing there."""
    if not isinstance(metadata_column.type, Enum) or inspected_default is None or rendered_metadata_default is None:
        return None
    return _label(inspected_default) != _label(rendered_metadata_default)


def _label(default: str) -> str:
    value = default.strip()
    if "::" in value:
        value = value.rsplit("::", 1)[0]
    if len(value) >= 2 and value[0] == value[-1] == "'":
        value = value[1:-1].replace("''", "'")
    return value


def compare_models(conn, metadata, *, prepare: bool) -> ModelChanges:
    """The operations that bring `conn`'s database (a SQLAlchemy Connection) to `metadata`.

    `prepare`: the database is a shadow celora owns: it is given the models' new enum types and labels first,
    committed, exactly as `db migrate` does before autogenerate (server defaults naming a new label are then
    compared by PostgreSQL itself). Without it nothing is written and enum defaults are compared as text."""
    extras = postgres_extras(conn, metadata)
    if prepare:
        for statement in extras.shadow_statements:
            conn.execute(text(statement))
        conn.commit()
    context = MigrationContext.configure(connection=conn, opts={
        "target_metadata": metadata, "compare_type": True,
        "compare_server_default": True if prepare else _enum_default_as_text,
        "include_object": _include_object})
    migration = produce_migrations(context, metadata)
    assert migration.upgrade_ops is not None
    ops = list(_flatten(migration.upgrade_ops.ops)) + _check_constraint_ops(conn, metadata)
    result = ModelChanges(ops=ops, extras=extras, warnings=list(extras.warnings))
    result.enum_names = _enum_names(metadata) | set(extras.unused_types)
    for type_name, labels in sorted(extras.new_types.items()):
        result.changes.append(Change("add enum type", type_name, ", ".join(repr(label) for label in labels)))
    for type_name, label in extras.added_labels:
        result.changes.append(Change("add enum label", f"{type_name}.{label}", repr(label),
                                     text=f"add enum label {type_name} {label!r}"))
    for op in ops:
        result.changes.extend(describe_op(op))
    for type_name in extras.unused_types:
        result.changes.append(Change("drop enum type", type_name))
    for warning in extras.warnings:  # a label the models dropped: PostgreSQL can't, but it is a difference
        result.changes.append(Change("remove enum label", "", text=warning))
    return result


def _flatten(ops):
    for op in ops:
        if isinstance(op, alembic_ops.ModifyTableOps):
            yield from _flatten(op.ops)
        else:
            yield op


def _check_constraint_ops(conn, metadata) -> list:
    """CHECK constraints, which Alembic's autogenerate does not compare, by name, on tables both sides have."""
    inspector = inspect(conn)
    existing = set(inspector.get_table_names())
    preparer = conn.dialect.identifier_preparer
    ops: list = []
    for table in metadata.sorted_tables:
        if table.name not in existing or table.name in IGNORED_TABLES:
            continue
        wanted = {}
        for constraint in table.constraints:
            if isinstance(constraint, CheckConstraint):
                name = preparer.format_constraint(constraint)
                if name:
                    wanted[name.strip('"')] = constraint
        have = {c["name"]: c for c in inspector.get_check_constraints(table.name) if c.get("name")}
        for name in sorted(set(wanted) - set(have)):
            ops.append(alembic_ops.CreateCheckConstraintOp(name, table.name, wanted[name].sqltext))
        for name in sorted(set(have) - set(wanted)):
            ops.append(alembic_ops.DropConstraintOp(name, table.name, type_="check"))
    return ops


def _enum_names(metadata) -> set[str]:
    return {column.type.name for table in metadata.tables.values() for column in table.columns
            if isinstance(column.type, Enum) and column.type.name}


_CONSTRAINT_KINDS = {"unique": "unique constraint", "foreignkey": "foreign key", "check": "check constraint",
                     "primary": "primary key", "primary_key": "primary key"}


def describe_op(op) -> list[Change]:
    """An Alembic operation in words, one Change per thing it changes."""
    if isinstance(op, alembic_ops.CreateTableOp):
        return [Change("add table", op.table_name, f"{len(op.columns)} column(s)")]
    if isinstance(op, alembic_ops.DropTableOp):
        return [Change("drop table", op.table_name)]
    if isinstance(op, alembic_ops.AddColumnOp):
        return [Change("add column", f"{op.table_name}.{op.column.name}", _column_text(op.column))]
    if isinstance(op, alembic_ops.DropColumnOp):
        return [Change("drop column", f"{op.table_name}.{op.column_name}")]
    if isinstance(op, alembic_ops.AlterColumnOp):
        return _alter_column(op)
    if isinstance(op, alembic_ops.CreateIndexOp):
        unique = "unique " if op.unique else ""
        columns = ", ".join(getattr(c, "name", None) or str(c) for c in op.columns)
        return [Change(f"add {unique}index", f"{op.table_name}.{op.index_name}", columns)]
    if isinstance(op, alembic_ops.DropIndexOp):
        return [Change("drop index", f"{op.table_name}.{op.index_name}")]
    if isinstance(op, alembic_ops.CreateUniqueConstraintOp):
        return [Change("add unique constraint", f"{op.table_name}.{op.constraint_name}", ", ".join(op.columns))]
    if isinstance(op, alembic_ops.CreateForeignKeyOp):
        return [Change("add foreign key", f"{op.source_table}.{op.constraint_name}",
                       f"({', '.join(op.local_cols)}) -> {op.referent_table} ({', '.join(op.remote_cols)})")]
    if isinstance(op, alembic_ops.CreateCheckConstraintOp):
        return [Change("add check constraint", f"{op.table_name}.{op.constraint_name}", str(op.condition))]
    if isinstance(op, alembic_ops.CreatePrimaryKeyOp):
        return [Change("add primary key", f"{op.table_name}.{op.constraint_name}", ", ".join(op.columns))]
    if isinstance(op, alembic_ops.DropConstraintOp):
        kind = _CONSTRAINT_KINDS.get(op.constraint_type or "", "constraint")
        return [Change(f"drop {kind}", f"{op.table_name}.{op.constraint_name}")]
    if isinstance(op, alembic_ops.CreateTableCommentOp):
        return [Change("set comment on table", op.table_name, repr(op.comment))]
    if isinstance(op, alembic_ops.DropTableCommentOp):
        return [Change("drop comment on table", op.table_name)]
    return [Change(type(op).__name__, getattr(op, "table_name", "") or "")]


def _column_text(column) -> str:
    parts = [type_text(column.type)]
    if not column.nullable:
        parts.append("NOT NULL")
    if column.server_default is not None:
        parts.append(f"DEFAULT {_default_text(column.server_default)}")
    return " ".join(parts)


def _default_text(default) -> str:
    if default is None:
        return "none"
    if isinstance(default, str):
        return default
    arg = getattr(default, "arg", default)
    return str(getattr(arg, "text", arg))


def _alter_column(op) -> list[Change]:
    where = f"{op.table_name}.{op.column_name}"
    found = []
    if op.modify_type is not None:
        old = type_text(op.existing_type) if op.existing_type is not None else "?"
        found.append(Change("change type of column", where, f"{old} -> {type_text(op.modify_type)}"))
    if op.modify_nullable is not None:
        found.append(Change("make column NOT NULL" if op.modify_nullable is False else "make column nullable",
                            where))
    if op.modify_server_default is not False:
        found.append(Change("change server default of column", where,
                            f"{_default_text(op.existing_server_default or None)} -> "
                            f"{_default_text(op.modify_server_default)}"))
    if op.modify_comment is not False:
        found.append(Change("change comment of column", where,
                            f"{op.existing_comment!r} -> {op.modify_comment!r}"))
    if op.modify_name is not None:
        found.append(Change("rename column", where, op.modify_name))
    return found or [Change("alter column", where)]


def render_sql(changes: ModelChanges) -> list[str]:
    """The changes as PostgreSQL statements (Alembic's offline rendering, as `alembic upgrade --sql`), each ending
    in ';'. Enum types are created and dropped by celora's statements, not by create_table."""
    statements = [create_type_sql(name, labels) + ";" for name, labels in sorted(changes.extras.new_types.items())]
    statements += [add_label_sql(name, label) + ";" for name, label in changes.extras.added_labels]
    statements += [f"-- celora: {warning}" for warning in changes.warnings]
    buffer = io.StringIO()
    # paramstyle "named": with the driver's "pyformat", a '%' in a name or a literal would be printed doubled
    context = MigrationContext.configure(dialect_name="postgresql", dialect_opts={"paramstyle": "named"}, opts={
        "as_sql": True, "output_buffer": buffer, "literal_binds": True})
    # SQLAlchemy skips creating the enum types it finds in this memo (what `db push` does too)
    memo = context.impl.memo.setdefault("pg_enum", set())
    memo.update({(None, name) for name in changes.enum_names})
    operations = Operations(context)
    for op in changes.ops:
        operations.invoke(op)
        rendered = buffer.getvalue().strip()
        buffer.seek(0)
        buffer.truncate()
        if rendered:
            statements.append(rendered)
    statements += [f"DROP TYPE {quote_identifier(name)};" for name in changes.extras.unused_types]
    return statements
