"""Schema comparison from the catalogs: what differs between two databases, naming each object.

Each side is read into a normalised snapshot (extensions, tables, columns, constraints, indexes, enum types
with their labels, triggers, functions, sequences) with pg_catalog queries, so a difference can be named precisely
("column users.nickname ...") instead of shown as a text diff. Bookkeeping tables (alembic_version, the
environment stamp celora_metadata, the migration journal celora_migrations) are not part of the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celora_cli.errors import DriftDetected
from celora_cli.results import to_json

IGNORED_TABLES = ("alembic_version", "celora_metadata", "celora_migrations")


@dataclass(frozen=True)
class Difference:
    kind: str  # extension, table, column, constraint, index, enum, "enum label", trigger, function, sequence,
    # "table comment", "column comment", migration
    name: str  # e.g. "users.nickname"
    change: str  # "extra" (only in the database), "missing" (only in the history), "changed"
    database: str | None = None  # the definition found in the database checked
    expected: str | None = None  # the definition the migration history builds

    def describe(self, database: str = "the database", expected: str = "the migration history") -> str:
        if self.change == "extra":
            return f"{self.kind} {self.name} exists in {database} but not in {expected} ({self.database})"
        if self.change == "missing":
            return f"{self.kind} {self.name} is in {expected} but missing from {database} ({self.expected})"
        return f"{self.kind} {self.name} differs: {database} has {self.database}; {expected} has {self.expected}"


@dataclass
class Snapshot:
    """kind -> {object name -> normalised definition}."""

    objects: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, kind: str, name: str, definition: str) -> None:
        self.objects.setdefault(kind, {})[name] = definition


_KINDS = ("extension", "enum", "sequence", "function", "table", "column", "constraint", "index", "trigger",
          "table comment", "column comment")
# Kinds named "<table>" or "<table>.<object>": not repeated when the table itself is extra or missing.
_TABLE_BOUND = ("column", "constraint", "index", "trigger", "table comment", "column comment")

# Every query is limited to the connection's first schema (current_schema(): public, or ?schema=).
# Catalog output that differs between major versions is normalised, so a shadow on another version (the local
# server standing in for a server without CREATEDB) compares equal: PostgreSQL 18 also lists each NOT NULL as a
# constraint (contype 'n'), which the column's own definition already carries.
_QUERIES = {
    "table": """
        SELECT c.relname, c.relkind::text FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')""",
    "column": """
        SELECT c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
               || CASE WHEN a.attidentity <> '' THEN ' IDENTITY' ELSE '' END
               || CASE WHEN a.attgenerated <> '' THEN ' GENERATED' ELSE '' END
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
           AND a.attnum > 0 AND NOT a.attisdropped
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')""",
    "constraint": """
        SELECT c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
          FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
         WHERE c.relnamespace = current_schema()::regnamespace
           -- PostgreSQL 18 catalogs NOT NULL as constraints (contype 'n', named <table>_<column>_not_null);
           -- older servers do not. The column's definition already says NOT NULL, so snapshots taken on
           -- different majors compare equal.
           AND k.contype <> 'n'""",
    "index": """
        SELECT c.relname || '.' || i.relname, pg_get_indexdef(i.oid)
          FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
         WHERE c.relnamespace = current_schema()::regnamespace""",
    "trigger": """
        SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal""",
    "enum": """
        SELECT t.typname, string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
          FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
         WHERE t.typnamespace = current_schema()::regnamespace GROUP BY t.typname""",
    "function": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               'returns ' || pg_get_function_result(p.oid) || ', body md5 ' || md5(p.prosrc)
          FROM pg_proc p
         WHERE p.pronamespace = current_schema()::regnamespace
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')""",
    "extension": """
        SELECT extname, 'version ' || extversion FROM pg_extension WHERE extname <> 'plpgsql'""",
    "sequence": """
        SELECT c.relname, 'sequence' FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'S'""",
    # Comments are part of what the models say (Column(comment=...), Table(comment=...)), so they are schema.
    "table comment": """
        SELECT c.relname, d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
         WHERE d.classoid = 'pg_class'::regclass AND d.objsubid = 0
           AND c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')""",
    "column comment": """
        SELECT c.relname || '.' || a.attname, d.description
          FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
         WHERE d.classoid = 'pg_class'::regclass AND d.objsubid > 0 AND NOT a.attisdropped
           AND c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')""",
}


