"""`celora db rollback`: the last migrations undone (their downgrade() run), under the migration lock.

It goes through the one migration runtime and the one step driver (celora_cli.migrate.steps) that deploy uses.
It reads first (what would be undone, the database's environment stamp), hands that plan to `confirm` (the CLI
passes the guard, celora_cli.safety.guard.confirm_destructive), and changes nothing unless it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alembic.util.exc import CommandError

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError, MigrationFailed, MigrationHistoryError
from celora_cli.migrate.connection import migration_connection
from celora_cli.migrate.lock import MigrationLock, ProgressCallback, RevisionMoved, checked_lock_timeout, moved_refusal
from celora_cli.migrate.scripts import alembic_config, find_migrations_dir, script_directory
from celora_cli.migrate.status import status_on
from celora_cli.migrate.steps import DOWNGRADE, drive
from celora_cli.safety.stamp import database_environment


@dataclass(frozen=True)
class MigrationRef:
    revision: str
    name: str


@dataclass(frozen=True)
class RollbackPlan:
    database: str
    current: tuple[str, ...]
    target: str  # a revision id, or "base"
    undo: tuple[MigrationRef, ...]  # newest first, the order they are undone
    database_env: str | None

    def losses(self) -> list[str]:
        return [f"migration {m.name} is undone (what it created, and the data in it, is dropped)" for m in self.undo]


@dataclass(frozen=True)
class UndoneMigration:
    revision: str
    name: str
    duration_ms: float


@dataclass
class RollbackResult:
    database: str
    target: str
    undone: list[UndoneMigration] = field(default_factory=list)
    current: tuple[str, ...] = ()
    waited_for_lock_s: float = 0.0


Confirm = Callable[[RollbackPlan], None]  # raises Refused to stop


def rollback(settings: Settings, *, steps: int | None = None, to: str | None = None, confirm: Confirm,
             lock_timeout: float | None = None, progress: ProgressCallback | None = None) -> RollbackResult:
    """Undo the last `steps` migrations, or down to revision `to` ("base": all), under the migration lock."""
    if (steps is None) == (to is None):
        raise ConfigError("Give either --steps N or --to REVISION (not both, not neither).",
                          "e.g. `celora db rollback --steps 1` or `celora db rollback --to 20261126090000`.")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be 1 or more (got {steps}).", "e.g. `celora db rollback --steps 1`.")
    timeout = checked_lock_timeout(settings, lock_timeout, "lock_timeout")
    progress = progress or (lambda kind, data: None)
    config = alembic_config(settings)
    script = script_directory(settings, config)
    with migration_connection(settings, "db rollback") as (conn, url):
        status = status_on(conn, settings, script)
        if status.recorded_as:
            raise MigrationHistoryError(
                f"The database is at {status.current[0]}, a revision squashed into {status.recorded_as} whose file is "
                f"gone; rollback runs downgrades from the files, so it ran nothing.",
                f"Run `celora db migrate-deploy` first: it records the database as at {status.recorded_as} (nothing "
                "else changes); then roll back.")
        plan = _rollback_plan(script, status.current, steps, to, url.masked, database_environment(conn))
        conn.rollback()
        result = RollbackResult(database=plan.database, target=plan.target, current=status.current)
        if not plan.undo:
            return result
        confirm(plan)
        lock = MigrationLock(timeout, progress).install(conn)
        lock.expected = status.current  # the first transaction re-reads it under the lock
        try:
            drive(conn, lock, config, script, direction=DOWNGRADE, destination=plan.target, planned=plan.undo,
                  done=result.undone, record=UndoneMigration, progress=progress,
                  versions_dir=find_migrations_dir(settings) / "versions")
            result.current = lock.expected or ()
        except RevisionMoved as exc:
            raise moved_refusal(exc, "rollback") from exc
        finally:
            result.waited_for_lock_s = round(lock.waited_s, 3)
    return result


def _rollback_plan(script, current: tuple[str, ...], steps: int | None, to: str | None, masked: str,
                   database_env: str | None) -> RollbackPlan:
    if not current:
        raise ConfigError(f"Nothing to roll back: no migration is applied to {masked}.",
                              "Apply migrations first with `celora db migrate-deploy`.")
    if len(current) > 1:
        raise MigrationFailed(f"The database is at several revisions ({', '.join(current)}); celora rolls back "
                              "one line of history only.", "Roll back by hand with `alembic downgrade`.")
    applied = [MigrationRef(s.revision, Path(s.path).stem) for s in script.iterate_revisions(current[0], "base")]
    if steps is not None:
        if steps > len(applied):
            raise ConfigError(
                f"--steps {steps}: can't roll back {steps} migration(s): only {len(applied)} are applied to {masked} "
                f"({', '.join(m.name for m in applied)}).",
                f"Use --steps {len(applied)} (or --to base) to undo all of them.")
        undo = applied[:steps]
        target = applied[steps].revision if steps < len(applied) else "base"
        return RollbackPlan(masked, current, target, tuple(undo), database_env)
    assert to is not None
    target = resolve_target(script, to)
    if target == "base":
        return RollbackPlan(masked, current, "base", tuple(applied), database_env)
    position = next((i for i, m in enumerate(applied) if m.revision == target), None)
    if position is None:
        raise ConfigError(
            f"--to {to}: revision {target} is not below the database's current revision {current[0]}, so "
            "rolling back to it would be an upgrade.",
            "Use `celora db migrate-deploy` to go forward; `celora db status` shows where the database is.")
    return RollbackPlan(masked, current, target, tuple(applied[:position]), database_env)


def resolve_target(script, to: str) -> str:
    """A revision id, a unique prefix, a file name as `db status` shows it (20261126090000_init), or base."""
    wanted = to.strip()
    if not wanted:
        raise ConfigError("--to is empty: it needs a revision to roll back to.",
                          "Pass a revision id or file name from `celora db status`, or base.")
    if wanted == "base":
        return "base"
    by_name = [s.revision for s in script.walk_revisions() if Path(s.path).stem == wanted.removesuffix(".py")]
    if by_name:  # the file name wins: it holds the id whatever its form (a timestamp, Alembic's hex)
        return by_name[0]
    candidates = [wanted, wanted.split("_", 1)[0]] if "_" in wanted else [wanted]
    for candidate in candidates:
        try:
            found = script.get_revision(candidate)
        except (CommandError, AssertionError):  # Alembic asserts on some non-ids ("@")
            found = None
        if found is not None:
            return found.revision
    known = ", ".join(Path(s.path).stem for s in script.walk_revisions())
    raise ConfigError(f"--to {to!r}: no such revision in the migration history (known: {known}).",
                      "Pass a revision id or file name from `celora db status` or `alembic history`, or base.")


__all__ = ["RollbackPlan", "RollbackResult", "UndoneMigration", "resolve_target", "rollback"]
