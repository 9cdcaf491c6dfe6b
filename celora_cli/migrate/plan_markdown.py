"""A deploy plan as Markdown, ready for a CI job to post as a pull-request comment (the `markdown` field of
`migrate-deploy --plan --json`). Values from the database (names, applications, SQL) are escaped for Markdown tables.
"""

from __future__ import annotations

_MAX_SQL = 160


def size_text(size: int | None) -> str:
    """Bytes as people read them: 1.5 MB (powers of 1024, as PostgreSQL's pg_size_pretty)."""
    if size is None:
        return "size unknown"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def count_text(rows: int | None) -> str:
    return "?" if rows is None else f"{rows:,}"


def _cell(value: object) -> str:
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("<", "&lt;")


def _sql(text: str) -> str:
    short = " ".join(text.split())
    return _cell(short if len(short) <= _MAX_SQL else short[:_MAX_SQL - 1] + "…")


def markdown(plan) -> str:
    """`plan`: a celora_cli.migrate.plan.DeployPlan (not imported: that module imports this one)."""
    _count, _size = count_text, size_text
    mark = {0: "✅", 1: "✅"}.get(int(plan.exit_code), "⚠️")
    lines = [f"### celora deploy plan for `{_cell(plan.database)}`", "",
             f"{mark} **{_cell(plan.verdict)}** (exit {int(plan.exit_code)})", "",
             f"At `{_cell(', '.join(plan.current) or 'base')}`, head `{_cell(plan.head or '-')}`: "
             f"{len(plan.migrations)} pending migration(s)."]
    if plan.migrations:
        lines += ["", "| migration | statement | table | lock | blocks | rewrite/scan | rows | size |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for migration in plan.migrations:
            for statement in migration.statements:
                if not statement.effects:
                    if not statement.understood:
                        lines.append(f"| {_cell(migration.name)} | {_sql(statement.sql)} | ? | not analysed | "
                                     "| | | |")
                    continue
                for effect in statement.effects:
                    work = "rewrite: " if effect.rewrite else "full scan: " if effect.scan else ""
                    flag = " ⚠️" if effect.over_threshold or effect.blocked_by else ""
                    lines.append(
                        f"| {_cell(migration.name)} | {_sql(statement.sql)} | {_cell(effect.table)}{flag} | "
                        f"{effect.lock} | {_cell(effect.blocks)} | {work}{_cell(effect.reason)} | "
                        f"{'new' if effect.created else _count(effect.rows)} | "
                        f"{'new' if effect.created else _size(effect.size_bytes)} |")
    if plan.blockers:
        lines += ["", "**Live sessions the deploy would wait behind**", "",
                  "| pid | application | user | state | transaction age | table | holds | needed by |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for b in plan.blockers:
            age = "hidden" if b.hidden else "-" if b.transaction_age_s is None else f"{b.transaction_age_s:.0f} s"
            holds = b.holds + ("" if b.granted else " (queued)")
            lines.append(f"| {b.pid} | {_cell(b.application or '')} | {_cell(b.user or '')} | "
                         f"{_cell(b.state or ('hidden' if b.hidden else ''))} | {age} | {_cell(b.table)} | {holds} | "
                         f"{b.needed} ({_cell(b.migration)}) |")
    if plan.long_transactions:
        lines += ["", f"**Transactions open longer than {plan.long_transaction_s:g} s**", ""]
        lines += [f"- pid {s.pid} ({_cell(s.application or 'no application_name')}, {_cell(s.state or '?')}): "
                  f"{s.transaction_age_s:.0f} s" for s in plan.long_transactions]
    if plan.findings:
        lines += ["", "**Lint findings**", ""]
        lines += [f"- `{f.rule}` at {_cell(f.where())}: {_sql(f.statement)}" for f in plan.findings]
    if plan.drift == []:
        lines += ["", "No drift at the current revision."]
    if plan.drift:
        lines += ["", "**Drift at the current revision**", ""]
        lines += [f"- {_cell(_describe(d))}" for d in plan.drift]
    notes = [n for n in (plan.drift_note, plan.lint_note) if n]
    if not plan.visibility.full:
        notes.append(plan.visibility.note)
    if notes:
        lines += [""] + [f"_{_cell(n)}_" for n in notes]
    return "\n".join(lines) + "\n"


def _describe(difference: object) -> str:
    describe = getattr(difference, "describe", None)
    return describe() if callable(describe) else str(difference)
