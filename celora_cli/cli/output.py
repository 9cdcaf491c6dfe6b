"""The one place output is made: stdout for results, stderr for errors, notices and progress.

Rich disables colour by itself when NO_COLOR is set or the stream is not a terminal. Every text that can
hold a database value or an error goes through `safe()` (Rich markup escaped, passwords masked).

`--json` output (README "JSON output"): stdout holds exactly one object,
`{"format_version": 1, "ok": true, ...result}` or `{"format_version": 1, "ok": false, "error": {...}}`.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from celora_cli.errors import CeloraError, OutputError

JSON_FORMAT_VERSION = 1


def _redact(text: str) -> str:
    # Imported on first use: `celora --help` should not pay for URL parsing it never does.
    from celora_cli.config.settings import redact

    return redact(text, _secrets)


class _ResultConsole(Console):
    """stdout: a write that fails (a closed pipe, a full disk) becomes OutputError (exit 74), never a traceback."""

    def print(self, *args, **kwargs) -> None:
        try:
            super().print(*args, **kwargs)
        except OSError as exc:
            raise output_error(exc) from exc

    def on_broken_pipe(self) -> None:  # Rich's default exits 1 on its own
        raise output_error(BrokenPipeError(errno.EPIPE, "Broken pipe"))


out = _ResultConsole(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

_secrets: list[str] = []


def register_secrets(secrets: list[str]) -> None:
    """Passwords from the active settings: masked in everything this module prints."""
    _secrets.extend(s for s in secrets if s and s not in _secrets)


def safe(value: Any) -> str:
    return escape(_redact(str(value)))


def print_step(label: str, style: str, text: str, detail: str = "") -> None:
    """One progress line on stdout, e.g. "Applied 20261126090000_init (12 ms)": `label` in `style`, `detail`
    dimmed, `text` taken literally (masked, never read as markup).

    A deploy prints one per migration, and Rich's markup parsing and rendering costs about 0.2 ms a line:
    when stdout is not a terminal (CI, a pipe, a file), where Rich would print no colour anyway, the line is
    written as plain text."""
    text = _redact(text)
    if out.is_terminal:
        out.print(f"[{style}]{escape(label)}[/] {escape(text)}" + (f" [dim]{escape(detail)}[/]" if detail else ""))
        return
    line = f"{label} {text}" + (f" {detail}" if detail else "")
    try:
        out.file.write(line + "\n")
    except OSError as exc:
        raise output_error(exc) from exc


def output_error(exc: OSError) -> OutputError:
    """A failed write to celora's own stdout (only writes to stdout may call this)."""
    reason = exc.strerror or str(exc)
    return OutputError(f"celora could not write its output: {reason} (is stdout a closed pipe or a full disk?).",
                       stdout_gone=True)


def print_json(data: dict) -> None:
    """A command's result as the one JSON object on stdout (success)."""
    _write_json({"format_version": JSON_FORMAT_VERSION, "ok": True, **data})


def print_json_error(error: CeloraError, **fields: Any) -> None:
    """A failure as the one JSON object on stdout; `fields` join the top level (e.g. health's status)."""
    body = {"code": int(error.exit_code), "type": type(error).__name__, "message": error.message,
            "hint": error.hint, **error.details()}
    _write_json({"format_version": JSON_FORMAT_VERSION, "ok": False, **fields, "error": body})


def _write_json(data: dict) -> None:
    text = json.dumps(rounded(data), indent=2, default=str)
    out.print(_redact(text), markup=False, highlight=False, soft_wrap=True)


def rounded(value: Any, key: str = "") -> Any:
    """Durations in milliseconds to 0.1 ms (`*_ms`), every other float (seconds, ratios) to 0.001."""
    if isinstance(value, dict):
        return {k: rounded(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, key) for v in value]
    if isinstance(value, float):
        return round(value, 1 if key.endswith("_ms") else 3)
    return value


def error(message: str, hint: str | None = None) -> None:
    err.print(f"[bold red]Error:[/] {safe(message)}")
    if hint:
        err.print(f"[yellow]Hint:[/] {safe(hint)}")


def notice(message: str) -> None:
    err.print(safe(message))


def confirm(question: str) -> bool:
    """A yes/no question on stderr (stdout stays for the result and --json); the default, and Ctrl-D, are no.
    Its last line is the prompt; the lines before it are context (what will change, what will be lost)."""
    from rich.prompt import Confirm

    *context, last = question.split("\n")
    for line in context:
        err.print(safe(line))
    try:
        return Confirm.ask(safe(last), console=err, default=False)
    except EOFError:
        err.print()
        return False


class _NoticeHandler(logging.Handler):
    """`celora.notice` records (the core announcing what it does unasked) as plain lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            notice(record.getMessage())
        except OSError:  # stderr is gone; the command itself must not fail for a notice
            pass


class StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is now (the tests swap it per invocation)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_notices() -> None:
    """Wire the `celora.notice` logger to stderr (once per process)."""
    logger = logging.getLogger("celora.notice")
    if not any(isinstance(h, _NoticeHandler) for h in logger.handlers):
        logger.addHandler(_NoticeHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
