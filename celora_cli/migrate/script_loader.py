"""Alembic's ScriptDirectory with each revision file read, not executed, until a step needs its code.

Alembic builds its revision map by importing every file of the history: about 1 s at 1,000 files, paid by every
command that loads the history, although a run at head executes none of them. Here the map is built from what
each file assigns as plain literals (`revision`, `down_revision`, `branch_labels`, `depends_on`: the fields
Alembic reads from the module), read with `ast` (celora_cli.migrate.history.read_literals), and a Script imports
its module only when something asks for it: a step's upgrade()/downgrade(), an attribute celora did not read.
Alembic's own RevisionMap is built from these Scripts, so heads, ordering, branch labels, cycles, a missing
down_revision and duplicate ids behave (and fail) exactly as with Alembic's loader.

What a file gives is cached under CELORA_CACHE_DIR, keyed by the SHA-256 of its bytes (and the Python version):
a warm run reads and hashes each file and parses none. An edited file has another hash, so it is read again.

What stays as before:
- Every file is compiled (not executed) when it is read, so a syntax error anywhere in the history is still
  reported before anything runs, naming the file (the verdict is cached with the file's hash).
- A file whose fields are not plain literals (computed, imported, set through globals()...) is imported at load,
  as Alembic does (history.NotLiteral).
- The modules a run will execute are imported before its first step (`deploy` imports the pending ones first;
  Alembic builds every step of a run, importing its module, before running the first), so an import that fails
  stops the run before anything changed, as MigrationHistoryError naming the file.
What changes: a file that compiles but fails when imported (a missing package) is no longer reported by a command
that does not execute it, like `celora db status` already did.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from stat import S_ISLNK
from types import ModuleType

from alembic import util as alembic_util
from alembic.script import Script, ScriptDirectory
from alembic.script.base import _only_source_rev_file
from alembic.script.revision import Revision, RevisionMap

from celora_cli.errors import MigrationHistoryError
from celora_cli.migrate import journal
from celora_cli.migrate.history import NotLiteral, read_literals

# Bumped whenever what is cached per file changes: a cache written by another celora is then ignored.
FORMAT = 1
_CACHE_TAG = f"{FORMAT}:{sys.implementation.cache_tag}:{sys.version_info[:3]}"
# The fields a file's cache entry holds, as history.read_literals returns them.
_CACHED = ("revision", "down_revision", "branch_labels", "depends_on", "replaces", "repointed")


class RevisionFacts:
    """What one revision file says, read without executing it."""

    __slots__ = ("doc", "values")

    def __init__(self, values: dict[str, object], doc: str | None) -> None:
        self.values = values
        self.doc = doc

    def to_json(self) -> dict:
        return {"values": self.values, "doc": self.doc}

    @classmethod
    def from_json(cls, data: dict) -> RevisionFacts:
        return cls(dict(data["values"]), data["doc"])


def _tuples(value: object) -> object:
    """JSON gives lists where the file had tuples; Alembic normalises both alike, celora's readers expect tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class FileReader:
    """Reads revision files (bytes, SHA-256, literal fields, a compile check), with a cache keyed by the hash.

    `cache_file`: where the facts are kept between runs (None: nowhere). Reading a file also gives the journal
    its checksum (journal.remember_checksum), so deploy's verification and the snapshot keys do not read the
    history a second time."""

    def __init__(self, cache_file: Path | None) -> None:
        self.cache_file = cache_file
        self._cached: dict[str, dict | None] = self._load_cache()
        self._seen: dict[str, dict | None] = {}
        self._changed = False

    def _load_cache(self) -> dict[str, dict | None]:
        if self.cache_file is None:
            return {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # absent or damaged: read every file again
        if not isinstance(data, dict) or data.get("tag") != _CACHE_TAG or not isinstance(data.get("files"), dict):
            return {}
        return data["files"]

    def facts(self, path: Path, stat: os.stat_result | None = None) -> RevisionFacts | None:
        """The file's literal fields, or None when it must be imported to be known (NotLiteral). Raises
        SyntaxError (a file that does not compile) and OSError (unreadable), as importing it would. `stat`:
        os.stat(path) taken before the read (a file changed since has another stat: no stale checksum)."""
        try:
            with open(path, "rb") as handle:
                stat = stat or os.fstat(handle.fileno())
                source = handle.read()
        except OSError as exc:  # a dangling symbolic link, a folder named *.py, no permission
            raise MigrationHistoryError(
                f"Migration {path} can't be read: {exc.strerror or exc}.",
                "Fix or remove that file (every *.py file in the versions folder is a migration), then run the "
                "command again.") from exc
        digest = hashlib.sha256(source).hexdigest()
        journal.remember_checksum(path, stat, digest)
        if digest in self._cached:
            entry = self._cached[digest]
        else:
            entry = self._read(source, path)
            self._changed = True
        self._seen[digest] = entry
        return None if entry is None else RevisionFacts.from_json(entry)

    @staticmethod
    def _read(source: bytes, path: Path) -> dict | None:
        # what an import does first (importlib's source_to_code): errors found when compiling, not only parsing
        # (a `return` outside a function), are the file's syntax errors too
        try:
            compile(source, str(path), "exec", dont_inherit=True)
        except SyntaxError as exc:
            # Some are raised before any line is read (a NUL byte): they name no file; the message must.
            exc.filename = exc.filename or str(path)
            raise
        try:
            values, doc = read_literals(source, path)
        except NotLiteral:
            return None
        if not isinstance(values.get("revision"), str) or "down_revision" not in values \
                or not all(_plain(values.get(name)) for name in ("down_revision", "branch_labels", "depends_on")):
            return None  # Alembic's legacy file-name rule, its AttributeError, or values only it can judge
        return RevisionFacts({k: v for k, v in values.items() if k in _CACHED}, doc).to_json()

    def save(self) -> None:
        """Keep the facts of the files read in this run (only those: a deleted file's entry goes), when any
        changed. Best effort: a cache that cannot be written is only slower next time."""
        if self.cache_file is None or not (self._changed or set(self._seen) != set(self._cached)):
            return
        temporary = None
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.cache_file.parent, suffix=".tmp", delete=False,
                                             encoding="utf-8") as handle:
                temporary = handle.name
                json.dump({"tag": _CACHE_TAG, "files": self._seen}, handle)
            os.replace(temporary, self.cache_file)  # whole or not at all, also with two runs at once
        except OSError:  # a full disk, a read-only folder: no half-written file left behind either
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            return
        self._cached, self._changed = dict(self._seen), False


