"""`celora db baseline [--to REV]` (Flyway's baseline): adopt a database whose schema was made another way (by
hand, by another tool's migrations, by a restore, by SQLAlchemy's create_all).

1. The database must have no migration history: no alembic_version rows, no journal rows (else Refused, exit 12).
2. The history up to REV (head by default) is replayed into a shadow database and the two schemas are compared
   from the catalogs (celora_cli.schema.drift: tables, columns with types, defaults and nullability, constraints,
   indexes, enum types and labels, triggers, functions, sequences, extensions). Any difference: DriftDetected
   (exit 15) naming each one, and nothing is changed.
3. On production the guard decides (`confirm`): recording is bookkeeping only, but it is a claim about the
   database that every later deploy relies on. Elsewhere, as with Flyway's baseline, it just runs: the comparison
   has already proven the claim.
4. The recording (celora_cli.migrate.baseline): REV in alembic_version, REV and its ancestors in the journal as
   baseline rows, under the migration lock.

Bookkeeping tables are not part of the comparison, so a database that a restore brought a celora_metadata stamp
along with is adopted all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import connect, direct_url
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError, DriftDetected
from celora_cli.migrate.baseline import already_has_history, ancestry, existing_history, record_baseline
from celora_cli.migrate.scripts import alembic_config, script_directory
from celora_cli.migrate.steps import upgrade_to
from celora_cli.safety.guard import production_verdict
from celora_cli.safety.stamp import database_environment
from celora_cli.schema.drift import Difference, compare, snapshot
from celora_cli.schema.materialise import on, resolve_revision, shadow


@dataclass
class BaselinePlan:
    """What the guard is asked about (production only)."""

    database: str  # masked URL
    database_env: str | None  # the celora_metadata stamp, if a restore brought one
    revision: str
    migrations: list[str]  # recorded as baseline, oldest first

    def losses(self) -> list[str]:
        return []  # bookkeeping only: no data is lost


@dataclass
class BaselineResult:
    database: str
    revision: str
    recorded: list[str] = field(default_factory=list)  # migrations recorded as baseline, oldest first
    compared: dict[str, int] = field(default_factory=dict)  # kind -> objects that matched

    def to_json(self) -> dict:
        return {"database": self.database, "revision": self.revision, "recorded": self.recorded,
                "compared": self.compared}


Confirm = Callable[[BaselinePlan], None]


def baseline(settings: Settings, *, to: str | None = None, confirm: Confirm | None = None,
             shadow_url: DatabaseURL | None = None) -> BaselineResult:
    """Adopt the database at revision `to` (head by default). Raises Refused (it already has a history, or the
    guard said no), DriftDetected (the schema is not the history's at that revision), ConfigError (no such
    revision); changes nothing in those cases."""
    config = alembic_config(settings)
    script = script_directory(settings, config)  # a broken history fails before anything connects
    revision = resolve_revision(script, to or "head", "--to")
    if revision is None:
        raise ConfigError(f"Nothing to baseline: {'the migration history is empty' if to is None else '--to base'} "
                          "(a baseline records at least one migration).",
                          "Name a revision with --to, or write the first migration with `celora db migrate`.")
    url = direct_url(settings)
    with translating(url, url.setting), connect(url, settings, application_name="celora db baseline") as conn:
        found = existing_history(conn)
        if found.any:
            raise already_has_history(found, url.masked)
        live = snapshot(conn)
        stamp = database_environment(conn)
    configured = shadow_url if shadow_url is not None else settings.shadow_database_url
    with shadow(settings, url, configured, f"the migration history at {revision}") as shadow_db:
        upgrade_to(on(settings, shadow_db), config, script, revision)
        with translating(shadow_db, "the shadow database"), \
                connect(shadow_db, settings, application_name="celora db baseline (shadow)") as shadow_conn:
            expected = snapshot(shadow_conn)
    differences = compare(live, expected)
    if differences:
        raise _not_the_history(differences, url.masked, revision)
    names = [path.stem for _rev, path in ancestry(script, revision)]
    if confirm is not None and production_verdict(settings.env, stamp).production:
        confirm(BaselinePlan(url.masked, stamp, revision, names))
    recorded = record_baseline(settings, script, revision, database=url.masked)
    return BaselineResult(url.masked, revision, recorded,
                          {kind: len(objects) for kind, objects in sorted(expected.objects.items())})


def _not_the_history(differences: list[Difference], database: str, revision: str) -> DriftDetected:
    listed = "\n".join(f"  - {d.describe('the database', f'the migration history at {revision}')}"
                       for d in differences)
    return DriftDetected(
        f"{database} is not what the migration history builds at {revision}: {len(differences)} difference(s):\n"
        f"{listed}\nNothing was recorded: a baseline must describe the database exactly, or later migrations "
        "would run against a schema they were not written for.",
        "Make the database match (add what is missing, drop what is extra), or baseline at the revision it does "
        "match with --to REV; `celora db diff --from database --to migrations@REV` shows the differences.",
        differences=differences)
