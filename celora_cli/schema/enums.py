"""PostgreSQL enum types, which Alembic's autogenerate does not follow: the types and labels the models add, the
labels they drop, the types no model uses any more, and the SQL and Python that create them.

`celora db migrate` writes these changes into the new revision (`Extras`' code lines); `celora db push` runs them
(`Extras`' data, and the SQL helpers below).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import Enum, text
from sqlalchemy.dialects import postgresql


@dataclass
class Extras:
    """What celora adds to Alembic's autogenerate on PostgreSQL."""

    upgrade_before: list[str] = field(default_factory=list)  # Python lines run before Alembic's commands
    upgrade_after: list[str] = field(default_factory=list)
    downgrade_before: list[str] = field(default_factory=list)
    downgrade_after: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shadow_statements: list[str] = field(default_factory=list)  # SQL giving the shadow the new types and labels
    # The same enum changes as data, for `celora db push` (which runs them instead of writing code)
    new_types: dict[str, list[str]] = field(default_factory=dict)  # type -> labels
    added_labels: list[tuple[str, str]] = field(default_factory=list)  # (type, label) for existing types
    unused_types: list[str] = field(default_factory=list)  # types in the database no model uses

    @property
    def empty(self) -> bool:
        return not (self.upgrade_before or self.upgrade_after or self.warnings)


def postgres_extras(conn, metadata) -> Extras:
    """What plain autogenerate misses on PostgreSQL enum types (suspected renames come from the ops)."""
    extras = Extras()
    database_enums: dict[str, list[str]] = {}
    for type_name, label in conn.execute(text(
            "SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
            "WHERE t.typnamespace = current_schema()::regnamespace ORDER BY t.typname, e.enumsortorder")):
        database_enums.setdefault(type_name, []).append(label)
    model_enums: dict[str, list[str]] = {}
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, Enum) and column.type.name:
                model_enums[column.type.name] = list(column.type.enums)

    for type_name in sorted(set(model_enums) - set(database_enums)):
        extras.new_types[type_name] = list(model_enums[type_name])
        labels = ", ".join(repr(label) for label in model_enums[type_name])
        extras.upgrade_before.append(f"# celora: enum type {type_name} is new")
        extras.shadow_statements.append(create_type_sql(type_name, model_enums[type_name]))
        extras.upgrade_before.append(
            f"postgresql.ENUM({labels}, name={type_name!r}).create(op.get_bind(), checkfirst=True)")
        extras.downgrade_after.append(
            f"postgresql.ENUM(name={type_name!r}).drop(op.get_bind(), checkfirst=True)")
    for type_name in sorted(set(model_enums) & set(database_enums)):
        have, want = database_enums[type_name], model_enums[type_name]
        for label in [label for label in want if label not in have]:
            # Committed on its own (autocommit_block): PostgreSQL refuses a label added in the same transaction
            # that uses it ("unsafe use of new value"), e.g. as the new server default.
            extras.added_labels.append((type_name, label))
            statement = add_label_sql(type_name, label)
            extras.shadow_statements.append(statement)
            extras.upgrade_before.append("with op.get_context().autocommit_block():")
            extras.upgrade_before.append(f"    op.execute({statement!r})")
            extras.downgrade_after.append(f"# celora: PostgreSQL cannot drop the enum label {label!r} of "
                                          f"{type_name}; recreate the type by hand if it must go")
        for label in [label for label in have if label not in want]:
            message = (f"enum {type_name}: label {label!r} is no longer in the models; PostgreSQL can't drop a "
                       "label, so recreate the type by hand (rows using it must change first)")
            extras.warnings.append(message)
            extras.upgrade_before.append(f"# celora: {message}")
    for type_name in sorted(set(database_enums) - set(model_enums)):
        extras.unused_types.append(type_name)
        extras.upgrade_after.append(f"# celora: enum type {type_name} is no longer used by the models")
        extras.upgrade_after.append(f"op.execute({f'DROP TYPE IF EXISTS {quote_identifier(type_name)}'!r})")
        labels = ", ".join(repr(label) for label in database_enums[type_name])
        extras.downgrade_before.append(
            f"postgresql.ENUM({labels}, name={type_name!r}).create(op.get_bind(), checkfirst=True)")
    return extras


def render_enum_without_create(type_, obj, autogen_context):
    """Enum columns as postgresql.ENUM(..., create_type=False): celora creates and drops the types itself
    (postgres_extras), so a type shared by two tables, or one that already exists, is not created twice."""
    if type_ == "type" and isinstance(obj, Enum) and obj.name:
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        labels = "".join(f"{label!r}, " for label in obj.enums)
        return f"postgresql.ENUM({labels}name={obj.name!r}, create_type=False)"
    return False


def type_text(type_) -> str:
    """The type as PostgreSQL spells it."""
    try:
        return str(type_.compile(dialect=postgresql.dialect()))
    except Exception:  # noqa: BLE001 - a type this dialect can't compile: compare by class name
        return type(type_).__name__


def create_type_sql(name: str, labels: list[str]) -> str:
    return f"CREATE TYPE {quote_identifier(name)} AS ENUM ({', '.join(quote_literal(label) for label in labels)})"


def add_label_sql(name: str, label: str) -> str:
    return f"ALTER TYPE {quote_identifier(name)} ADD VALUE IF NOT EXISTS {quote_literal(label)}"


def quote_identifier(identifier: str) -> str:
    """An identifier as SQL text: bare when PostgreSQL would keep it as written, else double-quoted."""
    return identifier if re.fullmatch(r"[a-z_][a-z0-9_]*", identifier) else '"' + identifier.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A string literal as SQL text."""
    return "'" + value.replace("'", "''") + "'"
