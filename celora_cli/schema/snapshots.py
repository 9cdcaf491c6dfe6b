"""The schema the migration history builds at a revision, found cheaply: committed, cached, or built once.

The drift checks (`celora db migrate`, `db status --drift`, the gate in `db migrate-deploy`) compare a live
database with what its history says it should be at its current revision. Replaying the whole history into a
shadow database on every run costs time that grows with the history, and needs a server that lets celora create
databases (production often does not). Instead the expected schema at a revision is a catalog snapshot
(celora_cli.schema.drift) stored under a key:

- The key of revisions R (usually one) is SHA-256 over the snapshot format and, in order from the base, each
  applied migration's revision id and the SHA-256 of its file's bytes (the journal's checksum). Editing,
  adding or removing any migration at or below R changes R's key, and so every later key: a stale snapshot is
  never used.
- Committed: `<migrations>/snapshots/<revision>.json` (written by `celora db migrate` for the revision it
  writes, and by `celora db snapshots --write` for the whole history). CI's `migrate-deploy` finds the
  expected schema in its checkout and builds nothing.
- Cached: `<CELORA_CACHE_DIR>/snapshots/<key>.json` (default `.celora/cache`, not committed).
- Built: when neither matches, the history is replayed into a shadow database (`shadow_database`, the
  migration runtime) and snapshotted at the revisions asked for on the way, then cached. When no shadow can be
  made, the error says why and what to do.

Snapshots compare across PostgreSQL majors (built on 18, checked against 14): drift.snapshot leaves out what
differs between majors (18's NOT NULL constraints).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.errors import translating
from celora_cli.errors import CeloraError, ConfigError, ExitCode
from celora_cli.migrate.connection import migration_engine, open_migration_connection
from celora_cli.migrate.journal import checksum
from celora_cli.migrate.scripts import applied_files, find_migrations_dir
from celora_cli.migrate.steps import run_alembic
from celora_cli.schema.drift import Difference, Snapshot, compare, snapshot

# Bumped whenever drift.snapshot's queries or normalisation change: every key changes with it, so snapshots
# written by another celora version are rebuilt instead of reported as drift.
FORMAT = 2
SNAPSHOTS_DIR = "snapshots"  # inside the migrations folder: committed with the history
notice = logging.getLogger("celora.notice")
# A blank database to replay the history into, removed afterwards (autogenerate.shadow_database bound to the
# command's settings and URLs); passed in, as the shadow belongs to the command that needs one.
ShadowFactory = Callable[[], AbstractContextManager[DatabaseURL]]

SOURCES = ("committed", "cache", "built", "empty")


@dataclass
class ExpectedSchema:
    """What the history builds at `revisions`, and where celora found it."""

    revisions: tuple[str, ...]
    key: str
    snapshot: Snapshot
    source: str  # one of SOURCES
    path: str | None = None  # the snapshot file read or written


@dataclass
class SnapshotFile:
    revision: str
    path: str
    state: str  # "current" (its key matches the history), "stale" (it does not), "missing"; after --write: "written"


@dataclass
class SnapshotsResult:
    """`celora db snapshots [--write]`: each revision's committed snapshot file and its state."""

    directory: str
    files: list[SnapshotFile] = field(default_factory=list)
    shadow: str = ""  # masked URL of the shadow the history was replayed into (--write)
    checking: bool = False  # --check: outdated files are the command's answer (exit 30)

    @property
    def outdated(self) -> list[SnapshotFile]:
        return [f for f in self.files if f.state in ("stale", "missing")]

    @property
    def exit_code(self) -> int:
        return ExitCode.STALE if self.checking and self.outdated else ExitCode.OK

    def to_json(self) -> dict:
        return {"directory": self.directory, "shadow": self.shadow or None,
                "files": [{"revision": f.revision, "path": f.path, "state": f.state} for f in self.files],
                "outdated": len(self.outdated)}


# -- keys ------------------------------------------------------------------------------------------------

def history_key(script, revisions: Iterable[str], digests: dict[Path, str] | None = None) -> str:
    """The key of the schema at `revisions` (alembic_version's rows): the ordered chain of migration files from
    the base. `digests` memoizes file checksums across calls (writing every revision's snapshot)."""
    digests = {} if digests is None else digests
    hasher = hashlib.sha256(f"celora schema snapshot format {FORMAT}\n".encode())
    for local in applied_files(script, tuple(sorted(revisions))):
        if local.path not in digests:
            digests[local.path] = checksum(local.path) or "unreadable"
        hasher.update(f"{local.revision} {digests[local.path]}\n".encode())
    return hasher.hexdigest()


# -- where snapshots live --------------------------------------------------------------------------------

