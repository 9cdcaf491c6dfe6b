"""How lint findings are shown, for `db lint` and `db migrate-deploy --lint` alike (its own module, so neither
command module imports the other)."""

from __future__ import annotations

from celora_cli.cli import output
from celora_cli.cli.output import safe


def render_findings(findings) -> None:
    for finding in findings:
        output.out.print(f"[red]{safe(finding.rule)}[/] {safe(finding.where())}")
        if finding.statement:
            output.out.print(f"  statement: {safe(finding.statement)}")
        if finding.message:
            output.out.print(f"  found: {safe(finding.message)}")
        output.out.print(f"  why: {safe(finding.why)}")
        output.out.print(f"  instead: {safe(finding.safe_alternative)}")
