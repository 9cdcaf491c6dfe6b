"""What a run of the migration runtime (deploy, reset, rollback) shows while it works."""

from __future__ import annotations

from celora_cli.cli import output
from celora_cli.cli.output import safe


def migration_progress(as_json: bool):
    """Progress of a run of the migration runtime (deploy, reset, rollback): waits on stderr, steps on stdout
    (not with --json, where stdout is the one result object)."""

    def progress(kind: str, data) -> None:
        if kind == "lock_wait":
            output.err.print(f"Waiting for the migration lock held by {safe(data.describe())} ...")
        elif kind == "lock_acquired":
            output.err.print(f"Got the migration lock after {data:.1f} s.")
        elif kind == "replan":
            output.err.print(f"Another runner applied migrations meanwhile ({safe(data)}); re-reading the database.")
        elif kind == "applied" and not as_json:
            output.print_step("Applied", "green", data.name, f"({data.duration_ms:.0f} ms)")
        elif kind == "undone" and not as_json:
            output.print_step("Undone", "yellow", data.name, f"({data.duration_ms:.0f} ms)")

    return progress
