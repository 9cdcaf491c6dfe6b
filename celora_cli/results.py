"""How a result object becomes JSON, in one place (README "JSON output").

A command's result is a dataclass. Its JSON form is its fields, recursively, unless the class says otherwise:
a class whose JSON shape differs from its fields (a derived property added, a datetime as ISO text, a field
left out) defines `to_json()` returning a dict, and that method is used wherever the object appears, at the top
or nested in another result. A result that is a non-success state (pending migrations, stale artifacts, a server
that is not running) has an `exit_code` property; `celora_cli.cli.output.emit` exits with it after printing.

This module is the core's side of the output contract (it imports nothing of celora), so the domain packages
use it without reaching into `celora_cli.cli`.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def to_json(value: Any) -> Any:
    """`value` as JSON-able data: a class's own `to_json()`, else a dataclass's fields, recursively, through
    lists, tuples and dicts. Anything else is returned as is (json.dumps' `default=str` handles paths, times)."""
    custom = getattr(value, "to_json", None)
    if callable(custom) and not isinstance(value, type):
        return custom()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


def fields_json(value: Any) -> dict[str, Any]:
    """A dataclass's fields as JSON-able data, for a `to_json()` that adds to or changes them."""
    return {field.name: to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}
