"""`celora db lint`: a zero-downtime lint of the migrations' SQL, rendered offline (no database needed).

The SQL is what Alembic's offline mode (`--sql`) renders through celora's own runtime (migrations/env.py), so
the linter reads the statements a deploy would run. Each statement is traced back to the line of the migration
file that emitted it (the innermost frame in that file when Alembic wrote it), which is where a finding points
and where a silence goes. The rules are squawk's (the `squawk-cli` wheel, run as a program), mapped to celora's
names with why each matters and the safe alternative; rules squawk has no notion of (a lock timeout under
celora's runtime, silences without a reason) are celora's own.

Under celora, "missing lock timeout" means something narrower than squawk's require-lock-timeout: the runtime
sets `lock_timeout` itself in every migration's transaction (CELORA_DDL_LOCK_TIMEOUT), so a migration needs no
`SET lock_timeout` of its own. What remains are statements that run without it: ones inside
`autocommit_block()` (outside any transaction, so outside the runtime's SET LOCAL) that take a blocking lock,
and a migration that switches the timeout off (`SET lock_timeout = 0`, `RESET lock_timeout`).

Silencing, per statement and always with a reason:
- in the migration, a comment on the statement or on the lines right above it:
  `# celora: allow index-without-concurrently -- the table is created empty in this release`
  (celora's rule names or squawk's; several separated by commas);
- squawk's own comment inside the SQL, carried into the rendered SQL: `-- squawk-ignore <rule> -- <reason>`;
- for migrations already applied, whose files must not change (the journal keeps their SHA-256), an entry in
  `migrations/lint-allow.toml` naming the migration, the rule, a piece of the statement and the reason.
A silence without a reason, or an allow entry that matches nothing, is itself a finding.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError, LintFindings

ALLOW_FILE = "lint-allow.toml"
# The server version squawk assumes (some rules depend on it, e.g. a constant DEFAULT is safe since 11).
SQUAWK_PG_VERSION = "15"
_STATEMENT_SHOWN = 300


@dataclass(frozen=True)
class Rule:
    name: str  # celora's name for it
    why: str
    safe_alternative: str


_NOT_VALID = Rule(
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
    "adding-foreign-key-constraint": _NOT_VALID,
    "constraint-missing-not-valid": _NOT_VALID,
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

_CELORA_RULES = {rule.name: rule for rule in (*RULES.values(), MISSING_LOCK_TIMEOUT)}
_SILENCE_COMMENT = re.compile(r"#\s*celora:\s*allow\s+(?P<rules>[\w\-]+(?:\s*,\s*[\w\-]+)*)"
                              r"(?:\s+--\s*(?P<reason>.*\S))?\s*$", re.IGNORECASE)
_SQUAWK_IGNORE = re.compile(r"--\s*squawk-ignore(?:-file)?\b(?P<rest>[^\n]*)", re.IGNORECASE)
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


# -- rendering -------------------------------------------------------------------------------------------

class _StatementCapture:
    """Alembic's offline output buffer: keeps each statement with the migration file line that emitted it.

    Alembic writes one statement per write(). Statements written with no migration file on the stack (BEGIN
    and COMMIT around each migration, alembic_version bookkeeping, "-- Running upgrade" comments) are Alembic's
    own and are dropped; a COMMIT or BEGIN written from inside a migration is autocommit_block()'s edge.
    """

    def __init__(self, migrations: dict[str, RenderedMigration]) -> None:
        self._by_file = migrations
        self._outside = False

    def write(self, text: str) -> int:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename not in self._by_file:
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return len(text)
        sql = text.strip()
        keyword = sql.rstrip(";").strip().upper()
        if keyword == "COMMIT":
            self._outside = True
        elif keyword == "BEGIN":
            self._outside = False
        self._by_file[frame.f_code.co_filename].statements.append(Statement(sql, frame.f_lineno, self._outside))
        return len(text)

    def flush(self) -> None:
        pass


def revisions_in(script, revision_range: str | None) -> list:
    """The Alembic Script objects a range names, oldest first: None (all), "REV", "FROM:TO" (after FROM up to
    TO, as `alembic upgrade FROM:TO --sql`), with base/head allowed."""
    from alembic.script.revision import RevisionError
    from alembic.util.exc import CommandError

    spec = (revision_range or "").strip()
    lower: str | None = None
    upper = "heads"
    if ":" in spec:
        start, end = (part.strip() for part in spec.split(":", 1))
        lower = None if start in ("", "base") else start
        upper = end or "heads"
    elif spec:
        lower, upper = "single", spec
    try:
        if lower == "single":
            found = script.get_revision(upper)
            if found is None:
                raise CommandError(f"no revision {upper!r}")
            return [found]
        return list(reversed(list(script.iterate_revisions(upper, lower))))
    except (CommandError, RevisionError) as exc:  # unknown, or an ambiguous prefix ("2" matches several)
        raise ConfigError(
            f"celora db lint: the revision range {spec!r} names no migrations of this project ({exc}).",
            "Give a revision id or file name prefix (`celora db status` lists them), FROM:TO, or nothing for "
            "the whole history.") from None


def render(settings: Settings, revision_range: str | None = None) -> tuple[list[RenderedMigration], Finding | None]:
    """Each migration of the range with the SQL Alembic renders offline for it; the second value is an
    `unrenderable` finding when a migration could not be rendered (that one and the later ones are missing)."""
    from alembic.runtime.environment import EnvironmentContext

    from celora_cli.migrate.deploy import alembic_config, script_directory

    config = alembic_config(settings)
    script = script_directory(settings, config)  # MigrationHistoryError (exit 14) for broken files
    wanted = revisions_in(script, revision_range)
    if not wanted:
        return [], None
    # Render from the start of the history up to the newest wanted revision, so every migration is rendered on
    # the schema it will meet; only the wanted ones are linted.
    every = {os.path.abspath(s.path): RenderedMigration(s.revision, Path(s.path).stem, Path(s.path))
             for s in script.walk_revisions()}
    capture = _StatementCapture(every)
    config.output_buffer = capture
    destination = wanted[-1].revision

    def upgrade(rev, context):
        return script._upgrade_revs(destination, rev)

    problem = None
    try:
        with EnvironmentContext(config, script, fn=upgrade, as_sql=True, starting_rev=None,
                                destination_rev=destination, tag=None):
            script.run_env()
    except Exception as exc:  # noqa: BLE001 - a migration that cannot run offline: say so, lint the rest
        problem = _unrenderable(exc, every)
    by_revision = {m.revision: m for m in every.values()}
    return [by_revision[s.revision] for s in wanted], problem


def _unrenderable(exc: Exception, every: dict[str, RenderedMigration]) -> Finding:
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) in every]
    migration = every[os.path.abspath(frames[-1].filename)] if frames else None
    return Finding(
        rule=UNRENDERABLE.name, squawk_rules=(), migration=migration.name if migration else "?",
        revision=migration.revision if migration else "?", file=shown_path(migration.path) if migration else "?",
        line=frames[-1].lineno if frames else None, statement="",
        message=f"{type(exc).__name__}: {exc}", why=UNRENDERABLE.why, safe_alternative=UNRENDERABLE.safe_alternative)


# -- squawk ----------------------------------------------------------------------------------------------

def squawk_binary() -> str:
    """The squawk-cli wheel's program: next to this interpreter (the same install), else on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("squawk")
    if found:
        return found
    raise ConfigError("celora db lint needs squawk (the squawk-cli package), which is not installed.",
                      "Install celora's dependencies again (`pip install -e .`, or `pip install squawk-cli`).")


