"""How lint findings are shown, for `db lint` and `db migrate-deploy --lint` alike (its own module, so neither
command module imports the other)."""

from __future__ import annotations

from celora_cli.cli import console
from celora_cli.cli.console import safe


def render_findings(findings) -> None:
    for finding in findings:
        console.out.print(f"[red]{safe(finding.rule)}[/] {safe(finding.where())}")
        if finding.statement:
            console.out.print(f"  statement: {safe(finding.statement)}")
        if finding.message:
            console.out.print(f"  found: {safe(finding.message)}")
        console.out.print(f"  why: {safe(finding.why)}")
        console.out.print(f"  instead: {safe(finding.safe_alternative)}")
