"""What one SQL statement of a migration does to the tables it names: the lock it takes, and whether it rewrites
or fully scans the table while holding that lock. For `celora db migrate-deploy --plan`.

The lock levels are PostgreSQL's, per its documentation of each command (the "Explicit Locking" chapter and each
ALTER TABLE subcommand's "lock" notes; PostgreSQL 14 to 18 agree on every form here). An ALTER TABLE with several
subcommands takes the strongest of their locks. A statement this module does not understand (a DO block, a
function call) is reported as not analysed rather than guessed at.

Pure: no database. What only the database knows (a column's current type, whether a function is volatile, which
table an index belongs to) comes in a `Catalog`; without it the answers are the conservative ones, said so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from celora_cli.migrate.plan_types import binary_coercible, normalise_type

# PostgreSQL's table-level lock modes, weakest first, and the modes each one conflicts with (the conflict table of
# the "Explicit Locking" chapter). pg_locks spells them AccessShareLock ... AccessExclusiveLock.
MODES = ("ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE",
         "EXCLUSIVE", "ACCESS EXCLUSIVE")
_CONFLICTS = {
    "ACCESS SHARE": {"ACCESS EXCLUSIVE"},
    "ROW SHARE": {"EXCLUSIVE", "ACCESS EXCLUSIVE"},
    "ROW EXCLUSIVE": {"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"},
    "SHARE UPDATE EXCLUSIVE": {"SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE",
                               "ACCESS EXCLUSIVE"},
    "SHARE": {"ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"},
    "SHARE ROW EXCLUSIVE": {"ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE",
                            "ACCESS EXCLUSIVE"},
    "EXCLUSIVE": set(MODES[1:]),
    "ACCESS EXCLUSIVE": set(MODES),
}
# What the application notices while a statement holds the lock.
BLOCKS = {
    "ACCESS SHARE": "nothing the application does",
    "ROW SHARE": "EXCLUSIVE and ACCESS EXCLUSIVE locks only",
    "ROW EXCLUSIVE": "nothing the application does (like any write)",
    "SHARE UPDATE EXCLUSIVE": "other DDL, VACUUM and ANALYZE (reads and writes go on)",
    "SHARE": "writes (reads go on)",
    "SHARE ROW EXCLUSIVE": "writes (reads go on)",
    "EXCLUSIVE": "writes (reads go on)",
    "ACCESS EXCLUSIVE": "reads and writes",
}
# Locks under which a long scan or rewrite stalls the application: it holds up at least every write.
BLOCKS_WRITES = frozenset({"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"})


def mode_from_pg_locks(mode: str) -> str:
    """pg_locks' AccessExclusiveLock as ACCESS EXCLUSIVE."""
    return re.sub(r"(?<!^)([A-Z])", r" \1", mode.removesuffix("Lock")).upper()


def conflicts(wanted: str, other: str) -> bool:
    """Whether a lock in mode `wanted` must wait for one in mode `other` (held, or queued ahead of it)."""
    return other in _CONFLICTS.get(wanted, set())


def strongest(modes) -> str:
    return max(modes, key=MODES.index)


# Functions PostgreSQL marks volatile that migrations use as column defaults (pg_proc.provolatile = 'v'), for
# when the database is not asked (the Catalog says for any function it knows). now(), CURRENT_TIMESTAMP and
# friends are stable, so since PostgreSQL 11 a default of them is stored once, without a rewrite.
VOLATILE_FUNCTIONS = frozenset({
    "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "uuidv4", "uuidv7",
    "random", "random_normal", "clock_timestamp", "timeofday", "nextval", "gen_random_bytes", "setseed",
    "txid_current", "pg_current_xact_id"})
SERIAL_TYPES = frozenset({"SERIAL", "BIGSERIAL", "SMALLSERIAL", "SERIAL2", "SERIAL4", "SERIAL8"})


@dataclass(frozen=True)
class Catalog:
    """What the database knows that a statement's text does not say (all optional)."""

    # "table.column" (as the statement names the table, lower-cased unless quoted) -> format_type() of the column
    column_types: Mapping[str, str] = field(default_factory=dict)
    # function name -> pg_proc.provolatile ('i', 's' or 'v')
    volatility: Mapping[str, str] = field(default_factory=dict)
    # index name -> the table it belongs to
    index_tables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TableEffect:
    """What a statement does to one table."""

    table: str  # as the statement names it (schema.table when qualified), quotes removed
    lock: str  # the lock mode it takes on the table, e.g. "ACCESS EXCLUSIVE"
    rewrite: bool  # writes a new copy of the whole table (and its indexes)
    scan: bool  # reads every row (a rewrite also does)
    reason: str  # why, in words
    created: bool = False  # the statement creates the table: it has no rows and nobody else uses it yet

    @property
    def blocks(self) -> str:
        return BLOCKS[self.lock]

    @property
    def stalls_writes(self) -> bool:
        """A full pass over the table under a lock that holds up writes (or reads): the expensive kind."""
        return (self.rewrite or self.scan) and self.lock in BLOCKS_WRITES and not self.created


