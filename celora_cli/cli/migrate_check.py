"""The renderer of `celora db migrate --check` (celora_cli.schema.check), kept out of cli/db_migrate.py, whose
other options other work extends."""

from __future__ import annotations

from celora_cli.cli import output
from celora_cli.cli.output import safe


@output.renders("celora_cli.schema.check.CheckResult")
def render_check(result) -> None:
    head = result.head or "(empty history)"
    for warning in result.warnings:
        output.err.print(f"[yellow]warning:[/] {safe(warning)}")
    if result.in_sync:
        output.out.print(f"The models match the migration history (head {safe(head)}): no migration needed.")
        return
    output.out.print(f"The models differ from the migration history (head {safe(head)}): "
                     f"{len(result.changes)} operation(s) need a migration:")
    for change in result.changes:
        output.out.print(f"  - {safe(change.describe())}")
    output.out.print("Run `celora db migrate --name <name>` to write it.")
