"""The recording half of `celora db baseline` (Flyway's baseline): a database whose schema was made another way is
adopted by recording a revision in alembic_version and that revision and its ancestors in the journal as baseline
rows, so `db status` says up to date and `migrate-deploy` applies only what comes after.

Whether the schema really is the history's at that revision is asked by the caller (celora_cli.schema.baseline
compares the catalogs; migrate must not import schema). Here: the recording, in one transaction under the
migration lock, after checking again under that lock that the database still has no history (a deploy that got in
between the comparison and the lock would have written alembic_version or the journal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic.runtime.migration import MigrationContext

from celora_cli.config.settings import Settings
from celora_cli.errors import Refused
from celora_cli.migrate import journal
from celora_cli.migrate.connection import migration_connection
from celora_cli.migrate.deploy import stamp_after_deploy
from celora_cli.migrate.lock import MigrationLock
from celora_cli.migrate.status import read_current


@dataclass(frozen=True)
class ExistingHistory:
    """What says a database already has a migration history."""

    current: tuple[str, ...]  # alembic_version's rows
    journal_rows: int  # rows in celora_migrations

    @property
    def any(self) -> bool:
        return bool(self.current or self.journal_rows)

    def describe(self) -> str:
        parts = []
        if self.current:
            parts.append(f"alembic_version holds {', '.join(self.current)}")
        if self.journal_rows:
            parts.append(f"the journal {journal.JOURNAL_TABLE} holds {self.journal_rows} row(s)")
        return " and ".join(parts)


def existing_history(conn) -> ExistingHistory:
    """alembic_version's rows and the journal's row count (a psycopg or a SQLAlchemy connection)."""
    return ExistingHistory(read_current(conn), len(journal.read_entries(conn)))


def already_has_history(found: ExistingHistory, database: str) -> Refused:
    return Refused(
        f"{database} already has a migration history ({found.describe()}): `celora db baseline` adopts only a "
        "database no migration run has recorded anything in. Nothing was changed.",
        "See where it is with `celora db status` and bring it up to date with `celora db migrate-deploy`. If the "
        "bookkeeping itself is wrong, fix one migration with `celora db resolve`.")


def ancestry(script, revision: str) -> list[tuple[str, Path]]:
    """`revision` and every revision before it, oldest first: (revision, file)."""
    found = [(s.revision, Path(s.path)) for s in script.iterate_revisions(revision, "base")]
    return list(reversed(found))


def record_baseline(settings: Settings, script, revision: str, *, database: str,
                    before_recording: Callable[[object], None] | None = None) -> list[str]:
    """Record `revision` in alembic_version and it and its ancestors in the journal (status applied, baseline),
    stamp the environment as migrate-deploy does, all in one transaction under the migration lock. Returns the
    names recorded, oldest first. Refused when a history appeared meanwhile (nothing written then).

    `before_recording(conn)`: called under the lock before anything is written (the caller may look again)."""
    with migration_connection(settings, "db baseline") as (conn, _url):
        MigrationLock(settings.lock_timeout).install(conn)
        found = existing_history(conn)  # the first statement begins the transaction, which takes the lock
        if found.any:
            conn.rollback()
            raise already_has_history(found, database)
        if before_recording is not None:
            before_recording(conn)
        MigrationContext.configure(connection=conn).stamp(script, revision)
        names = []
        for rev, path in ancestry(script, revision):
            journal.record(conn, revision=rev, name=path.stem, status=journal.APPLIED,
                           checksum=journal.checksum(path), baseline=True)
            names.append(path.stem)
        conn.commit()
        stamp_after_deploy(conn, settings)
        return names
