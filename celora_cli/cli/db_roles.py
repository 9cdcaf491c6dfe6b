"""`celora db roles`: make (--apply), show (--dry-run) or check (--check, the default) the least-privilege role
model. The core is celora_cli.ops.roles (imported inside the command, so `celora --help` stays light)."""

from __future__ import annotations

import typer

from celora_cli.cli import output
from celora_cli.cli.app import json_option, load_settings_from
from celora_cli.cli.db_group import app
from celora_cli.cli.output import safe
from celora_cli.errors import UsageError


def _logins_option(group: str, what: str):
    return typer.Option([], f"--grant-{group}", metavar="LOGIN", help=f"Make login role LOGIN a member of the "
                        f"{group} group ({what}); repeat for several. The login role must exist.")


@app.command("roles")
def roles(
    ctx: typer.Context,
    apply: bool = typer.Option(False, "--apply", help="Create or update the group roles, ownership, grants and "
                               "default privileges (one transaction; idempotent)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the SQL --apply would run; change nothing."),
    check: bool = typer.Option(False, "--check", help="Compare the live roles and grants with the model (the "
                               "default): exit 0 when they match, 31 naming each difference."),
    grant_migrator: list[str] = _logins_option("migrator", "runs migrate-deploy: DIRECT_DATABASE_URL's role"),
    grant_app: list[str] = _logins_option("app", "the application: DATABASE_URL's role"),
    grant_readonly: list[str] = _logins_option("readonly", "studio --read-only, reporting, replicas"),
    grant_cdc: list[str] = _logins_option("cdc", "Debezium / db changes; also gets REPLICATION"),
    as_json: bool = json_option(),
) -> None:
    """Create or check the least-privilege roles and grants.

    Least-privilege roles: celora_migrator owns the schema, celora_app reads and writes the app tables only,
    celora_readonly reads, celora_cdc streams changes (names: CELORA_ROLE_*).

    Works through DIRECT_DATABASE_URL; needs CREATEROLE and the schema's ownership, not superuser (README:
    `celora db roles`). Never handles a password. Exit 31 (--check) when the live grants differ.
    Example: celora db roles --apply --grant-migrator deploy --grant-app app_login
    """
    from celora_cli.ops.roles import Logins, apply_roles, plan_roles

    if sum((apply, dry_run, check)) > 1:
        raise UsageError("--apply, --dry-run and --check exclude each other.",
                         "Pick one: --dry-run to see the SQL, --apply to run it, --check (the default) to compare.")
    settings = load_settings_from(ctx)
    logins = Logins(tuple(grant_migrator), tuple(grant_app), tuple(grant_readonly), tuple(grant_cdc))
    if apply:
        output.emit(apply_roles(settings, logins), as_json)
        return
    plan = plan_roles(settings, logins)
    for warning in plan.warnings:
        output.err.print(f"Warning: {safe(warning)}")
    if dry_run and not as_json:  # the SQL, not the comparison: another view of the plan, printed here
        for statement in plan.statements:
            output.out.print(f"{safe(statement.sql)};")
        if not plan.statements:
            output.out.print(f"-- nothing to change: the roles on {safe(plan.database)} match the model")
        return
    output.emit(plan, as_json, exit_code=not dry_run)  # --dry-run only shows the plan; it reports no verdict


@output.renders("celora_cli.ops.roles.RolesResult")
def render_applied(result) -> None:
    for statement in result.plan.statements:
        output.print_step("Applied", "green", statement.sql, "")
    if not result.plan.statements:
        output.out.print(f"Nothing to change: the roles on {safe(result.after.database)} match the model.")
    _render_differences(result.after)


@output.renders("celora_cli.ops.roles.RolesPlan")
def render_plan(plan) -> None:
    _render_differences(plan)
    if plan.matches:
        output.out.print(f"[green]The roles and grants on {safe(plan.database)} (schema {safe(plan.schema)}) "
                         "match the model.[/]")


def _render_differences(plan) -> None:
    for difference in plan.differences:
        output.out.print(f"[red]{safe(difference.change.capitalize())}[/] {safe(difference.kind)}: "
                         f"{safe(difference.subject)}: {safe(difference.detail)}")
    if plan.differences:
        output.err.print(f"{len(plan.differences)} difference(s) from the role model; `celora db roles --dry-run` "
                         "prints the SQL that fixes them, `--apply` runs it.")
