"""One frozen Settings object, and database-URL parsing and masking.

Precedence (highest first): flags > `--env-file` > process environment > `.env` in the project root > defaults.
An explicitly named `--env-file` is a flag, so it beats the environment; the implicit `.env` does not.

This module stays light (no SQLAlchemy, no psycopg): `celora --help` imports it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from celora_cli.errors import ConfigError

ENVIRONMENTS = ("development", "test", "staging", "production")

# Query parameters celora (and Prisma before it) understands itself; never sent to libpq.
CELORA_URL_PARAMS = {"pgbouncer", "connection_limit", "pool_timeout", "schema", "socket_timeout",
                     "statement_cache_size"}

_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg": "postgresql"}


_URL_AUTHORITY = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)([^/?#\s]*)")


def mask_url(url: str) -> str:
    """Hide the password of every URL in `url` (and any password=... parameter).

    postgresql://app:s3cret@db:5432/celora -> postgresql://app:****@db:5432/celora. The user info ends at
    the LAST '@' of the authority, as urlsplit reads it, so an unencoded '@' in a password stays hidden.
    """

    def hide(match: re.Match) -> str:
        scheme, authority = match.group(1), match.group(2)
        if "@" not in authority:
            return match.group(0)
        userinfo, host = authority.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":****"
        return f"{scheme}{userinfo}@{host}"

    masked = _URL_AUTHORITY.sub(hide, url)
    return re.sub(r"(?i)((?:^|[?&\s])password=)[^&\s]*", r"\1****", masked)


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed PostgreSQL URL: what celora consumes is split from what libpq receives."""

    original: str
    username: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None
    libpq_params: tuple[tuple[str, str], ...]
    pgbouncer: bool = False
    connection_limit: int | None = None
    pool_timeout: float | None = None
    schema: str | None = None

    @property
    def masked(self) -> str:
        return mask_url(self.original)

    host_in_query: bool = False  # libpq's ?host=/socket/dir form: the URL's authority has no host

    @property
    def display_host(self) -> str:
        host = self.host or "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port or 5432}"

    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy's psycopg 3 dialect, without celora's own parameters."""
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        host = "" if self.host_in_query else (self.host or "")
        if host and ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{self.port}" if self.port else ""
        path = f"/{quote(self.database, safe='')}" if self.database else "/"
        query = f"?{urlencode(self.libpq_params)}" if self.libpq_params else ""
        return f"postgresql+psycopg://{auth}{host}{port}{path}{query}"

    def libpq_param(self, name: str) -> str | None:
        return dict(self.libpq_params).get(name)


def parse_database_url(url: str, setting: str = "DATABASE_URL") -> DatabaseURL:
    """Parse and validate a URL; errors name the setting and show the URL masked."""
    url = url.strip()
    shown = mask_url(url)
    if "://" not in url:
        # Not echoed: without a scheme we cannot tell where a password would sit in it.
        raise ConfigError(
            f"{setting} is not a URL (it has no scheme://).",
            "Use the form postgresql://USER@HOST:5432/DATABASE, with the password as USER:PASSWORD before the @.",
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _SCHEMES:
        raise ConfigError(
            f"{setting} uses the unsupported scheme {scheme!r} ({shown}). celora works with PostgreSQL only.",
            "Use a postgresql:// (or postgres://) URL.",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"{setting} is malformed ({shown}): {mask_url(str(exc))}.",
            "Check the port is a number and special characters in the password are percent-encoded "
            "(e.g. @ as %40).",
        ) from None
    database = unquote(parts.path.lstrip("/")) or None
    if database and "/" in database:
        raise ConfigError(f"{setting} has an invalid database name {database!r} ({shown}).",
                          "The path of the URL is the database name: postgresql://host:5432/celora")
    query = parse_qsl(parts.query, keep_blank_values=True)
    celora = {k: v for k, v in query if k in CELORA_URL_PARAMS}
    libpq = tuple((k, v) for k, v in query if k not in CELORA_URL_PARAMS)
    host = parts.hostname
    host_in_query = host is None and dict(libpq).get("host") is not None
    if host_in_query:  # libpq allows postgresql:///db?host=/socket/dir
        host = dict(libpq)["host"]
    return DatabaseURL(
        original=url,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=host,
        host_in_query=host_in_query,
        port=port,
        database=database,
        libpq_params=libpq,
        pgbouncer=_parse_bool(celora.get("pgbouncer", "false"), f"{setting} ?pgbouncer"),
        connection_limit=_parse_number(celora.get("connection_limit"), int, f"{setting} ?connection_limit"),
        pool_timeout=_parse_number(celora.get("pool_timeout"), float, f"{setting} ?pool_timeout"),
        schema=celora.get("schema") or None,
    )


def _parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}.", "Use true or false.")


def _parse_number(value, kind, name, maximum=None):
    if value is None or value == "":
        return None
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}.", "Use a plain number, e.g. 5.") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, not {value!r}.", "Use a plain number, e.g. 5.")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name} must be at most {maximum} (got {value!r}).", f"Use a number up to {maximum}.")
    if number < 0:
        raise ConfigError(f"{name} must not be negative (got {value!r}).", "Use a number of 0 or more.")
    return number


@dataclass(frozen=True)
class Settings:
    """Every setting celora reads. See the README's settings table; names are the environment variables."""

    database_url: DatabaseURL | None = None  # DATABASE_URL; None means "use the local PostgreSQL"
    direct_database_url: DatabaseURL | None = None  # DIRECT_DATABASE_URL
    env: str = "development"  # CELORA_ENV
    log_queries: bool = False  # CELORA_LOG_QUERIES
    connect_timeout: float = 5.0  # CELORA_CONNECT_TIMEOUT (seconds)
    statement_timeout: float = 30.0  # CELORA_STATEMENT_TIMEOUT (seconds, 0 = none)
    lock_timeout: float = 60.0  # CELORA_LOCK_TIMEOUT: how long migrate-deploy waits for another runner
    health_timeout: float = 5.0  # CELORA_HEALTH_TIMEOUT (seconds, whole health check)
    debug: bool = False  # CELORA_DEBUG
    project_root: Path = field(default_factory=Path.cwd)  # CELORA_PROJECT_ROOT
    local_dir: Path | None = None  # CELORA_LOCAL_DIR, default <project root>/.celora
    local_pg_bin: Path | None = None  # CELORA_PG_BIN: directory holding initdb/pg_ctl/postgres
    local_pg_user: str | None = None  # CELORA_PG_USER: OS user to run the local server as when root
    local_port: int | None = None  # CELORA_LOCAL_PORT: port for the local server (default: a free one)
    migrations_dir: Path | None = None  # CELORA_MIGRATIONS_DIR, default <project root>/migrations

    @property
    def uses_local_server(self) -> bool:
        return self.database_url is None

    @property
    def local_server_dir(self) -> Path:
        return self.local_dir or self.project_root / ".celora"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def ddl_url(self) -> DatabaseURL | None:
        """The URL for migrations, DDL and locks: DIRECT_DATABASE_URL, else DATABASE_URL unless it is pooled."""
        if self.direct_database_url is not None:
            return self.direct_database_url
        if self.database_url is not None and self.database_url.pgbouncer:
            raise ConfigError(
                "DATABASE_URL goes through PgBouncer (?pgbouncer=true) and DIRECT_DATABASE_URL is not set. "
                "Migrations and DDL need a direct connection: they take session locks that transaction "
                "pooling cannot keep.",
                "Set DIRECT_DATABASE_URL to the PostgreSQL server itself (usually port 5432, not 6432).",
            )
        return self.database_url

    def secrets(self) -> list[str]:
        """Every password celora knows of, for scrubbing any text before it is shown."""
        return [u.password for u in (self.database_url, self.direct_database_url) if u and u.password]

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def find_project_root(start: Path | None = None) -> Path:
    """Nearest directory (from cwd up) holding pyproject.toml, .env, .celora or migrations/; else cwd."""
    start = (start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if any((directory / marker).exists() for marker in ("pyproject.toml", ".env", ".celora", "migrations")):
            return directory
    return start


def _read_env_file(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    project_root: Path | None = None,
    **flags,
) -> Settings:
    """Build Settings from defaults < .env < environment < --env-file < flags.

    `environ` defaults to os.environ; tests pass their own mapping so they never see the developer's.
    """
    environ = dict(os.environ if environ is None else environ)
    root = Path(project_root or environ.get("CELORA_PROJECT_ROOT") or find_project_root())
    values: dict[str, str] = {}
    default_env_file = root / ".env"
    if default_env_file.is_file():
        values.update(_read_env_file(default_env_file))
    values.update(environ)
    if env_file is not None:
        env_file = Path(env_file)
        if not env_file.is_file():
            raise ConfigError(f"--env-file {env_file} does not exist or is not a file.",
                              "Pass the path of a dotenv file (KEY=value lines), e.g. --env-file .env.staging")
        values.update(_read_env_file(env_file))

    def get(name: str) -> str | None:
        value = values.get(name)
        return value if value not in (None, "") else None

    env = (get("CELORA_ENV") or "development").strip().lower()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"CELORA_ENV is {env!r}, which celora does not know.",
                          f"Use one of: {', '.join(ENVIRONMENTS)}.")

    def number(name: str, default: float) -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            result = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, not {raw!r}.",
                              f"Set {name}=5 (seconds) or unset it.") from None
        if not math.isfinite(result):
            raise ConfigError(f"{name} must be a finite number of seconds (got {raw!r}).",
                              f"Set {name}=5 (seconds) or unset it.")
        if result < 0:
            raise ConfigError(f"{name} must not be negative (got {raw!r}).", f"Set {name} to 0 or more.")
        return result

    def optional_path(name: str) -> Path | None:
        raw = get(name)
        return Path(raw).expanduser() if raw else None

    database_url = get("DATABASE_URL")
    direct_url = get("DIRECT_DATABASE_URL")
    local_port = get("CELORA_LOCAL_PORT")
    settings = Settings(
        database_url=parse_database_url(database_url, "DATABASE_URL") if database_url else None,
        direct_database_url=parse_database_url(direct_url, "DIRECT_DATABASE_URL") if direct_url else None,
        env=env,
        log_queries=_parse_bool(get("CELORA_LOG_QUERIES") or "false", "CELORA_LOG_QUERIES"),
        connect_timeout=number("CELORA_CONNECT_TIMEOUT", 5.0),
        statement_timeout=number("CELORA_STATEMENT_TIMEOUT", 30.0),
        lock_timeout=number("CELORA_LOCK_TIMEOUT", 60.0),
        health_timeout=number("CELORA_HEALTH_TIMEOUT", 5.0),
        debug=_parse_bool(get("CELORA_DEBUG") or "false", "CELORA_DEBUG"),
        project_root=root,
        local_dir=optional_path("CELORA_LOCAL_DIR"),
        local_pg_bin=optional_path("CELORA_PG_BIN"),
        local_pg_user=get("CELORA_PG_USER"),
        local_port=_parse_number(local_port, int, "CELORA_LOCAL_PORT", maximum=65535),
        migrations_dir=optional_path("CELORA_MIGRATIONS_DIR"),
    )
    if settings.direct_database_url is not None and settings.direct_database_url.pgbouncer:
        raise ConfigError("DIRECT_DATABASE_URL has ?pgbouncer=true, but the direct URL must bypass PgBouncer.",
                          "Point DIRECT_DATABASE_URL at PostgreSQL itself and drop ?pgbouncer=true from it.")
    return settings.with_overrides(**flags)


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Mask URL passwords and every known secret in free text (error messages, logs)."""
    text = mask_url(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "****")
    return text
