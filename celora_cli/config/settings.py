"""One frozen Settings object, and database-URL parsing and masking.

Precedence (highest first): flags > `--env-file` > process environment > `.env` in the project root > defaults.
An explicitly named `--env-file` is a flag, so it beats the environment; the implicit `.env` does not.

This module stays light (no SQLAlchemy, no psycopg): `celora --help` imports it.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from celora_cli.errors import ConfigError

ENVIRONMENTS = ("development", "test", "staging", "production")

# Query parameters celora (and Prisma before it) understands itself; never sent to libpq.
CELORA_URL_PARAMS = {"pgbouncer", "connection_limit", "pool_timeout", "schema", "socket_timeout",
                     "statement_cache_size"}

# libpq's connection keywords (PostgreSQL 18 docs, "Parameter Key Words"). In a URL's query an '@' inside the
# value of one of these (options=-c x=a@b, application_name=me@laptop) is data; an '@' anywhere else after the
# host may end a password holding an unencoded '/', '?' or '#', so masking treats it as the end of the user info.
LIBPQ_PARAMS = {
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth", "channel_binding",
    "connect_timeout", "client_encoding", "options", "application_name", "fallback_application_name",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
    "replication", "gssencmode", "sslmode", "requiressl", "sslnegotiation", "sslcompression", "sslcert",
    "sslkey", "sslkeylogfile", "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni",
    "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version", "min_protocol_version",
    "max_protocol_version", "krbsrvname", "gsslib", "gssdelegation", "scram_client_key", "scram_server_key",
    "service", "target_session_attrs", "load_balance_hosts", "oauth_issuer", "oauth_client_id",
    "oauth_client_secret", "oauth_scope",
}

_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg": "postgresql"}

# A PostgreSQL URL is a few hundred characters at most; a 40 kB one is a mistake (a file's content, a loop).
MAX_URL_LENGTH = 8192

# Seconds, (minimum, maximum). One validator (validate_seconds) applies them to the environment, to flags and to
# library arguments alike, so a value refused in one place is refused everywhere.
HEALTH_TIMEOUT_LIMITS = (0.5, 3600.0)  # CELORA_HEALTH_TIMEOUT, db health --timeout
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

# Settings field -> (environment variable, limits)
_TIMEOUT_SETTINGS = {
    "connect_timeout": ("CELORA_CONNECT_TIMEOUT", CONNECT_TIMEOUT_LIMITS),
    "statement_timeout": ("CELORA_STATEMENT_TIMEOUT", STATEMENT_TIMEOUT_LIMITS),
    "lock_timeout": ("CELORA_LOCK_TIMEOUT", LOCK_TIMEOUT_LIMITS),
    "ddl_lock_timeout": ("CELORA_DDL_LOCK_TIMEOUT", DDL_LOCK_TIMEOUT_LIMITS),
    "health_timeout": ("CELORA_HEALTH_TIMEOUT", HEALTH_TIMEOUT_LIMITS),
    "health_pool_wait": ("CELORA_HEALTH_POOL_WAIT", HEALTH_THRESHOLD_LIMITS),
    "health_replica_lag": ("CELORA_HEALTH_REPLICA_LAG", HEALTH_THRESHOLD_LIMITS),
    "health_lock_wait": ("CELORA_HEALTH_LOCK_WAIT", HEALTH_THRESHOLD_LIMITS),
    "health_transaction_age": ("CELORA_HEALTH_TRANSACTION_AGE", HEALTH_THRESHOLD_LIMITS),
    "replica_max_lag": ("CELORA_REPLICA_MAX_LAG", REPLICA_MAX_LAG_LIMITS),
    "replica_check_interval": ("CELORA_REPLICA_CHECK_INTERVAL", REPLICA_CHECK_INTERVAL_LIMITS),
}

_ENCODE_HINT = ("Percent-encode special characters in the user name and password: / as %2F, ? as %3F, "
                "# as %23, @ as %40, % as %25 (Python: urllib.parse.quote(password, safe='')). An '@' in the "
                "database name or in a parameter value is written %40.")


# --------------------------------------------------------------------------- masking


_QUERY_KEYS = LIBPQ_PARAMS | CELORA_URL_PARAMS
_WHITESPACE = re.compile(r"\s")
_AUTHORITY_END = re.compile(r"[/?#]")
_USERINFO_SCAN = re.compile(r"[@?&#=]")
# A name=value parameter in a URL's query or in free text (a libpq keyword/value string). In free text the value
# ends at whitespace, '&' or '"' (a JSON string's end: the JSON output is masked as text); in one known URL at '&'.
_TEXT_PARAM = re.compile(r"(^|[?&\s])([^=&\s?#]+)=([^&\s\"]*)")
_URL_PARAM = re.compile(r"(^|[?&])([^=&?#]+)=([^&]*)")
# Parameters whose value is a secret besides the password: any name holding "password" or "secret" (libpq's
# sslpassword and oauth_client_secret, and whatever a URL carries for another tool), and libpq's SCRAM keys.
_SECRET_NAME_PARTS = ("password", "secret")
_SECRET_NAMES = frozenset({"scram_client_key", "scram_server_key"})
MASK = "****"


def is_secret_parameter(name: str) -> bool:
    """Whether a URL parameter's value is a secret. The name is compared percent-decoded (libpq decodes it, so
    `ssl%70assword` is sslpassword) and case-insensitively; decoded again while that changes it (bounded)."""
    for _ in range(3):
        decoded = unquote(name, errors="replace")
        if decoded == name:
            break
        name = decoded
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(part in lowered for part in _SECRET_NAME_PARTS)


def _mask_parameter(match: re.Match) -> str:
    if not is_secret_parameter(match.group(2)) or not match.group(3):
        return match.group()
    return f"{match.group(1)}{match.group(2)}={MASK}"


def _mask_parameters(text: str, pattern: re.Pattern = _TEXT_PARAM) -> str:
    """Every secret parameter's value (see is_secret_parameter) replaced by ****. Linear in len(text)."""
    return pattern.sub(_mask_parameter, text)