@dataclass(frozen=True)
class StatementEffect:
    sql: str
    action: str  # e.g. "ALTER TABLE ... ADD COLUMN", "CREATE INDEX"
    effects: tuple[TableEffect, ...] = ()
    understood: bool = True  # False: the statement was not analysed (its locks are unknown)


# --------------------------------------------------------------------------- tokens

_TOKEN = re.compile(r"""
    (?P<space>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$)
  | (?P<string>[EeBbXxNn]?'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<word>[A-Za-z_][\w$]*)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<symbol>::|[(),;.=]|[^\s\w])
""", re.VERBOSE | re.DOTALL)


@dataclass(frozen=True)
class Token:
    kind: str  # word, quoted, string, dollar, number, symbol
    text: str
    start: int = 0  # where it is in the text it came from
    end: int = 0

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text

    @property
    def name(self) -> str:
        """As an identifier: unquoted words fold to lower case, quoted ones keep theirs."""
        if self.kind == "quoted":
            return self.text[1:-1].replace('""', '"')
        return self.text.lower()


def tokens(sql: str) -> list[Token]:
    found = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup if match.lastgroup != "tag" else "dollar"
        if kind == "space":
            continue
        found.append(Token(kind or "symbol", match.group(0), match.start(), match.end()))
    return found


@functools.lru_cache(maxsize=4096)  # the plan classifies each statement twice (names first, then with catalogs)
def split_statements(sql: str) -> tuple[list[Token], ...]:
    """One text (`op.execute("A; B")`) as its statements' tokens, split on top-level semicolons."""
    statements: list[list[Token]] = [[]]
    depth = 0
    for token in tokens(sql):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth = max(0, depth - 1)
        if token.text == ";" and depth == 0:
            statements.append([])
        else:
            statements[-1].append(token)
    return tuple(s for s in statements if s)


def _split_top(items: list[Token], separator: str = ",") -> list[list[Token]]:
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in items:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        if token.text == separator and depth == 0:
            parts.append([])
        else:
            parts[-1].append(token)
    return [p for p in parts if p]


class _Reader:
    """A cursor over one statement's tokens."""

    def __init__(self, items: list[Token]) -> None:
        self.items = items
        self.at = 0

    def peek(self, *words: str) -> bool:
        """Whether the next tokens are `words` (upper-case keywords), without moving."""
        window = self.items[self.at:self.at + len(words)]
        return len(window) == len(words) and all(t.upper == w for t, w in zip(window, words, strict=True))

    def take(self, *words: str) -> bool:
        if self.peek(*words):
            self.at += len(words)
            return True
        return False

    def name(self) -> str | None:
        """A possibly qualified identifier (schema.table), quotes removed."""
        parts = []
        while self.at < len(self.items) and self.items[self.at].kind in ("word", "quoted"):
            parts.append(self.items[self.at].name)
            self.at += 1
            if self.at < len(self.items) and self.items[self.at].text == ".":
                self.at += 1
                continue
            break
        return ".".join(parts) or None

    def rest(self) -> list[Token]:
        return self.items[self.at:]


def _words(items: list[Token]) -> list[str]:
    return [t.upper for t in items]


def _has(items: list[Token], *phrase: str) -> bool:
    words = _words(items)
    return any(words[i:i + len(phrase)] == list(phrase) for i in range(len(words) - len(phrase) + 1))


def _functions_called(items: list[Token]) -> list[str]:
    return [items[i].name for i in range(len(items) - 1)
            if items[i].kind in ("word", "quoted") and items[i + 1].text == "("]


def _referenced_table(items: list[Token]) -> str | None:
    for i, token in enumerate(items):
        if token.upper == "REFERENCES":
            return _Reader(items[i + 1:]).name()
    return None


# --------------------------------------------------------------------------- classification

def classify(sql: str, catalog: Catalog | None = None) -> list[StatementEffect]:
    """Each statement in `sql` with what it does to each table it touches."""
    catalog = catalog or Catalog()
    return [_classify_one(items, sql[items[0].start:items[-1].end], catalog) for items in split_statements(sql)]


def _text(items: list[Token]) -> str:
    return " ".join(t.text for t in items)


def _none(sql: str, action: str) -> StatementEffect:
    return StatementEffect(sql, action)