def _squawk(binary: str, files: list[Path]) -> list[dict]:
    # squawk-ignore comments are honoured by squawk itself; every rule is asked for and filtered here.
    run = subprocess.run([binary, "--reporter", "json", f"--pg-version={SQUAWK_PG_VERSION}",
                          "--no-assume-in-transaction", *map(str, files)],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    try:
        reports = json.loads(run.stdout or "[]")
    except json.JSONDecodeError:
        reports = None
    if run.returncode not in (0, 1) or not isinstance(reports, list):
        raise ConfigError(f"squawk ({binary}) failed (exit {run.returncode}): "
                          f"{(run.stderr or run.stdout).strip()[:500]}",
                          "Check the squawk-cli install (`squawk --version`).")
    return reports


def squawk_version(binary: str) -> str:
    run = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    return run.stdout.strip()


def _write_sql(migration: RenderedMigration, directory: Path) -> tuple[Path, list[tuple[int, int]]]:
    """The migration's statements as one file, in a transaction like the runtime runs it; the (first, last)
    line (0-based, as squawk reports them) of each statement."""
    lines = ["BEGIN;", ""]
    spans = []
    for statement in migration.statements:
        start = len(lines)
        lines.extend(statement.sql.splitlines() or [""])
        spans.append((start, len(lines) - 1))
        lines.append("")
    lines.append("COMMIT;")
    path = directory / f"{migration.name}.sql"
    path.write_text("\n".join(lines) + "\n")
    return path, spans


# -- silences --------------------------------------------------------------------------------------------

@dataclass
class _Silence:
    rules: set[str]
    reason: str | None
    where: str
    statement: str | None = None  # allow file: a piece of the statement
    migration: str | None = None
    used: bool = False


def _file_silences(path: Path) -> tuple[dict[int, list[_Silence]], list[tuple[int, int]]]:
    """`# celora: allow ...` comments by line, and the (first, last) line of every statement in the file."""
    source = path.read_text()
    comments: dict[int, list[_Silence]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            match = _SILENCE_COMMENT.search(token.string)
            if match:
                rules = {r.strip().lower() for r in match["rules"].split(",")}
                comments.setdefault(token.start[0], []).append(
                    _Silence(rules, match["reason"], f"{shown_path(path)}:{token.start[0]}"))
    spans = [(node.lineno, node.end_lineno or node.lineno) for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.stmt)]
    return comments, spans


def _silences_for(line: int | None, comments: dict[int, list[_Silence]], spans: list[tuple[int, int]],
                  lines: list[str]) -> list[_Silence]:
    """Comments on the (innermost) statement's own lines or on the comment lines right above it."""
    if line is None:
        return []
    enclosing = [span for span in spans if span[0] <= line <= span[1]]
    first, last = min(enclosing, key=lambda s: s[1] - s[0]) if enclosing else (line, line)
    found = [s for n in range(first, last + 1) for s in comments.get(n, [])]
    above = first - 1
    while above >= 1 and lines[above - 1].strip().startswith("#"):
        found.extend(comments.get(above, []))
        above -= 1
    return found


def _allow_file(settings: Settings) -> tuple[Path, list[_Silence]]:
    import tomllib

    from celora_cli.migrate.deploy import find_migrations_dir

    path = find_migrations_dir(settings) / ALLOW_FILE
    if not path.is_file():
        return path, []
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.",
                          "Fix the file: [[allow]] tables with migration, rule, statement and reason.") from None
    entries = data.get("allow", [])
    silences = []
    for number, entry in enumerate(entries if isinstance(entries, list) else [], start=1):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("migration", "rule")):
            raise ConfigError(f"{path}: [[allow]] entry {number} needs text fields migration and rule.",
                              "Each entry: migration, rule, statement (a piece of it) and reason.")
        reason = entry.get("reason")
        silences.append(_Silence({entry["rule"].strip().lower()},
                                 reason.strip() if isinstance(reason, str) and reason.strip() else None,
                                 f"{shown_path(path)} [[allow]] #{number}",
                                 statement=_normalise(str(entry.get("statement", ""))),
                                 migration=entry["migration"].strip()))
    return path, silences


