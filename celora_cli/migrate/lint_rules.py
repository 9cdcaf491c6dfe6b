"""`celora db lint`'s rules and findings: squawk's rules under celora's names, with why each matters and the safe
alternative; celora's own rules (a lock timeout under celora's runtime, silences without a reason); what a finding
and a lint result hold.

Under celora, "missing lock timeout" means something narrower than squawk's require-lock-timeout: the runtime
sets `lock_timeout` itself in every migration's transaction (CELORA_DDL_LOCK_TIMEOUT), so a migration needs no
`SET lock_timeout` of its own. What remains are statements that run without it: ones inside
`autocommit_block()` (outside any transaction, so outside the runtime's SET LOCAL) that take a blocking lock,
and a migration that switches the timeout off (`SET lock_timeout = 0`, `RESET lock_timeout`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

_STATEMENT_SHOWN = 300


@dataclass(frozen=True)
class Rule:
    name: str  # celora's name for it
    why: str
    safe_alternative: str


NOT_VALID = Rule(
    "constraint-without-not-valid",
    "Adding a foreign key or CHECK constraint validates every existing row while holding a lock that blocks "
    "writes (a foreign key locks the referenced table too), for as long as the scan takes.",
    "Add it with NOT VALID (postgresql_not_valid=True, or `... NOT VALID` in op.execute), then "
    "`ALTER TABLE ... VALIDATE CONSTRAINT ...` in a later migration: validation takes a lock that allows writes.")

# squawk rule -> celora's. Rules not listed are not reported (style rules such as prefer-text-field, and
# require-statement-timeout: the runtime deliberately runs DDL without a statement timeout, bounded by the lock
# timeout instead); require-lock-timeout is replaced by celora's own rule (module docstring).
RULES: dict[str, Rule] = {
    "adding-required-field": Rule(
        "not-null-without-default",
        "Adding a NOT NULL column without a default fails on a table with rows, and code already running (which "
        "does not know the column) fails on every INSERT once it exists.",
        "Add the column nullable (or with a constant DEFAULT, which PostgreSQL 11+ adds without rewriting the "
        "table), backfill it in batches, then add a CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, and SET NOT "
        "NULL in a later migration."),
    "adding-not-nullable-field": Rule(
        "set-not-null",
        "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock: no reads or writes meanwhile.",
        "Add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a later migration, then SET NOT NULL "
        "(PostgreSQL 12+ skips the scan when a valid CHECK proves it) and drop the CHECK."),
    "require-concurrent-index-creation": Rule(
        "index-without-concurrently",
        "CREATE INDEX blocks every write to the table until the index is built, which on a large table takes "
        "minutes.",
        "Create it CONCURRENTLY in an autocommit block: `with op.get_context().autocommit_block(): "
        "op.create_index(..., postgresql_concurrently=True)` (README: migrations that cannot run in a "
        "transaction)."),
    "require-concurrent-index-deletion": Rule(
        "drop-index-without-concurrently",
        "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table: reads and writes wait behind it.",
        "Drop it CONCURRENTLY in an autocommit block: `op.drop_index(..., postgresql_concurrently=True)`."),
    "ban-concurrent-index-creation-in-transaction": Rule(
        "concurrently-in-transaction",
        "CREATE INDEX CONCURRENTLY cannot run inside a transaction block: the migration fails.",
        "Put it in `with op.get_context().autocommit_block():`."),
    "adding-foreign-key-constraint": NOT_VALID,
    "constraint-missing-not-valid": NOT_VALID,
    "disallowed-unique-constraint": Rule(
        "unique-constraint-without-index",
        "Adding a UNIQUE constraint builds its index while blocking reads and writes on the table.",
        "Create a unique index CONCURRENTLY first, then `ADD CONSTRAINT ... UNIQUE USING INDEX ...`."),
    "adding-serial-primary-key-field": Rule(
        "primary-key-without-index",
        "Adding a primary key builds its index under an ACCESS EXCLUSIVE lock: no reads or writes meanwhile.",
        "Create a unique index CONCURRENTLY first, then `ADD CONSTRAINT ... PRIMARY KEY USING INDEX ...`."),
    "adding-field-with-default": Rule(
        "volatile-default",
        "A column added with a volatile DEFAULT (now(), random(), gen_random_uuid()) rewrites the whole table "
        "under an ACCESS EXCLUSIVE lock.",
        "Add the column without a default (or with a constant one), then set the default and backfill in "
        "batches."),
    "changing-column-type": Rule(
        "column-type-change",
        "Changing a column's type usually rewrites the table under an ACCESS EXCLUSIVE lock, and code running "
        "against the old type may break.",
        "Add a new column of the new type, write both from the code, backfill in batches, switch reads, then "
        "drop the old column in a later release."),
    "ban-drop-column": Rule(
        "dropped-column",
        "Code still running (the previous release during a deploy) selects or inserts the column and fails.",
        "Stop using the column in the code first (and deploy that), then drop it in a later migration."),
    "ban-drop-table": Rule(
        "dropped-table",
        "Code still running (the previous release during a deploy) uses the table and fails; the data is gone.",
        "Stop using the table in the code first (and deploy that), then drop it in a later migration."),
    "renaming-column": Rule(
        "renamed-column",
        "Code still running (the previous release during a deploy) uses the old name and fails.",
        "Add the new column, write both, backfill, switch reads, then drop the old one in a later release."),
    "renaming-table": Rule(
        "renamed-table",
        "Code still running (the previous release during a deploy) uses the old name and fails.",
        "Create the new table (or a view under the old name), move the code over, then drop the old name later."),
    "ban-drop-database": Rule(
        "dropped-database",
        "Dropping a database from a migration loses everything in it.",
        "Do it by hand, deliberately, not in a migration."),
}

MISSING_LOCK_TIMEOUT = Rule(
    "missing-lock-timeout",
    "celora's runtime sets lock_timeout in each migration's transaction; this statement runs without it (inside "
    "autocommit_block(), or after the migration switched it off), so if it queues behind a long transaction, "
    "every query on the table queues behind it.",
    "Keep only CONCURRENTLY operations (and ALTER TYPE ... ADD VALUE) in autocommit_block(); move other DDL into "
    "the migration's transaction, or run `SET lock_timeout = '5s'` in the block before it. Never set it to 0.")
SILENCE_WITHOUT_REASON = Rule(
    "silence-without-reason",
    "A silenced finding must say why it is safe, so the next reader can check the reason still holds.",
    "Write the reason after ` -- `: `# celora: allow <rule> -- <why this is safe>`.")
UNUSED_SILENCE = Rule(
    "unused-silence",
    "An entry in lint-allow.toml that matches no finding hides nothing today but would hide a future one.",
    "Remove the entry, or fix its migration, rule or statement so it names the finding it was meant for.")
UNRENDERABLE = Rule(
    "unrenderable",
    "The migration could not be rendered as SQL offline (it reads from the database, for example), so it was "
    "not linted, nor were the migrations after it.",
    "Keep reads out of migrations where possible; otherwise review this migration's statements by hand.")

# Statements that belong in autocommit_block() or do not lock tables.
_FINE_OUTSIDE_TRANSACTION = re.compile(
    r"^\s*(?:(?:CREATE|DROP)\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY|REINDEX\b.*\bCONCURRENTLY|ALTER\s+TYPE\b.*\bADD\s+"
    r"VALUE|VACUUM|ANALYZE|SET\b|RESET\b|SELECT\b|COMMIT\b|BEGIN\b|--|ALTER\s+TABLE\b.*\bDETACH\s+PARTITION\b.*"
    r"\bCONCURRENTLY|ALTER\s+TABLE\b.*\bVALIDATE\s+CONSTRAINT)", re.IGNORECASE | re.DOTALL)
_SETS_LOCK_TIMEOUT = re.compile(r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?lock_timeout\s*(?:=|TO)\s*'?(?P<value>[^';]*)",
                                re.IGNORECASE)
_DISABLES_LOCK_TIMEOUT = re.compile(r"^\s*(RESET\s+lock_timeout|SET\s+(?:SESSION\s+|LOCAL\s+)?lock_timeout\s*"
                                    r"(?:=|TO)\s*'?\s*0\s*(?:ms|s)?\s*'?\s*;?\s*$)", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int | None  # the line of the migration file that emitted it
    outside_transaction: bool  # inside autocommit_block()


@dataclass
class RenderedMigration:
    revision: str
    name: str
    path: Path
    statements: list[Statement] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    rule: str  # celora's rule name
    squawk_rules: tuple[str, ...]  # squawk's, when it found it
    migration: str  # file name without .py
    revision: str
    file: str
    line: int | None
    statement: str
    message: str  # what is wrong with this statement
    why: str
    safe_alternative: str

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class SilencedFinding:
    finding: Finding
    reason: str
    silenced_by: str  # where the silence is: file:line of the comment, or lint-allow.toml


@dataclass
class LintResult:
    migrations: list[str] = field(default_factory=list)  # names of the migrations linted, oldest first
    findings: list[Finding] = field(default_factory=list)
    silenced: list[SilencedFinding] = field(default_factory=list)
    linter: str = ""  # squawk's version

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["clean"] = self.clean
        return data


def shown_path(path: Path) -> str:
    """A path as a reader finds it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def make_finding(rule: Rule, migration: RenderedMigration, statement: Statement, message: str,
             squawk_rules: tuple[str, ...] = ()) -> Finding:
    sql = " ".join(statement.sql.split())
    return Finding(rule=rule.name, squawk_rules=squawk_rules, migration=migration.name, revision=migration.revision,
                   file=shown_path(migration.path), line=statement.line,
                   statement=sql if len(sql) <= _STATEMENT_SHOWN else sql[:_STATEMENT_SHOWN - 1] + "…",
                   message=message, why=rule.why, safe_alternative=rule.safe_alternative)