def _userinfo_end(rest: str) -> int | None:
    """Index in `rest` (a URL after its scheme://) of the '@' that ends the user info, or None.

    That is the last '@' before the host. A password may hold an unencoded '/', '?' or '#', so the host is not
    simply what follows the first '@' before '/?#': every '@' counts except one inside the value of a libpq
    parameter in the query (?options=a@b, ?application_name=me@laptop). One pass over `rest`: linear time.
    """
    last_candidate = last_at = None
    state = "before query"  # then "query" after the first '?', "fragment" after a '#'
    # The current query parameter: where it starts, and once its '=' is seen whether its name is libpq's.
    piece_start, named = 0, None
    for match in _USERINFO_SCAN.finditer(rest):
        char, at = match.group(), match.start()
        if char == "@":
            last_at = at
            if not (state == "query" and named):
                last_candidate = at
        elif char == "#":
            state = "fragment"
        elif char == "?" and state == "before query":
            state, piece_start, named = "query", at + 1, None
        elif char == "&" and state == "query":
            piece_start, named = at + 1, None
        elif char == "=" and state == "query" and named is None:
            named = rest[piece_start:at].lower() in _QUERY_KEYS  # once per parameter: stays linear
    if last_candidate is not None:
        return last_candidate
    if last_at is not None:
        # Every '@' sits in a parameter value. If what precedes the query is not host[:port] either, the
        # ':' began a password that runs into the query: hide everything up to the last '@'.
        end = _AUTHORITY_END.search(rest)
        if not _is_host_and_port(rest[:end.start() if end else len(rest)]):
            return last_at
    return None


def _is_host_and_port(authority: str) -> bool:
    """host, host:port, [v6]:port, or several of them separated by commas (libpq's multi-host form)."""
    for spec in authority.split(","):
        if spec.startswith("["):
            closing = spec.find("]")
            if closing < 0:
                return False
            port = spec[closing + 1:]
            if port and not (port.startswith(":") and port[1:].isdigit()):
                return False
        elif ":" in spec and not spec.split(":", 1)[1].isdigit():
            return False
    return True


