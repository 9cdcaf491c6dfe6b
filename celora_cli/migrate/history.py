"""The migration history read without Alembic: heads and pending revisions for `status` and `health`.

Importing Alembic (and SQLAlchemy with it) costs about 0.3 s, more than the whole answer `celora db health`
or `celora db status` has to give. Those commands only need each revision file's `revision`,
`down_revision`, `depends_on` and `branch_labels`, which are plain literals in every file Alembic writes, so
this module reads them with `ast` instead of executing the files.

It follows Alembic's own rules (alembic/script/revision.py): heads are the revisions no other revision names
as its `down_revision` (dependencies do not count); upgrading to the heads applies every ancestor of the
heads, dependencies included, that is not already an ancestor of the current revisions. When a file is
outside what it can read faithfully (computed values, abbreviated revision ids), `read_history` raises
`NotLiteral` and the caller falls back to Alembic. tests/migrate/test_history.py checks that both agree on
random histories with branches, merges and dependencies.
"""

from __future__ import annotations

import ast
import heapq
import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from celora_cli.errors import MigrationHistoryError

# Alembic's own file filter (script/base.py `_only_source_rev_file`): *.py, not __init__ or an editor lock file.
_REVISION_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")
# `replaces`: celora's own field, written by `celora db squash` (celora_cli.migrate.squash): the revisions whose files
# a squashed revision took the place of. Alembic ignores it.
_FIELDS = ("revision", "down_revision", "depends_on", "branch_labels", "replaces")


class NotLiteral(Exception):
    """A revision file this reader cannot follow exactly; use Alembic instead."""


