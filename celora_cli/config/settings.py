"""One frozen Settings object, built from one declarative table: the fields of `Settings`.

Each setting is written once, as a field: its environment variable, its default (as the text one would write in
`.env`, parsed like any other value), its parser and limits, and a one-line meaning. load_settings reads the
table; the README's settings table is checked against it (tests/config/test_settings_table.py).

Precedence (highest first): flags > `--env-file` > process environment > `.env` in the project root > defaults.
An explicitly named `--env-file` is a flag, so it beats the environment; the implicit `.env` does not.

URL parsing and masking live in config/urls.py and value parsers in config/values.py; their names are
re-exported here because most of the code base imports them from this module.

This module stays light (no SQLAlchemy, no psycopg): `celora --help` imports it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from celora_cli.config.envfiles import find_project_root, is_file, read_env_file
from celora_cli.config.urls import (  # noqa: F401  (re-exported: `from celora_cli.config.settings import ...`)
    CELORA_URL_PARAMS,
    LIBPQ_PARAMS,
    LOCAL_SETTING,
    MASK,
    MAX_URL_LENGTH,
    DatabaseURL,
    is_secret_parameter,
    mask_url,
    parse_database_url,
    redact,
)
from celora_cli.config.values import (
    is_utf8,
    parse_bool,
    parse_bytes,
    parse_number,
    utf8_text,
    validate_seconds,
)
from celora_cli.errors import ConfigError

ENVIRONMENTS = ("development", "test", "staging", "production")

# Seconds, (minimum, maximum). One validator (validate_seconds) applies them to the environment, to flags and to
# library arguments alike, so a value refused in one place is refused everywhere.
HEALTH_TIMEOUT_LIMITS = (0.5, 3600.0)  # CELORA_HEALTH_TIMEOUT, db health --timeout
STUDIO_CONSOLE_TIMEOUT_LIMITS = (0.1, 3600.0)  # CELORA_STUDIO_CONSOLE_TIMEOUT; 0 would mean "no limit": refused
CONNECT_TIMEOUT_LIMITS = (1.0, 3600.0)  # CELORA_CONNECT_TIMEOUT; libpq reads 0 as "wait forever"
STATEMENT_TIMEOUT_LIMITS = (0.0, 86400.0)  # CELORA_STATEMENT_TIMEOUT; 0 = no limit
LOCK_TIMEOUT_LIMITS = (0.0, 86400.0)  # CELORA_LOCK_TIMEOUT, migrate-deploy --lock-timeout
HEALTH_THRESHOLD_LIMITS = (0.0, 86400.0)  # db health's thresholds in seconds (CELORA_HEALTH_*); 0 = any
# CELORA_DDL_LOCK_TIMEOUT, migrate-deploy --ddl-lock-timeout: PostgreSQL's lock_timeout for each migration's
# transaction; 0 would mean "queue behind any transaction forever", the very thing it prevents.
DDL_LOCK_TIMEOUT_LIMITS = (0.1, 3600.0)
DDL_LOCK_RETRIES_MAXIMUM = 100  # CELORA_DDL_LOCK_RETRIES
REPLICA_MAX_LAG_LIMITS = (0.0, 86400.0)  # CELORA_REPLICA_MAX_LAG; 0 = only a replica that replayed all it received
REPLICA_CHECK_INTERVAL_LIMITS = (0.0, 3600.0)  # CELORA_REPLICA_CHECK_INTERVAL; 0 = before every read-only session
# db studio's time bounds: PostgreSQL's statement_timeout counts whole milliseconds, so 0.001 is the least.
STUDIO_BOUND_LIMITS = (0.001, 3600.0)  # CELORA_STUDIO_COUNT_TIMEOUT, _SEARCH_TIMEOUT, _JUMP_TIMEOUT
STUDIO_SLOW_PAGE_LIMITS = (0.0, 3600.0)  # CELORA_STUDIO_SLOW_PAGE; 0 = every page is checked
CHANGES_RETRY_LIMITS = (0.0, 86400.0)  # CELORA_CHANGES_RETRY_FOR; 0 = a lost connection ends the follower
CHANGES_LAG_REPORT_LIMITS = (0.0, 86400.0)  # CELORA_CHANGES_LAG_REPORT; 0 = never


# --------------------------------------------------------------------------- the field table

Parser = Callable[[str, str], Any]  # (raw text, environment variable) -> value; None means "use the default"


def setting(env: str, default: str | None, meaning: str, parse: Parser = lambda raw, env: raw, *,
            limits: tuple[float, float] | None = None, shown: str | None = None,
            default_factory: Callable[[], Any] | None = None) -> Any:
    """One row of the table: a dataclass field whose metadata says how to read it.

    `default` is the text form (as in `.env` and the README); the field's default is `parse(default)`, so the two
    cannot disagree. None: unset. `shown` is how the README's table begins the default when it is not a literal
    value (computed elsewhere: "a free port", "`<project root>/.celora`"). `limits`: seconds, (minimum, maximum).
    """
    metadata = {"env": env, "default": default, "meaning": meaning, "parse": parse, "limits": limits,
                "shown": shown}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=None if default is None else parse(default, env), metadata=metadata)


def _seconds(limits: tuple[float, float]) -> Parser:
    return lambda raw, env: validate_seconds(raw.strip(), env, minimum=limits[0], maximum=limits[1])


def _environment(raw: str, env: str) -> str:
    value = raw.strip().lower()
    if value not in ENVIRONMENTS:
        raise ConfigError(f"{env} is {value!r}, which celora does not know.", f"Use one of: {', '.join(ENVIRONMENTS)}.")
    return value


def _path(raw: str, env: str) -> Path:
    return Path(raw).expanduser()


def _replica_urls(raw: str, env: str) -> tuple[DatabaseURL, ...]:
    """CELORA_REPLICA_URLS: comma-separated (a comma inside a URL is percent-encoded as %2C)."""
    parts = [part.strip() for part in raw.split(",")]
    return tuple(parse_database_url(part, f"{env} (URL {number})") for number, part in enumerate(parts, 1) if part)


def _role_name(raw: str, env: str) -> str:
    """A group role name: 1 to 63 bytes (PostgreSQL's NAMEDATALEN), not pg_* (reserved). Distinct: load_settings."""
    name = raw.strip()
    if not is_utf8(name) or not 1 <= len(name.encode("utf-8")) <= 63 or name.lower().startswith("pg_") \
            or "\x00" in name:
        default = next(f.metadata["default"] for f in dataclasses.fields(Settings) if f.metadata.get("env") == env)
        raise ConfigError(f"{env} must be a role name of 1 to 63 bytes not starting with pg_ (got {name!r}).",
                          f"Unset {env} to use {default!r}, or pick another name.")
    return name


_HEALTH = HEALTH_THRESHOLD_LIMITS


@dataclass(frozen=True)
class Settings:
    """Every setting celora reads (the field table). See the README's settings table."""

    database_url: DatabaseURL | None = setting(
        "DATABASE_URL", None, "app traffic; unset: the local PostgreSQL (development and test only)",
        parse_database_url, shown="unset: the local PostgreSQL")
    direct_database_url: DatabaseURL | None = setting(
        "DIRECT_DATABASE_URL", None, "migrations, DDL and locks; must bypass PgBouncer", parse_database_url,
        shown="`DATABASE_URL`")
    env: str = setting("CELORA_ENV", "development", "development, test, staging or production", _environment)
    log_queries: bool = setting("CELORA_LOG_QUERIES", "false", "log every SQL statement with its duration",
                                parse_bool)
    connect_timeout: float = setting("CELORA_CONNECT_TIMEOUT", "5", "seconds to wait for a connection",
                                     _seconds(CONNECT_TIMEOUT_LIMITS), limits=CONNECT_TIMEOUT_LIMITS)
    statement_timeout: float = setting("CELORA_STATEMENT_TIMEOUT", "30", "seconds a statement may run (0: none)",
                                       _seconds(STATEMENT_TIMEOUT_LIMITS), limits=STATEMENT_TIMEOUT_LIMITS)
    lock_timeout: float = setting("CELORA_LOCK_TIMEOUT", "60", "seconds migrate-deploy waits for another runner",
                                  _seconds(LOCK_TIMEOUT_LIMITS), limits=LOCK_TIMEOUT_LIMITS)
    ddl_lock_timeout: float = setting(
        "CELORA_DDL_LOCK_TIMEOUT", "5", "PostgreSQL lock_timeout in each migration's transaction",
        _seconds(DDL_LOCK_TIMEOUT_LIMITS), limits=DDL_LOCK_TIMEOUT_LIMITS)
    ddl_lock_retries: int = setting(
        "CELORA_DDL_LOCK_RETRIES", "3", "re-runs of a migration that hit the DDL lock timeout",
        lambda raw, env: parse_number(raw.strip(), int, env, maximum=DDL_LOCK_RETRIES_MAXIMUM))
    health_timeout: float = setting("CELORA_HEALTH_TIMEOUT", "5", "seconds the whole db health check may take",
                                    _seconds(HEALTH_TIMEOUT_LIMITS), limits=HEALTH_TIMEOUT_LIMITS)
    studio_console_timeout: float = setting(
        "CELORA_STUDIO_CONSOLE_TIMEOUT", "5", "seconds a statement of the studio's SQL console may run",
        _seconds(STUDIO_CONSOLE_TIMEOUT_LIMITS), limits=STUDIO_CONSOLE_TIMEOUT_LIMITS)
    debug: bool = setting("CELORA_DEBUG", "false", "show tracebacks (same as --debug)", parse_bool)
    # Read from the process environment (or the argument) before any .env: it says where .env is.
    project_root: Path = setting("CELORA_PROJECT_ROOT", None, "where .env, migrations/ and .celora/ are", _path,
                                 shown="nearest folder up that is a celora project", default_factory=Path.cwd)
    local_dir: Path | None = setting("CELORA_LOCAL_DIR", None, "where the local PostgreSQL keeps its data and log",
                                     _path, shown="`<project root>/.celora`")
    local_pg_bin: Path | None = setting("CELORA_PG_BIN", None, "folder with initdb, pg_ctl and postgres", _path,
                                        shown="searched")
    local_pg_user: str | None = setting("CELORA_PG_USER", None, "OS user the local server runs as under root",
                                        utf8_text, shown="`postgres`, else `nobody`")
    local_port: int | None = setting("CELORA_LOCAL_PORT", None, "TCP port of the local server on 127.0.0.1",
                                     lambda raw, env: parse_number(raw, int, env, maximum=65535),
                                     shown="a free port")
    migrations_dir: Path | None = setting("CELORA_MIGRATIONS_DIR", None, "the Alembic migrations folder", _path,
                                          shown="`<project root>/migrations`")
    shadow_database_url: DatabaseURL | None = setting(
        "SHADOW_DATABASE_URL", None, "the scratch database db migrate replays the history into",
        parse_database_url, shown="unset: a temporary `celora_shadow_<hex>` database")
    cache_dir: Path | None = setting("CELORA_CACHE_DIR", None, "where celora caches schema snapshots it built and "
                                     "what it read from each migration file", _path,
                                     shown="`<project root>/.celora/cache`")
    models: str | None = setting("CELORA_MODELS", None, "module:attribute naming the schema's MetaData",
                                 shown="`celora_cli.db.models:Base.metadata`")
    # db health in depth: PgBouncer's admin console, replicas, and what counts as degraded.
    pgbouncer_admin_url: DatabaseURL | None = setting(
        "CELORA_PGBOUNCER_ADMIN_URL", None, "PgBouncer's admin console for db health", parse_database_url,
        shown="unset")
    replica_urls: tuple[DatabaseURL, ...] = setting(
        "CELORA_REPLICA_URLS", None, "read replicas, comma-separated", _replica_urls, shown="unset",
        default_factory=tuple)
    replica_max_lag: float = setting(
        "CELORA_REPLICA_MAX_LAG", "5", "seconds of replay lag past which a replica gets no read-only sessions",
        _seconds(REPLICA_MAX_LAG_LIMITS), limits=REPLICA_MAX_LAG_LIMITS)
    replica_check_interval: float = setting(
        "CELORA_REPLICA_CHECK_INTERVAL", "1", "seconds a replica's fitness is trusted",
        _seconds(REPLICA_CHECK_INTERVAL_LIMITS), limits=REPLICA_CHECK_INTERVAL_LIMITS)
    health_pool_wait: float = setting("CELORA_HEALTH_POOL_WAIT", "1", "seconds a client may wait in PgBouncer",
                                      _seconds(_HEALTH), limits=_HEALTH)
    health_replica_lag: float = setting("CELORA_HEALTH_REPLICA_LAG", "30", "seconds of replay lag",
                                        _seconds(_HEALTH), limits=_HEALTH)
    health_lock_wait: float = setting("CELORA_HEALTH_LOCK_WAIT", "5", "seconds a session may wait on a lock",
                                      _seconds(_HEALTH), limits=_HEALTH)
    health_transaction_age: float = setting(
        "CELORA_HEALTH_TRANSACTION_AGE", "300", "seconds a transaction may stay open", _seconds(_HEALTH),
        limits=_HEALTH)
    slot_wal_threshold: int = setting("CELORA_SLOT_WAL_THRESHOLD", "1GB", "WAL a replication slot may retain",
                                      parse_bytes)
    # `celora db migrate-deploy --plan`: what counts as too big to rewrite, and as a long transaction.
    plan_rewrite_threshold: int = setting(
        "CELORA_PLAN_REWRITE_THRESHOLD", "100MB",
        "table size over which a rewrite or a write-blocking scan makes migrate-deploy --plan exit 33", parse_bytes)
    plan_long_transaction: float = setting(
        "CELORA_PLAN_LONG_TRANSACTION", "60", "seconds a transaction may stay open before migrate-deploy --plan "
        "lists it", _seconds(_HEALTH), limits=_HEALTH)
    # `celora db studio`'s list pages: how long a count, a search and a typed deep page may take, and when a page
    # is slow enough to explain itself.
    studio_count_timeout: float = setting(
        "CELORA_STUDIO_COUNT_TIMEOUT", "0.05", "seconds a filtered count may take before an estimate stands in",
        _seconds(STUDIO_BOUND_LIMITS), limits=STUDIO_BOUND_LIMITS)
    studio_search_timeout: float = setting(
        "CELORA_STUDIO_SEARCH_TIMEOUT", "2", "seconds the all-column search may take (then: partial results)",
        _seconds(STUDIO_BOUND_LIMITS), limits=STUDIO_BOUND_LIMITS)
    studio_jump_timeout: float = setting(
        "CELORA_STUDIO_JUMP_TIMEOUT", "2", "seconds a typed page number past row 10,000 may take to reach",
        _seconds(STUDIO_BOUND_LIMITS), limits=STUDIO_BOUND_LIMITS)
    studio_slow_page: float = setting(
        "CELORA_STUDIO_SLOW_PAGE", "0.1", "seconds past which a list page explains why it was slow",
        _seconds(STUDIO_SLOW_PAGE_LIMITS), limits=STUDIO_SLOW_PAGE_LIMITS)
    # `celora db changes`: what the stream may hold, how long a follower waits out a restart, how often it says
    # it is behind.
    changes_buffer: int = setting("CELORA_CHANGES_BUFFER", "1MB", "stream lines held before they are written",
                                  parse_bytes)
    changes_retry_for: float = setting(
        "CELORA_CHANGES_RETRY_FOR", "300", "seconds --follow keeps reconnecting to a server that went away",
        _seconds(CHANGES_RETRY_LIMITS), limits=CHANGES_RETRY_LIMITS)
    changes_lag_report: float = setting(
        "CELORA_CHANGES_LAG_REPORT", "30", "seconds between --follow's lag reports while behind",
        _seconds(CHANGES_LAG_REPORT_LIMITS), limits=CHANGES_LAG_REPORT_LIMITS)
    # `celora db roles`: the group roles' names.
    role_migrator: str = setting("CELORA_ROLE_MIGRATOR", "celora_migrator", "the migrations' group role",
                                 _role_name)
    role_app: str = setting("CELORA_ROLE_APP", "celora_app", "the app's group role", _role_name)
    role_readonly: str = setting("CELORA_ROLE_READONLY", "celora_readonly", "the read-only group role",
                                 _role_name)
    role_cdc: str = setting("CELORA_ROLE_CDC", "celora_cdc", "the change-data-capture group role", _role_name)

    # Not settings: what the command decided (celora_cli.local.startup). Whether it may start the local server
    # on first use (resolving URLs never starts it unless the command allowed it), and its URL once known.
    start_local_server: bool = False
    local_database_url: DatabaseURL | None = None

    @property
    def uses_local_server(self) -> bool:
        return self.database_url is None

    @property
    def deployed(self) -> bool:
        """CELORA_ENV is staging or production: a real deployment, never celora's own local server."""
        return self.env in ENVIRONMENTS[2:]

    @property
    def cache_root(self) -> Path:
        """CELORA_CACHE_DIR, or its default under the project root: schema snapshots and revision-file facts."""
        return self.cache_dir or self.project_root / ".celora" / "cache"

    @property
    def local_server_dir(self) -> Path:
        return self.local_dir or self.project_root / ".celora"

    def app_url(self) -> DatabaseURL | None:
        """The URL for app traffic, knowing its setting (`.setting`): DATABASE_URL, else the local server's once
        started (None before)."""
        return self.database_url or self.local_database_url

    def ddl_url(self) -> DatabaseURL | None:
        """The URL for migrations, DDL and locks, knowing its setting (`.setting`): DIRECT_DATABASE_URL, else
        DATABASE_URL unless it is pooled, else the local server's once started (None before)."""
        if self.direct_database_url is not None:
            return self.direct_database_url
        if self.database_url is not None and self.database_url.pgbouncer:
            raise ConfigError(
                "DATABASE_URL goes through PgBouncer (?pgbouncer=true) and DIRECT_DATABASE_URL is not set. "
                "Migrations and DDL need a direct connection: they take session locks that transaction "
                "pooling cannot keep.",
                "Set DIRECT_DATABASE_URL to the PostgreSQL server itself (usually port 5432, not 6432).",
            )
        return self.database_url or self.local_database_url

    def secrets(self) -> list[str]:
        """Every password (and secret URL parameter's value) celora knows of, for scrubbing text before it is
        shown."""
        urls = (self.database_url, self.direct_database_url, self.shadow_database_url, self.pgbouncer_admin_url,
                *self.replica_urls)
        return list(dict.fromkeys(secret for u in urls if u for secret in u.secrets))

    def with_overrides(self, **changes) -> Settings:
        """A copy with `changes` applied (None values ignored); timeouts are validated like the environment's."""
        changes = {name: value for name, value in changes.items() if value is not None}
        for name, value in changes.items():
            if name in TIMEOUT_LIMITS:
                minimum, maximum = TIMEOUT_LIMITS[name]
                changes[name] = validate_seconds(value, name, minimum=minimum, maximum=maximum)
        return replace(self, **changes)


SETTING_FIELDS = tuple(f for f in dataclasses.fields(Settings) if "env" in f.metadata)
# Settings field -> limits in seconds, for every setting that has them (with_overrides validates flags with them).
TIMEOUT_LIMITS = {f.name: f.metadata["limits"] for f in SETTING_FIELDS if f.metadata["limits"]}
ROLE_FIELDS = ("role_migrator", "role_app", "role_readonly", "role_cdc")


# --------------------------------------------------------------------------- loading


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | str | None = None,
    project_root: Path | None = None,
    **flags,
) -> Settings:
    """Build Settings from defaults < .env < environment < --env-file < flags.

    `environ` defaults to os.environ; tests pass their own mapping so they never see the developer's.
    Flags are Settings field names (health_timeout=3, ...); None values are ignored; timeouts are validated.
    """
    environ = dict(os.environ if environ is None else environ)
    root = Path(project_root or environ.get("CELORA_PROJECT_ROOT") or find_project_root())
    values: dict[str, str] = {}
    default_env_file = root / ".env"
    if is_file(default_env_file):
        values.update(read_env_file(default_env_file, environ, "The project's .env"))
    values.update(environ)
    if env_file is not None:
        env_file = Path(env_file)
        if not is_file(env_file):
            raise ConfigError(f"--env-file {env_file} does not exist or is not a file.",
                              "Pass the path of a dotenv file (KEY=value lines), e.g. --env-file .env.staging")
        values.update(read_env_file(env_file, environ, "--env-file"))

    read: dict[str, Any] = {"project_root": root}
    # CELORA_ENV first: with several wrong values, the environment's is the one reported (as it always was).
    for spec in sorted(SETTING_FIELDS, key=lambda spec: spec.name != "env"):
        if spec.name in read:
            continue
        raw = values.get(spec.metadata["env"])
        if raw in (None, ""):
            continue  # the field's default
        value = spec.metadata["parse"](raw, spec.metadata["env"])
        if value is not None:
            read[spec.name] = value
    settings = Settings(**read)
    roles = [getattr(settings, name) for name in ROLE_FIELDS]
    if len(set(roles)) < len(roles):
        raise ConfigError("CELORA_ROLE_MIGRATOR, CELORA_ROLE_APP, CELORA_ROLE_READONLY and CELORA_ROLE_CDC must "
                          "name four different roles.", "Give each group role its own name.")
    if settings.direct_database_url is not None and settings.direct_database_url.pgbouncer:
        raise ConfigError("DIRECT_DATABASE_URL has ?pgbouncer=true, but the direct URL must bypass PgBouncer.",
                          "Point DIRECT_DATABASE_URL at PostgreSQL itself and drop ?pgbouncer=true from it.")
    return settings.with_overrides(**flags)


def allowing_start(settings: Settings) -> Settings:
    """`settings` for a command that uses the database: it may start the local server on first use
    (celora_cli.local.startup). Here, in config, so the library's entry points in db/ can grant it without
    reaching up into local/."""
    if settings.start_local_server or not settings.uses_local_server:
        return settings
    return dataclasses.replace(settings, start_local_server=True)


def setting_name(settings: Settings) -> str:
    """The setting the direct (migration) URL comes from, as messages name it."""
    return "DIRECT_DATABASE_URL" if settings.direct_database_url else "DATABASE_URL"