def _mask_userinfo(rest: str) -> str:
    """`rest` (after scheme://) with the password replaced by ****."""
    end = _userinfo_end(rest)
    if end is None:
        return rest
    colon = rest.find(":", 0, end)
    if colon < 0:
        return rest  # a user name without a password: nothing secret
    return f"{rest[:colon + 1]}****{rest[end:]}"


def mask_url(text: str) -> str:
    """Hide the password of every URL in free text, and the value of every secret parameter (password=,
    sslpassword=, any name holding "password" or "secret", percent-encoded or not: is_secret_parameter).

    postgresql://app:s3cret@db:5432/celora -> postgresql://app:****@db:5432/celora. The password ends at the
    last '@' before the host (see _userinfo_end), so an unencoded '@', '/', '?' or '#' in it stays hidden. In
    free text a URL ends at whitespace. Linear time: every character is looked at a bounded number of times.
    """
    pieces = []
    position = 0
    while (separator := text.find("://", position)) >= 0:
        start = separator + 3
        space = _WHITESPACE.search(text, start)
        end = space.start() if space else len(text)
        pieces += [text[position:start], _mask_userinfo(text[start:end])]
        position = end
    pieces.append(text[position:])
    return _mask_parameters("".join(pieces))


def _mask_one_url(url: str) -> str:
    """Mask `url` known to be a single URL (so a space in its password, or in a secret parameter, does not end
    it, as in free text)."""
    if "://" not in url:
        return _mask_parameters(url)
    scheme, rest = url.split("://", 1)
    rest = _mask_userinfo(rest)  # from here on the first '?' starts the query: the password is ****
    path, question, query = rest.partition("?")
    if question:
        rest = f"{path}?{_mask_parameters(query, _URL_PARAM)}"
    return f"{scheme}://{rest}"


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Mask URL passwords and every known secret in free text (error messages, logs). Linear in len(text)."""
    text = mask_url(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "****")
    return text


# --------------------------------------------------------------------------- URL parsing


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed PostgreSQL URL: what celora consumes is split from what libpq receives."""

    original: str
    username: str | None
    password: str | None
    host: str | None  # as written (not lower-cased), percent-decoded; a path starting with '/' is a socket dir
    port: int | None
    database: str | None
    libpq_params: tuple[tuple[str, str], ...]
    pgbouncer: bool = False
    connection_limit: int | None = None
    pool_timeout: float | None = None
    schema: str | None = None
    host_in_query: bool = False  # libpq's ?host=/socket/dir form: the URL's authority has no host

    def __repr__(self) -> str:
        # The dataclass's own repr would show `original` and `password` (in a traceback, a log, a debugger).
        return f"DatabaseURL({self.masked!r})"

    __str__ = __repr__

    @property
    def masked(self) -> str:
        return _mask_one_url(self.original)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password and the values of secret parameters (sslpassword=, ...): for scrubbing free text."""
        values = [self.password] if self.password else []
        query = urlsplit(self.original).query if "?" in self.original else ""
        with contextlib.suppress(ValueError):
            values += [value for name, value in parse_qsl(query, keep_blank_values=False)
                       if is_secret_parameter(name) and value]
        return tuple(dict.fromkeys(values))

    @property
    def is_socket(self) -> bool:
        return self.host is not None and self.host.startswith("/")

    @property
    def display_host(self) -> str:
        if self.host is None:  # libpq then uses its unix socket (or PGHOST), not TCP to localhost
            return f"the default unix socket (port {self.port or 5432})"
        host = self.host
        if host.startswith("/"):  # a socket directory: name the socket file, as libpq does
            return f"{host.rstrip('/')}/.s.PGSQL.{self.port or 5432}"
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port or 5432}"

    @property
    def pg_isready(self) -> str:
        """The command that checks whether this URL's server accepts connections."""
        import shlex

        host = f"-h {shlex.quote(self.host)} " if self.host else ""
        return f"pg_isready {host}-p {self.port or 5432}"

    def sqlalchemy_url(self) -> str:
        """The URL for SQLAlchemy's psycopg 3 dialect, without celora's own parameters."""
        auth = ""
        if self.username:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        params = self.libpq_params
        host = "" if self.host_in_query else (self.host or "")
        if host.startswith("/"):
            # SQLAlchemy does not percent-decode the host, so a socket directory travels as libpq's ?host=.
            params = (*params, ("host", host))
            host = ""
        elif ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{self.port}" if self.port else ""
        path = f"/{quote(self.database, safe='')}" if self.database else "/"
        query = f"?{urlencode(params)}" if params else ""
        return f"postgresql+psycopg://{auth}{host}{port}{path}{query}"

    def libpq_param(self, name: str) -> str | None:
        return dict(self.libpq_params).get(name)