def merge(raw: list[Finding]) -> list[Finding]:
    """One finding per statement and celora rule (squawk reports a foreign key under two rules)."""
    merged: dict[tuple, Finding] = {}
    for finding in raw:
        key = (finding.file, finding.line, finding.statement, finding.rule)
        if key in merged:
            before = merged[key]
            merged[key] = dataclasses.replace(
                before, squawk_rules=tuple(dict.fromkeys(before.squawk_rules + finding.squawk_rules)))
        else:
            merged[key] = finding
    return list(merged.values())


_KEY_CONSTRAINT = re.compile(r"\b(UNIQUE|PRIMARY\s+KEY)\b", re.IGNORECASE)
_VALIDATED_CONSTRAINT = re.compile(r"\b(FOREIGN\s+KEY|CHECK)\b", re.IGNORECASE)


def not_applicable(rule: Rule, sql: str) -> bool:
    """squawk asks for NOT VALID on UNIQUE and PRIMARY KEY constraints too, which PostgreSQL does not allow:
    their own rules (unique-constraint-without-index, primary-key-without-index) say what to do instead."""
    return rule is NOT_VALID and bool(_KEY_CONSTRAINT.search(sql)) and not _VALIDATED_CONSTRAINT.search(sql)


def lock_timeout_findings(migration: RenderedMigration) -> list[Finding]:
    findings = []
    timeout_set = False  # inside the current autocommit block
    for statement in migration.statements:
        sql = statement.sql
        if _DISABLES_LOCK_TIMEOUT.match(sql):
            findings.append(make_finding(MISSING_LOCK_TIMEOUT, migration, statement,
                                     "This switches off the lock timeout celora's runtime sets."))
            timeout_set = False
            continue
        if not statement.outside_transaction:
            timeout_set = False
            continue
        if _SETS_LOCK_TIMEOUT.match(sql):
            timeout_set = True
        elif not timeout_set and not _FINE_OUTSIDE_TRANSACTION.match(sql):
            findings.append(make_finding(MISSING_LOCK_TIMEOUT, migration, statement,
                                     "This runs inside autocommit_block(), without the runtime's lock timeout."))
    return findings