def committed_dir(settings: Settings) -> Path:
    return find_migrations_dir(settings) / SNAPSHOTS_DIR


def cache_dir(settings: Settings) -> Path:
    return settings.cache_root / SNAPSHOTS_DIR


def _read(path: Path, key: str) -> Snapshot | None:
    """The snapshot in `path` when it was written for `key`; None when absent, stale or unreadable (a damaged
    cache file is a miss, rebuilt, never an error)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != key:
        return None
    objects = data.get("objects")
    if not isinstance(objects, dict) or not all(
            isinstance(names, dict) and all(isinstance(v, str) for v in names.values()) for names in objects.values()):
        return None
    return Snapshot({kind: dict(names) for kind, names in objects.items()})


def _document(revisions: tuple[str, ...], key: str, taken: Snapshot, server_major: int | None) -> dict:
    return {"format": FORMAT, "revision": " ".join(revisions), "key": key, "server_major": server_major,
            "objects": {kind: dict(sorted(names.items())) for kind, names in sorted(taken.objects.items())}}


def _write(path: Path, document: dict) -> bool:
    """Write atomically (a concurrent reader sees the old file or the new one); False when the file already
    holds the same key and objects (no churn in the checkout when rebuilt on another server major)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("key") == document["key"] and old.get("objects") == document["objects"]:
            return False
    except (OSError, ValueError, AttributeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would make a committed file private
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1, sort_keys=False)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _cache_quietly(settings: Settings, document: dict) -> None:
    """The cache is an optimisation: a read-only checkout or a full disk must not fail the command."""
    try:
        _write(cache_dir(settings) / f"{document['key']}.json", document)
    except OSError as exc:
        notice.info(f"Could not cache the schema snapshot in {cache_dir(settings)} ({exc}); it will be rebuilt.")


def record(settings: Settings, script, revision: str, taken: Snapshot, server_major: int | None, *,
           commit: bool = True) -> Path | None:
    """Store the snapshot of a database proven to be at `revision` (`db migrate` after applying what it wrote):
    in the cache, and as the committed file when `commit`. Returns the committed file when it was (re)written."""
    key = history_key(script, (revision,))
    document = _document((revision,), key, taken, server_major)
    _cache_quietly(settings, document)
    if not commit:
        return None
    path = committed_dir(settings) / f"{revision}.json"
    return path if _write(path, document) else None


# -- the expected schema ---------------------------------------------------------------------------------

def differences_at(settings: Settings, config, script, live: Snapshot, current: tuple[str, ...], *,
                   shadow: ShadowFactory, purpose: str = "check drift") -> list[Difference]:
    """What `live` (a database at `current`) has that the history at `current` lacks, lacks, or has otherwise.
    A revision this checkout does not know is a difference itself."""
    unknown = [revision for revision in current if not _known(script, revision)]
    if unknown:
        return [Difference("migration", revision, "extra", database="applied (in alembic_version)")
                for revision in unknown]
    return compare(live, expected_at(settings, config, script, current, shadow=shadow, purpose=purpose).snapshot)


def _known(script, revision: str) -> bool:
    from alembic.util.exc import CommandError  # with Alembic, which loaded `script`

    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def expected_at(settings: Settings, config, script, revisions: tuple[str, ...], *,
                shadow: ShadowFactory, purpose: str = "check drift") -> ExpectedSchema:
    """The schema the history builds at `revisions` (all known to `script`): committed, cached or built."""
    if not revisions:  # nothing applied (alembic_version empty): the history builds nothing
        return ExpectedSchema((), "", Snapshot(), "empty")
    key = history_key(script, revisions)
    if len(revisions) == 1:
        path = committed_dir(settings) / f"{revisions[0]}.json"
        found = _read(path, key)
        if found is not None:
            return ExpectedSchema(revisions, key, found, "committed", str(path))
    path = cache_dir(settings) / f"{key}.json"
    found = _read(path, key)
    if found is not None:
        return ExpectedSchema(revisions, key, found, "cache", str(path))
    built, _shadow = build(settings, config, script, {key: revisions}, shadow=shadow, purpose=purpose)
    return ExpectedSchema(revisions, key, built[key], "built", str(path))