# Statements that take no lock on any existing table (they create objects no one uses yet, change only the
# catalogs of types, functions, schemas and sequences, or set session state).
_NO_TABLE_LOCK = (
    ("SET",), ("RESET",), ("BEGIN",), ("COMMIT",), ("START", "TRANSACTION"), ("SAVEPOINT",), ("RELEASE",),
    ("SHOW",), ("CREATE", "SCHEMA"), ("CREATE", "TYPE"), ("ALTER", "TYPE"), ("DROP", "TYPE"),
    ("CREATE", "EXTENSION"), ("ALTER", "EXTENSION"), ("DROP", "EXTENSION"), ("CREATE", "SEQUENCE"),
    ("ALTER", "SEQUENCE"), ("DROP", "SEQUENCE"), ("CREATE", "DOMAIN"), ("DROP", "DOMAIN"), ("CREATE", "FUNCTION"),
    ("CREATE", "OR", "REPLACE", "FUNCTION"), ("CREATE", "PROCEDURE"), ("CREATE", "OR", "REPLACE", "PROCEDURE"),
    ("DROP", "FUNCTION"), ("DROP", "PROCEDURE"), ("ALTER", "FUNCTION"), ("CREATE", "VIEW"),
    ("CREATE", "OR", "REPLACE", "VIEW"), ("DROP", "VIEW"), ("CREATE", "ROLE"), ("ALTER", "ROLE"), ("DROP", "ROLE"),
    ("GRANT",), ("REVOKE",), ("ALTER", "DEFAULT", "PRIVILEGES"), ("CREATE", "COLLATION"), ("DROP", "SCHEMA"),
    ("ALTER", "SCHEMA"), ("COMMENT", "ON", "FUNCTION"), ("COMMENT", "ON", "TYPE"), ("COMMENT", "ON", "SCHEMA"),
    ("COMMENT", "ON", "INDEX"), ("COMMENT", "ON", "CONSTRAINT"), ("COMMENT", "ON", "EXTENSION"),
    ("COMMENT", "ON", "SEQUENCE"), ("SELECT", "PG_ADVISORY"),
)


def _classify_one(items: list[Token], sql: str, catalog: Catalog) -> StatementEffect:
    words = _words(items[:5])
    for prefix in _NO_TABLE_LOCK:
        if words[:len(prefix)] == list(prefix):
            return _none(sql, " ".join(prefix))
    reader = _Reader(items)
    if reader.take("ALTER", "TABLE"):
        return _alter_table(reader, sql, catalog)
    if reader.peek("CREATE") and _has(items[:4], "INDEX"):
        return _create_index(items, sql)
    if reader.take("DROP", "INDEX"):
        return _drop_index(reader, sql, catalog)
    if reader.take("CREATE") and _create_table(reader):
        return _created_table(reader, sql)
    reader.at = 0
    if reader.take("DROP", "TABLE"):
        reader.take("IF", "EXISTS")
        tables = [_Reader(part).name() for part in _split_top(reader.rest())]
        return StatementEffect(sql, "DROP TABLE", tuple(
            TableEffect(t, "ACCESS EXCLUSIVE", False, False, "dropped") for t in tables if t))
    if reader.take("TRUNCATE"):
        reader.take("TABLE")
        reader.take("ONLY")
        tables = [_Reader(part).name() for part in _split_top(reader.rest())]
        return StatementEffect(sql, "TRUNCATE", tuple(
            TableEffect(t, "ACCESS EXCLUSIVE", False, False, "emptied") for t in tables if t))
    if reader.take("LOCK"):
        return _lock_table(reader, sql)
    if reader.take("VACUUM") or reader.take("ANALYZE") or reader.take("ANALYSE"):
        return _vacuum(items, sql)
    if reader.take("CLUSTER"):
        reader.take("VERBOSE")
        table = reader.name()
        return StatementEffect(sql, "CLUSTER", (TableEffect(table, "ACCESS EXCLUSIVE", True, True,
                                                            "CLUSTER writes the table anew in index order"),)
                               if table else ())
    if reader.take("REINDEX"):
        return _reindex(reader, sql, catalog)
    if reader.take("REFRESH", "MATERIALIZED", "VIEW"):
        concurrently = reader.take("CONCURRENTLY")
        view = reader.name()
        lock = "EXCLUSIVE" if concurrently else "ACCESS EXCLUSIVE"
        return StatementEffect(sql, "REFRESH MATERIALIZED VIEW", (TableEffect(
            view, lock, not concurrently, True, "the view's query runs again in full"),) if view else ())
    if reader.take("CREATE", "MATERIALIZED", "VIEW"):
        reader.take("IF", "NOT", "EXISTS")
        return _none(sql, "CREATE MATERIALIZED VIEW")
    if reader.peek("CREATE", "TRIGGER") or reader.peek("CREATE", "OR", "REPLACE", "TRIGGER") \
            or reader.peek("CREATE", "CONSTRAINT", "TRIGGER"):
        return _on_table(items, sql, "CREATE TRIGGER", "SHARE ROW EXCLUSIVE", "a trigger is added")
    if reader.peek("DROP", "TRIGGER"):
        return _on_table(items, sql, "DROP TRIGGER", "ACCESS EXCLUSIVE", "a trigger is dropped")
    for verb in ("CREATE", "ALTER", "DROP"):
        if reader.peek(verb, "POLICY"):
            return _on_table(items, sql, f"{verb} POLICY", "ACCESS EXCLUSIVE", "row security policies change")
    if reader.peek("CREATE", "RULE") or reader.peek("CREATE", "OR", "REPLACE", "RULE"):
        return _on_table(items, sql, "CREATE RULE", "ACCESS EXCLUSIVE", "a rule is added")
    if reader.take("CREATE", "STATISTICS"):
        return _on_table(items, sql, "CREATE STATISTICS", "SHARE UPDATE EXCLUSIVE", "extended statistics")
    if reader.take("COMMENT", "ON", "TABLE") or reader.take("COMMENT", "ON", "COLUMN"):
        name = reader.name() or ""
        table = name.rsplit(".", 1)[0] if _words(items[:4])[2] == "COLUMN" else name
        return StatementEffect(sql, "COMMENT ON", (TableEffect(table, "SHARE UPDATE EXCLUSIVE", False, False,
                                                               "a comment"),) if table else ())
    if reader.take("INSERT", "INTO"):
        return _dml(reader, sql, "INSERT", scan=_has(items, "SELECT") and _has(items, "FROM"))
    if reader.take("UPDATE"):
        reader.take("ONLY")
        return _dml(reader, sql, "UPDATE", scan=not _has(items, "WHERE"))
    if reader.take("DELETE", "FROM"):
        reader.take("ONLY")
        return _dml(reader, sql, "DELETE", scan=not _has(items, "WHERE"))
    if reader.take("COPY"):
        table = reader.name()
        if table and _has(items, "FROM"):
            return StatementEffect(sql, "COPY FROM", (TableEffect(table, "ROW EXCLUSIVE", False, False,
                                                                  "rows are loaded"),))
    if words[:1] == ["SELECT"] and not _has(items, "FROM"):
        return _none(sql, "SELECT")  # a function call, e.g. set_config(); anything with FROM is not analysed
    return StatementEffect(sql, " ".join(t.upper for t in items[:2] if t.kind == "word") or "?", understood=False)