def _plain(value: object) -> bool:
    return value is None or isinstance(value, str) or (
        isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value))


class LazyScript(Script):
    """An Alembic Script whose revision fields come from the file's literals; its module is imported on first
    use (a step's upgrade()/downgrade(), or any attribute not read from the file)."""

    def __init__(self, facts: RevisionFacts, path: Path) -> None:
        self.path = str(path)
        self._celora_path = path  # celora_cli.migrate.scripts.path_of
        self._facts = facts
        self._module: ModuleType | None = None
        values = facts.values
        Revision.__init__(  # what Script.__init__ passes, from the file's literals instead of its module
            self, values["revision"],  # type: ignore[arg-type]
            _tuples(values["down_revision"]),  # type: ignore[arg-type]
            branch_labels=alembic_util.to_tuple(_tuples(values.get("branch_labels")), default=()),
            dependencies=alembic_util.to_tuple(_tuples(values.get("depends_on")), default=()),
        )

    @property
    def module(self) -> ModuleType:  # type: ignore[override]
        if self._module is None:
            self._module = import_revision(Path(self.path), self._facts)
        return self._module

    @property
    def longdoc(self) -> str:
        return (self._facts.doc or "").strip()

    @functools.cached_property
    def literal(self) -> dict[str, object]:
        """The fields read from the file (celora's own `replaces` and `repointed` among them), as tuples."""
        return {name: _tuples(value) for name, value in self._facts.values.items()}

    @property
    def imported(self) -> bool:
        return self._module is not None