def parse_database_url(url: str, setting: str = "DATABASE_URL") -> DatabaseURL:
    """Parse and validate a URL; errors name the setting and never show the password."""
    url = url.strip()
    _check_length_and_encoding(url, setting)
    if "://" not in url:
        # Not echoed: without a scheme we cannot tell where a password would sit in it.
        raise ConfigError(
            f"{setting} is not a URL (it has no scheme://).",
            "Use the form postgresql://USER@HOST:5432/DATABASE, with the password as USER:PASSWORD before the @.",
        )
    shown = _mask_one_url(url)
    scheme, rest = url.split("://", 1)
    if scheme.lower() not in _SCHEMES:
        raise ConfigError(
            f"{setting} uses the unsupported scheme {scheme.lower()!r} ({shown}). celora works with PostgreSQL "
            "only.",
            "Use a postgresql:// (or postgres://) URL.",
        )
    end = _userinfo_end(rest)
    if end is not None and _AUTHORITY_END.search(rest, 0, end):
        raise ConfigError(
            f"{setting} has an '@' after a '/', '?' or '#' ({shown}): either the password holds an unencoded "
            "'/', '?' or '#', or the database name or a parameter holds an unencoded '@'.",
            _ENCODE_HINT,
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"{setting} is malformed ({shown}): {_urlsplit_problem(exc)}.", _ENCODE_HINT) from None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    host, port = _host_and_port(hostport, setting, shown)
    database = _decode(parts.path.lstrip("/"), "database name", setting, shown) or None
    if database and "/" in database:
        raise ConfigError(f"{setting} has an invalid database name {database!r} ({shown}).",
                          "The path of the URL is the database name: postgresql://host:5432/celora")
    query = parse_qsl(parts.query, keep_blank_values=True)
    celora = {k: v for k, v in query if k in CELORA_URL_PARAMS}
    libpq = tuple((k, v) for k, v in query if k not in CELORA_URL_PARAMS)
    host_in_query = host is None and dict(libpq).get("host") is not None
    if host_in_query:  # libpq allows postgresql:///db?host=/socket/dir
        host = dict(libpq)["host"]
    return DatabaseURL(
        original=url,
        username=_decode(user, "user name", setting, shown) if at and user else None,
        password=_decode(password, "password", setting, shown) if at and colon else None,
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


def _check_length_and_encoding(url: str, setting: str) -> None:
    """Checked before anything else reads the URL (or echoes it)."""
    if len(url) > MAX_URL_LENGTH:
        raise ConfigError(
            f"{setting} is {len(url):,} characters long; celora accepts database URLs up to "
            f"{MAX_URL_LENGTH:,} characters.",
            f"Check that {setting} holds one PostgreSQL URL (postgresql://USER@HOST:5432/DATABASE), not a "
            "file's content.",
        )
    if not _is_utf8(url):  # os.environ keeps undecodable bytes as lone surrogates
        raise ConfigError(
            f"{setting} contains bytes that are not UTF-8 text.",
            f"Set {setting} as UTF-8, and percent-encode non-ASCII characters (e.g. é as %C3%A9).",
        )


def _urlsplit_problem(exc: ValueError) -> str:
    """Why urlsplit refused the URL, in our words: its own messages can repeat the netloc, password included."""
    text = str(exc)
    if "IPv6" in text:
        return "unbalanced [ ] around an IPv6 address"
    if "NFKC" in text:
        return "its host or user info has characters that Unicode normalisation changes (e.g. full-width ＃)"
    return "it is not a valid URL"


def _host_and_port(hostport: str, setting: str, shown: str) -> tuple[str | None, int | None]:
    """The host as written (percent-decoded, case kept: urlsplit's .hostname lower-cases) and the port."""
    if hostport.startswith("["):
        closing = hostport.find("]")
        raw_host, port_text = hostport[1:closing], hostport[closing + 1:]
        if port_text and not port_text.startswith(":"):
            raise ConfigError(f"{setting} is malformed ({shown}): text after the IPv6 address ']'.",
                              "Write an IPv6 host as [2001:db8::1]:5432.")
        port_text = port_text[1:]
        ipv6 = True
    else:
        raw_host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
        ipv6 = False
    port = None
    if port_text:
        # urlsplit's own wording. Safe to echo: the user info (checked above) ends before the port.
        if not (port_text.isascii() and port_text.isdigit()):
            problem = f"Port could not be cast to integer value as {port_text!r}"
        elif int(port_text) > 65535:
            problem = f"Port out of range 0-65535 (got {port_text})"
        else:
            problem = None
        if problem:
            raise ConfigError(f"{setting} is malformed ({shown}): {problem}.",
                              "Check the port is a number and special characters in the password are "
                              "percent-encoded (e.g. @ as %40).")
        port = int(port_text)
    host = _decode(raw_host, "host", setting, shown) or None
    if host and not ipv6 and not host.startswith("/"):
        try:  # what the resolver will do with it (socket.getaddrinfo encodes with idna)
            host.encode("idna")
        except UnicodeError:
            raise ConfigError(
                f"{setting} has an invalid host name {host!r} ({shown}): a part between dots is empty or "
                "longer than 63 characters, or holds characters a host name cannot have.",
                "Check the host name; a unix socket directory is written percent-encoded "
                "(postgresql://USER@%2Fvar%2Frun%2Fpostgresql/DATABASE) or as ?host=/var/run/postgresql.",
            ) from None
    return host, port


def _decode(component: str, what: str, setting: str, shown: str) -> str:
    try:
        return unquote(component, errors="strict")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{setting} has a percent-encoded {what} that is not UTF-8 ({shown}).",
            "Percent-encode the UTF-8 bytes of each character (e.g. é as %C3%A9).",
        ) from None


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


