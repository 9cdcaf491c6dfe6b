"""`celora db squash --to REV`: the history up to REV becomes one migration, and every command understands it.

The SQL of the squashed migration is generated elsewhere (celora_cli.schema.squash replays the history in a shadow
database and dumps its schema: migrate may not import schema). This module owns what the history and the database
make of a squash:

- the plan (`plan_squash`): REV resolved, refused unless the range base..REV is one straight line (no merge, no
  branch point, no dependency, no branch label) on the way to the head; the new id sorts where REV was;
- the files (`write_squash`): one new file with `replaces = (...)` (the replaced ids, oldest first, a previous squash's
  own included) and `down_revision = None`; the revision after REV re-pointed at it (its down_revision edited, its
  SHA-256 before and after recorded in the squash's `repointed`, so the journal of a database that applied the old
  file does not call it changed); the replaced files deleted (git keeps them);
- a database at REV exactly (alembic_version names a file that is gone) is recorded as at the squash by
  `migrate-deploy` (`record_squash_position`, Django's squashmigrations); a database inside the range is refused
  (celora_cli.migrate.status.squashed_position); a database past REV needs nothing;
- the journal: rows of replaced revisions are no "missing files" (celora_cli.migrate.deploy.verify_journal and
  `db status`), and the squash itself, found applied with no row, is recorded as a baseline like any migration
  applied before the journal knew it.

The squash's downgrade drops what its upgrade created (pg_dump's own DROP statements, in reverse order): rolling back
past it empties the schema of those objects, as rolling back the old history to base did. Rolling back *into* the
range is impossible (those revisions have no files): `--to` names only revisions of the history.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError, MigrationHistoryError
from celora_cli.migrate.lint_rules import MISSING_LOCK_TIMEOUT, NOT_VALID, RULES
from celora_cli.migrate.revision_ids import squash_revision_id
from celora_cli.migrate.rollback import resolve_target
from celora_cli.migrate.scripts import (
    check_migration_name,
    find_migrations_dir,
    is_packaged,
    revisions_of,
    script_directory,
)
from celora_cli.migrate.status import (
    history_from_script,
    read_current,
    replaces_of,
    repointed_of,
    squashed_position,
)

notice = logging.getLogger("celora.notice")
DEFAULT_NAME = "squashed"
_SLUG = re.compile(r"\w+")
_SLUG_LENGTH = 40  # Alembic's truncate_slug_length


@dataclass(frozen=True)
class ReplacedMigration:
    revision: str
    name: str  # file name without .py
    path: Path


@dataclass(frozen=True)
class SquashPlan:
    migrations_dir: Path
    target: str  # REV: the last revision squashed
    replaced: tuple[ReplacedMigration, ...]  # the files the squash takes the place of, oldest first
    replaces: tuple[str, ...]  # every id the squash stands for (a previous squash's replaced ids included)
    revision: str  # the squash's id
    path: Path  # the squash's file
    following: ReplacedMigration | None  # the revision after REV: its down_revision is re-pointed at the squash
    database: str = ""  # what the guard names as the target: the migrations folder
    database_env: str | None = None  # files, not a database: no environment stamp to read

    @property
    def name(self) -> str:
        return self.path.stem

    def losses(self) -> list[str]:
        lost = [f"{m.path.name} is deleted (git keeps it; keep it until every database has passed {self.target})"
                for m in self.replaced]
        lost.append(f"{self.path.name} is written: the schema of those {len(self.replaced)} migrations in one")
        if self.following is not None:
            lost.append(f"{self.following.path.name} gets down_revision = {self.revision!r}")
        return lost


@dataclass
class SquashResult:
    migrations_dir: str
    revision: str
    file: str
    target: str
    replaces: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    repointed: str | None = None  # the file whose down_revision now names the squash
    statements: int = 0  # statements in the squash's upgrade


def plan_squash(settings: Settings, to: str, *, name: str | None = None) -> SquashPlan:
    """What `celora db squash --to REV` would do; refuses (ConfigError, exit 3; MigrationHistoryError, exit 14)
    before anything is written."""
    migrations_dir = find_migrations_dir(settings)
    if is_packaged(migrations_dir):
        raise ConfigError(
            f"`celora db squash` rewrites the migration files, and the only history found is the copy packaged "
            f"inside celora ({migrations_dir}).",
            "Run it from the project root (the folder holding migrations/), or set CELORA_PROJECT_ROOT or "
            "CELORA_MIGRATIONS_DIR.")
    slug = _slug(check_migration_name(name or DEFAULT_NAME))
    script = script_directory(settings)  # one head, every file loads: or MigrationHistoryError naming the file
    target = resolve_target(script, to)
    if target == "base":
        raise ConfigError("--to base: there is nothing before base to squash.",
                          "Pass the last revision to squash (an id or file name from `celora db status`).")
    on_the_line = [s.revision for s in script.iterate_revisions("heads", "base")]
    if target not in on_the_line:
        raise MigrationHistoryError(f"Revision {target} is not an ancestor of the head {script.get_current_head()}.",
                                    "Squash a revision on the way from base to the head (`celora db status`).")
    chain = list(reversed(list(script.iterate_revisions(target, "base"))))  # oldest first
    for revision in chain:
        _refuse_branching(script, revision, target)
    if len(chain) < 2:
        raise ConfigError(f"--to {to}: the range base..{target} holds one migration ({Path(chain[0].path).name}); "
                          "there is nothing to squash it with.",
                          "Pass a later revision (`celora db status` lists them).")
    replaced = tuple(ReplacedMigration(s.revision, Path(s.path).stem, Path(s.path)) for s in chain)
    replaces = tuple(dict.fromkeys(old for s in chain for old in (*replaces_of(s), s.revision)))
    children = sorted(script.get_revision(target).nextrev)
    following = None
    if children:
        child = script.get_revision(children[0])
        following = ReplacedMigration(child.revision, Path(child.path).stem, Path(child.path))
        repointed_source(following.path, following.path.read_bytes(), target, "check")  # refused before any work
    existing = {s.revision for s in script.walk_revisions()} | set(replaces)
    revision = squash_revision_id(target, following.revision if following else None, existing)
    path = migrations_dir / "versions" / f"{revision}_{slug}.py"
    if path.exists():
        raise ConfigError(f"{path} exists already.", "Pass another --name.")
    return SquashPlan(migrations_dir, target, replaced, replaces, revision, path, following,
                      database=str(migrations_dir))


def _refuse_branching(script, revision, target: str) -> None:
    where = Path(revision.path).name
    if len(revision._all_down_revisions) > 1:
        raise MigrationHistoryError(
            f"{where} merges or depends on several revisions ({', '.join(revision._all_down_revisions)}): the range "
            f"base..{target} is not one straight line, and a squash can only stand for one.",
            "Squash up to a revision before the merge, or up to the merge's parents first.")
    if revision.branch_labels:
        raise MigrationHistoryError(
            f"{where} carries the branch label(s) {', '.join(sorted(revision.branch_labels))}, which a squash "
            "would lose.", f"Squash up to a revision before {revision.revision}.")
    if revision.revision != target and len(revision.nextrev) > 1:
        raise MigrationHistoryError(
            f"The history branches after {where} (into {', '.join(sorted(revision.nextrev))}): the range "
            f"base..{target} is not one straight line.",
            "Squash up to the branch point at most, or merge the branches first.")
    dependants = [s.revision for s in script.walk_revisions() if revision.revision in s._all_down_revisions
                  and revision.revision not in s._versioned_down_revisions]
    if dependants:
        raise MigrationHistoryError(
            f"{', '.join(sorted(dependants))} depends_on {revision.revision} ({where}), which the squash removes.",
            "Squash up to a revision before it, or drop that dependency first.")


def _slug(name: str) -> str:
    return "_".join(_SLUG.findall(name)).lower()[:_SLUG_LENGTH].rstrip("_") or DEFAULT_NAME


def write_squash(plan: SquashPlan, upgrade_sql: str, downgrade_sql: str, *, source: str) -> SquashResult:
    """Write the squash, re-point the revision after REV, delete the replaced files. `source` says how the SQL was
    generated (for the file's docstring).

    In the order that leaves a loadable history if it stops half-way (a full disk, Ctrl-C): the squash is written
    under a temporary name and renamed, then the re-pointed file likewise; until the replaced files are deleted,
    the history has two bases and two heads, which every command reports (exit 14) instead of running it."""
    repointed: tuple[tuple[str, str, str], ...] = ()
    edited: bytes | None = None
    if plan.following is not None:
        before = plan.following.path.read_bytes()
        edited = repointed_source(plan.following.path, before, plan.target, plan.revision)
        repointed = ((plan.following.revision, hashlib.sha256(before).hexdigest(),
                      hashlib.sha256(edited).hexdigest()),)
    text = render_squash(plan, upgrade_sql, downgrade_sql, source=source, repointed=repointed)
    _replace(plan.path, text.encode())
    if plan.following is not None and edited is not None:
        _replace(plan.following.path, edited)
    for migration in plan.replaced:
        migration.path.unlink(missing_ok=True)
    return SquashResult(migrations_dir=str(plan.migrations_dir), revision=plan.revision, file=str(plan.path),
                        target=plan.target, replaces=list(plan.replaces),
                        deleted=[str(m.path) for m in plan.replaced],
                        repointed=str(plan.following.path) if plan.following else None,
                        statements=count_statements(upgrade_sql))


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.celora-squash")  # a dot file: no revision file for Alembic
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def repointed_source(path: Path, source: bytes, old: str, new: str) -> bytes:
    """The file with `down_revision = old` as `down_revision = new` (and the docstring's `Revises:` line), nothing
    else changed (line endings and encoding kept); MigrationHistoryError when it is no one-line literal."""
    text = source.decode()
    lines = text.splitlines(keepends=True)
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "down_revision":
            if value.lineno != value.end_lineno or not (isinstance(value, ast.Constant) and value.value == old):
                break
            line = lines[value.lineno - 1]
            start, end = _char_offsets(line, value.col_offset, value.end_col_offset or 0)
            lines[value.lineno - 1] = f"{line[:start]}{new!r}{line[end:]}"
            edited = re.sub(rf"^(Revises:[ \t]*){re.escape(old)}(?=[ \t]*\r?$)", rf"\g<1>{new}", "".join(lines),
                            count=1, flags=re.MULTILINE)
            return edited.encode()
    raise MigrationHistoryError(f"{path}: its down_revision is not the one-line literal {old!r}, so celora can't "
                                "re-point it at the squash.",
                                f"Write `down_revision = {old!r}` on one line, then squash again.")


def _char_offsets(line: str, *byte_offsets: int) -> tuple[int, ...]:
    """ast's col_offset counts UTF-8 bytes."""
    encoded = line.encode()
    return tuple(len(encoded[:offset].decode()) for offset in byte_offsets)


def count_statements(sql: str) -> int:
    return sum(1 for line in sql.splitlines() if line.rstrip().endswith(";"))


_ALL_RULES = sorted({rule.name for rule in RULES.values()} | {NOT_VALID.name, MISSING_LOCK_TIMEOUT.name})


def render_squash(plan: SquashPlan, upgrade_sql: str, downgrade_sql: str, *, source: str,
                  repointed: tuple[tuple[str, str, str], ...] = (),
                  now: datetime.datetime | None = None) -> str:
    first, last = plan.replaced[0], plan.replaced[-1]
    created = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%d %H:%M:%S")
    return f'''"""squashed: {first.name} .. {last.name} ({len(plan.replaced)} migrations) in one

Revision ID: {plan.revision}
Revises:
Create Date: {created}

Written by `celora db squash --to {plan.target}`: {source}. Not to be edited by hand: squash again instead.
- A fresh database applies this file; one past {plan.target} needs nothing from it; one AT {plan.target} is
  recorded as at this revision by the next `celora db migrate-deploy`; one inside the range is refused (deploy the
  old history to it first).
- downgrade() drops what upgrade() created, in reverse order (to base); the replaced revisions can't be rolled
  back to one by one.
"""

import re

import sqlalchemy as sa
from alembic import op

revision = {plan.revision!r}
down_revision = None
branch_labels = None
depends_on = None
# celora's bookkeeping (celora_cli.migrate.squash): the revisions this one stands for, oldest first, and the file
# re-pointed at it with its SHA-256 before and after (so a database that applied the old file sees no change).
replaces = {plan.replaces!r}
repointed = {repointed!r}

UPGRADE = {_literal(upgrade_sql)}

DOWNGRADE = {_literal(downgrade_sql)}


def _text(sql):
    """The SQL as it is: a colon before a word is no bind parameter here."""
    return sa.text(re.sub(r"(?<![:\\w\\\\]):(?=\\w)", r"\\\\:", sql))


def upgrade():
    # celora: allow {", ".join(_ALL_RULES)} -- a squash creates its tables empty, on a database without them
    op.execute(_text(UPGRADE))


def downgrade():
    op.execute(_text(DOWNGRADE))
'''


def _literal(sql: str) -> str:
    """A Python literal for `sql`: a readable raw triple-quoted string when it can hold it, else repr()."""
    if "'''" not in sql and not sql.endswith("\\") and "\r" not in sql:
        return f"r'''{sql}'''"
    return repr(sql)


def record_squash_position(conn, script, migrations_dir: Path) -> str | None:
    """A database at the last revision a squash replaced: alembic_version is moved to the squash (it holds what
    the squash creates). Returns the squash's id, or None. In the caller's transaction (under the migration lock);
    the caller commits. A database inside a squashed range raises MigrationHistoryError (nothing changed)."""
    current = read_current(conn)
    squash = squashed_position(current, history_from_script(script, migrations_dir), migrations_dir)
    if squash is None:
        return None
    execute = getattr(conn, "exec_driver_sql", None) or conn.execute
    execute("UPDATE alembic_version SET version_num = %s WHERE version_num = %s", (squash, current[0]))
    notice.info(f"The database was at {current[0]}, the last revision squashed into {squash}: recorded it as at "
                f"{squash} (alembic_version), nothing else changed.")
    return squash


def effective_current(current: tuple[str, ...], script, migrations_dir: Path) -> tuple[str, ...]:
    """alembic_version as the history sees it: a database at the last revision a squash replaced is at the squash
    (MigrationHistoryError inside a squashed range); anything else as it is."""
    if not current or not any(replaces_of(s) for s in revisions_of(script)):
        return current
    squash = squashed_position(current, history_from_script(script, migrations_dir), migrations_dir)
    return (squash,) if squash else current


def squash_bookkeeping(script) -> tuple[set[str], dict[str, tuple[str, str]]]:
    """(every revision id a squash replaced, revision -> SHA-256 before/after of every file a squash re-pointed)."""
    replaced: set[str] = set()
    repointed: dict[str, tuple[str, str]] = {}
    for revision in revisions_of(script):
        replaced.update(replaces_of(revision))
        repointed.update({entry[0]: (entry[1], entry[2]) for entry in repointed_of(revision)})
    return replaced, repointed


__all__ = ["SquashPlan", "SquashResult", "effective_current", "plan_squash", "record_squash_position",
           "squash_bookkeeping", "write_squash"]
