"""The schema sources `celora db diff` compares, parsed and checked before anything connects, then opened as
databases one at a time.

A source is one of:
- `models`: the project's SQLAlchemy metadata (CELORA_MODELS), created with create_all in a shadow database;
- `migrations` (head) or `migrations@REV` (a revision id or unique prefix, `head`, `base`): the history replayed
  into a shadow database;
- `database`: the configured database (DIRECT_DATABASE_URL, else DATABASE_URL), read-only;
- a PostgreSQL URL (`postgresql://...`), read-only;
- a schema SQL file (`path.sql`), loaded into a shadow database.

Live databases are only read, in READ ONLY transactions. Shadows come from celora_cli.schema.materialise and are
dropped on the way out whatever happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from celora_cli.config.settings import DatabaseURL, Settings, parse_database_url
from celora_cli.db.connect import direct_url
from celora_cli.errors import ConfigError
from celora_cli.migrate.steps import upgrade_to
from celora_cli.schema.generate import load_metadata, models_source
from celora_cli.schema.materialise import (
    create_models,
    load_sql,
    on,
    read_sql_file,
    resolve_revision,
    shadow,
)

MODELS = "models"
MIGRATIONS = "migrations"
DATABASE = "database"
URL = "url"
SQL_FILE = "sql"
SPELLINGS = ("models", "migrations", "migrations@REV", "database", "postgresql://...", "path/to/schema.sql")


@dataclass
class Source:
    kind: str
    option: str  # --from / --to, for messages
    shown: str  # how the source is named in output (a URL masked)
    revision: str | None = None  # migrations: the resolved revision id (None: base, the empty schema)
    url: DatabaseURL | None = None  # database, url
    path: Path | None = None  # sql
    sql_text: str = ""  # sql: the file, read up front
    metadata: object = None  # models
    models: str = ""  # models: where they came from

    @property
    def live(self) -> bool:
        """A database celora only reads (never a shadow)."""
        return self.kind in (DATABASE, URL)

    @property
    def label(self) -> str:
        if self.kind == MODELS:
            return f"the models ({self.models})"
        if self.kind == MIGRATIONS:
            return f"the migration history at {self.revision or 'base'}"
        if self.kind == SQL_FILE:
            return str(self.path)
        return self.shown


def parse_source(text: str, option: str, settings: Settings, script_loader) -> Source:
    """Parse and check a source (files read, revisions resolved, models imported) without connecting anywhere
    but to find the configured database's URL. `script_loader()` returns the migration history (loaded once)."""
    spelled = text.strip()
    if not spelled:
        raise _unknown(option, text)
    if spelled == MODELS:
        models = models_source(settings)
        return Source(MODELS, option, MODELS, metadata=load_metadata(models), models=models)
    if spelled == MIGRATIONS or spelled.startswith(MIGRATIONS + "@"):
        revision = spelled.partition("@")[2] or "head"
        resolved = resolve_revision(script_loader(), revision, f"{option} {spelled}")
        return Source(MIGRATIONS, option, spelled, revision=resolved)
    if spelled == DATABASE:
        url = direct_url(settings)
        return Source(DATABASE, option, url.masked, url=url)
    if "://" in spelled:
        url = parse_database_url(spelled, option)  # a malformed URL is a ConfigError, masked
        if not url.database:
            raise ConfigError(f"{option} ({url.masked}) names no database.",
                              "Add the database name: postgresql://USER@HOST:5432/DATABASE")
        return Source(URL, option, url.masked, url=url)
    path = Path(spelled).expanduser()
    if spelled.endswith(".sql") or path.is_file():
        return Source(SQL_FILE, option, str(path), path=path, sql_text=read_sql_file(path, option))
    raise _unknown(option, spelled)


def _unknown(option: str, text: str) -> ConfigError:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return ConfigError(f"{option} {shown!r} is not a schema source.",
                       f"Use one of: {', '.join(SPELLINGS)} (a file must exist or end in .sql).")


@contextlib.contextmanager
def opened(source: Source, settings: Settings, config, script_loader,
           configured_shadow: DatabaseURL | None) -> Iterator[DatabaseURL]:
    """The source as a database: the live one's URL, or a shadow made for it (dropped afterwards)."""
    if source.live:
        assert source.url is not None
        yield source.url
        return
    host = direct_url(settings)
    with shadow(settings, host, configured_shadow, f"{source.option} {source.label}") as url:
        shadow_settings = on(settings, url)
        if source.kind == MODELS:
            create_models(shadow_settings, source.metadata)
        elif source.kind == MIGRATIONS:
            if source.revision is not None:
                upgrade_to(shadow_settings, config, script_loader(), source.revision)
        else:
            assert source.path is not None
            load_sql(settings, url, source.sql_text, source.path, source.option)
        yield url