def validate_seconds(value, name: str, *, minimum: float, maximum: float) -> float:
    """A number of seconds from the environment (a string), a flag or a library argument, within limits.

    `name` is what the user wrote (CELORA_HEALTH_TIMEOUT, --timeout, check_database_health(timeout=...)).
    """
    fix = f"Use a number of seconds from {minimum:g} to {maximum:g}."
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}.", fix)
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}.", fix) from None
    if not math.isfinite(seconds):
        raise ConfigError(f"{name} must be a finite number of seconds, not {value!r}.", fix)
    if not minimum <= seconds <= maximum:
        raise ConfigError(f"{name} must be from {minimum:g} to {maximum:g} seconds, not {value!r}.", fix)
    return seconds


# --------------------------------------------------------------------------- Settings


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
    ddl_lock_timeout: float = 5.0  # CELORA_DDL_LOCK_TIMEOUT: PostgreSQL lock_timeout in each migration's transaction
    ddl_lock_retries: int = 3  # CELORA_DDL_LOCK_RETRIES: re-runs of a migration that hit the DDL lock timeout
    health_timeout: float = 5.0  # CELORA_HEALTH_TIMEOUT (seconds, whole health check)
    debug: bool = False  # CELORA_DEBUG
    project_root: Path = field(default_factory=Path.cwd)  # CELORA_PROJECT_ROOT
    local_dir: Path | None = None  # CELORA_LOCAL_DIR, default <project root>/.celora
    local_pg_bin: Path | None = None  # CELORA_PG_BIN: directory holding initdb/pg_ctl/postgres
    local_pg_user: str | None = None  # CELORA_PG_USER: OS user to run the local server as when root
    local_port: int | None = None  # CELORA_LOCAL_PORT: port for the local server (default: a free one)
    migrations_dir: Path | None = None  # CELORA_MIGRATIONS_DIR, default <project root>/migrations
    shadow_database_url: DatabaseURL | None = None  # SHADOW_DATABASE_URL: `db migrate`'s scratch database
    models: str | None = None  # CELORA_MODELS: "module:attribute" naming the schema's MetaData
    # db health in depth: PgBouncer's admin console, replicas, and what counts as degraded.
    pgbouncer_admin_url: DatabaseURL | None = None  # CELORA_PGBOUNCER_ADMIN_URL (database "pgbouncer")
    replica_urls: tuple[DatabaseURL, ...] = ()  # CELORA_REPLICA_URLS, comma-separated
    # Read-only sessions (session_scope(read_only=True)) go to a replica whose replay lag is at most this.
    replica_max_lag: float = 5.0  # CELORA_REPLICA_MAX_LAG (seconds)
    replica_check_interval: float = 1.0  # CELORA_REPLICA_CHECK_INTERVAL: seconds a replica's fitness is trusted
    health_pool_wait: float = 1.0  # CELORA_HEALTH_POOL_WAIT: seconds a client may wait in PgBouncer
    health_replica_lag: float = 30.0  # CELORA_HEALTH_REPLICA_LAG: seconds of replay lag
    health_lock_wait: float = 5.0  # CELORA_HEALTH_LOCK_WAIT: seconds a session may wait on a lock
    health_transaction_age: float = 300.0  # CELORA_HEALTH_TRANSACTION_AGE: seconds a transaction may stay open
    slot_wal_threshold: int = 1024 ** 3  # CELORA_SLOT_WAL_THRESHOLD: bytes of WAL a slot (active or not) may retain
    # `celora db roles`: the group roles' names (CELORA_ROLE_MIGRATOR, _APP, _READONLY, _CDC).
    role_migrator: str = "celora_migrator"
    role_app: str = "celora_app"
    role_readonly: str = "celora_readonly"
    role_cdc: str = "celora_cdc"

    @property
    def uses_local_server(self) -> bool:
        return self.database_url is None

    @property
    def local_server_dir(self) -> Path:
        return self.local_dir or self.project_root / ".celora"

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
        """Every password (and secret URL parameter's value) celora knows of, for scrubbing text before it is
        shown."""
        urls = (self.database_url, self.direct_database_url, self.shadow_database_url, self.pgbouncer_admin_url,
                *self.replica_urls)
        return list(dict.fromkeys(secret for u in urls if u for secret in u.secrets))

    def with_overrides(self, **changes) -> Settings:
        """A copy with `changes` applied (None values ignored); timeouts are validated like the environment's."""
        changes = {name: value for name, value in changes.items() if value is not None}
        for name, value in changes.items():
            if name in _TIMEOUT_SETTINGS:
                minimum, maximum = _TIMEOUT_SETTINGS[name][1]
                changes[name] = validate_seconds(value, name, minimum=minimum, maximum=maximum)
        return replace(self, **changes)


