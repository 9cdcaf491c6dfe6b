"""PgBouncer on a developer's machine: the shipped pgbouncer.ini, in front of celora's local PostgreSQL.

`celora local pgbouncer start` (or `make pgbouncer`) renders pgbouncer.ini with only what must differ on a
laptop replaced: [databases] points at the local server (any database name), it listens on 127.0.0.1, and its
files live in a private runtime folder beside the local cluster (<local dir>/pgbouncer, 0700). The pooling
settings (transaction mode, pool sizes, timeouts) are the production ones, so what works here works there.

Authentication stays SCRAM, as in production: a random password is generated once; PgBouncer's auth file
holds only its SCRAM-SHA-256 secret (salted, 4096 iterations), and the password itself is written only into
pgbouncer.env (0600) in the runtime folder, never into the repository, and is masked in everything printed.
`celora --env-file <runtime>/pgbouncer.env ...` then talks to the app's database through PgBouncer.

PgBouncer refuses to run as root, like PostgreSQL: when celora runs as root it runs as the local server's
unprivileged user.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError, ExitCode, LocalServerError
from celora_cli.local import owned_files
from celora_cli.local.server import LocalServer, free_port

DEFAULT_PORT = 6432
SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin", "/opt/homebrew/bin")
SCRAM_ITERATIONS = 4096
USER = "celora"  # the local server's role (initdb -U celora)
_START_WAIT = 15.0


@dataclass(frozen=True)
class PgBouncerStatus:
    running: bool
    pid: int | None
    port: int | None
    database_url: str | None  # the pooled URL (?pgbouncer=true); its password is masked when printed
    direct_url: str | None  # the local server itself
    admin_url: str | None  # PgBouncer's console (SHOW POOLS), for CELORA_PGBOUNCER_ADMIN_URL
    runtime_dir: str
    env_file: str
    config_file: str
    log_file: str

    @property
    def exit_code(self) -> int:
        return ExitCode.OK if self.running else ExitCode.NOT_RUNNING


def find_pgbouncer(search: tuple[str, ...] = SEARCH_PATH) -> str:
    """The pgbouncer executable on PATH or in the usual folders (Debian puts it in /usr/sbin, off a user's PATH)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path=os.pathsep.join(search))
    if found is None:
        raise LocalServerError(
            "PgBouncer is not installed (no `pgbouncer` on PATH or in " + ", ".join(search) + ").",
            "Install it: `apt-get install pgbouncer` (Debian/Ubuntu) or `brew install pgbouncer` (macOS).")
    return found


def scram_secret(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL and PgBouncer store (RFC 5802/7677): the password cannot be
    read back from it. (ASCII passwords only: no SASLprep needed, and ours come from secrets.token_urlsafe.)"""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    encode = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{encode(salt).decode()}$"
            f"{encode(stored_key).decode()}:{encode(server_key).decode()}")


def _port_free(port: int) -> bool:
    """Whether PgBouncer could listen there. SO_REUSEADDR, as PgBouncer binds: the port of a PgBouncer that just
    stopped (its connections in TIME_WAIT) is free for the next one, and a restart keeps its URL."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LocalPgBouncer:
    """PgBouncer for one local server; its files in `<server base dir>/pgbouncer`."""

    def __init__(self, server, shipped_ini: Path | None = None, *, binary: str | None = None,
                 port: int | None = None, overrides: dict[str, str] | None = None) -> None:
        self.server = server
        self.shipped_ini = Path(shipped_ini) if shipped_ini is not None else None  # needed to start only
        self._binary = binary
        self.requested_port = port
        self.overrides = overrides or {}  # extra [pgbouncer] keys (the load benchmark's max_client_conn)
        self.runtime_dir = server.base_dir / "pgbouncer"
        self.config_file = self.runtime_dir / "pgbouncer.ini"
        self.auth_file = self.runtime_dir / "userlist.txt"
        self.env_file = self.runtime_dir / "pgbouncer.env"
        self.log_file = self.runtime_dir / "pgbouncer.log"
        self.pid_file = self.runtime_dir / "pgbouncer.pid"
        self.port_file = self.runtime_dir / "port"

    @classmethod
    def from_settings(cls, settings: Settings, *, port: int | None = None) -> LocalPgBouncer:
        return cls(LocalServer.from_settings(settings), settings.project_root / "pgbouncer.ini", port=port)

    # -- queries --------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The pid of this PgBouncer when it runs (its pidfile, checked against the process's command line,
        so a recycled pid is never taken for it)."""
        try:
            pid = int(owned_files.read_text(self.pid_file).strip())
        except (OSError, ValueError):
            return None
        if not Path("/proc/self").exists():  # macOS: no /proc; the pidfile and a live process will do
            try:
                os.kill(pid, 0)
            except PermissionError:
                return pid  # alive, as PgBouncer's own user
            except OSError:
                return None
            return pid
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if str(self.config_file).encode() in cmdline else None

    @property
    def port(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(owned_files.read_text(self.port_file))
        return None

    def status(self) -> PgBouncerStatus:
        pid = self.pid
        running = pid is not None and self.port is not None and _listening(self.port)
        urls = self._urls() if running else {}
        return PgBouncerStatus(running=running, pid=pid if running else None, port=self.port,
                               database_url=urls.get("DATABASE_URL"), direct_url=urls.get("DIRECT_DATABASE_URL"),
                               admin_url=urls.get("CELORA_PGBOUNCER_ADMIN_URL"), runtime_dir=str(self.runtime_dir),
                               env_file=str(self.env_file), config_file=str(self.config_file),
                               log_file=str(self.log_file))

    # -- actions --------------------------------------------------------------------------------------
    def start(self) -> PgBouncerStatus:
        """Start the local server (if needed) and PgBouncer in front of it; a running one is left as it is."""
        binary = self._binary or find_pgbouncer()
        if self.shipped_ini is None or not self.shipped_ini.is_file():
            raise ConfigError(f"No pgbouncer.ini at {self.shipped_ini} to run PgBouncer from.",
                              "Run celora in the project (CELORA_PROJECT_ROOT) that ships pgbouncer.ini.")
        self.server.ensure_running()
        if self.pid is not None:
            return self.status()
        self._prepare_runtime_dir()
        port = self._choose_port()
        password = self._password()
        self._write_private(self.auth_file, f'"{USER}" "{scram_secret(password)}"\n', owner=self.server.run_as)
        self._write_private(self.config_file, self._render_config(port), owner=self.server.run_as)
        owned_files.write_new(self.port_file, str(port), mode=0o644)
        self._write_env_file(port, password)
        self._launch(binary, port)
        self._check_login(port, password)
        return self.status()

    def stop(self) -> bool:
        """Stop it; False when it was not running."""
        pid = self.pid
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)  # immediate shutdown: a development pooler has nothing to drain
        deadline = time.monotonic() + 10
        while self.pid is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid is not None:
            raise LocalServerError(f"PgBouncer (pid {pid}) did not stop within 10 s.",
                                   f"End it yourself: kill {pid}.")
        return True

    def destroy(self) -> bool:
        """Stop it and delete its runtime folder (with the local server's data: `celora local destroy`)."""
        stopped = self.stop()
        existed = self.runtime_dir.exists()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return stopped or existed

    # -- internals ------------------------------------------------------------------------------------
    def _urls(self, password: str | None = None) -> dict[str, str]:
        """The URLs of pgbouncer.env (read back from it when no password is given)."""
        if password is None:
            # Celora's own file (root's when root) in a folder PgBouncer's user can write to: a file planted there
            # (a link to a root-only file) would have its lines printed as URLs.
            with contextlib.suppress(OSError):
                text = owned_files.read_text(self.env_file, owner=os.geteuid())
                return dict(line.split("=", 1) for line in text.splitlines()
                            if "=" in line and not line.startswith("#"))
            return {}
        port, server_port = self.port, self.server.port
        auth = f"{USER}:{password}@127.0.0.1:{port}"
        return {"DATABASE_URL": f"postgresql://{auth}/{self.server.database}?pgbouncer=true",
                "DIRECT_DATABASE_URL": f"postgresql://{USER}@127.0.0.1:{server_port}/{self.server.database}",
                "CELORA_PGBOUNCER_ADMIN_URL": f"postgresql://{auth}/pgbouncer"}

    def _password(self) -> str:
        """The password of the previous start (a stable DATABASE_URL between restarts), else a new one."""
        from urllib.parse import urlsplit

        with contextlib.suppress(ValueError):
            password = urlsplit(self._urls().get("DATABASE_URL", "")).password
            if password:
                return password
        return secrets.token_urlsafe(24)

    def _prepare_runtime_dir(self) -> None:
        owner = None
        if self.server.run_as is not None:
            user = pwd.getpwnam(self.server.run_as)
            owner = (user.pw_uid, user.pw_gid)
        # The folder is in the local server's folder, which that user can write to: a link planted in its place
        # is refused, not chmodded or chowned through.
        owned_files.own_directory(self.runtime_dir, owner, mode=0o700, create=True)
        # Called only when this PgBouncer does not run: a pid file is stale (or planted), and PgBouncer writes its
        # own. Unlinking removes a link itself, never its target.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_file)
        if owner is not None and (self.log_file.exists() or self.log_file.is_symlink()):
            # Left by a previous run as another user. PgBouncer's user can plant links in the folder: chowned
            # through a descriptor, a link replaced by a new log (owned_files), never followed.
            owned_files.own_file(self.log_file, owner)

    @staticmethod
    def _write_private(path: Path, text: str, *, owner: str | None) -> None:
        """0600 from the first byte (no moment where another user could read it), owned by PgBouncer's user; a
        new file, never written through a link planted in the runtime folder (owned_files.write_new)."""
        user = pwd.getpwnam(owner) if owner is not None else None
        owned_files.write_new(path, text, mode=0o600, owner=(user.pw_uid, user.pw_gid) if user else None)

    def _write_env_file(self, port: int, password: str) -> None:
        lines = ["# Written by `celora local pgbouncer start`: the local PostgreSQL through PgBouncer (from",
                 "# pgbouncer.ini). The password exists only here; PgBouncer's userlist.txt holds its SCRAM secret.",
                 "# Use: celora --env-file <this file> db health   (or: set -a; . <this file>; set +a)"]
        lines += [f"{name}={value}" for name, value in self._urls(password).items()]
        self._write_private(self.env_file, "\n".join(lines) + "\n", owner=None)

    def _choose_port(self) -> int:
        if self.requested_port:
            if not _port_free(self.requested_port):
                raise LocalServerError(f"Port {self.requested_port} is already in use on 127.0.0.1.",
                                       "Stop whatever listens there, or choose another --port.")
            return self.requested_port
        for candidate in (self.port, DEFAULT_PORT):
            if candidate and _port_free(candidate):
                return candidate
        return free_port()

    def _render_config(self, port: int) -> str:
        """The shipped file with only the machine-specific keys replaced."""
        assert self.shipped_ini is not None  # start() checked it
        config = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"))
        config.read(self.shipped_ini)
        config["databases"] = {"*": f"host=127.0.0.1 port={self.server.port}"}
        config["pgbouncer"].update({
            "listen_addr": "127.0.0.1", "listen_port": str(port), "unix_socket_dir": "",
            "auth_file": str(self.auth_file), "logfile": str(self.log_file), "pidfile": str(self.pid_file),
            # The console for `SHOW POOLS` (CELORA_PGBOUNCER_ADMIN_URL): the local role, not production's users.
            "admin_users": USER, "stats_users": USER,
            "server_tls_sslmode": "disable",  # the local server has no TLS; production keeps `prefer`
            **self.overrides,
        })
        header = (f"; Generated by celora from {self.shipped_ini}: only [databases], addresses, files and users "
                  "differ.\n")
        from io import StringIO

        text = StringIO()
        config.write(text)
        return header + text.getvalue()

    def _launch(self, binary: str, port: int) -> None:
        kwargs: dict = {}
        if self.server.run_as is not None:  # PgBouncer refuses root
            user = pwd.getpwnam(self.server.run_as)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.runtime_dir)}
        try:
            result = subprocess.run([binary, "-d", str(self.config_file)], capture_output=True, text=True, env=env,
                                    cwd=self.runtime_dir, timeout=30, stdin=subprocess.DEVNULL, **kwargs)
        except (OSError, subprocess.SubprocessError) as exc:
            raise LocalServerError(f"Could not run {binary}: {exc}", "Check the PgBouncer installation.") from exc
        deadline = time.monotonic() + _START_WAIT
        while result.returncode == 0 and time.monotonic() < deadline:
            if self.pid is not None and _listening(port):
                return
            time.sleep(0.05)
        raise LocalServerError(
            f"PgBouncer did not start on 127.0.0.1:{port} (exit {result.returncode}): "
            f"{(result.stderr or '').strip()[-400:]} {self._log_tail()}".strip(),
            f"Read {self.log_file} and {self.config_file}.")

    def _check_login(self, port: int, password: str) -> None:
        """One query through it, with the password: what the printed URL promises works."""
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=USER, password=password,
                                 dbname=self.server.database, connect_timeout=10, prepare_threshold=None) as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            raise LocalServerError(f"PgBouncer started on 127.0.0.1:{port}, but a login through it failed: {exc}",
                                   f"Read {self.log_file}.") from exc

    def _log_tail(self, lines: int = 3) -> str:
        with contextlib.suppress(OSError):  # shown in an error: never read through a planted link
            return " ".join(owned_files.read_text(self.log_file).strip().splitlines()[-lines:])
        return ""
