"""The manifest written next to each backup (FILE.manifest.json): what the file is and what it must restore to.

A restore checks the file against it before anything else (size, then SHA-256), and a verified restore compares
the restored tables and their exact row counts with it. The row counts were taken in the very snapshot pg_dump
dumped (pg_export_snapshot), so they describe the file exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from celora_cli.errors import ConfigError
from celora_cli.results import to_json

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1


class BackupInvalid(ConfigError):
    """The backup file cannot be trusted (no manifest, truncated, modified), or a restore of it does not hold
    what the manifest says. Exit 3, like other bad input; `differences` names each mismatch."""

    def __init__(self, message: str, hint: str | None = None, *, differences: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.differences = differences or []

    def details(self) -> dict:
        return {"differences": self.differences}


class BackupIncompatible(ConfigError):
    """The backup is sound but cannot go to this server: it came from a newer PostgreSQL major version. Exit 3,
    checked before anything is created; `differences` names the two versions."""

    def __init__(self, message: str, hint: str | None = None, *, differences: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.differences = differences or []

    def details(self) -> dict:
        return {"differences": self.differences}


@dataclass(frozen=True)
class Manifest:
    file: str  # the backup's file name (the manifest sits next to it)
    size_bytes: int
    sha256: str
    created_at: str  # ISO 8601, UTC
    database: str  # the database's name
    url: str  # masked
    server_version: str
    pg_dump_version: str
    schema_revision: str | None  # alembic_version (comma-separated when several heads); None: not migrated
    tables: dict[str, int] = field(default_factory=dict)  # "schema.table" -> exact rows at the snapshot
    format: str = "pg_dump custom (-Fc)"
    manifest_format: int = MANIFEST_FORMAT
    celora_version: str = ""


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync, rename: `path` is whole or absent."""
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        # 0600: the manifest names the database, its tables and their sizes, for the backup's owner only.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_manifest(backup: Path, manifest: Manifest) -> Path:
    path = manifest_path(backup)
    write_atomically(path, json.dumps(to_json(manifest), indent=2) + "\n")
    return path


def load_checked(backup: Path) -> Manifest:
    """The manifest of `backup`, after checking the file against it: BackupInvalid when it is missing,
    unreadable, truncated or modified. Nothing connects before this passes."""
    backup = Path(backup)
    if not backup.is_file():
        raise ConfigError(f"Backup file {backup} does not exist (or is not a file).",
                          "Give the path `celora db backup` printed, e.g. backups/celora-20261126T120000Z.dump.")
    path = manifest_path(backup)
    if not path.is_file():
        raise BackupInvalid(
            f"Backup {backup} has no manifest ({path.name} next to it), so its checksum cannot be checked.",
            "Keep the .manifest.json `celora db backup` writes with each file. A dump made some other way can be "
            "restored with pg_restore directly.")
    manifest = _parse(path)
    size, sha256 = file_digest(backup)
    if size < manifest.size_bytes:
        raise BackupInvalid(
            f"Backup {backup} is truncated: {size:,} bytes, where its manifest records {manifest.size_bytes:,} "
            "(an interrupted copy or a full disk). Nothing was restored.",
            "Copy the backup again from where it was made, or use another backup.",
            differences=[f"size: {size} bytes, manifest {manifest.size_bytes}"])
    if size != manifest.size_bytes or sha256 != manifest.sha256:
        raise BackupInvalid(
            f"Backup {backup} does not match its manifest: SHA-256 {sha256[:16]}..., {size:,} bytes, where the "
            f"manifest records {manifest.sha256[:16]}..., {manifest.size_bytes:,} bytes. The file was modified or "
            "corrupted after the backup. Nothing was restored.",
            "Use another backup, or copy this one again from where it was made.",
            differences=[f"sha256: {sha256}, manifest {manifest.sha256}"])
    return manifest


def _parse(path: Path) -> Manifest:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("not an object")
        manifest = Manifest(**{key: data[key] for key in Manifest.__dataclass_fields__ if key in data})
        if not isinstance(manifest.size_bytes, int) or not isinstance(manifest.sha256, str) \
                or not isinstance(manifest.tables, dict):
            raise TypeError("size_bytes, sha256 or tables has the wrong type")
    except (OSError, ValueError, TypeError) as exc:
        raise BackupInvalid(f"The manifest {path} cannot be read ({exc}).",
                            "Use the manifest `celora db backup` wrote with this file, or another backup.") from None
    return manifest