def import_revision(path: Path, facts: RevisionFacts | None = None) -> ModuleType:
    """Import one revision file as Alembic does; a failure is MigrationHistoryError naming the file. With
    `facts`, the module must agree with them (a file that rewrote its fields at import time is refused)."""
    try:
        module = alembic_util.load_python_file(path.parent, path.name)
    except SyntaxError as exc:
        raise MigrationHistoryError(
            f"Migration {exc.filename or path} has a syntax error{f' at line {exc.lineno}' if exc.lineno else ''}: "
            f"{exc.msg}.",
            "Fix the file (`python3 -m py_compile` on it shows the error), then run the command again.") from exc
    except Exception as exc:
        raise MigrationHistoryError(f"Migration {path} can't be loaded: {type(exc).__name__}: {exc}.",
                                    "Fix that file, then run the command again.") from exc
    if facts is not None:
        differing = [name for name in ("revision", "down_revision", "branch_labels", "depends_on")
                     if _tuples(facts.values.get(name)) != _tuples(getattr(module, name, None))]
        if differing:
            raise MigrationHistoryError(
                f"Migration {path} sets {', '.join(differing)} when imported to something else than the literal "
                "it assigns; celora reads those literals to build the history without executing every file.",
                "Assign revision, down_revision, branch_labels and depends_on once each, as plain literals.")
    return module


class LazyScriptDirectory(ScriptDirectory):
    """ScriptDirectory whose revision map is made of LazyScripts (see the module docstring)."""

    reader: FileReader

    def _load_revisions(self):
        if self.sourceless:  # .pyc-only histories: Alembic's loader, which knows them
            yield from super()._load_revisions()
            return
        # Alembic's ScriptDirectory._load_revisions, with a LazyScript where it would import the file
        dupes = set()
        folders: dict[Path, Path] = {}
        for vers in [v for v in self._version_locations if v.exists()]:
            for file_path in Script._list_py_dir(self, vers):
                real_path, stat = _resolve(file_path, folders)
                if real_path in dupes:
                    alembic_util.warn(f"File {real_path} loaded twice! ignoring. "
                                      "Please ensure version_locations is unique.")
                    continue
                dupes.add(real_path)
                if not _only_source_rev_file.match(real_path.name):
                    continue
                facts = self.reader.facts(real_path, stat)
                script = LazyScript(facts, real_path) if facts is not None else Script._from_path(self, real_path)
                if script is not None:
                    yield script
        self.reader.save()

    def import_modules(self, revisions) -> None:
        """Import the modules of `revisions` (ids) now: before a run executes them, so a file that cannot be
        imported stops the run before its first step."""
        for revision in revisions:
            script = self.get_revision(revision)
            if script is not None:
                script.module  # noqa: B018 - the import is the point


def _resolve(path: Path, folders: dict[Path, Path]) -> tuple[Path, os.stat_result]:
    """path.resolve() (what Alembic keys its duplicate check on) and os.stat(path): the folder is resolved once,
    a file that is no symbolic link is then that folder's entry (resolve() per file walked every component of
    the path: half the time of loading a long history)."""
    stat = os.lstat(path)
    if S_ISLNK(stat.st_mode):
        real = path.resolve()
        try:
            return real, os.stat(real)
        except OSError as exc:
            raise MigrationHistoryError(
                f"Migration {path} can't be read: it is a symbolic link to {real} ({exc.strerror or exc}).",
                "Fix or remove the link (every *.py file in the versions folder is a migration), then run the "
                "command again.") from exc
    folder = folders.get(path.parent)
    if folder is None:
        folder = folders[path.parent] = path.parent.resolve()
    return folder / path.name, stat


def make_lazy(script: ScriptDirectory, reader: FileReader) -> LazyScriptDirectory:
    """`script` (fresh from ScriptDirectory.from_config, which always builds the base class) as a
    LazyScriptDirectory; its revision map is rebuilt because it holds the base class's bound loader."""
    script.__class__ = LazyScriptDirectory
    assert isinstance(script, LazyScriptDirectory)
    script.reader = reader
    script.revision_map = RevisionMap(script._load_revisions)
    return script


def cache_file(cache_root: Path, versions: Path) -> Path:
    """One cache file per history (a project may hold several: tests, benchmarks)."""
    name = hashlib.sha256(str(versions.resolve()).encode()).hexdigest()[:16]
    return cache_root / "revision-files" / f"{name}.json"
