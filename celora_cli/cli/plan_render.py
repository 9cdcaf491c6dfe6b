"""`celora db migrate-deploy --plan`: the drift it is given, the call, and how a plan is shown.

Its own module so db_migrate_deploy.py stays a few lines. The plan itself is celora_cli.migrate.plan.
"""

from __future__ import annotations

from rich.table import Table

from celora_cli.cli import output
from celora_cli.cli.output import safe
from celora_cli.errors import CeloraError


def drift_at_current_revision(settings) -> tuple[list | None, str | None]:
    """The drift between the live schema and what the history builds at the database's current revision, for the
    plan: (differences, None), or (None, why it was not checked). From the schema snapshots (committed, cached,
    or built once in a shadow); on staging and production no shadow database is created on the server, so there
    a missing snapshot means drift was not checked (unless SHADOW_DATABASE_URL names a scratch database)."""
    from celora_cli.schema.deploy_gate import drift_at_current

    build = not settings.deployed or settings.shadow_database_url is not None
    try:
        return list(drift_at_current(settings, build=build).differences), None
    except CeloraError as exc:  # e.g. no snapshot and no right to create the shadow database: the plan says so
        return None, f"Drift was not checked: {exc.message} {exc.hint or ''}".strip()


def run_plan(settings, as_json: bool) -> None:
    from celora_cli.migrate.plan import plan_deploy

    differences, note = drift_at_current_revision(settings)
    output.emit(plan_deploy(settings, differences=differences, drift_note=note), as_json)


def _work(effect) -> str:
    if effect.rewrite:
        return "[red]rewrite[/]"
    if effect.scan:
        return "[yellow]full scan[/]" if effect.lock in ("SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE",
                                                            "ACCESS EXCLUSIVE") else "full scan"
    return "-"


@output.renders("celora_cli.migrate.plan.DeployPlan")
def render_plan(plan) -> None:
    from celora_cli.migrate.plan_markdown import count_text as _count
    from celora_cli.migrate.plan_markdown import size_text as _size

    out = output.out
    out.print(f"Deploy plan for {safe(plan.database)}: at {safe(', '.join(plan.current) or 'base')}, head "
              f"{safe(plan.head or '-')}, {len(plan.migrations)} pending migration(s).")
    locks_used: dict[str, str] = {}
    for migration in plan.migrations:
        table = Table(title=safe(f"{migration.name}"), title_justify="left", expand=False)
        table.add_column("line", justify="right")
        table.add_column("statement, and what it does", overflow="fold", ratio=1)
        for column in ("table", "lock", "work", "rows", "size"):
            table.add_column(column, overflow="fold", no_wrap=column in ("lock", "rows", "size"))
        for statement in migration.statements:
            sql = safe(" ".join(statement.sql.split()))
            line = str(statement.line or "")
            if not statement.effects:
                table.add_row(line, sql, "", "[yellow]not analysed[/]" if not statement.understood else "-",
                              "", "", "")
                continue
            for effect in statement.effects:
                locks_used[effect.lock] = effect.blocks
                mark = " [red]![/]" if effect.over_threshold or effect.blocked_by else ""
                rows = "new" if effect.created else _count(effect.rows)
                size = "new" if effect.created else _size(effect.size_bytes)
                table.add_row(line, f"{sql}\n[dim]{safe(effect.reason)}[/]", safe(effect.table) + mark,
                              effect.lock, _work(effect), rows, size)
        out.print(table)
    if locks_used:
        out.print("While held, " + "; ".join(f"{lock} blocks {blocks}" for lock, blocks in locks_used.items())
                  + ".")
    if plan.blockers:
        table = Table(title="Live sessions the deploy would wait behind", title_justify="left")
        for column in ("pid", "application", "user", "state", "xact age", "table", "holds", "needed by"):
            table.add_column(column, overflow="fold")
        for b in plan.blockers:
            age = "hidden" if b.hidden else "-" if b.transaction_age_s is None else f"{b.transaction_age_s:.0f} s"
            table.add_row(str(b.pid), safe(b.application or ""), safe(b.user or ""),
                          safe(b.state or ("hidden" if b.hidden else "")), age, safe(b.table),
                          b.holds + ("" if b.granted else " (queued)"), f"{b.needed} ({safe(b.migration)})")
        out.print(table)
    if plan.long_transactions:
        out.print(f"Transactions open longer than {plan.long_transaction_s:g} s:")
        for s in plan.long_transactions:
            out.print(f"  pid {s.pid} ({safe(s.application or 'no application_name')}, {safe(s.state or '?')}): "
                      f"{s.transaction_age_s:.0f} s")
    if plan.findings:
        out.print(f"Lint findings ({len(plan.findings)}):")
        for f in plan.findings:
            out.print(f"  [red]{safe(f.rule)}[/] {safe(f.where())}: {safe(' '.join(f.statement.split()))}")
    if plan.drift == []:
        out.print("Drift: none at the current revision.")
    if plan.drift:
        out.print(f"Drift at the current revision ({len(plan.drift)}):")
        for difference in plan.drift:
            describe = getattr(difference, "describe", None)
            out.print(f"  {safe(describe() if callable(describe) else difference)}")
    for note in (plan.drift_note, plan.lint_note, None if plan.visibility.full else plan.visibility.note):
        if note:
            out.print(f"[dim]{safe(note)}[/]")
    style = "green" if int(plan.exit_code) in (0, 1) else "red"
    out.print(f"[bold {style}]Verdict:[/] {safe(plan.verdict)} (exit {int(plan.exit_code)})")
