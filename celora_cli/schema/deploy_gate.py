"""Drift at a database's current revision, via schema snapshots: the gate `migrate-deploy` runs before applying,
and the question `migrate-deploy --plan` asks.

The live schema is read from the catalogs (celora_cli.schema.drift.snapshot) and compared with the schema the
history builds at the revision alembic_version names (celora_cli.schema.snapshots: a committed snapshot, the
cache, or built once in a shadow). A revision this checkout does not know is a difference itself.

The gate is a `before_apply` hook of celora_cli.migrate.deploy.deploy (migrate does not import schema; the CLI
composes them): it runs under the migration lock, after the journal check (an edited applied migration is exit 14
first), and only when something is pending. An empty database (nothing in alembic_version) has nothing to compare.
"""

from __future__ import annotations

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import connect, direct_url
from celora_cli.db.errors import translating
from celora_cli.errors import CeloraError, ConfigError, DriftDetected
from celora_cli.migrate.scripts import alembic_config, find_migrations_dir, script_directory
from celora_cli.migrate.squash import effective_current
from celora_cli.migrate.status import read_current
from celora_cli.schema.autogenerate import database_drift, shadow_for
from celora_cli.schema.drift import Difference, DriftReport, snapshot
from celora_cli.schema.snapshots import differences_at


def drift_at_current(settings: Settings, *, shadow_url: DatabaseURL | None = None, script=None,
                     build: bool = True) -> DriftReport:
    """Drift of the database (its direct URL) at its current revision. Only reads the database; a shadow is
    created (and dropped) only when no stored snapshot matches the history, and never with `build=False` (the
    plan on staging or production: ConfigError instead). `script`: a ScriptDirectory the caller already loaded.
    The one implementation is `db status --drift`'s (autogenerate.database_drift)."""
    if build:
        return database_drift(settings, shadow_url=shadow_url, script=script)
    config = alembic_config(settings)
    script = script if script is not None else script_directory(settings, config)
    dev_url = direct_url(settings)
    with translating(dev_url, "DATABASE_URL"), \
            connect(dev_url, settings, application_name="celora drift (snapshots only)") as conn:
        live, current = snapshot(conn), read_current(conn)
    current = effective_current(current, script, find_migrations_dir(settings))
    return DriftReport(dev_url.masked, current,
                       differences_at(settings, config, script, live, current, shadow=_no_shadow))


def _no_shadow():
    raise ConfigError(
        "No stored schema snapshot (migrations/snapshots/ or the cache) matches the history at this database's "
        "revision, and a shadow database was not to be created on this server (staging or production).",
        "Commit the snapshots (`celora db snapshots --write`), or set SHADOW_DATABASE_URL to a scratch database "
        "elsewhere.")


def drift_gate(settings: Settings, *, shadow_url: DatabaseURL | None = None):
    """The `before_apply` hook for deploy(): DriftDetected (exit 15, nothing applied) when the database differs
    from the history at its current revision."""
    configured = shadow_url if shadow_url is not None else settings.shadow_database_url

    def before_apply(conn, script, current: tuple[str, ...]) -> None:
        if not current:
            return  # nothing applied yet: no schema the history vouches for
        live = snapshot(conn)
        try:
            differences = differences_at(settings, alembic_config(settings), script, live, current,
                                         shadow=shadow_for(settings, direct_url(settings), configured),
                                         purpose="check the database for drift before deploying")
        except CeloraError as exc:  # the expected schema could not be built: nothing was applied
            exc.hint = f"{exc.hint or ''} Or deploy without the check: --allow-drift.".strip()
            raise
        if differences:
            raise deploy_drift_error(differences, current, str(find_migrations_dir(settings) / "versions"))

    return before_apply


def deploy_drift_error(differences: list[Difference], current: tuple[str, ...], history: str) -> DriftDetected:
    at = ", ".join(current)
    listed = "\n".join(f"  - {d.describe('the database', f'the migration history at {at}')}" for d in differences)
    return DriftDetected(
        f"The database has drifted from the migration history at its revision {at} ({history}): "
        f"{len(differences)} difference(s):\n{listed}\n"
        "A change made by hand, by another tool or by a restore: the pending migrations were written for the "
        "schema the history builds, so migrate-deploy applied nothing.",
        "Make the database match the history (undo the change, or add a migration that makes it and deploy that), "
        "then run migrate-deploy again; `celora db status --drift` lists the same differences. To apply anyway, "
        "knowing them, pass --allow-drift.",
        differences=differences)
