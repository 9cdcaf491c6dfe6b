"""The one place output is made: stdout for results, stderr for errors, notices and progress.

Rich disables colour by itself when NO_COLOR is set or the stream is not a terminal. Every text that can
hold a database value or an error goes through `safe()` (Rich markup escaped, passwords masked).

`--json` output (README "JSON output"): stdout holds exactly one object,
`{"format_version": 1, "ok": true, ...result}` or `{"format_version": 1, "ok": false, "error": {...}}`.

A command shows its result with `emit(result, as_json)`: the JSON form (celora_cli.results.to_json) in the
envelope, or the human renderer registered for the result's type (`@renders(...)`), then the result's own
exit code when it is a non-success state. A stream (`db changes`, `db health --watch --json`) writes
`json_line()`s instead: one compact object per line, masked the same way.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

from celora_cli.errors import CeloraError, ExitCode, OutputError

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


def print_json(result: Any) -> None:
    """A command's result (a result object or a dict) as the one JSON object on stdout (success)."""
    _write_json(_envelope(result))


def _envelope(result: Any) -> dict:
    from celora_cli.results import to_json  # on first use: `celora --help` emits nothing

    return {"format_version": JSON_FORMAT_VERSION, "ok": True, **to_json(result)}


# Human renderers, by the result class's dotted path ("celora_cli.migrate.deploy.DeployResult"): a command module
# registers the renderer of its results when it is imported, without importing the core module that defines
# the class (command modules import the core inside their functions, so `celora --help` stays light).
_renderers: dict[str, Callable[[Any], None]] = {}


def renders(result_class: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register the one human renderer of the results of `result_class` (its dotted path)."""

    def register(renderer: Callable[[Any], None]) -> Callable[[Any], None]:
        if _renderers.get(result_class, renderer) is not renderer:
            raise RuntimeError(f"{result_class} already has a renderer")  # one renderer per result type
        _renderers[result_class] = renderer
        return renderer

    return register


def renderer_for(result: Any) -> Callable[[Any], None]:
    for cls in type(result).__mro__:
        renderer = _renderers.get(f"{cls.__module__}.{cls.__qualname__}")
        if renderer is not None:
            return renderer
    raise LookupError(f"no renderer registered for {type(result).__module__}.{type(result).__qualname__}")


def registered_renderers() -> dict[str, Callable[[Any], None]]:
    return dict(_renderers)


def emit(result: Any, as_json: bool, *, exit_code: bool = True) -> None:
    """Show a command's result: the JSON envelope, or its registered human renderer. Then, unless `exit_code`
    is False (a view of the result that is not its verdict, such as `db roles --dry-run`), exit with the
    result's `exit_code` when it has one that is not 0 (pending, degraded, stale, not running...)."""
    if as_json:
        print_json(result)
    else:
        renderer_for(result)(result)
    code = int(getattr(result, "exit_code", ExitCode.OK)) if exit_code else 0
    if code:
        import typer

        raise typer.Exit(code)


def json_line(data: Any, *, envelope: bool = True) -> None:
    """One object of a JSON-lines stream on stdout, compact, masked like every other output. With `envelope`
    (a stream of results, `db health --watch --json`) it is the --json contract's object, rounded; without
    (`db changes`, whose lines are database rows for a consumer) the data is written as is, never rounded."""
    from celora_cli.results import to_json

    body = _envelope(data) if envelope else to_json(data)
    text = json.dumps(rounded(body) if envelope else body, default=str, separators=(",", ":") if envelope else None)
    try:
        out.file.write(_redact(text) + "\n")
    except OSError as exc:
        raise output_error(exc) from exc


def encoded_json_lines(lines: list[str]) -> None:
    """Lines already encoded as JSON (`db changes`' rows: no envelope), masked in one pass and written at once:
    the same text json_line writes for each, at a fraction of the cost per line on a stream of millions.

    Written to the file descriptor with os.write, partial writes resumed here: a large write through Python's
    buffered stdout that a signal interrupts while the pipe is full can drop bytes from the middle (seen with
    Ctrl-C on a follower whose reader paused), and a stream's line must arrive whole or not at all."""
    if not lines:
        return
    from celora_cli.config.settings import redact

    # Masked line by line, and only the lines that can hold a URL or a key=value secret: the same result as
    # masking the whole text (a URL and a parameter end at whitespace), without running the parameter scan over
    # every row of a million-row transaction. The known secrets are replaced everywhere.
    text = "\n".join(redact(line) if "=" in line or "://" in line else line for line in lines)
    for secret in _secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "****")
    data = (text + "\n").encode()
    try:
        fd = out.file.fileno()
    except (OSError, ValueError, AttributeError):  # an in-memory stdout (tests): no descriptor to write to
        fd = None
    try:
        if fd is None:
            out.file.write(data.decode())
            return
        out.file.flush()  # whatever went through the buffered stream first stays first
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise output_error(exc) from exc


def flush() -> None:
    """Flush stdout, so a reader of a pipe sees each line of a stream as it is written."""
    try:
        out.file.flush()
    except OSError as exc:
        raise output_error(exc) from exc


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
