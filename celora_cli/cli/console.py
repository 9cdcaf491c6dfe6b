"""The one place output is made: stdout for results, stderr for errors and progress.

Rich disables colour by itself when NO_COLOR is set or the stream is not a terminal. Every text that can
hold a database value or an error goes through `safe()` (Rich markup escaped, passwords masked).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from celora_cli.settings import redact

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_secrets: list[str] = []


def register_secrets(secrets: list[str]) -> None:
    """Passwords from the active settings: masked in everything this module prints."""
    _secrets.extend(s for s in secrets if s and s not in _secrets)


def safe(value: Any) -> str:
    return escape(redact(str(value), _secrets))


def print_json(data: Any) -> None:
    text = json.dumps(data, indent=2, default=str, sort_keys=False)
    out.print(redact(text, _secrets), markup=False, highlight=False, soft_wrap=True)


def error(message: str, hint: str | None = None) -> None:
    err.print(f"[bold red]Error:[/] {safe(message)}")
    if hint:
        err.print(f"[yellow]Hint:[/] {safe(hint)}")
