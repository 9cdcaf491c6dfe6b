"""Flags several `celora db` commands share, each defined once (the root's own options live in cli/app.py)."""

from __future__ import annotations

import typer


def lock_timeout_option():
    """--lock-timeout of every command that takes the migration lock."""
    return typer.Option(None, "--lock-timeout", metavar="SECONDS", help="Seconds to wait for another runner's "
                        "migration lock (0 to 86400; default CELORA_LOCK_TIMEOUT or 60).")


def seconds_flag(value: float | None, flag: str, limits: tuple[float, float]) -> float | None:
    """A seconds flag through the one validator settings uses for its environment (exit 3, naming the flag)."""
    from celora_cli.config.settings import validate_seconds

    return None if value is None else validate_seconds(value, flag, minimum=limits[0], maximum=limits[1])