def shown_path(path: Path) -> str:
    """A path as a reader finds it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _normalise(sql: str) -> str:
    return " ".join(sql.split()).lower()


# -- the lint --------------------------------------------------------------------------------------------

def lint(settings: Settings, revision_range: str | None = None, *, revisions: list[str] | None = None) -> LintResult:
    """Lint the migrations of `revision_range` (or exactly `revisions`, ids); findings, silenced ones apart."""
    if revisions is not None:
        migrations, problem = _render_revisions(settings, revisions)
    else:
        migrations, problem = render(settings, revision_range)
    binary = squawk_binary()
    result = LintResult(migrations=[m.name for m in migrations], linter=squawk_version(binary))
    allow_path, allowed = _allow_file(settings)
    raw: list[Finding] = []
    squawk_ignores: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="celora-lint-") as tmp:
        written = {}
        for migration in migrations:
            path, spans = _write_sql(migration, Path(tmp))
            written[str(path)] = (migration, spans)
            squawk_ignores.extend(_squawk_ignores_without_reason(migration))
        reports = _squawk(binary, [Path(p) for p in written]) if written else []
    for report in reports:
        rule = RULES.get(report.get("rule_name", ""))
        entry = written.get(report.get("file", ""))
        if rule is None or entry is None:
            continue
        migration, spans = entry
        index = next((i for i, (first, last) in enumerate(spans) if first <= report.get("line", -1) <= last), None)
        if index is None or _not_applicable(rule, migration.statements[index].sql):
            continue
        raw.append(_finding(rule, migration, migration.statements[index], report.get("message", ""),
                            (report["rule_name"],)))
    for migration in migrations:
        raw.extend(_lock_timeout_findings(migration))
    findings = _merge(raw)
    for migration in migrations:
        _apply_silences(migration, findings, allowed, result)
    result.findings.extend(squawk_ignores)
    for silence in allowed:
        if not silence.used and silence.migration in {m.name for m in migrations} | {m.revision for m in migrations}:
            result.findings.append(Finding(
                rule=UNUSED_SILENCE.name, squawk_rules=(), migration=silence.migration or "", revision="",
                file=shown_path(allow_path), line=None, statement=silence.statement or "",
                message=f"{silence.where} ({', '.join(sorted(silence.rules))}) matches no finding.",
                why=UNUSED_SILENCE.why, safe_alternative=UNUSED_SILENCE.safe_alternative))
    if problem is not None:
        result.findings.append(problem)
    return result


def _render_revisions(settings: Settings, revisions: list[str]) -> tuple[list[RenderedMigration], Finding | None]:
    if not revisions:
        return [], None
    migrations, problem = render(settings, f"base:{revisions[-1]}")
    wanted = set(revisions)
    return [m for m in migrations if m.revision in wanted], problem


_KEY_CONSTRAINT = re.compile(r"\b(UNIQUE|PRIMARY\s+KEY)\b", re.IGNORECASE)
_VALIDATED_CONSTRAINT = re.compile(r"\b(FOREIGN\s+KEY|CHECK)\b", re.IGNORECASE)


def _not_applicable(rule: Rule, sql: str) -> bool:
    """squawk asks for NOT VALID on UNIQUE and PRIMARY KEY constraints too, which PostgreSQL does not allow:
    their own rules (unique-constraint-without-index, primary-key-without-index) say what to do instead."""
    return rule is _NOT_VALID and bool(_KEY_CONSTRAINT.search(sql)) and not _VALIDATED_CONSTRAINT.search(sql)


def _finding(rule: Rule, migration: RenderedMigration, statement: Statement, message: str,
             squawk_rules: tuple[str, ...] = ()) -> Finding:
    sql = " ".join(statement.sql.split())
    return Finding(rule=rule.name, squawk_rules=squawk_rules, migration=migration.name, revision=migration.revision,
                   file=shown_path(migration.path), line=statement.line,
                   statement=sql if len(sql) <= _STATEMENT_SHOWN else sql[:_STATEMENT_SHOWN - 1] + "…",
                   message=message, why=rule.why, safe_alternative=rule.safe_alternative)


def _merge(raw: list[Finding]) -> list[Finding]:
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


def _lock_timeout_findings(migration: RenderedMigration) -> list[Finding]:
    findings = []
    timeout_set = False  # inside the current autocommit block
    for statement in migration.statements:
        sql = statement.sql
        if _DISABLES_LOCK_TIMEOUT.match(sql):
            findings.append(_finding(MISSING_LOCK_TIMEOUT, migration, statement,
                                     "This switches off the lock timeout celora's runtime sets."))
            timeout_set = False
            continue
        if not statement.outside_transaction:
            timeout_set = False
            continue
        if _SETS_LOCK_TIMEOUT.match(sql):
            timeout_set = True
        elif not timeout_set and not _FINE_OUTSIDE_TRANSACTION.match(sql):
            findings.append(_finding(MISSING_LOCK_TIMEOUT, migration, statement,
                                     "This runs inside autocommit_block(), without the runtime's lock timeout."))
    return findings


def _squawk_ignores_without_reason(migration: RenderedMigration) -> list[Finding]:
    findings = []
    for statement in migration.statements:
        for match in _SQUAWK_IGNORE.finditer(statement.sql):
            if " -- " not in f"{match['rest']} " or not match["rest"].split(" -- ", 1)[1].strip():
                findings.append(_finding(SILENCE_WITHOUT_REASON, migration, statement,
                                         "A `-- squawk-ignore` comment without a reason (write `-- squawk-ignore "
                                         "<rule> -- <why this is safe>`)."))
    return findings


def _apply_silences(migration: RenderedMigration, findings: list[Finding], allowed: list[_Silence],
                    result: LintResult) -> None:
    comments, spans = _file_silences(migration.path)
    lines = migration.path.read_text().splitlines()
    reported_reasonless: set[str] = set()
    for finding in [f for f in findings if f.file == shown_path(migration.path)]:
        names = {finding.rule, *finding.squawk_rules}
        candidates = [s for s in _silences_for(finding.line, comments, spans, lines) if s.rules & names]
        candidates += [s for s in allowed if s.migration in (migration.name, migration.revision)
                       and s.rules & names and s.statement and s.statement in _normalise(finding.statement)]
        silence = next((s for s in candidates if s.reason), None)
        for reasonless in (s for s in candidates if not s.reason and s.where not in reported_reasonless):
            reported_reasonless.add(reasonless.where)
            reasonless.used = True
            result.findings.append(dataclasses.replace(
                finding, rule=SILENCE_WITHOUT_REASON.name, squawk_rules=(),
                message=f"The silence at {reasonless.where} gives no reason, so it silences nothing.",
                why=SILENCE_WITHOUT_REASON.why, safe_alternative=SILENCE_WITHOUT_REASON.safe_alternative))
        if silence is None:
            result.findings.append(finding)
        else:
            silence.used = True
            result.silenced.append(SilencedFinding(finding, silence.reason or "", silence.where))


def check(settings: Settings, revision_range: str | None = None, *, revisions: list[str] | None = None,
          what: str = "celora db lint") -> LintResult:
    """lint(), raising LintFindings (exit 16) when anything is found."""
    result = lint(settings, revision_range, revisions=revisions)
    if result.findings:
        raise findings_error(result, what)
    return result


def findings_error(result: LintResult, what: str = "celora db lint") -> LintFindings:
    rules = sorted({f.rule for f in result.findings})
    return LintFindings(
        f"{what}: {len(result.findings)} finding(s) in {len({f.migration for f in result.findings})} "
        f"migration(s) ({', '.join(rules)}): statements that lock tables or break running code.",
        "Rewrite each as its safe alternative, or silence one with its reason: `# celora: allow <rule> -- "
        "<why this is safe>` above the statement in the migration.",
        findings=result.findings)


def pending_revisions(settings: Settings) -> list[str]:
    """The ids of the migrations `migrate-deploy` would apply (read-only; no Alembic)."""
    from celora_cli.migrate.deploy import migration_status

    return [m.revision for m in migration_status(settings).pending]


def _revision_id(path: Path) -> str:
    """The `revision = "..."` of a migration file (the file name's timestamp may be a second off the id)."""
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "revision" and isinstance(node.value, ast.Constant):
            return str(node.value.value)
    return path.stem.split("_", 1)[0]


def revision_warnings(settings: Settings, path: Path) -> list[str]:
    """For `celora db migrate`: the new revision's findings as warnings (it writes the file; it does not fail)."""
    revision = _revision_id(path)
    try:
        result = lint(settings, revisions=[revision])
    except ConfigError as exc:  # squawk missing: say so, the migration is written all the same
        return [f"The new migration was not linted: {exc.message}"]
    return [f"{finding.rule} at {finding.where()}: {finding.statement} -- {finding.why} Instead: "
            f"{finding.safe_alternative}" for finding in result.findings]


__all__ = [
    "ALLOW_FILE",
    "RULES",
    "Finding",
    "LintResult",
    "SilencedFinding",
    "check",
    "findings_error",
    "lint",
    "pending_revisions",
    "render",
    "revision_warnings",
]