def _create_table(reader: _Reader) -> bool:
    reader.take("GLOBAL") or reader.take("LOCAL")
    reader.take("TEMPORARY") or reader.take("TEMP") or reader.take("UNLOGGED")
    return reader.take("TABLE")


def _created_table(reader: _Reader, sql: str) -> StatementEffect:
    reader.take("IF", "NOT", "EXISTS")
    table = reader.name()
    if table is None:
        return StatementEffect(sql, "CREATE TABLE", understood=False)
    effects = [TableEffect(table, "ACCESS EXCLUSIVE", False, False, "created", created=True)]
    rest = reader.rest()
    if _has(rest, "PARTITION", "OF"):
        parent = _Reader(rest[2:]).name() if _words(rest[:2]) == ["PARTITION", "OF"] else None
        if parent:
            effects.append(TableEffect(parent, "ACCESS EXCLUSIVE", False, False, "a partition is added"))
    for i, token in enumerate(rest):
        if token.upper == "REFERENCES":
            referenced = _Reader(rest[i + 1:]).name()
            if referenced and referenced != table:
                effects.append(TableEffect(referenced, "SHARE ROW EXCLUSIVE", False, False,
                                           f"a foreign key from {table} is added (its trigger)"))
    return StatementEffect(sql, "CREATE TABLE", tuple(_merged(effects)))


def _merged(effects: list[TableEffect]) -> Iterator[TableEffect]:
    """One effect per table: the strongest lock, any rewrite or scan, the reasons joined."""
    by_table: dict[str, list[TableEffect]] = {}
    for effect in effects:
        by_table.setdefault(effect.table, []).append(effect)
    for table, each in by_table.items():
        reasons = list(dict.fromkeys(e.reason for e in each))
        yield TableEffect(table, strongest(e.lock for e in each), any(e.rewrite for e in each),
                          any(e.scan or e.rewrite for e in each), "; ".join(reasons), any(e.created for e in each))


