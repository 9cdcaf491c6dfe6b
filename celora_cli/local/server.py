"""A PostgreSQL server that celora manages itself, under `.celora/` in the project.

Used when no DATABASE_URL is configured anywhere (like `rails db:setup` on a laptop), and by the test suite
for its throwaway clusters. The PostgreSQL it runs on, and which one wins, is local/binaries.py's job.

PostgreSQL refuses to run as root, so when celora runs as root the server runs as an unprivileged OS user
(local/run_as.py). The server listens on 127.0.0.1 only, with trust auth:
it is a development database, reachable only from this machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from celora_cli.errors import ConfigError, ExitCode, LocalServerError
from celora_cli.local import owned_files
from celora_cli.local.binaries import PgBinaries, copy_installation, find_pg_binaries, version_key
from celora_cli.local.run_as import blocked_ancestor, check_pg_user, check_traversable, default_run_as, os_user

DEFAULT_DATABASE = "celora"
DEFAULT_USER = "celora"
FALLBACK_PARENT = Path("/var/tmp")  # survives reboots, unlike /tmp


@dataclass(frozen=True)
class LocalServerStatus:
    running: bool
    initialised: bool
    url: str | None
    port: int | None
    data_dir: Path
    log_file: Path
    bin_dir: Path | None  # the binaries in use (a copy next to the cluster when the wheel is root-only)
    version: str | None  # the cluster's PostgreSQL major version (its PG_VERSION file)
    run_as: str | None
    binaries_version: str | None = None  # `pg_ctl --version` of bin_dir, e.g. "18.6"
    binaries_source: str | None = None  # CELORA_PG_BIN, PATH, pg_config, system, embedded wheel (+ detail)
    binaries_error: str | None = None  # why no binaries could be used, when none could

    @property
    def exit_code(self) -> int:
        return ExitCode.OK if self.running else ExitCode.NOT_RUNNING


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LocalServer:
    """One PostgreSQL cluster in `base_dir`: pgdata/, postgres.log, server.json (its port)."""

    # `celora db changes` (logical decoding) works on the local server out of the box: wal_level can only
    # change with a restart, so it is set at every start. A subclass may lower it (tests of the refusal).
    wal_level = "logical"

    def __init__(self, base_dir: Path, *, bin_dir: Path | None = None, run_as: str | None = None,
                 port: int | None = None, database: str = DEFAULT_DATABASE, fast: bool = False) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.data_dir = self.base_dir / "pgdata"
        self.log_file = self.base_dir / "postgres.log"
        self.state_file = self.base_dir / "server.json"
        self._explicit_bin = bin_dir
        self._binaries: PgBinaries | None = None
        self.run_as = run_as if run_as is not None else default_run_as()
        self.requested_port = port
        self.database = database
        self.fast = fast  # tests: no fsync; never for a developer's data

    @classmethod
    def from_settings(cls, settings) -> LocalServer:
        """The server these settings use. Validates CELORA_PG_USER and CELORA_LOCAL_DIR (ConfigError), and
        creates nothing: a command must be able to fail on its own checks before a cluster appears."""
        base = settings.local_server_dir
        cls._check_base_dir(base, "CELORA_LOCAL_DIR" if settings.local_dir is not None else None)
        if settings.local_pg_user is not None:
            check_pg_user(settings.local_pg_user)
        run_as = settings.local_pg_user or default_run_as()
        if settings.local_dir is None and run_as is not None and blocked_ancestor(base, run_as) is not None:
            # Root with the project in a private folder (/root/..., a 0700 mktemp): the server user cannot
            # reach <project>/.celora, so keep the cluster in a per-project folder it can reach.
            base = cls._fallback_dir(base)
        return cls(base, bin_dir=settings.local_pg_bin, run_as=run_as, port=settings.local_port)

    @classmethod
    def all_for(cls, settings) -> list[LocalServer]:
        """Every place this project's cluster may live, whether or not it exists: the one `from_settings`
        picks, plus <project>/.celora and /var/tmp/celora-<hash> (which of those is used depends on who runs
        celora and on CELORA_LOCAL_DIR, so cleaning up must look in all of them)."""
        chosen = cls.from_settings(settings)
        project_dir = (settings.project_root / ".celora").resolve()
        servers, seen = [chosen], {chosen.base_dir}
        for base in (project_dir, cls._fallback_dir(project_dir)):
            if base.resolve() not in seen:
                seen.add(base.resolve())
                servers.append(cls(base, bin_dir=settings.local_pg_bin, run_as=chosen.run_as,
                                   port=settings.local_port))
        return servers

    @staticmethod
    def _fallback_dir(base: Path) -> Path:
        digest = hashlib.sha256(str(Path(base).resolve()).encode()).hexdigest()[:12]
        return FALLBACK_PARENT / f"celora-{digest}"

    @staticmethod
    def _check_base_dir(base: Path, setting: str | None) -> None:
        """The cluster folder must be a directory, or creatable as one (no file on the way)."""
        named = f"{setting}={base}" if setting else f"The local server folder {base}"
        fix = ("Point CELORA_LOCAL_DIR at a directory (created if missing), e.g. CELORA_LOCAL_DIR=/var/tmp/celora."
               if setting else "Move that file away, or set CELORA_LOCAL_DIR to a directory for the local server.")
        for path in (Path(base), *Path(base).parents):
            if path.exists():
                if not path.is_dir():
                    where = "is a file" if path == Path(base) else f"cannot be created: {path} is a file"
                    raise ConfigError(f"{named} {where}, not a directory.", fix)
                return

    @staticmethod
    def _notice(message: str) -> None:
        """Something the user did not ask for by name (creating, starting a server): say so on stderr."""
        logging.getLogger("celora.notice").info(message)

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        """The binaries' folder, runnable by the server user: a root-only install is copied first."""
        found = self.binaries
        if self.run_as is not None and blocked_ancestor(found.bin_dir / "postgres", self.run_as) is not None:
            copied = self._copy_installation(found.bin_dir)
            self._binaries = replace(found, bin_dir=copied, detail=", ".join(
                filter(None, [found.detail, f"copied from {found.bin_dir}"])))
        return self.binaries.bin_dir

    @property
    def binaries(self) -> PgBinaries:
        """The installation this cluster runs on, chosen once per LocalServer (see find_pg_binaries);
        choosing changes nothing on disk, so `status` can report it before anything exists."""
        if self._binaries is None:
            cluster_version = self._cluster_version()
            found = find_pg_binaries(self._explicit_bin, cluster_version=cluster_version)
            if cluster_version is not None and found.major != version_key(cluster_version)[0]:
                raise LocalServerError(  # only an explicit CELORA_PG_BIN gets here
                    f"CELORA_PG_BIN={found.bin_dir} holds PostgreSQL {found.version}, but the local cluster in "
                    f"{self.data_dir} was created by PostgreSQL {cluster_version}.",
                    f"Point CELORA_PG_BIN at PostgreSQL {cluster_version} binaries (or unset it), or delete the "
                    "cluster (`celora local destroy --yes`, this deletes its data).",
                )
            self._binaries = found
        return self._binaries

    def _cluster_version(self) -> str | None:
        # Read as root in the server user's folder and shown in messages: no link followed, a version or nothing.
        with contextlib.suppress(OSError):
            version = owned_files.read_text(self.data_dir / "PG_VERSION").strip()
            return version if re.fullmatch(r"\d+(?:\.\d+)?", version) else None
        return None

    def _copy_installation(self, bin_dir: Path) -> Path:
        """A copy of a root-only installation the server user can run, in this cluster's own cache folder."""
        return copy_installation(bin_dir, self._own_cache_dir())

    def _own_cache_dir(self) -> Path:
        """<base>/pginstall, a real folder of celora's own (root's, when root): the server user can write to the
        base folder, and a link (or a folder of theirs) planted there would have root copy files into a place of
        their choosing, or run binaries they put there."""
        cache = self.base_dir / "pginstall"
        if cache.is_symlink():
            cache.unlink()  # the link itself, never its target
        cache.mkdir(mode=0o755, parents=True, exist_ok=True)
        info = cache.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise LocalServerError(
                f"{cache} is not a folder of celora's own (it belongs to uid {info.st_uid}); celora copies the "
                "PostgreSQL binaries there as root and runs them, so it changed nothing.",
                f"Remove it (`rm -r {cache}`) and run the command again; celora recreates it.")
        return cache

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    @property
    def port(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return int(json.loads(owned_files.read_text(self.state_file))["port"])
        return None

    def url(self, database: str | None = None) -> str:
        port = self.port
        if port is None:
            raise LocalServerError("The local PostgreSQL has not been started yet.",
                                   "Run `celora local start`.")
        return f"postgresql://{DEFAULT_USER}@127.0.0.1:{port}/{database or self.database}"

    def is_running(self) -> bool:
        if not self.initialised:
            return False
        result = self._run([self.bin_dir / "pg_ctl", "status", "-D", self.data_dir], check=False)
        return result.returncode == 0

    def status(self) -> LocalServerStatus:
        binaries, binaries_error = None, None
        try:
            binaries = self.binaries
        except LocalServerError as exc:
            if self.initialised:
                raise  # whether it runs can only be asked with its own pg_ctl
            binaries_error = " ".join(filter(None, [exc.message, exc.hint]))
        running = self.is_running()  # an initialised cluster: its binaries are runnable (copied) by now
        binaries = self._binaries or binaries
        return LocalServerStatus(
            running=running, initialised=self.initialised, url=self.url() if running else None,
            port=self.port, data_dir=self.data_dir, log_file=self.log_file,
            bin_dir=binaries.bin_dir if binaries else None, version=self._cluster_version(), run_as=self.run_as,
            binaries_version=binaries.version if binaries else None,
            binaries_source=binaries.describe() if binaries else None, binaries_error=binaries_error,
        )

    # -- actions ---------------------------------------------------------------------------------------
    def ensure_running(self) -> str:
        """Initialise (first use), start (if stopped) and create the database; return its URL."""
        with self._lock():
            if not self.initialised:
                self._init()
            if not self.is_running():
                self._start()
            self._create_database(self.database)
        return self.url()

    def running_url(self) -> str:
        """The URL of the running server, starting nothing: for health, which reports a stopped server."""
        if not self.initialised:
            raise LocalServerError(
                f"The local PostgreSQL has not been created (no cluster in {self.data_dir}); DATABASE_URL is "
                "not set, so celora would use it.",
                "Start it with `celora local start` (or `celora db migrate-deploy`), or set DATABASE_URL.",
            )
        if not self.is_running():
            raise LocalServerError(
                f"The local PostgreSQL in {self.data_dir} is not running (DATABASE_URL is not set, so celora "
                "uses it).",
                "Start it with `celora local start`.",
            )
        return self.url()

    def stop(self) -> bool:
        """Stop the server; False if it was not running."""
        if not self.initialised:
            return False  # nothing to stop, and no folder to create just for the lock
        with self._lock():
            if not self.is_running():
                return False
            self._run([self.bin_dir / "pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w", "-t", "60"])
            return True

    # What a cluster folder holds. destroy() deletes these and nothing else, so a CELORA_LOCAL_DIR that
    # points at a folder with other files in it (a home directory, by mistake) loses only celora's.
    OWN_ENTRIES = ("pgdata", "postgres.log", "server.json", "lock", "pginstall")

    @property
    def has_files(self) -> bool:
        return any((self.base_dir / name).exists() for name in self.OWN_ENTRIES)

    def destroy(self) -> bool:
        """Stop the server and delete its cluster; False if there was nothing to delete. The folder itself
        goes too when nothing else is left in it."""
        if not self.has_files:
            return False
        if self.initialised:
            try:
                self.stop()
            except LocalServerError as exc:
                if (self.data_dir / "postmaster.pid").exists():  # deleting its files would not stop it
                    raise LocalServerError(
                        f"Could not stop the local PostgreSQL in {self.data_dir}, so its files were not deleted: "
                        f"{exc.message}",
                        f"Stop it (`celora local stop`, or end the postgres process whose pid is the first line "
                        f"of {self.data_dir / 'postmaster.pid'}), then destroy it again.",
                    ) from exc
        for name in self.OWN_ENTRIES:
            path = self.base_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(OSError):
            self.base_dir.rmdir()  # only when empty
        return True

    def create_database(self, name: str, template: str | None = None) -> str:
        self._create_database(name, template)
        return self.url(name)

    # -- internals -------------------------------------------------------------------------------------
    def _init(self) -> None:
        self._prepare_dirs()
        self._notice(f"Creating a local PostgreSQL cluster in {self.data_dir} (initdb; first use) ...")
        self._run([self.bin_dir / "initdb", "-D", self.data_dir, "-U", DEFAULT_USER, "--auth=trust",
                   "-E", "UTF8", "--locale=C", "--no-instructions"])

    def _start(self) -> None:
        self._prepare_dirs()
        port = self._choose_port()
        owned_files.write_new(self.state_file, json.dumps({"port": port}), mode=0o644)
        self._notice(f"Starting the local PostgreSQL in {self.data_dir} on 127.0.0.1:{port} "
                     "(`celora local stop` stops it) ...")
        options = [f"-p {port}", "-c listen_addresses=127.0.0.1", "-c unix_socket_directories=''",
                   "-c max_connections=200", f"-c wal_level={self.wal_level}"]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run([self.bin_dir / "pg_ctl", "start", "-D", self.data_dir, "-l", self.log_file,
                            "-w", "-t", "60", "-o", " ".join(options)], check=False)
        if result.returncode != 0:
            raise LocalServerError(
                f"The local PostgreSQL in {self.data_dir} did not start (pg_ctl exit {result.returncode}): "
                f"{self._log_tail()}",
                f"Read {self.log_file}; `celora local stop` then `celora local start` often clears a stale state.",
            )

    def _choose_port(self) -> int:
        if self.requested_port:
            if _port_in_use(self.requested_port):
                raise LocalServerError(
                    f"Port {self.requested_port} (CELORA_LOCAL_PORT) is already in use on 127.0.0.1.",
                    "Stop whatever listens there or choose another CELORA_LOCAL_PORT.",
                )
            return self.requested_port
        previous = self.port
        if previous and not _port_in_use(previous):
            return previous  # keep the URL stable between restarts when we can
        return free_port()

    def _create_database(self, name: str, template: str | None = None) -> None:
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                if not exists:
                    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                    if template:
                        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
                    conn.execute(statement)
        except psycopg.errors.DuplicateDatabase:
            pass  # a concurrent caller created it first
        except psycopg.Error as exc:
            raise LocalServerError(f"Could not create database {name!r} on the local PostgreSQL: {exc}",
                                   f"Check {self.log_file}.") from exc

    def _prepare_dirs(self) -> None:
        self._make_base_dir()
        if self.run_as is None:
            return
        user = os_user(self.run_as)
        owner = (user.pw_uid, user.pw_gid)
        check_traversable(self.base_dir, self.run_as)
        # The run-as user owns the cluster; .celora itself stays readable for the project's owner. From here on
        # that user can plant links in .celora: every file celora (root) touches there goes through owned_files.
        owned_files.own_directory(self.base_dir, owner, mode=0o755)
        if self.data_dir.exists() or self.data_dir.is_symlink():
            owned_files.own_directory(self.data_dir, owner)
        owned_files.own_file(self.log_file, owner)

    def _run(self, args, check: bool = True) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        kwargs: dict = {}
        if self.run_as is not None:
            user = os_user(self.run_as)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.base_dir)
        try:
            result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, check=False,
                                    cwd=self.base_dir if self.base_dir.exists() else None, timeout=120,
                                    **kwargs)
        except (OSError, subprocess.SubprocessError) as exc:
            raise LocalServerError(f"Could not run {Path(str(args[0])).name}: {exc}",
                                   "Check the PostgreSQL installation (CELORA_PG_BIN).") from exc
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise LocalServerError(
                f"{Path(str(args[0])).name} failed for the local PostgreSQL in {self.data_dir}: "
                + " ".join(detail),
                f"Read {self.log_file}; delete {self.base_dir} to start from scratch (this deletes its data).",
            )
        return result

    def _log_tail(self, lines: int = 5) -> str:
        # Shown in an error: a link planted there (to a root-only file) must not be read through.
        with contextlib.suppress(OSError):
            return " ".join(owned_files.read_text(self.log_file).strip().splitlines()[-lines:])
        return "(no log)"

    @contextlib.contextmanager
    def _lock(self):
        """Serialise start/stop between concurrent celora processes on the same project."""
        self._make_base_dir()
        descriptor = owned_files.open_lock_file(self.base_dir / "lock")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)

    def _make_base_dir(self) -> None:
        try:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, a read-only or foreign folder
            raise LocalServerError(
                f"Could not create the local server folder {self.base_dir}: {exc.strerror or exc}.",
                "Set CELORA_LOCAL_DIR to a directory you can write to, e.g. CELORA_LOCAL_DIR=/var/tmp/celora.",
            ) from None