def build(settings: Settings, config, script, wanted: dict[str, tuple[str, ...]], *,
          shadow: ShadowFactory, purpose: str = "check drift",
          on_revision: Callable[[str, Snapshot, int | None], None] | None = None) -> tuple[dict[str, Snapshot], str]:
    """Replay the history into a shadow database once, snapshotting it at each wanted key's revisions (and at
    every revision for `on_revision`); every snapshot taken is cached. Returns ({key: snapshot}, the masked
    URL of the shadow)."""
    by_heads = {frozenset(revisions): key for key, revisions in wanted.items()}
    # the whole history when every revision is wanted, or when the database has several heads (Alembic
    # passes through them on its way to all heads); else only as far as the one revision wanted
    single = [revisions[0] for revisions in wanted.values() if len(revisions) == 1]
    destination = single[0] if on_revision is None and len(wanted) == 1 and single else "heads"
    taken: dict[str, Snapshot] = {}
    digests: dict[Path, str] = {}
    if wanted:
        notice.info(f"No stored schema snapshot matches the migration history at "
                    f"{', '.join(r for rs in wanted.values() for r in rs)}: replaying the history into a shadow "
                    "database once to build it (then cached).")

    def on_step(*, ctx, step, heads, run_args) -> None:
        wanted_key = by_heads.get(frozenset(heads))
        if wanted_key is None and on_revision is None:
            return
        conn = ctx.connection
        current = snapshot(conn)
        major = conn.dialect.server_version_info[0] if conn.dialect.server_version_info else None
        revisions = tuple(sorted(heads))
        key = wanted_key or history_key(script, revisions, digests)
        if wanted_key is not None:  # only those: every revision's snapshot kept would grow as history squared
            taken[wanted_key] = current
        _cache_quietly(settings, _document(revisions, key, current, major))
        if on_revision is not None and len(revisions) == 1:
            on_revision(revisions[0], current, major)

    with contextlib.ExitStack() as stack:
        try:
            shadow_url = stack.enter_context(shadow())
        except CeloraError as exc:
            _explain_no_shadow(exc, settings, purpose)
            raise
        on_shadow = dataclasses.replace(settings, database_url=shadow_url, direct_database_url=None)
        engine, url, setting = migration_engine(on_shadow, "celora (schema snapshot)")
        try:
            with translating(url, setting):
                conn = open_migration_connection(engine, url, setting)
                try:
                    run_alembic(conn, config, script, destination, on_step=on_step)
                finally:
                    conn.close()
        finally:
            engine.dispose()
    missing = [revisions for key, revisions in wanted.items() if key not in taken]
    if missing:  # alembic_version named revisions the replay never stood at together
        raise ConfigError(
            f"Replaying the migration history never stopped at revisions {', '.join(missing[0])} together, so "
            "celora could not build the schema expected there.",
            "Run `celora db status` to see where the database is; merge the branches of the history "
            "(`alembic merge heads`).")
    return taken, shadow_url.masked


def _explain_no_shadow(exc: CeloraError, settings: Settings, purpose: str) -> None:
    """No shadow could be made: say that one was needed and why, then the cause, and every way out. The error
    keeps its class (and exit code: 13 for a role without CREATEDB)."""
    where = committed_dir(settings)
    exc.message = (
        f"To {purpose}, celora needs the schema the migration history builds at the database's revision: no "
        f"committed snapshot in {where} matches the history's files (checked by SHA-256) and none is cached in "
        f"{cache_dir(settings)}, so it had to build one in a shadow database, and could not: {exc.message}")
    exc.hint = (f"Commit the snapshots from a development checkout (`celora db snapshots --write`, then "
                f"`git add {where}`), or set SHADOW_DATABASE_URL to a database celora may empty. {exc.hint or ''}"
                ).strip()
    exc.args = (exc.message,)


# -- `celora db snapshots` -------------------------------------------------------------------------------

def snapshot_files(settings: Settings, script) -> SnapshotsResult:
    """Each revision's committed snapshot and whether it matches the history (reads files only)."""
    directory = committed_dir(settings)
    result = SnapshotsResult(str(directory))
    digests: dict[Path, str] = {}
    for revision in reversed(list(script.walk_revisions())):
        path = directory / f"{revision.revision}.json"
        key = history_key(script, (revision.revision,), digests)
        state = "missing" if not path.is_file() else "current" if _read(path, key) is not None else "stale"
        result.files.append(SnapshotFile(revision.revision, str(path), state))
    return result


def write_snapshots(settings: Settings, config, script, *, shadow: ShadowFactory) -> SnapshotsResult:
    """Replay the whole history once into a shadow and (re)write every revision's committed snapshot whose
    key no longer matches; unchanged files are left alone."""
    result = snapshot_files(settings, script)
    if not result.outdated:
        return result
    states = {f.revision: f for f in result.files}
    digests: dict[Path, str] = {}

    def write(revision: str, taken: Snapshot, major: int | None) -> None:
        entry = states.get(revision)
        if entry is None or entry.state == "current":
            return
        document = _document((revision,), history_key(script, (revision,), digests), taken, major)
        _write(Path(entry.path), document)
        entry.state = "written"

    _taken, result.shadow = build(settings, config, script, {}, shadow=shadow,
                                  purpose="write the schema snapshots", on_revision=write)
    return result