def _create_index(items: list[Token], sql: str) -> StatementEffect:
    concurrently = _has(items[:5], "CONCURRENTLY")
    on = next((i for i, t in enumerate(items) if t.upper == "ON"), None)
    if on is None:
        return StatementEffect(sql, "CREATE INDEX", understood=False)
    reader = _Reader(items[on + 1:])
    reader.take("ONLY")
    table = reader.name()
    if table is None:
        return StatementEffect(sql, "CREATE INDEX", understood=False)
    if concurrently:
        effect = TableEffect(table, "SHARE UPDATE EXCLUSIVE", False, True,
                             "CONCURRENTLY: reads the table (twice) while reads and writes go on")
    else:
        effect = TableEffect(table, "SHARE", False, True,
                             "built without CONCURRENTLY: reads the whole table while writes wait")
    return StatementEffect(sql, "CREATE INDEX CONCURRENTLY" if concurrently else "CREATE INDEX", (effect,))


def _drop_index(reader: _Reader, sql: str, catalog: Catalog) -> StatementEffect:
    concurrently = reader.take("CONCURRENTLY")
    reader.take("IF", "EXISTS")
    effects = []
    for part in _split_top(reader.rest()):
        index = _Reader(part).name()
        if index is None or index.upper() in ("CASCADE", "RESTRICT"):
            continue
        table = catalog.index_tables.get(index)
        if table is None:
            continue  # not in the database: created earlier in this plan, or IF EXISTS of nothing
        lock = "SHARE UPDATE EXCLUSIVE" if concurrently else "ACCESS EXCLUSIVE"
        effects.append(TableEffect(table, lock, False, False, f"index {index} is dropped"))
    return StatementEffect(sql, "DROP INDEX CONCURRENTLY" if concurrently else "DROP INDEX", tuple(effects))


def _reindex(reader: _Reader, sql: str, catalog: Catalog) -> StatementEffect:
    kind = "INDEX" if reader.take("INDEX") else "TABLE" if reader.take("TABLE") else None
    concurrently = reader.take("CONCURRENTLY")
    name = reader.name()
    if kind is None or name is None:
        return StatementEffect(sql, "REINDEX", understood=False)
    table = name if kind == "TABLE" else catalog.index_tables.get(name)
    if table is None:
        return StatementEffect(sql, "REINDEX", understood=False)
    # Plain REINDEX: SHARE on the table (writes wait), ACCESS EXCLUSIVE on the index (reads using it wait).
    lock = "SHARE UPDATE EXCLUSIVE" if concurrently else "SHARE"
    return StatementEffect(sql, f"REINDEX {kind}", (TableEffect(
        table, lock, False, True, "the index is built again from the table"),))


def _lock_table(reader: _Reader, sql: str) -> StatementEffect:
    reader.take("TABLE")
    reader.take("ONLY")
    rest = reader.rest()
    in_at = next((i for i, t in enumerate(rest) if t.upper == "IN"), len(rest))
    tables = [_Reader(part).name() for part in _split_top(rest[:in_at])]
    mode_words = [t.upper for t in rest[in_at + 1:] if t.upper not in ("MODE", "NOWAIT")]
    mode = " ".join(mode_words) or "ACCESS EXCLUSIVE"
    if mode not in MODES:
        return StatementEffect(sql, "LOCK", understood=False)
    return StatementEffect(sql, "LOCK", tuple(TableEffect(t, mode, False, False, "an explicit LOCK")
                                              for t in tables if t))


def _vacuum(items: list[Token], sql: str) -> StatementEffect:
    words = _words(items)
    full = "FULL" in words[:6]
    options_end = 1
    if len(items) > 1 and items[1].text == "(":
        options_end = next(i for i, t in enumerate(items) if t.text == ")") + 1
    rest = [t for t in items[options_end:] if t.upper not in ("FULL", "FREEZE", "VERBOSE", "ANALYZE", "ANALYSE")]
    tables = [_Reader(part).name() for part in _split_top(rest)]
    action = words[0] + (" FULL" if full else "")
    if full:
        return StatementEffect(sql, action, tuple(TableEffect(
            t, "ACCESS EXCLUSIVE", True, True, "VACUUM FULL writes the table anew") for t in tables if t))
    return StatementEffect(sql, action, tuple(TableEffect(
        t, "SHARE UPDATE EXCLUSIVE", False, True, "reads the table while reads and writes go on")
        for t in tables if t))


def _on_table(items: list[Token], sql: str, action: str, lock: str, reason: str) -> StatementEffect:
    on = next((i for i, t in enumerate(items) if t.upper == "ON"), None)
    table = _Reader(items[on + 1:]).name() if on is not None else None
    if table is None:
        return StatementEffect(sql, action, understood=False)
    return StatementEffect(sql, action, (TableEffect(table, lock, False, False, reason),))


def _dml(reader: _Reader, sql: str, action: str, *, scan: bool) -> StatementEffect:
    table = reader.name()
    if table is None:
        return StatementEffect(sql, action, understood=False)
    reason = {"INSERT": "rows are added", "UPDATE": "rows are changed", "DELETE": "rows are deleted"}[action]
    if scan:
        reason = {"INSERT": "rows are copied from a query",
                  "UPDATE": "every row is changed (no WHERE), in one transaction",
                  "DELETE": "every row is deleted (no WHERE)"}[action]
    return StatementEffect(sql, action, (TableEffect(table, "ROW EXCLUSIVE", False, scan, reason),))