# --------------------------------------------------------------------------- project root and env files


def find_project_root(start: Path | None = None) -> Path:
    """Nearest directory (from cwd up) that is a celora project; else cwd.

    A celora project has `migrations/env.py`, a `[tool.celora]` table in pyproject.toml, or a local server's
    `.celora/server.json`. Any pyproject.toml or .env is not enough: a command run in some other project
    must not read that project's .env nor create a cluster in it.
    """
    start = (start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if _is_celora_project(directory):
            return directory
    return start


def _is_celora_project(directory: Path) -> bool:
    try:
        if (directory / "migrations" / "env.py").is_file() or (directory / ".celora" / "server.json").is_file():
            return True
        return (directory / "pyproject.toml").is_file() and _has_celora_table(directory / "pyproject.toml")
    except OSError:  # an unreadable folder on the way up is not ours
        return False


def _has_celora_table(pyproject: Path) -> bool:
    import tomllib

    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # a broken pyproject.toml is its own tool's problem, not a reason to fail here
    tool = data.get("tool")
    return isinstance(tool, dict) and isinstance(tool.get("celora"), dict)


_KEY_OF_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=")


def _read_env_file(path: Path, environ: Mapping[str, str], what: str) -> dict[str, str]:
    """KEY=value pairs of a dotenv file, parsed by python-dotenv; a file it cannot read fully is an error.

    python-dotenv itself only warns about a line it cannot parse and skips it: a DATABASE_URL with an
    unterminated quote would be dropped and the command would go on against the environment's database.
    `${VAR}` references resolve against `environ` and the file's earlier keys, as python-dotenv does.
    """
    from dotenv.parser import parse_stream
    from dotenv.variables import parse_variables

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}.",
                          "Check the file's permissions, or pass another --env-file.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}).",
                          f"Save {path.name} as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(_unparsable_line(path, what, binding.original.string, binding.original.line),
                              "Write each setting as KEY=value on its own line; close every quote "
                              "(KEY=\"value\"); start comments with #.")
        if binding.key is None or binding.value is None:
            continue
        scope = {**environ, **values}
        values[binding.key] = "".join(atom.resolve(scope) for atom in parse_variables(binding.value))
    return values


