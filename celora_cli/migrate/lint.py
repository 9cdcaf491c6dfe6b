"""`celora db lint`: a zero-downtime lint of the migrations' SQL, rendered offline (no database needed).

The SQL is what Alembic's offline mode renders through celora's own runtime (celora_cli.migrate.lint_render). The
rules are squawk's (the `squawk-cli` wheel, run as a program), mapped to celora's
names with why each matters and the safe alternative; rules squawk has no notion of (a lock timeout under
celora's runtime, silences without a reason) are celora's own.

Under celora, "missing lock timeout" means something narrower than squawk's require-lock-timeout: the runtime
sets `lock_timeout` itself in every migration's transaction (CELORA_DDL_LOCK_TIMEOUT), so a migration needs no
`SET lock_timeout` of its own. What remains are statements that run without it: ones inside
`autocommit_block()` (outside any transaction, so outside the runtime's SET LOCAL) that take a blocking lock,
and a migration that switches the timeout off (`SET lock_timeout = 0`, `RESET lock_timeout`).


The rules and findings are in celora_cli.migrate.lint_rules, silencing in celora_cli.migrate.lint_silences.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError, LintFindings
from celora_cli.migrate.lint_render import render, render_revisions
from celora_cli.migrate.lint_rules import (
    RULES,
    UNUSED_SILENCE,
    Finding,
    LintResult,
    RenderedMigration,
    lock_timeout_findings,
    make_finding,
    merge,
    not_applicable,
    shown_path,
)
from celora_cli.migrate.lint_silences import allow_file, apply_silences, squawk_ignores_without_reason
from celora_cli.migrate.status import migration_status

# The server version squawk assumes (some rules depend on it, e.g. a constant DEFAULT is safe since 11).
SQUAWK_PG_VERSION = "15"


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


def lint(settings: Settings, revision_range: str | None = None, *, revisions: list[str] | None = None,
         rendered: tuple[list[RenderedMigration], Finding | None] | None = None, script=None,
         from_parent: bool = False) -> LintResult:
    """Lint the migrations of `revision_range` (or exactly `revisions`, ids); findings, silenced ones apart.
    `rendered`: migrations already rendered (render_revisions' answer), for a caller that also reads their SQL
    (`migrate-deploy --plan`), so the history is rendered once. `script` and `from_parent`: see
    lint_render.render."""
    if rendered is not None:
        migrations, problem = rendered
    elif revisions is not None:
        migrations, problem = render_revisions(settings, revisions, script=script, from_parent=from_parent)
    else:
        migrations, problem = render(settings, revision_range)
    binary = squawk_binary()
    result = LintResult(migrations=[m.name for m in migrations], linter=squawk_version(binary))
    allow_path, allowed = allow_file(settings)
    raw: list[Finding] = []
    squawk_ignores: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="celora-lint-") as tmp:
        written = {}
        for migration in migrations:
            path, spans = _write_sql(migration, Path(tmp))
            written[str(path)] = (migration, spans)
            squawk_ignores.extend(squawk_ignores_without_reason(migration))
        reports = _squawk(binary, [Path(p) for p in written]) if written else []
    for report in reports:
        rule = RULES.get(report.get("rule_name", ""))
        entry = written.get(report.get("file", ""))
        if rule is None or entry is None:
            continue
        migration, spans = entry
        index = next((i for i, (first, last) in enumerate(spans) if first <= report.get("line", -1) <= last), None)
        if index is None or not_applicable(rule, migration.statements[index].sql):
            continue
        raw.append(make_finding(rule, migration, migration.statements[index], report.get("message", ""),
                            (report["rule_name"],)))
    for migration in migrations:
        raw.extend(lock_timeout_findings(migration))
    findings = merge(raw)
    for migration in migrations:
        apply_silences(migration, findings, allowed, result)
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


def revision_warnings(settings: Settings, path: Path, script=None) -> list[str]:
    """For `celora db migrate`: the new revision's findings as warnings (it writes the file; it does not fail).
    Rendered from its parent with the caller's ScriptDirectory: the cost does not grow with the history."""
    revision = _revision_id(path)
    try:
        result = lint(settings, revisions=[revision], script=script, from_parent=True)
    except ConfigError as exc:  # squawk missing: say so, the migration is written all the same
        return [f"The new migration was not linted: {exc.message}"]
    return [f"{finding.rule} at {finding.where()}: {finding.statement} -- {finding.why} Instead: "
            f"{finding.safe_alternative}" for finding in result.findings]


__all__ = ["check", "findings_error", "lint", "pending_revisions", "revision_warnings"]