# --------------------------------------------------------------------------- ALTER TABLE

def _alter_table(reader: _Reader, sql: str, catalog: Catalog) -> StatementEffect:
    reader.take("IF", "EXISTS")
    reader.take("ONLY")
    table = reader.name()
    if table is None:
        return StatementEffect(sql, "ALTER TABLE", understood=False)
    reader.take("*")
    effects: list[TableEffect] = []
    actions: list[str] = []
    for action in _split_top(reader.rest()):
        found = _alter_action(table, action, catalog)
        if found is None:
            return StatementEffect(sql, f"ALTER TABLE ... {' '.join(_words(action[:2]))}", understood=False)
        name, each = found
        actions.append(name)
        effects.extend(each)
    label = "ALTER TABLE ... " + ", ".join(dict.fromkeys(actions))
    return StatementEffect(sql, label, tuple(_merged(effects)))


# Storage parameters ALTER TABLE ... SET (...) changes under SHARE UPDATE EXCLUSIVE (the rest: ACCESS EXCLUSIVE).
_MILD_PARAMETERS = ("fillfactor", "autovacuum_", "parallel_workers", "toast_tuple_target", "vacuum_",
                    "log_autovacuum", "user_catalog_table")


def _alter_action(table: str, action: list[Token], catalog: Catalog) -> tuple[str, list[TableEffect]] | None:
    words = _words(action)
    reader = _Reader(action)

    def on_table(lock: str, reason: str, *, rewrite: bool = False, scan: bool = False) -> list[TableEffect]:
        return [TableEffect(table, lock, rewrite, scan, reason)]

    if reader.take("ADD", "CONSTRAINT") or (reader.peek("ADD") and words[1:2] and words[1] in (
            "CHECK", "FOREIGN", "UNIQUE", "PRIMARY", "EXCLUDE")):
        if words[:2] == ["ADD", "CONSTRAINT"]:
            reader.name()
        else:
            reader.take("ADD")
        return "ADD CONSTRAINT", _add_constraint(table, reader.rest())
    if reader.take("ADD"):
        reader.take("COLUMN")
        reader.take("IF", "NOT", "EXISTS")
        return "ADD COLUMN", _add_column(table, reader.rest(), catalog)
    if reader.take("DROP", "CONSTRAINT"):
        return "DROP CONSTRAINT", on_table("ACCESS EXCLUSIVE", "a constraint is dropped")
    if reader.take("DROP"):
        reader.take("COLUMN")
        return "DROP COLUMN", on_table("ACCESS EXCLUSIVE", "a column is dropped (no rewrite: it is only hidden)")
    if reader.take("ALTER"):
        reader.take("COLUMN")
        column = reader.name() or ""
        return _alter_column(table, column, reader, catalog)
    if reader.take("VALIDATE", "CONSTRAINT"):
        return "VALIDATE CONSTRAINT", on_table(
            "SHARE UPDATE EXCLUSIVE", "the constraint is checked against every row while reads and writes go on",
            scan=True)
    if reader.take("RENAME"):
        return "RENAME", on_table("ACCESS EXCLUSIVE", "a rename")
    if reader.take("SET", "TABLESPACE"):
        return "SET TABLESPACE", on_table("ACCESS EXCLUSIVE", "the table is copied to another tablespace",
                                          rewrite=True)
    if reader.take("SET", "LOGGED") or reader.take("SET", "UNLOGGED"):
        return "SET LOGGED/UNLOGGED", on_table("ACCESS EXCLUSIVE", "the table is written anew", rewrite=True)
    if reader.take("SET", "ACCESS", "METHOD"):
        return "SET ACCESS METHOD", on_table("ACCESS EXCLUSIVE", "the table is written anew", rewrite=True)
    if reader.take("SET", "WITHOUT", "OIDS"):
        return "SET WITHOUT OIDS", on_table("ACCESS EXCLUSIVE", "no-op since PostgreSQL 12")
    if reader.take("CLUSTER", "ON") or reader.take("SET", "WITHOUT", "CLUSTER"):
        return "CLUSTER ON", on_table("SHARE UPDATE EXCLUSIVE", "marks the index CLUSTER uses")
    if reader.take("SET") or reader.take("RESET"):
        # storage parameters: fillfactor and autovacuum_* take SHARE UPDATE EXCLUSIVE; others ACCESS EXCLUSIVE
        inside = reader.rest()[1:-1] if reader.peek("(") else []
        parameters = [_Reader(part).name() or "" for part in _split_top(inside)]
        mild = bool(parameters) and all(p.removeprefix("toast.").startswith(_MILD_PARAMETERS) for p in parameters)
        return "SET (storage parameters)", on_table("SHARE UPDATE EXCLUSIVE" if mild else "ACCESS EXCLUSIVE",
                                                    "storage parameters")
    if words[:1] in (["ENABLE"], ["DISABLE"]) and "TRIGGER" in words[:3]:
        return f"{words[0]} TRIGGER", on_table("SHARE ROW EXCLUSIVE", "triggers are switched")
    if words[:1] in (["ENABLE"], ["DISABLE"], ["FORCE"], ["NO"]):
        return " ".join(words[:2]), on_table("ACCESS EXCLUSIVE", " ".join(words[:4]).lower())
    if reader.take("ATTACH", "PARTITION"):
        partition = reader.name()
        effects = on_table("SHARE UPDATE EXCLUSIVE", "a partition is attached")
        if partition:
            effects.append(TableEffect(partition, "ACCESS EXCLUSIVE", False, True,
                                       "the partition's rows are checked against the bound (unless a matching "
                                       "CHECK constraint proves it)"))
        return "ATTACH PARTITION", effects
    if reader.take("DETACH", "PARTITION"):
        partition = reader.name()
        lock = "SHARE UPDATE EXCLUSIVE" if _has(action, "CONCURRENTLY") else "ACCESS EXCLUSIVE"
        effects = on_table(lock, "a partition is detached")
        if partition:
            effects.append(TableEffect(partition, lock, False, False, "detached"))
        return "DETACH PARTITION", effects
    if words[:1] in (["OWNER"], ["INHERIT"], ["OF"], ["NOT"], ["REPLICA"]):
        return words[0], on_table("ACCESS EXCLUSIVE", " ".join(words[:3]).lower())
    return None