@dataclass(frozen=True)
class RevisionFile:
    revision: str
    down_revisions: tuple[str, ...]
    depends_on: tuple[str, ...]
    branch_labels: tuple[str, ...]
    path: Path
    doc: str
    replaces: tuple[str, ...] = ()  # a squashed revision: the revisions it stands for (`celora db squash`)
    # a squashed revision: (revision, SHA-256 before, after) of the file it re-pointed at itself
    repointed: tuple[tuple[str, str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def parents(self) -> tuple[str, ...]:
        """Everything that must be applied before this revision (Alembic's `_all_down_revisions`)."""
        return tuple(dict.fromkeys(self.down_revisions + self.depends_on))


@dataclass(frozen=True)
class History:
    revisions: dict[str, RevisionFile]
    heads: tuple[str, ...]  # Alembic's ScriptDirectory.get_heads(): named by no down_revision

    @property
    def repointed(self) -> dict[str, tuple[str, str]]:
        """revision -> (SHA-256 before, after) of each file `celora db squash` re-pointed at a squash."""
        return {revision: (before, after) for script in self.revisions.values()
                for revision, before, after in script.repointed}

    @property
    def replaced(self) -> dict[str, str]:
        """Revision ids that no longer have a file because a squash took their place -> the squash's id (a
        revision of the history is never counted as replaced)."""
        return {old: revision for revision, script in self.revisions.items() for old in script.replaces
                if old not in self.revisions}

    def unknown(self, current: Iterable[str]) -> list[str]:
        return [revision for revision in current if revision not in self.revisions]

    def pending(self, current: Iterable[str]) -> list[RevisionFile]:
        """What `upgrade heads` would apply from `current`, oldest first (parents before children)."""
        done = self._ancestors(current)
        todo = self._ancestors(self.heads) - done
        return self._in_order(todo)

    def applied(self, current: Iterable[str]) -> list[RevisionFile]:
        """What `current` (alembic_version) says is applied, oldest first."""
        return self._in_order(self._ancestors(current))

    def _ancestors(self, revisions: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = [r for r in revisions if r in self.revisions]
        while stack:
            revision = stack.pop()
            if revision not in seen:
                seen.add(revision)
                stack.extend(self.revisions[revision].parents)
        return seen

    def _in_order(self, todo: set[str]) -> list[RevisionFile]:
        """Parents first; among revisions ready at the same time, by file name (timestamped names sort by age).
        Kahn's algorithm with a heap: linear in the history (bar the log factor), not quadratic."""
        waiting = {r: sum(1 for p in set(self.revisions[r].parents) if p in todo) for r in todo}
        children: dict[str, list[str]] = {}
        for revision in todo:
            for parent in set(self.revisions[revision].parents):
                if parent in todo:
                    children.setdefault(parent, []).append(revision)
        ready = [(self._sort_key(r), r) for r, count in waiting.items() if not count]
        heapq.heapify(ready)
        ordered: list[RevisionFile] = []
        while ready:
            _key, revision = heapq.heappop(ready)
            ordered.append(self.revisions[revision])
            for child in children.get(revision, ()):
                waiting[child] -= 1
                if not waiting[child]:
                    heapq.heappush(ready, (self._sort_key(child), child))
        return ordered

    def _sort_key(self, revision: str) -> tuple[str, str]:
        return (self.revisions[revision].path.name, revision)


def read_history(versions_dir: Path) -> History:
    """Read every revision file in `versions_dir` (not recursive, as Alembic's default)."""
    revisions: dict[str, RevisionFile] = {}
    labels: dict[str, str] = {}
    for path in sorted(versions_dir.iterdir()) if versions_dir.is_dir() else ():
        if not _REVISION_FILE.match(path.name) or not (path.is_file() or path.is_symlink()):
            continue  # a folder; a dangling link is read, and refused as the deploy refuses it
        script = _read_file(path)
        if script.revision in revisions:  # Alembic only warns, and keeps whichever file it listed last
            first = revisions[script.revision].path
            if first.resolve() == path.resolve():  # a link to the same file: Alembic reads it once
                continue
            raise duplicate_revision_error(script.revision, [first, path])
        revisions[script.revision] = script
        labels.update({label: script.revision for label in script.branch_labels})
    resolved = {}
    for revision, script in revisions.items():
        depends_on = tuple(_resolve(name, revisions, labels, script) for name in script.depends_on)
        for down in script.down_revisions:
            if down not in revisions:
                raise MigrationHistoryError(
                    f"Migration {script.path} names down_revision {down!r}, which is not in {versions_dir}.",
                    "Fix its down_revision to the revision id of the migration it follows "
                    "(`alembic history` lists them), or restore the missing file.",
                )
        resolved[revision] = RevisionFile(script.revision, script.down_revisions, depends_on,
                                          script.branch_labels, script.path, script.doc, script.replaces,
                                          script.repointed)
    named_as_down = {down for script in resolved.values() for down in script.down_revisions}
    heads = tuple(revision for revision in resolved if revision not in named_as_down)
    return History(resolved, heads)


def duplicate_revision_error(revision: str, paths: Iterable[Path | str]) -> MigrationHistoryError:
    """One revision id in several files: Alembic would keep one of them silently."""
    names = sorted(str(path) for path in paths)
    return MigrationHistoryError(
        f"Revision id {revision} appears in {len(names)} migration files: {', '.join(names)}. Alembic would "
        "keep one of them and silently ignore the other.",
        "Give each migration its own revision id (the copy of a file keeps the original's `revision = ...`): "
        "change `revision` (and the `down_revision` of the migration after it) in the newer file, or delete "
        "the stray copy.")


def _resolve(name: str, revisions: dict, labels: dict, script: RevisionFile) -> str:
    if name in revisions:
        return name
    if name in labels:
        return labels[name]
    raise NotLiteral(f"{script.path.name}: depends_on {name!r} is not a full revision id or branch label")


def _read_file(path: Path) -> RevisionFile:
    try:
        source = path.read_bytes()
        values, doc = read_literals(source, path)
    except SyntaxError as exc:
        raise MigrationHistoryError(
            f"Migration {path} has a syntax error{f' at line {exc.lineno}' if exc.lineno else ''}: {exc.msg}.",
            "Fix the file (`python -m py_compile` on it shows the error), then run the command again.",
        ) from None
    except (OSError, ValueError) as exc:
        raise MigrationHistoryError(f"Migration {path} can't be read: {exc}.",
                                    "Check the file's permissions and encoding (UTF-8).") from None
    if not isinstance(values.get("revision"), str):
        raise NotLiteral(f"{path.name}: no literal revision")  # Alembic has a legacy rule for these
    return RevisionFile(
        revision=values["revision"],  # type: ignore[arg-type]
        down_revisions=_names(values.get("down_revision"), path),
        depends_on=_names(values.get("depends_on"), path),
        branch_labels=_names(values.get("branch_labels"), path),
        path=path,
        doc=inspect.cleandoc(doc).strip() if doc else "",
        replaces=_names(values.get("replaces"), path),
        repointed=_triples(values.get("repointed"), path),
    )


# Names whose binding anywhere but a plain top-level `name = literal` could make the executed module disagree
# with the literal reading: the fields, the docstring, and the ways code can set module globals by name.
_WATCHED = frozenset((*_FIELDS, "repointed", "__doc__"))
_DYNAMIC = frozenset(("globals", "vars", "locals", "setattr", "exec", "eval", "__import__", "__dict__", "sys",
                      "inspect", "importlib", "builtins", "__builtins__"))
_DYNAMIC_ATTRIBUTES = frozenset(("__dict__", "f_globals", "_getframe"))
# Only `global` or one of those names lets code inside a function or class body change a module global; a file
# whose source has none of these words anywhere (the usual migration) needs no look inside those bodies, which
# hold most of its syntax tree.
_NESTED_REBINDING = re.compile(
    rb"\b(?:global|" + b"|".join(re.escape(n.encode()) for n in sorted(_DYNAMIC | _DYNAMIC_ATTRIBUTES)) + rb")\b")


def read_literals(source: bytes, path: Path) -> tuple[dict[str, object], str | None]:
    """The revision fields a file assigns as plain top-level literals, and its docstring (raw, as the module's
    __doc__), read without executing it. SyntaxError when it does not parse; NotLiteral when executing it could
    give another answer: a field computed, bound another way (an import, a loop, `global`, a star import), or
    module globals set by name (globals(), setattr, exec, sys.modules)."""
    tree = ast.parse(source, filename=str(path))
    values: dict[str, object] = {}
    others: list[ast.AST] = []  # every statement but the literal assignments (a literal binds no name)
    for node in tree.body:
        target, value = _assignment(node)
        if target in _WATCHED and value is not None:
            try:
                values[target] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                raise NotLiteral(f"{path.name}: {target} is not a literal") from None
            if isinstance(node, ast.AnnAssign):  # its annotation is evaluated
                others.append(node.annotation)
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):  # not a docstring
            others.append(node)
    nested = _NESTED_REBINDING.search(source) is not None
    for statement in others:
        for walked, module_scope in _walk(statement, nested):
            bound = _bound_names(walked) if module_scope else set()
            if isinstance(walked, ast.Global):  # a function that may rebind a module global
                bound = set(walked.names)
            if bound & _WATCHED:
                raise NotLiteral(f"{path.name}: {', '.join(sorted(bound & _WATCHED))} bound other than by a "
                                 "literal")
            if isinstance(walked, ast.Name) and walked.id in _DYNAMIC:
                raise NotLiteral(f"{path.name}: uses {walked.id}")
            if isinstance(walked, ast.Attribute) and walked.attr in _DYNAMIC_ATTRIBUTES:
                raise NotLiteral(f"{path.name}: uses .{walked.attr}")
            if isinstance(walked, ast.ImportFrom) and any(alias.name == "*" for alias in walked.names):
                raise NotLiteral(f"{path.name}: a star import")
    return values, ast.get_docstring(tree, clean=False)


def _walk(tree: ast.AST, nested: bool = True) -> Iterator[tuple[ast.AST, bool]]:
    """Every node of `tree` (a part of the module), with whether a name it binds is bound in the module's scope
    (not inside a function, a lambda or a class body; a comprehension at module level counts, for `:=`).
    `nested=False`: the bodies of functions, lambdas and classes are left out (their decorators, defaults and
    bases are evaluated in the module's scope, so they are walked)."""
    stack: list[tuple[ast.AST, bool]] = [(tree, True)]
    while stack:
        node, module_scope = stack.pop()
        yield node, module_scope
        scope = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
        if scope and not nested:
            for name in _OUTER_FIELDS[type(node)]:
                value = getattr(node, name)
                stack.extend((child, True) for child in (value if isinstance(value, list) else [value])
                             if child is not None)
            continue
        inner = module_scope and not scope
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


# The parts of a function, lambda or class definition evaluated in the enclosing scope.
_OUTER_FIELDS: dict[type, tuple[str, ...]] = {
    ast.FunctionDef: ("decorator_list", "args", "returns"),
    ast.AsyncFunctionDef: ("decorator_list", "args", "returns"),
    ast.Lambda: ("args",),
    ast.ClassDef: ("decorator_list", "bases", "keywords"),
}


def _bound_names(node: ast.AST) -> set[str]:
    """The names `node` binds (or deletes)."""
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, (ast.Store, ast.Del)) else set()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.ExceptHandler) and node.name:
        return {node.name}
    if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
        return {node.name}
    if isinstance(node, ast.MatchMapping) and node.rest:
        return {node.rest}
    return set()


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    return None, None


def _triples(value: object, path: Path) -> tuple[tuple[str, str, str], ...]:
    if value is None or value == ():
        return ()
    if isinstance(value, (tuple, list)) and all(
            isinstance(v, (tuple, list)) and len(v) == 3 and all(isinstance(x, str) for x in v) for v in value):
        return tuple((v[0], v[1], v[2]) for v in value)
    raise NotLiteral(f"{path.name}: unexpected repointed value {value!r}")


def _names(value: object, path: Path) -> tuple[str, ...]:
    if value is None or value == ():
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise NotLiteral(f"{path.name}: unexpected revision value {value!r}")
