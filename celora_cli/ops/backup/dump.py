"""`celora db backup`: pg_dump custom format over the direct connection, with a manifest beside it.

One REPEATABLE READ transaction exports its snapshot; pg_dump dumps exactly that snapshot (--snapshot) while the
same transaction counts each table's rows for the manifest, so the counts describe the file, whatever the app
writes meanwhile. The dump goes to a hidden temporary file in the target folder and is renamed into place only
once pg_dump has finished and the file is on disk: an interrupted or failed backup (Ctrl-C, a full disk) leaves
no file under the backup's name, and its temporary file is deleted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from celora_cli import __version__
from celora_cli.config.settings import Settings
from celora_cli.db.connect import connect, direct_url
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError, DatabaseError, Interrupted, OutputError
from celora_cli.ops.backup.catalog import direct_setting, refuse_pooler, schema_revision, server_version, table_counts
from celora_cli.ops.backup.manifest import Manifest, file_digest, manifest_path, write_manifest
from celora_cli.ops.backup.restore import verify_backup
from celora_cli.ops.backup.tools import (
    conninfo,
    find_client_tools,
    mismatch_hint,
    public_url,
    run_tool,
    stderr_tail,
    tool_environment,
    version_major,
)
from celora_cli.results import to_json

notice = logging.getLogger("celora.notice")
DEFAULT_FOLDER = "backups"
# What pg_dump says when the file system refuses its writes (ENOSPC, EFBIG, EDQUOT).
_WRITE_FAILURES = ("could not write", "no space left", "file too large", "disk quota")


@dataclass
class BackupResult:
    file: str
    manifest_file: str
    database: str  # masked URL
    size_bytes: int
    sha256: str
    schema_revision: str | None
    server_version: str
    pg_dump: str  # version and where it came from
    tables: dict[str, int]
    duration_ms: float
    verified: dict | None = None  # VerifyResult's JSON form with --verify


def default_output(settings: Settings, database: str, now: dt.datetime) -> Path:
    return settings.project_root / DEFAULT_FOLDER / f"{database}-{now:%Y%m%dT%H%M%SZ}.dump"


def backup(settings: Settings, output: Path | None = None, *, verify: bool = False) -> BackupResult:
    """Dump the database of the direct URL to `output` (default backups/<db>-<UTC time>.dump) and write its
    manifest; with verify, restore it into a scratch database and compare (celora_cli.ops.backup.restore)."""
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    url = direct_url(settings)
    setting = direct_setting(settings)
    target = _refuse_existing(Path(output) if output is not None
                              else default_output(settings, url.database or url.username or "postgres", now))
    with translating(url, setting):
        conn = connect(url, settings, application_name="celora backup", autocommit=False)
    try:
        with translating(url, setting):
            refuse_pooler(conn, url, setting, "A backup (pg_dump --snapshot)")
            conn.rollback()
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            version, major = server_version(conn)
            database = conn.execute("SELECT current_database()").fetchone()[0]
            revision = schema_revision(conn)
            tables = table_counts(conn)
        tools = find_client_tools(settings, server_major=major, needed_for=f"the server (PostgreSQL {version})")
        _make_folder(target)
        _dump(tools, url, settings, snapshot, target, version)
        conn.rollback()  # the snapshot may go now
    finally:
        conn.close()
    size, sha256 = file_digest(target)

    shown = public_url(url)
    manifest = Manifest(file=target.name, size_bytes=size, sha256=sha256, created_at=now.isoformat(timespec="seconds"),
                        database=database, url=shown, server_version=version, pg_dump_version=tools.version,
                        schema_revision=revision, tables=tables, celora_version=__version__)
    try:
        manifest_file = write_manifest(target, manifest)
    except OSError as exc:  # a backup without its manifest cannot be restored by celora: none is kept
        with contextlib.suppress(OSError):
            target.unlink()
        raise OutputError(f"Could not write the manifest beside {target}: {exc.strerror or exc}. The backup file "
                          "was deleted again (celora restores only a backup with its manifest).",
                          "Free space on that file system, or choose another --output.") from None
    result = BackupResult(file=str(target), manifest_file=str(manifest_file), database=shown, size_bytes=size,
                          sha256=sha256, schema_revision=revision, server_version=version, pg_dump=tools.describe(),
                          tables=tables, duration_ms=0.0)
    if verify:
        result.verified = to_json(verify_backup(settings, target))
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result


def _refuse_existing(path: Path) -> Path:
    """The final path, absolute; refused (before anything connects) when a file is already there: a backup is
    never overwritten."""
    path = path.absolute()
    if path.exists() or manifest_path(path).exists():
        raise ConfigError(f"{path} already exists; celora does not overwrite a backup.",
                          "Choose another --output, or move the old file (and its .manifest.json) away first.")
    return path


def _make_folder(path: Path) -> None:
    """The backup's folder, created (and announced) when missing."""
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True)
        except OSError as exc:
            raise OutputError(f"Could not create the backup folder {path.parent}: {exc.strerror or exc}.",
                              "Choose another --output in a folder you can write to.") from None
        notice.info(f"Created the folder {path.parent} for backups.")


def _dump(tools, url, settings: Settings, snapshot: str, target: Path, version: str) -> None:
    temporary = _create_private(target.with_name(f".{target.name}.partial-{os.getpid()}"), target)
    args = [tools.path("pg_dump"), "--format=custom", "--no-password", f"--snapshot={snapshot}",
            f"--file={temporary}", f"--dbname={conninfo(url, settings, application_name='celora backup')}"]
    try:
        with tool_environment(url, settings) as env:
            result = run_tool(args, env)
        if result.returncode != 0:
            raise _dump_failure(result, target, tools, version, settings)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())  # on disk before the name says it is a backup
        os.replace(temporary, target)
        with contextlib.suppress(OSError):  # the rename itself, durable (not every file system allows this)
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _create_private(temporary: Path, target: Path) -> Path:
    """The temporary file, created empty by celora with mode 0600 before pg_dump writes into it (pg_dump keeps
    the mode when it opens an existing file): a backup holds every row, so only its owner may read it. A
    folder celora may not write to is an OutputError (exit 74) here, before pg_dump runs."""
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except OSError as exc:
        raise OutputError(f"Could not write the backup to {target}: {exc.strerror or exc} (creating "
                          f"{temporary.name} in {target.parent}). Nothing was written.",
                          "Choose another --output, in a folder you can write to.") from None
    return temporary


def _dump_failure(result, target: Path, tools, version: str, settings: Settings) -> Exception:
    detail = stderr_tail(result)
    if result.returncode == -signal.SIGINT:
        return Interrupted(f"The backup was interrupted; nothing was written to {target}.")
    if result.returncode == -signal.SIGXFSZ or any(word in detail.lower() for word in _WRITE_FAILURES):
        return OutputError(f"pg_dump could not write the backup to {target}: {detail} Nothing was kept under that "
                           "name (the partial file was deleted).",
                           "Free space on that file system (or raise the file size limit), or choose another "
                           "--output.")
    message = (f"pg_dump failed ({tools.describe()} against PostgreSQL {version}, exit {result.returncode}) and no "
               f"backup was written to {target}: {detail}")
    hint = "Check that the role may read every table (pg_dump reads them all), and the server log."
    if tools.major != version_major(version):
        message += f" The client tools ({tools.major}) and the server ({version}) are of different major versions."
        hint += " If the message names something the server does not know: " + mismatch_hint(tools, version,
                                                                                            settings)
    return DatabaseError(message, hint)
