"""`celora db audit`: a row's or a table's history from the audit log, newest first; `--prune-older-than DAYS`
deletes old entries in batches after the destructive-action guard. The core is celora_cli.data.audit (imported inside
the command, so `celora --help` stays light)."""

from __future__ import annotations

import json
from typing import Any

import typer

from celora_cli.cli import output
from celora_cli.cli.app import allow_production_option, confirmation, force_option, json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe

_SHOWN_CHARS = 80


@app.command("audit")
def audit(
    ctx: typer.Context,
    table: str | None = typer.Option(None, "--table", metavar="T", help="Only changes to table T (e.g. wallets)."),
    row_id: str | None = typer.Option(None, "--id", metavar="ID", help="Only the row whose primary key id is ID."),
    since: str | None = typer.Option(None, "--since", metavar="TIME", help="Only changes at or after TIME: an ISO "
                                     "date/time (UTC unless it says) or a duration back from now (30m, 12h, 7d)."),
    actor: str | None = typer.Option(None, "--actor", metavar="A", help="Only changes made by actor A (celora.actor, "
                                     "else application_name, else the database role)."),
    limit: int = typer.Option(50, "--limit", metavar="N", min=1, max=10_000, help="At most N entries (1 to 10,000)."),
    prune_older_than: float | None = typer.Option(
        None, "--prune-older-than", metavar="DAYS", min=0, max=36_500,
        help="Instead of showing: delete entries older than DAYS days, 5,000 rows per transaction. Asks first."),
    seal: bool = typer.Option(False, "--seal", help="Instead of showing: append a link to the tamper-evidence chain "
                              "(a hash over the entries since the last seal) and print its hash. As the migration "
                              "role (DIRECT_DATABASE_URL)."),
    verify: bool = typer.Option(False, "--verify", help="Instead of showing: recompute every seal; exit 17 naming the "
                                "first entry changed, removed or inserted since it was sealed."),
    force: bool = force_option("With --prune-older-than: no confirmation prompt"),
    allow_production: bool = allow_production_option("With --prune-older-than: allow it on a PRODUCTION database"),
    as_json: bool = json_option(),
) -> None:
    """Who changed what and when, from the audit log.

    Who changed what and when: the audit log the database keeps, newest first, old -> new per column.

    Example: celora db audit --table wallets --id 5f0c2a4e-... ; retention: celora db audit --prune-older-than 90
    """
    settings = load_settings_from(ctx)
    if sum((seal, verify, prune_older_than is not None)) > 1:
        from celora_cli.errors import UsageError

        raise UsageError("--seal, --verify and --prune-older-than exclude each other.", "Run them one at a time.")
    if seal or verify:
        _seal_or_verify(settings, seal=seal, as_json=as_json)
        return
    if prune_older_than is not None:
        _prune(settings, prune_older_than, force=force, allow_production=allow_production, as_json=as_json)
        return
    from celora_cli.data.audit import history

    output.emit(history(settings, table=table, row_id=row_id, since=since, actor=actor, limit=limit), as_json)


def _seal_or_verify(settings, *, seal: bool, as_json: bool) -> None:
    from celora_cli.data import audit_seal

    # verify raises AuditTampered (exit 17) on any problem
    output.emit(audit_seal.seal(settings) if seal else audit_seal.verify(settings), as_json)


@output.renders("celora_cli.data.audit_seal.SealResult")
def render_seal(sealed) -> None:
    if sealed.seal_id is None:
        output.out.print(f"Nothing new to seal on {safe(sealed.database)} (sealed through entry "
                         f"{sealed.last_id}).")
        return
    output.out.print(f"Sealed audit entries {sealed.after_id + 1}..{sealed.last_id} ({sealed.entries} "
                     f"entr{'y' if sealed.entries == 1 else 'ies'}) as seal #{sealed.seal_id} on "
                     f"{safe(sealed.database)}.\nHash: {sealed.hash}")
    output.err.print("Record this hash outside the database (a CI log, a ticket): the owner of the log "
                     "could rewrite the chain too.")


@output.renders("celora_cli.data.audit_seal.VerifyResult")
def render_verify(verified) -> None:
    output.out.print(f"[green]The audit log matches its {verified.seals} seal(s)[/]: {verified.entries} sealed "
                     f"entr{'y' if verified.entries == 1 else 'ies'} unchanged, {verified.unsealed} after the last "
                     f"seal, on {safe(verified.database)}." + (f"\nLast hash: {verified.last_hash}"
                                                              if verified.last_hash else ""))


def _prune(settings, days: float, *, force: bool, allow_production: bool, as_json: bool) -> None:
    from celora_cli.data.audit import prune

    confirm = confirmation(f"delete audit log entries older than {days:g} day(s)",
                           f"celora db audit --prune-older-than {days:g}", settings, force=force,
                           allow_production=allow_production)

    output.emit(prune(settings, older_than_days=days, confirm=confirm), as_json)


@output.renders("celora_cli.data.audit.PruneResult")
def render_prune(result) -> None:
    output.out.print(f"Deleted {result.deleted} audit log entr{'y' if result.deleted == 1 else 'ies'} changed before "
                     f"{safe(result.cutoff.isoformat(timespec='seconds'))} in {result.batches} batch(es) on "
                     f"{safe(result.database)}.")


@output.renders("celora_cli.data.audit.AuditResult")
def _render(result) -> None:
    if not result.entries:
        shown = ", ".join(f"{k}={v}" for k, v in result.filters.items() if v) or "no filter"
        output.out.print(f"No audit log entries ({safe(shown)}) on {safe(result.database)}.")
        return
    for entry in result.entries:
        key = ", ".join(f"{k}={v}" for k, v in entry.key.items())
        output.out.print(f"[bold]{safe(entry.changed_at.isoformat(sep=' ', timespec='seconds'))}[/]  "
                         f"{safe(entry.operation)} {safe(entry.table)} {safe(key)}  by {safe(entry.actor)}"
                         f" (role {safe(entry.db_role)}, tx {entry.transaction_id})")
        for column, old, new in entry.changes():
            if entry.operation == "UPDATE":
                output.out.print(f"    {safe(column)}: {safe(_shown(old))} -> {safe(_shown(new))}")
            else:
                output.out.print(f"    {safe(column)}: {safe(_shown(new if entry.operation == 'INSERT' else old))}")
    if result.truncated:
        output.out.print(f"(the newest {result.limit}; older entries exist: use --limit, --since or filters)")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
