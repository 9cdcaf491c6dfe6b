"""The one step driver: Alembic's upgrade or downgrade steps run on the migration connection, each timed and
reported, a failure turned into MigrationFailed that says where the database is.

Deploy, rollback and reset (through deploy) drive their steps here; `db migrate` replays the history on its shadow
database with `run_alembic`. Alembic's `command.upgrade`/`downgrade` would build a second ScriptDirectory and
import every revision file again: this runs with the one the command already loaded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from alembic.runtime.environment import EnvironmentContext

from celora_cli.db.errors import connection_lost, migration_failure, translating
from celora_cli.errors import CeloraError, MigrationFailed
from celora_cli.migrate.connection import migration_engine, open_migration_connection
from celora_cli.migrate.lock import MigrationLock, ProgressCallback, RevisionMoved


class Planned(Protocol):
    """A step the command plans to run (MigrationInfo, MigrationRef)."""

    @property
    def revision(self) -> str: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class Direction:
    """How a direction's steps are named in progress events and in the failure message."""

    event: str  # the progress event per step: "applied" or "undone"
    doing: str  # "Migration {name}", "Undoing migration {name}"
    rolled_back: str  # what PostgreSQL rolled back when a step failed
    fix: str  # what to fix, "{path}" being the migration file
    not_at_fault: str  # the part that is not at fault when the connection broke
    command: str  # the command to run again
    empty: str  # where the database is when no revision is left


UPGRADE = Direction("applied", "Migration {name}", "It was rolled back", "Fix {path}", "The migration file",
                    "migrate-deploy", "an empty schema (no migration applied)")
DOWNGRADE = Direction("undone", "Undoing migration {name}", "Its downgrade was rolled back",
                      "Fix downgrade() in {path}", "The downgrade", "rollback", "base")


def upgrade_to(settings, config, script, destination: str, application_name: str = "celora (shadow)") -> None:
    """Apply the history up to `destination` on settings' database (a connection of its own), with the one
    migration runtime: the same connection set-up, lock and journal as `migrate-deploy`. How shadow databases
    are brought to a revision (db migrate, --check, diff, baseline, squash)."""
    engine, url, setting = migration_engine(settings, application_name)
    try:
        with translating(url, setting):
            conn = open_migration_connection(engine, url, setting)
            try:
                run_alembic(conn, config, script, destination)
            finally:
                conn.close()
    finally:
        engine.dispose()


def run_alembic(conn, config, script, destination: str, *, downgrade: bool = False,
                on_step: Callable | None = None, as_sql: bool = False, starting_rev: str | None = None) -> None:
    """alembic.command.upgrade/downgrade to `destination` on `conn`, with the ScriptDirectory already loaded.
    `on_step`: Alembic's on_version_apply, called inside each step's transaction. `as_sql` (conn None): render
    the SQL into config.output_buffer instead, as `alembic upgrade --sql` (`celora db lint`), from
    `starting_rev` (`alembic upgrade FROM:TO --sql`; None: the base)."""

    def steps(rev, context):  # what command.upgrade / command.downgrade pass as fn
        return script._downgrade_revs(destination, rev) if downgrade else script._upgrade_revs(destination, rev)

    if conn is not None:
        config.attributes["connection"] = conn
    if on_step is not None:
        config.attributes["on_version_apply"] = on_step
    try:
        with EnvironmentContext(config, script, fn=steps, as_sql=as_sql, starting_rev=starting_rev,
                                destination_rev=destination, tag=None):
            script.run_env()
    finally:
        config.attributes.pop("connection", None)
        config.attributes.pop("on_version_apply", None)


def drive(conn, lock: MigrationLock, config, script, *, direction: Direction, destination: str,
          planned: Sequence[Planned], done: list, record: Callable[[str, str, float], object],
          progress: ProgressCallback, versions_dir: Path) -> None:
    """Run the planned steps to `destination` under `lock`. Each finished step becomes `record(revision, name,
    duration_ms)`, appended to `done` and reported as a `direction.event` progress event. A failing step was rolled
    back (earlier ones stay); MigrationFailed names it, the PostgreSQL error and the revision the database is at."""
    names = {m.revision: m.name for m in planned}
    last = [time.perf_counter()]

    def on_step(*, ctx, step, heads, run_args):
        now = time.perf_counter()
        revision = step.up_revision_id
        finished = record(revision, names.get(revision, revision), round((now - last[0]) * 1000, 1))
        last[0] = now
        done.append(finished)
        progress(direction.event, finished)

    try:
        run_alembic(conn, config, script, destination, downgrade=direction is DOWNGRADE, on_step=on_step)
    except (CeloraError, RevisionMoved):
        raise
    except Exception as exc:  # any failure inside a step is reported the same way
        with contextlib.suppress(Exception):  # a lost connection is rolled back by the server
            conn.rollback()
        raise _failure(exc, direction, planned, done, lock, versions_dir) from exc


def _failure(exc: Exception, direction: Direction, planned: Sequence[Planned], done: list, lock: MigrationLock,
             versions_dir: Path) -> MigrationFailed:
    finished = {m.revision for m in done}
    failed = next((m for m in planned if m.revision not in finished), planned[-1])
    at = ", ".join(lock.expected or ()) or direction.empty
    state, detail = migration_failure(exc)
    doing = direction.doing.format(name=failed.name)
    message = f"{doing} failed: {detail}. {direction.rolled_back}; the database is at {at}."
    hint = (f"{direction.fix.format(path=versions_dir / failed.name)}.py and run "
            f"`celora db {direction.command}` again.")
    if connection_lost(exc):  # nobody could roll back or check: say what PostgreSQL guarantees, no more
        message = (f"{doing} was interrupted: {detail}. PostgreSQL rolls back a transaction that did not commit, "
                   f"so the database is at {at}, unless the connection broke during the commit itself "
                   "(`celora db status` shows where it is).")
        hint = (f"{direction.not_at_fault} is not at fault: check that the database server is up (it may have "
                f"crashed or restarted), then run `celora db {direction.command}` again.")
    return MigrationFailed(message, hint, revision=failed.revision, sqlstate=state, applied=list(done))