def _add_constraint(table: str, rest: list[Token]) -> list[TableEffect]:
    words = _words(rest)
    not_valid = _has(rest, "NOT", "VALID")
    kind = words[0] if words else ""
    if kind == "FOREIGN":
        referenced = _referenced_table(rest)
        scan = not not_valid
        reason = ("a foreign key NOT VALID: only new rows are checked" if not_valid
                  else "a foreign key validated in place: every row is checked while writes wait")
        effects = [TableEffect(table, "SHARE ROW EXCLUSIVE", False, scan, reason)]
        if referenced and referenced != table:
            effects.append(TableEffect(referenced, "SHARE ROW EXCLUSIVE", False, False,
                                       f"referenced by a new foreign key from {table}"))
        return effects
    if kind == "CHECK":
        reason = ("a CHECK constraint NOT VALID: only new rows are checked" if not_valid
                  else "a CHECK constraint validated in place: every row is read while reads and writes wait")
        return [TableEffect(table, "ACCESS EXCLUSIVE", False, not not_valid, reason)]
    if kind in ("UNIQUE", "PRIMARY", "EXCLUDE"):
        if _has(rest, "USING", "INDEX") and kind != "EXCLUDE":
            return [TableEffect(table, "ACCESS EXCLUSIVE", False, kind == "PRIMARY",
                                "an existing index becomes the constraint"
                                + (" (its columns are checked for NULLs)" if kind == "PRIMARY" else ""))]
        return [TableEffect(table, "ACCESS EXCLUSIVE", False, True,
                            f"{kind.lower()} constraint builds its index while reads and writes wait")]
    return [TableEffect(table, "ACCESS EXCLUSIVE", False, not not_valid, "a constraint is added")]


def _add_column(table: str, rest: list[Token], catalog: Catalog) -> list[TableEffect]:
    reader = _Reader(rest)
    column = reader.name() or "?"
    definition = reader.rest()
    words = _words(definition)
    effects: list[TableEffect] = []
    rewrite_because = None
    if words and words[0] in SERIAL_TYPES:
        rewrite_because = f"a {words[0].lower()} column fills every row from a sequence"
    elif _has(definition, "GENERATED") and _has(definition, "STORED"):
        rewrite_because = "a stored generated column is computed for every row"
    elif _has(definition, "GENERATED") and _has(definition, "IDENTITY"):
        rewrite_because = "an identity column fills every row from a sequence"
    else:
        default = _default_expression(definition)
        if default:
            volatile = [f for f in _functions_called(default) if _volatility(f, catalog) == "v"]
            if volatile:
                rewrite_because = (f"ADD COLUMN {column} with a volatile default ({volatile[0]}()) rewrites the "
                                   "table: each row gets its own value")
    scan_because = None
    if rewrite_because is None:
        if _has(definition, "NOT", "NULL") and _default_expression(definition) is None:
            scan_because = "NOT NULL without a default: fails unless the table is empty"
        elif _has(definition, "CHECK"):
            scan_because = "its CHECK constraint is checked against every row"
        elif _has(definition, "PRIMARY", "KEY") or _has(definition, "UNIQUE"):
            scan_because = "its index is built while reads and writes wait"
    reason = rewrite_because or scan_because or (f"ADD COLUMN {column}: catalog only (a constant or no default "
                                                 "needs no rewrite since PostgreSQL 11)")
    effects.append(TableEffect(table, "ACCESS EXCLUSIVE", rewrite_because is not None,
                               rewrite_because is not None or scan_because is not None, reason))
    referenced = _referenced_table(definition)
    if referenced and referenced != table:
        effects.append(TableEffect(referenced, "SHARE ROW EXCLUSIVE", False, False,
                                   f"referenced by a new foreign key from {table}"))
    return effects


