"""The `celora db` command group: its Typer app, which module defines each command, and the help panels.

Named `db_group`, not `db`, so it cannot be mistaken for `celora_cli.db` (the connection layer); every command
lives in its own module, named after it (`db migrate-deploy` in cli/db_migrate_deploy.py)."""

from __future__ import annotations

import typer

from celora_cli.cli.app import CeloraGroup
from celora_cli.cli.lazy import LazyCommandGroup


class _DbCommands(LazyCommandGroup):
    # Every `celora db` command and the module that defines it, in the order `celora db --help` lists them. A
    # command's module is imported only when that command runs (celora_cli/cli/lazy.py); each imports its core
    # modules inside its functions, so `celora --help` stays light. A new command module adds its commands here
    # (tests/cli/test_lazy_commands.py checks this table against the modules).
    command_modules = {
        "migrate": "celora_cli.cli.db_migrate",
        "migrate-deploy": "celora_cli.cli.db_migrate_deploy",
        "status": "celora_cli.cli.db_status",
        "lint": "celora_cli.cli.db_lint",
        "generate": "celora_cli.cli.db_generate",
        "push": "celora_cli.cli.db_push",
        "resolve": "celora_cli.cli.db_resolve",
        "baseline": "celora_cli.cli.db_baseline",
        "diff": "celora_cli.cli.db_diff",
        "rollback": "celora_cli.cli.db_rollback",
        "squash": "celora_cli.cli.db_squash",
        "reset": "celora_cli.cli.db_reset",
        "snapshots": "celora_cli.cli.db_snapshots",
        "seed": "celora_cli.cli.db_seed",
        "studio": "celora_cli.cli.db_studio",
        "audit": "celora_cli.cli.db_audit",
        "changes": "celora_cli.cli.db_changes",
        "health": "celora_cli.cli.db_health",
        "metrics": "celora_cli.cli.db_metrics",
        "backup": "celora_cli.cli.db_backup",
        "restore": "celora_cli.cli.db_restore",
        "roles": "celora_cli.cli.db_roles",
    }
    # `celora db --help` lists the commands in these panels (tests/cli/test_help_listing.py checks that
    # every command is in exactly one).
    panels = {
        "Migrations": ("migrate", "migrate-deploy", "status", "lint", "generate", "push", "resolve", "baseline",
                       "diff", "rollback", "reset", "squash", "snapshots"),
        "Data": ("seed", "studio", "audit", "changes"),
        "Operations": ("health", "metrics", "backup", "restore", "roles"),
    }


app = typer.Typer(cls=_DbCommands, no_args_is_help=True, help=CeloraGroup.summaries["db"])
_DbCommands.typer_app = app


def _register_on_root() -> None:
    from celora_cli.cli.app import app as root

    root.add_typer(app, name="db")


_register_on_root()
