"""`celora db resolve`: record a human's fix of a migration in the journal (Prisma's `migrate resolve`).

What each form changes, and nothing else:
- `--rolled-back NAME`: the migration's newest journal row must be `failed`; adds a `resolved_rolled_back` row
  ("a human made sure none of its changes are left"). alembic_version is not touched: the migration stays pending
  and the next `migrate-deploy` runs it again.
- `--applied NAME` on the next pending migration (its down_revision is the database's current revision; usually
  one that failed and was then finished by hand): adds a `resolved_applied` row with the SHA-256 of the file as it
  is now, and moves alembic_version from the current revision to it (creating alembic_version on an empty
  database), in the same transaction. `migrate-deploy` will not run it.
- `--applied NAME` on an applied migration whose file changed since (migrate-deploy refuses it): adds a
  `resolved_applied` row with the file's new checksum ("the database matches the file as it is now"), so
  migrate-deploy accepts it. alembic_version is not touched.
Anything else is refused (exit 12) with nothing written. The whole change runs in one transaction on the migration
connection, under the migration lock, and is refused on a production database without `--allow-production`
(celora_cli.safety.guard).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from alembic.util.exc import CommandError

from celora_cli.config.settings import Settings
from celora_cli.errors import ConfigError, Refused
from celora_cli.migrate import journal
from celora_cli.migrate.connection import migration_connection
from celora_cli.migrate.lock import MigrationLock
from celora_cli.migrate.scripts import applied_files, script_directory
from celora_cli.migrate.status import read_current
from celora_cli.safety.guard import confirm_destructive
from celora_cli.safety.stamp import database_environment


@dataclass
class ResolveResult:
    database: str  # masked URL
    revision: str
    name: str
    recorded: str  # the journal status written: resolved_applied or resolved_rolled_back
    previous: str | None  # the migration's newest journal status before (None: no row)
    checksum: str | None
    version_from: tuple[str, ...]  # alembic_version before
    version_to: tuple[str, ...]  # alembic_version after (the same when not touched)

    @property
    def stamped(self) -> bool:
        return self.version_from != self.version_to

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["stamped"] = self.stamped
        return data


def resolve(settings: Settings, *, applied: str | None = None, rolled_back: str | None = None,
            allow_production: bool = False, lock_timeout: float | None = None) -> ResolveResult:
    if (applied is None) == (rolled_back is None):
        raise ConfigError("Give either --applied NAME or --rolled-back NAME (one of them).",
                          "e.g. `celora db resolve --rolled-back 20261127000000_add_x` after a failed migration.")
    flag = "--applied" if applied is not None else "--rolled-back"
    script = script_directory(settings)
    target = _find(script, applied if applied is not None else rolled_back or "", flag)
    timeout = settings.lock_timeout if lock_timeout is None else lock_timeout
    with migration_connection(settings, "db resolve") as (conn, url):
        MigrationLock(timeout).install(conn)  # the transaction below takes the migration lock first
        result = _resolve_on(conn, settings, script, target, flag, url.masked, allow_production)
        conn.commit()
        return result


def _find(script, wanted: str, flag: str):
    """A revision id, a unique prefix of one, or the file name `db status` shows (20261126090000_init)."""
    wanted = wanted.strip()
    for by_name in script.walk_revisions():  # the file name wins: it holds the id whatever its form
        if wanted and Path(by_name.path).stem == wanted.removesuffix(".py"):
            return by_name
    for candidate in dict.fromkeys([wanted, wanted.removesuffix(".py"), wanted.split("_", 1)[0]]):
        try:
            found = script.get_revision(candidate) if candidate else None
        except (CommandError, AssertionError):  # Alembic asserts on some non-ids ("@")
            found = None
        if found is not None:
            return found
    known = ", ".join(Path(s.path).stem for s in script.walk_revisions())
    raise ConfigError(f"{flag} {wanted!r}: no such migration in the local history (known: {known}).",
                      "Pass a name as `celora db status` shows it, or a revision id.")


def _resolve_on(conn, settings: Settings, script, target, flag: str, masked: str,
                allow_production: bool) -> ResolveResult:
    current = read_current(conn)
    name = Path(target.path).stem
    latest = journal.latest_by_revision(journal.read_entries(conn)).get(target.revision)
    previous = latest.status if latest else None
    is_applied = any(f.revision == target.revision for f in applied_files(script, current)) if current else False
    checksum = journal.checksum(Path(target.path))
    version_to = current
    if flag == "--rolled-back":
        if is_applied:
            raise _refused(f"{name} is applied (alembic_version is at {', '.join(current)}), not rolled back.",
                           "To undo it, use `celora db rollback`; resolve only records a failed migration's fix.")
        if previous != journal.FAILED:
            raise _refused(f"{name} has no failed run to resolve (its newest journal row is {previous or 'none'}).",
                           "`celora db status` lists failed migrations.")
        action, recorded = f"record migration {name} as rolled back by hand", journal.RESOLVED_ROLLED_BACK
    elif is_applied:
        unchanged = latest is not None and latest.applied and latest.checksum == checksum
        if unchanged:
            raise _refused(f"{name} is applied and its file matches the journal: nothing to resolve.",
                           "`celora db status` shows applied, failed and modified migrations.")
        action, recorded = (f"accept the current file of applied migration {name} (new SHA-256 {checksum})",
                            journal.RESOLVED_APPLIED)
    else:
        downs = tuple(sorted(target._versioned_down_revisions))
        if downs != current:
            at = ", ".join(current) or "empty (no migration applied)"
            raise _refused(f"{name} is not the next migration: it follows {', '.join(downs) or 'nothing (base)'}, "
                           f"but the database is at {at}.",
                           "Resolve the next pending migration first (`celora db status` lists them in order), or "
                           "apply the ones before it with `celora db migrate-deploy`.")
        version_to = (target.revision,)
        action = (f"record migration {name} as applied by hand and move alembic_version from "
                  f"{', '.join(current) or 'empty'} to {target.revision}")
        recorded = journal.RESOLVED_APPLIED
    confirm_destructive(action, target=masked, losses=[], forced=True, settings=settings,
                        database_env=database_environment(conn), production_override=allow_production,
                        command=f"celora db resolve {flag} {name}")
    if version_to != current:
        _stamp(conn, current, target.revision)
    journal.record(conn, revision=target.revision, name=name, status=recorded, checksum=checksum)
    return ResolveResult(database=masked, revision=target.revision, name=name, recorded=recorded, previous=previous,
                         checksum=checksum, version_from=current, version_to=version_to)


def _stamp(conn, current: tuple[str, ...], revision: str) -> None:
    """Move alembic_version one step, as Alembic's own stamp writes it (its table created when missing)."""
    if not current:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL,"
                             " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (%s)", (revision,))
        return
    moved = conn.exec_driver_sql("UPDATE alembic_version SET version_num = %s WHERE version_num = %s",
                                 (revision, current[0])).rowcount
    if moved != 1:  # another runner moved it: the lock makes this unreachable, but never stamp blindly
        conn.rollback()
        raise Refused(f"alembic_version was no longer at {current[0]}; nothing was changed.",
                      "Run `celora db status` and try again.")


def _refused(message: str, hint: str) -> Refused:
    return Refused(f"{message} Nothing was changed.", hint)


__all__ = ["ResolveResult", "resolve"]
