"""Where the project is, and reading its dotenv files (strictly: a line that does not parse is an error)."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

from celora_cli.errors import ConfigError


def find_project_root(start: Path | None = None) -> Path:
    """Nearest directory (from cwd up) that is a celora project; else cwd.

    A celora project has `migrations/env.py`, a `[tool.celora]` table in pyproject.toml, or a local server's
    `.celora/server.json`. Any pyproject.toml or .env is not enough: a command run in some other project
    must not read that project's .env nor create a cluster in it.
    """
    start = (start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if _is_celora_project(directory):
            return directory
    return start


def _is_celora_project(directory: Path) -> bool:
    try:
        if (directory / "migrations" / "env.py").is_file() or (directory / ".celora" / "server.json").is_file():
            return True
        return (directory / "pyproject.toml").is_file() and _has_celora_table(directory / "pyproject.toml")
    except OSError:  # an unreadable folder on the way up is not ours
        return False


def _has_celora_table(pyproject: Path) -> bool:
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # a broken pyproject.toml is its own tool's problem, not a reason to fail here
    tool = data.get("tool")
    return isinstance(tool, dict) and isinstance(tool.get("celora"), dict)


_KEY_OF_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=")


def read_env_file(path: Path, environ: Mapping[str, str], what: str) -> dict[str, str]:
    """KEY=value pairs of a dotenv file, parsed by python-dotenv; a file it cannot read fully is an error.

    python-dotenv itself only warns about a line it cannot parse and skips it: a DATABASE_URL with an
    unterminated quote would be dropped and the command would go on against the environment's database.
    `${VAR}` references resolve against `environ` and the file's earlier keys, as python-dotenv does.
    """
    from dotenv.parser import parse_stream
    from dotenv.variables import parse_variables

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}.",
                          "Check the file's permissions, or pass another --env-file.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}).",
                          f"Save {path.name} as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(_unparsable_line(path, what, binding.original.string, binding.original.line),
                              "Write each setting as KEY=value on its own line; close every quote "
                              "(KEY=\"value\"); start comments with #.")
        if binding.key is None or binding.value is None:
            continue
        scope = {**environ, **values}
        values[binding.key] = "".join(atom.resolve(scope) for atom in parse_variables(binding.value))
    return values


def _unparsable_line(path: Path, what: str, original: str, line: int) -> str:
    """Names the file, the line and the key, never the value (it may be a password)."""
    leading = original[:len(original) - len(original.lstrip())]
    line += leading.count("\n")  # python-dotenv's line is where the blank lines before the statement start
    key = _KEY_OF_LINE.match(original)
    which = f" (the value of {key.group(1)})" if key else ""
    return (f"{what} {path} line {line}{which} cannot be parsed: an unterminated quote, or a line that is not "
            "KEY=value. celora stops rather than skip it.")


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a folder on the way we may not search: reading the file will say why
        return True
