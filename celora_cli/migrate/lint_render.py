"""`celora db lint`'s input: each migration's SQL as Alembic's offline mode (`--sql`) renders it through celora's own
runtime (migrations/env.py), so the linter reads the statements a deploy would run. Each statement is traced back to
the line of the migration file that emitted it (the innermost frame in that file when Alembic wrote it), which is
where a finding points and where a silence goes.
"""

from __future__ import annotations

import os
import sys
import traceback

from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError
from celora_cli.migrate.lint_rules import UNRENDERABLE, Finding, RenderedMigration, Statement, shown_path
from celora_cli.migrate.scripts import alembic_config, path_of, revisions_of, script_directory
from celora_cli.migrate.steps import run_alembic


class _StatementCapture:
    """Alembic's offline output buffer: keeps each statement with the migration file line that emitted it.

    Alembic writes one statement per write(). Statements written with no migration file on the stack (BEGIN
    and COMMIT around each migration, alembic_version bookkeeping, "-- Running upgrade" comments) are Alembic's
    own and are dropped; a COMMIT or BEGIN written from inside a migration is autocommit_block()'s edge.
    """

    def __init__(self, migrations: dict[str, RenderedMigration]) -> None:
        self._by_file = migrations
        self._outside = False

    def write(self, text: str) -> int:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename not in self._by_file:
            frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return len(text)
        sql = text.strip()
        keyword = sql.rstrip(";").strip().upper()
        if keyword == "COMMIT":
            self._outside = True
        elif keyword == "BEGIN":
            self._outside = False
        self._by_file[frame.f_code.co_filename].statements.append(Statement(sql, frame.f_lineno, self._outside))
        return len(text)

    def flush(self) -> None:
        pass


def revisions_in(script, revision_range: str | None) -> list:
    """The Alembic Script objects a range names, oldest first: None (all), "REV", "FROM:TO" (after FROM up to
    TO, as `alembic upgrade FROM:TO --sql`), with base/head allowed."""
    spec = (revision_range or "").strip()
    lower: str | None = None
    upper = "heads"
    if ":" in spec:
        start, end = (part.strip() for part in spec.split(":", 1))
        lower = None if start in ("", "base") else start
        upper = end or "heads"
    elif spec:
        lower, upper = "single", spec
    try:
        if lower == "single":
            found = script.get_revision(upper)
            if found is None:
                raise CommandError(f"no revision {upper!r}")
            return [found]
        return list(reversed(list(script.iterate_revisions(upper, lower))))
    except (CommandError, RevisionError) as exc:  # unknown, or an ambiguous prefix ("2" matches several)
        raise ConfigError(
            f"celora db lint: the revision range {spec!r} names no migrations of this project ({exc}).",
            "Give a revision id or file name prefix (`celora db status` lists them), FROM:TO, or nothing for "
            "the whole history.") from None


def render(settings: Settings, revision_range: str | None = None, *, script=None,
           from_parent: bool = False) -> tuple[list[RenderedMigration], Finding | None]:
    """Each migration of the range with the SQL Alembic renders offline for it; the second value is an
    `unrenderable` finding when a migration could not be rendered (that one and the later ones are missing).
    `script`: the ScriptDirectory the caller loaded. `from_parent`: render from the parent of the oldest wanted
    revision instead of the base (`db migrate`'s one new revision, whose parents are applied: rendering the
    whole history offline for it cost time growing with the history)."""
    config = alembic_config(settings)
    if script is None:
        script = script_directory(settings, config)  # MigrationHistoryError (exit 14) for broken files
    wanted = revisions_in(script, revision_range)
    if not wanted:
        return [], None
    parent = wanted[0].down_revision if from_parent else None
    starting_rev = parent if isinstance(parent, str) else None  # a merge: from the base, as before
    # Render from the start of the history up to the newest wanted revision, so every migration is rendered on
    # the schema it will meet; only the wanted ones are linted.
    every = {os.path.abspath(s.path): RenderedMigration(s.revision, path_of(s).stem, path_of(s))
             for s in revisions_of(script)}
    capture = _StatementCapture(every)
    config.output_buffer = capture
    problem = None
    try:
        run_alembic(None, config, script, wanted[-1].revision, as_sql=True, starting_rev=starting_rev)
    except Exception as exc:  # noqa: BLE001 - a migration that cannot run offline: say so, lint the rest
        problem = _unrenderable(exc, every)
    by_revision = {m.revision: m for m in every.values()}
    return [by_revision[s.revision] for s in wanted], problem


def render_revisions(settings: Settings, revisions: list[str], *, script=None,
                     from_parent: bool = False) -> tuple[list[RenderedMigration], Finding | None]:
    if not revisions:
        return [], None
    single = from_parent and len(revisions) == 1  # the one revision, rendered from its parent
    migrations, problem = render(settings, revisions[0] if single else f"base:{revisions[-1]}", script=script,
                                 from_parent=single)
    wanted = set(revisions)
    return [m for m in migrations if m.revision in wanted], problem


def _unrenderable(exc: Exception, every: dict[str, RenderedMigration]) -> Finding:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename) in every]
    migration = every[os.path.abspath(frames[-1].filename)] if frames else None
    return Finding(
        rule=UNRENDERABLE.name, squawk_rules=(), migration=migration.name if migration else "?",
        revision=migration.revision if migration else "?", file=shown_path(migration.path) if migration else "?",
        line=frames[-1].lineno if frames else None, statement="",
        message=f"{type(exc).__name__}: {exc}", why=UNRENDERABLE.why, safe_alternative=UNRENDERABLE.safe_alternative)
