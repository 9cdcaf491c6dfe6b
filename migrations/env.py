"""Alembic environment for the Celora schema.

Thin on purpose: celora_cli.migrate.runtime.run_env is the one migration runtime, shared with
`celora db migrate-deploy`. celora hands over its own direct connection in config.attributes["connection"]
(an Engine works too, as pytest-alembic passes one). Run by hand from the project root (`alembic upgrade
head`, configured by [tool.alembic] in pyproject.toml) it uses celora's settings: the direct URL, never
PgBouncer, no app statement timeout, the same migration lock and the same timestamped file names.
"""

from __future__ import annotations

from alembic import context

from celora_cli.db.models import Base
from celora_cli.migrate.runtime import run_env

target_metadata = Base.metadata


def show_notices() -> None:
    """A hand-run `alembic` shows celora's notices (the lock wait, a baseline recorded) on stderr as `celora` does."""
    # Imported here: only a hand run needs the CLI's handler (and Rich); celora's own runs, which also execute
    # this file, have theirs already or none (a library caller).
    from celora_cli.cli.output import show_notices as cli_show_notices

    cli_show_notices()


run_env(context, target_metadata, show_notices=show_notices)
