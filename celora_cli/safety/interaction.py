"""Can celora ask the person running it? The one answer to "is this CI?" and "may we prompt?", used by the guard
and by every command that asks for a confirmation or a name. Nothing ever waits for input in CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping


def ci_is_set(environ: Mapping[str, str] | None = None) -> bool:
    """CI set to anything but empty, 0, false or no (any case): CI=false is how a pipeline says it is not one."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")


def is_interactive() -> bool:
    """A command may prompt only when stdin is a terminal and no CI variable is set."""
    try:
        terminal = sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # stdin closed
        terminal = False
    return terminal and not ci_is_set()
