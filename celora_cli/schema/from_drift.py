"""Drift becomes a migration, not a reset (`celora db migrate --from-drift`; Prisma #20196, #8053).

When the development database has drifted from the history (a column added by hand, a `db push`), `db migrate`
can write the migration that makes the history match the database instead of stopping: autogenerate with the
database's own reflected schema as the target and the shadow (the history, at head) as the starting point, plus
celora's enum additions. The new revision is replayed into the shadow and the two are compared again: anything
the migration does not reproduce (a trigger, a function: Alembic does not follow them) stops the run with the
file removed, naming each object. Then it is marked applied on the development database without running it
there (alembic_version moved and a `resolved_applied` journal row, under the migration lock, as
`celora db resolve --applied` does), so the data stays where it is.

This module holds the pieces: when it may happen, the refusal that names the option, the reflected target, the
check of the result, the marking. celora_cli.schema.autogenerate strings them together with its shadow.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import MetaData

from celora_cli.config.settings import Settings
from celora_cli.errors import DriftDetected
from celora_cli.migrate.resolve import resolve
from celora_cli.schema.drift import IGNORED_TABLES, Difference, drift_error

FLAG = "--from-drift"
REVISION_NAME = "from_drift"


def accepted(differences: list[Difference], from_drift: bool, ask: Callable[[str], bool] | None,
             database: str) -> bool:
    """--from-drift, or a yes at a terminal (the differences are listed in the question)."""
    if from_drift:
        return True
    if ask is None or _unknown_revisions(differences):
        return False
    listed = [f"  - {d.describe('the development database', 'the migration history')}" for d in differences]
    return ask("\n".join([
        f"The development database {database} has drifted from the migration history:", *listed,
        "celora can write a migration that makes the history match the database and mark it applied there "
        "(nothing runs on the database; the data stays). Otherwise nothing is changed.",
        "Write the migration from the drift?"]))


def refusal(differences: list[Difference], database: str, history: str) -> DriftDetected:
    """The drift error of `db migrate`, naming --from-drift beside the reset."""
    error = drift_error(differences, database, history)
    if _unknown_revisions(differences):
        return error  # a migration this checkout lacks: no file written here could stand for it
    return DriftDetected(
        error.message,
        f"Keep the data and turn the drift into a migration with `celora db migrate {FLAG}` (at a terminal "
        "celora asks), or reset the development database to the history with `celora db reset` (it loses its "
        "data).",
        differences=differences)


def check_convertible(differences: list[Difference], database: str, history: str) -> None:
    """A database at a revision this checkout does not know cannot be described by a new migration."""
    unknown = _unknown_revisions(differences)
    if unknown:
        raise DriftDetected(
            f"{FLAG}: the development database {database} is at a revision this checkout does not have "
            f"({', '.join(unknown)}), so no migration written here could stand for its drift. Nothing was changed.",
            "Get the migration files it was migrated with (pull the branch that has them), or reset the "
            "development database with `celora db reset`.",
            differences=differences) from drift_error(differences, database, history)


def _unknown_revisions(differences: list[Difference]) -> list[str]:
    return [d.name for d in differences if d.kind == "migration"]


def reflect(conn) -> MetaData:
    """The development database's schema as the autogenerate target (bookkeeping tables left out)."""
    metadata = MetaData()
    metadata.reflect(conn)
    for name in IGNORED_TABLES:
        table = metadata.tables.get(name)
        if table is not None:
            metadata.remove(table)
    return metadata


def not_reproduced(left: list[Difference], path: str, database: str) -> DriftDetected:
    """The written migration, replayed into the shadow, still differs from the database: it was removed."""
    listed = "\n".join(f"  - {d.describe('the development database', 'the history with the new migration')}"
                       for d in left)
    return DriftDetected(
        f"{FLAG}: the migration written from the drift of {database} does not reproduce all of it "
        f"({len(left)} difference(s) left after replaying it into the shadow):\n{listed}\n"
        f"Autogenerate does not follow these objects, so the file ({path}) was removed and nothing was changed.",
        "Write a migration that makes these changes by hand (`op.execute(...)`), mark it applied on the development "
        "database with `celora db resolve --applied NAME`, then run `celora db migrate` again.",
        differences=left)


def mark_applied(settings: Settings, revision: str) -> None:
    """alembic_version to `revision` and a resolved_applied journal row, under the migration lock; nothing of the
    migration itself runs on the development database."""
    resolve(settings, applied=revision)


__all__ = ["FLAG", "REVISION_NAME", "accepted", "check_convertible", "mark_applied", "not_reproduced", "reflect",
           "refusal"]
