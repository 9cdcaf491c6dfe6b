"""`celora db migrate --check`: do the models need a migration? For CI: exit 1 naming each operation, 0 when
the models match the history's head.

Nothing is written to the development database and no file is written: the history is replayed up to head into a
shadow database (a temporary one on the server of DATABASE_URL, dropped afterwards, or SHADOW_DATABASE_URL,
emptied) and the models are compared with it by the comparison `db migrate` writes revisions from
(celora_cli.schema.model_changes). The development database itself need not exist: only its server is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celora_cli.config.settings import DatabaseURL, Settings
from celora_cli.db.connect import direct_url
from celora_cli.errors import ExitCode
from celora_cli.migrate.connection import migration_connection
from celora_cli.migrate.scripts import alembic_config, script_directory
from celora_cli.migrate.steps import upgrade_to
from celora_cli.results import to_json
from celora_cli.schema.generate import load_metadata, models_source
from celora_cli.schema.materialise import on, shadow
from celora_cli.schema.model_changes import Change, compare_models


@dataclass
class CheckResult:
    server: str  # masked URL of the database whose server hosted the shadow
    head: str | None  # the history's head the models were compared with
    models: str  # where the models came from (CELORA_MODELS)
    changes: list[Change] = field(default_factory=list)  # what a new migration would do
    warnings: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not self.changes

    @property
    def exit_code(self) -> int:
        return ExitCode.OK if self.in_sync else ExitCode.CHANGES

    def to_json(self) -> dict:
        return {"server": self.server, "head": self.head, "models": self.models, "in_sync": self.in_sync,
                "changes": to_json(self.changes), "warnings": self.warnings}


def check_models(settings: Settings, *, metadata=None, models: str | None = None,
                 shadow_url: DatabaseURL | None = None) -> CheckResult:
    """Compare the models with the history's head in a shadow database; changes nothing else."""
    models = models or models_source(settings)
    metadata = metadata if metadata is not None else load_metadata(models)
    config = alembic_config(settings)
    script = script_directory(settings, config)  # a broken history fails before anything is created
    head = script.get_current_head()
    host = direct_url(settings)
    result = CheckResult(server=host.masked, head=head, models=models)
    configured = shadow_url if shadow_url is not None else settings.shadow_database_url
    with shadow(settings, host, configured, "`celora db migrate --check`") as url:
        shadow_settings = on(settings, url)
        if head is not None:
            upgrade_to(shadow_settings, config, script, "head")
        with migration_connection(shadow_settings, "db migrate --check") as (conn, _url):
            changes = compare_models(conn, metadata, prepare=True)
    result.changes = changes.changes
    result.warnings = changes.warnings
    return result