def _ignored(kind: str, name: str) -> bool:
    table = name.split(".", 1)[0] if kind == "table" or kind in _TABLE_BOUND else None
    return table in IGNORED_TABLES or (kind == "sequence" and name.startswith(IGNORED_TABLES))


def snapshot(conn) -> Snapshot:
    """The schema of the connection's current schema, read from the catalogs: a psycopg connection, or a
    SQLAlchemy one (the migration connection, inside its transaction)."""
    run = conn.exec_driver_sql if hasattr(conn, "exec_driver_sql") else conn.execute
    result = Snapshot()
    for kind in _KINDS:
        for name, definition in run(_QUERIES[kind]).fetchall():
            if not _ignored(kind, name):
                result.add(kind, name, " ".join(str(definition).split()))
    return result


def compare(database: Snapshot, expected: Snapshot) -> list[Difference]:
    """What `database` has that `expected` lacks, what it lacks, and what differs; in a stable order."""
    differences: list[Difference] = []
    extra_tables = set(database.objects.get("table", {})) - set(expected.objects.get("table", {}))
    missing_tables = set(expected.objects.get("table", {})) - set(database.objects.get("table", {}))
    for kind in _KINDS:
        have, want = database.objects.get(kind, {}), expected.objects.get(kind, {})
        for name in sorted(set(have) | set(want)):
            table = name.split(".", 1)[0]
            if kind in _TABLE_BOUND and (table in extra_tables or table in missing_tables):
                continue  # the table itself is reported; its columns and indexes would only repeat it
            if name not in want:
                differences.append(Difference(kind, name, "extra", database=have[name]))
            elif name not in have:
                differences.append(Difference(kind, name, "missing", expected=want[name]))
            elif have[name] != want[name]:
                differences.extend(_changed(kind, name, have[name], want[name]))
    return differences


def _changed(kind: str, name: str, have: str, want: str) -> list[Difference]:
    if kind == "enum":  # name the labels: "enum chain: label 'tron' only in the database"
        have_labels, want_labels = have.split(", "), want.split(", ")
        extra = [label for label in have_labels if label not in want_labels]
        missing = [label for label in want_labels if label not in have_labels]
        if extra or missing:
            found = [Difference("enum label", f"{name}.{label.strip(chr(39))}", "extra", database=label)
                     for label in extra]
            found += [Difference("enum label", f"{name}.{label.strip(chr(39))}", "missing", expected=label)
                      for label in missing]
            return found
    return [Difference(kind, name, "changed", database=have, expected=want)]


@dataclass
class DriftReport:
    """A database compared with the history at its current revision (`db status --drift`, the deploy gate)."""

    database: str  # masked URL
    current: tuple[str, ...]
    differences: list[Difference]

    @property
    def drifted(self) -> bool:
        return bool(self.differences)

    def to_json(self) -> dict:
        return {"database": self.database, "current": list(self.current), "drifted": self.drifted,
                "differences": to_json(self.differences)}


def drift_error(differences: list[Difference], database: str, expected: str) -> DriftDetected:
    listed = "\n".join(f"  - {d.describe('the development database', 'the migration history')}"
                       for d in differences)
    return DriftDetected(
        f"The development database {database} has drifted from the migration history ({expected}): "
        f"{len(differences)} difference(s):\n{listed}\n"
        "A change made outside migrations, a migration applied there that this checkout lacks, or an applied "
        "migration edited since. Nothing was changed.",
        "Reset the development database to the history with `celora db reset` (it loses its data), or write "
        "a migration that makes the same change and run `celora db migrate` again.",
        differences=differences,
    )

