"""Silencing `celora db lint`'s findings, per statement and always with a reason:
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
import re
import tokenize
import tomllib
from dataclasses import dataclass
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError
from celora_cli.migrate.lint_rules import (
    SILENCE_WITHOUT_REASON,
    Finding,
    LintResult,
    RenderedMigration,
    SilencedFinding,
    make_finding,
    shown_path,
)
from celora_cli.migrate.scripts import find_migrations_dir

ALLOW_FILE = "lint-allow.toml"
_SILENCE_COMMENT = re.compile(r"#\s*celora:\s*allow\s+(?P<rules>[\w\-]+(?:\s*,\s*[\w\-]+)*)"
                              r"(?:\s+--\s*(?P<reason>.*\S))?\s*$", re.IGNORECASE)
_SQUAWK_IGNORE = re.compile(r"--\s*squawk-ignore(?:-file)?\b(?P<rest>[^\n]*)", re.IGNORECASE)


@dataclass
class Silence:
    rules: set[str]
    reason: str | None
    where: str
    statement: str | None = None  # allow file: a piece of the statement
    migration: str | None = None
    used: bool = False


def _file_silences(path: Path) -> tuple[dict[int, list[Silence]], list[tuple[int, int]]]:
    """`# celora: allow ...` comments by line, and the (first, last) line of every statement in the file."""
    source = path.read_text()
    comments: dict[int, list[Silence]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            match = _SILENCE_COMMENT.search(token.string)
            if match:
                rules = {r.strip().lower() for r in match["rules"].split(",")}
                comments.setdefault(token.start[0], []).append(
                    Silence(rules, match["reason"], f"{shown_path(path)}:{token.start[0]}"))
    spans = [(node.lineno, node.end_lineno or node.lineno) for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.stmt)]
    return comments, spans


def _silences_for(line: int | None, comments: dict[int, list[Silence]], spans: list[tuple[int, int]],
                  lines: list[str]) -> list[Silence]:
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


def allow_file(settings: Settings) -> tuple[Path, list[Silence]]:
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
        silences.append(Silence({entry["rule"].strip().lower()},
                                 reason.strip() if isinstance(reason, str) and reason.strip() else None,
                                 f"{shown_path(path)} [[allow]] #{number}",
                                 statement=normalise(str(entry.get("statement", ""))),
                                 migration=entry["migration"].strip()))
    return path, silences


def normalise(sql: str) -> str:
    return " ".join(sql.split()).lower()


def squawk_ignores_without_reason(migration: RenderedMigration) -> list[Finding]:
    findings = []
    for statement in migration.statements:
        for match in _SQUAWK_IGNORE.finditer(statement.sql):
            if " -- " not in f"{match['rest']} " or not match["rest"].split(" -- ", 1)[1].strip():
                findings.append(make_finding(SILENCE_WITHOUT_REASON, migration, statement,
                                         "A `-- squawk-ignore` comment without a reason (write `-- squawk-ignore "
                                         "<rule> -- <why this is safe>`)."))
    return findings


def apply_silences(migration: RenderedMigration, findings: list[Finding], allowed: list[Silence],
                    result: LintResult) -> None:
    comments, spans = _file_silences(migration.path)
    lines = migration.path.read_text().splitlines()
    reported_reasonless: set[str] = set()
    shown = shown_path(migration.path)  # once: resolving a path per finding made linting 200 migrations quadratic
    for finding in [f for f in findings if f.file == shown]:
        names = {finding.rule, *finding.squawk_rules}
        candidates = [s for s in _silences_for(finding.line, comments, spans, lines) if s.rules & names]
        candidates += [s for s in allowed if s.migration in (migration.name, migration.revision)
                       and s.rules & names and s.statement and s.statement in normalise(finding.statement)]
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