def _unparsable_line(path: Path, what: str, original: str, line: int) -> str:
    """Names the file, the line and the key, never the value (it may be a password)."""
    leading = original[:len(original) - len(original.lstrip())]
    line += leading.count("\n")  # python-dotenv's line is where the blank lines before the statement start
    key = _KEY_OF_LINE.match(original)
    which = f" (the value of {key.group(1)})" if key else ""
    return (f"{what} {path} line {line}{which} cannot be parsed: an unterminated quote, or a line that is not "
            "KEY=value. celora stops rather than skip it.")


def _optional_url(raw: str | None, setting: str) -> DatabaseURL | None:
    return parse_database_url(raw, setting) if raw else None


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
    if _is_file(default_env_file):
        values.update(_read_env_file(default_env_file, environ, "The project's .env"))
    values.update(environ)
    if env_file is not None:
        env_file = Path(env_file)
        if not _is_file(env_file):
            raise ConfigError(f"--env-file {env_file} does not exist or is not a file.",
                              "Pass the path of a dotenv file (KEY=value lines), e.g. --env-file .env.staging")
        values.update(_read_env_file(env_file, environ, "--env-file"))

    def get(name: str) -> str | None:
        value = values.get(name)
        return value if value not in (None, "") else None

    env = (get("CELORA_ENV") or "development").strip().lower()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"CELORA_ENV is {env!r}, which celora does not know.",
                          f"Use one of: {', '.join(ENVIRONMENTS)}.")

    def seconds(field_name: str, default: float) -> float:
        name, (minimum, maximum) = _TIMEOUT_SETTINGS[field_name]
        raw = get(name)
        return default if raw is None else validate_seconds(raw.strip(), name, minimum=minimum, maximum=maximum)

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
        connect_timeout=seconds("connect_timeout", 5.0),
        statement_timeout=seconds("statement_timeout", 30.0),
        lock_timeout=seconds("lock_timeout", 60.0),
        ddl_lock_timeout=seconds("ddl_lock_timeout", 5.0),
        ddl_lock_retries=_ddl_lock_retries(get("CELORA_DDL_LOCK_RETRIES")),
        health_timeout=seconds("health_timeout", 5.0),
        debug=_parse_bool(get("CELORA_DEBUG") or "false", "CELORA_DEBUG"),
        project_root=root,
        local_dir=optional_path("CELORA_LOCAL_DIR"),
        local_pg_bin=optional_path("CELORA_PG_BIN"),
        local_pg_user=_utf8_text(get("CELORA_PG_USER"), "CELORA_PG_USER"),
        local_port=_parse_number(local_port, int, "CELORA_LOCAL_PORT", maximum=65535),
        migrations_dir=optional_path("CELORA_MIGRATIONS_DIR"),
        shadow_database_url=_optional_url(get("SHADOW_DATABASE_URL"), "SHADOW_DATABASE_URL"),
        models=get("CELORA_MODELS"),
        pgbouncer_admin_url=_optional_url(get("CELORA_PGBOUNCER_ADMIN_URL"), "CELORA_PGBOUNCER_ADMIN_URL"),
        replica_urls=_replica_urls(get("CELORA_REPLICA_URLS")),
        replica_max_lag=seconds("replica_max_lag", 5.0),
        replica_check_interval=seconds("replica_check_interval", 1.0),
        health_pool_wait=seconds("health_pool_wait", 1.0),
        health_replica_lag=seconds("health_replica_lag", 30.0),
        health_lock_wait=seconds("health_lock_wait", 5.0),
        health_transaction_age=seconds("health_transaction_age", 300.0),
        slot_wal_threshold=parse_bytes(get("CELORA_SLOT_WAL_THRESHOLD") or "1GB", "CELORA_SLOT_WAL_THRESHOLD"),
        **_role_names(get),
    )
    if settings.direct_database_url is not None and settings.direct_database_url.pgbouncer:
        raise ConfigError("DIRECT_DATABASE_URL has ?pgbouncer=true, but the direct URL must bypass PgBouncer.",
                          "Point DIRECT_DATABASE_URL at PostgreSQL itself and drop ?pgbouncer=true from it.")
    return settings.with_overrides(**flags)