def _default_expression(definition: list[Token]) -> list[Token] | None:
    """The tokens of a column definition's DEFAULT expression, up to the next constraint keyword."""
    words = _words(definition)
    if "DEFAULT" not in words:
        return None
    start = words.index("DEFAULT") + 1
    end = start
    depth = 0
    stops = {"NOT", "NULL", "CHECK", "REFERENCES", "UNIQUE", "PRIMARY", "CONSTRAINT", "COLLATE", "GENERATED"}
    while end < len(definition):
        token = definition[end]
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.upper in stops and end > start:
            break
        end += 1
    return definition[start:end]


def _volatility(function: str, catalog: Catalog) -> str:
    known = catalog.volatility.get(function)
    if known is not None:
        return known
    return "v" if function in VOLATILE_FUNCTIONS else "s"


def _alter_column(table: str, column: str, reader: _Reader,
                  catalog: Catalog) -> tuple[str, list[TableEffect]] | None:
    def on_table(lock: str, reason: str, *, rewrite: bool = False, scan: bool = False) -> list[TableEffect]:
        return [TableEffect(table, lock, rewrite, scan, reason)]

    if reader.take("SET", "DATA", "TYPE") or reader.take("TYPE"):
        rest = reader.rest()
        using = next((i for i, t in enumerate(rest) if t.upper == "USING"), None)
        new_type = _text(rest[:using] if using is not None else rest)
        new_type = re.split(r"\s+COLLATE\s+", new_type, flags=re.IGNORECASE)[0]
        old_type = catalog.column_types.get(f"{table}.{column}")
        if using is not None:
            rewrite, why = True, "USING recomputes every row"
        elif old_type is None:
            rewrite, why = True, "the column's current type is unknown here, so a rewrite is assumed"
        else:
            rewrite = not binary_coercible(old_type, new_type)
            why = (f"{old_type} to {normalise_type(new_type)} is binary-coercible: no rewrite" if not rewrite
                   else f"{old_type} to {normalise_type(new_type)} rewrites the table and rebuilds its indexes")
        return "ALTER COLUMN TYPE", on_table("ACCESS EXCLUSIVE", f"{column}: {why}", rewrite=rewrite, scan=rewrite)
    if reader.take("SET", "NOT", "NULL"):
        return "SET NOT NULL", on_table(
            "ACCESS EXCLUSIVE", f"{column} SET NOT NULL reads every row while reads and writes wait (unless a "
            "validated CHECK (... IS NOT NULL) constraint proves it)", scan=True)
    if reader.take("DROP", "NOT", "NULL"):
        return "DROP NOT NULL", on_table("ACCESS EXCLUSIVE", f"{column} DROP NOT NULL: catalog only")
    if reader.take("SET", "DEFAULT") or reader.take("DROP", "DEFAULT"):
        return "SET/DROP DEFAULT", on_table("ACCESS EXCLUSIVE", f"{column} default: catalog only (for new rows)")
    if reader.take("SET", "STATISTICS") or reader.peek("SET", "(") or reader.peek("RESET", "("):
        return "SET STATISTICS/OPTIONS", on_table("SHARE UPDATE EXCLUSIVE", f"{column} planner settings")
    if reader.take("SET", "STORAGE") or reader.take("SET", "COMPRESSION"):
        return "SET STORAGE", on_table("ACCESS EXCLUSIVE", f"{column} storage for new rows")
    if reader.take("DROP", "EXPRESSION"):
        return "DROP EXPRESSION", on_table("ACCESS EXCLUSIVE", f"{column} stops being generated")
    if reader.peek("ADD", "GENERATED") or reader.peek("SET", "GENERATED") or reader.peek("DROP", "IDENTITY") \
            or reader.peek("RESTART") or reader.peek("SET", "INCREMENT") or reader.peek("SET", "START"):
        return "IDENTITY", on_table("ACCESS EXCLUSIVE", f"{column} identity")
    return None