ROLE_SETTINGS = {"role_migrator": ("CELORA_ROLE_MIGRATOR", "celora_migrator"),
                 "role_app": ("CELORA_ROLE_APP", "celora_app"),
                 "role_readonly": ("CELORA_ROLE_READONLY", "celora_readonly"),
                 "role_cdc": ("CELORA_ROLE_CDC", "celora_cdc")}


def _role_names(get) -> dict[str, str]:
    """The four group role names: 1 to 63 bytes (PostgreSQL's NAMEDATALEN), not pg_* (reserved), distinct."""
    names: dict[str, str] = {}
    for field_name, (variable, default) in ROLE_SETTINGS.items():
        name = (get(variable) or default).strip()
        if not _is_utf8(name) or not 1 <= len(name.encode("utf-8")) <= 63 or name.lower().startswith("pg_") \
                or "\x00" in name:
            raise ConfigError(f"{variable} must be a role name of 1 to 63 bytes not starting with pg_ "
                              f"(got {name!r}).", f"Unset {variable} to use {default!r}, or pick another name.")
        names[field_name] = name
    if len(set(names.values())) < len(names):
        raise ConfigError("CELORA_ROLE_MIGRATOR, CELORA_ROLE_APP, CELORA_ROLE_READONLY and CELORA_ROLE_CDC must "
                          "name four different roles.", "Give each group role its own name.")
    return names


def _ddl_lock_retries(raw: str | None, name: str = "CELORA_DDL_LOCK_RETRIES") -> int:
    retries = _parse_number(raw.strip() if isinstance(raw, str) else raw, int, name,
                            maximum=DDL_LOCK_RETRIES_MAXIMUM)
    return 3 if retries is None else retries


def _replica_urls(raw: str | None) -> tuple[DatabaseURL, ...]:
    """CELORA_REPLICA_URLS: comma-separated (a comma inside a URL is percent-encoded as %2C)."""
    parts = [part.strip() for part in (raw or "").split(",")]
    return tuple(parse_database_url(part, f"CELORA_REPLICA_URLS (URL {number})")
                 for number, part in enumerate(parts, 1) if part)


_BYTE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "tb": 1024 ** 4}


def parse_bytes(value: str, name: str) -> int:
    """A size like 512MB, 1GB or 1048576 (bytes); units are powers of 1024, as PostgreSQL's own settings."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _BYTE_UNITS:
        raise ConfigError(f"{name} must be a size such as 512MB, 1GB or a number of bytes, not {value!r}.",
                          "Use a whole number with an optional unit: B, kB, MB, GB or TB.")
    size = float(match.group(1)) * _BYTE_UNITS[unit]
    if size > 1024 ** 5:
        raise ConfigError(f"{name} must be at most 1024TB (got {value!r}).", "Use a smaller size, e.g. 10GB.")
    return int(size)


def _utf8_text(value: str | None, name: str) -> str | None:
    """A setting that must be text (a user name): os.environ keeps undecodable bytes as lone surrogates."""
    if value is not None and not _is_utf8(value):
        raise ConfigError(f"{name} contains bytes that are not UTF-8 text.", f"Set {name} as UTF-8 text.")
    return value


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a folder on the way we may not search: reading the file will say why
        return True
