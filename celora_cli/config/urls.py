"""PostgreSQL URLs: parsing and validation (each URL knows the setting it came from), and masking of passwords
and secret parameters in URLs and free text.

Light on purpose (no SQLAlchemy, no psycopg): `celora --help` imports it.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from celora_cli.config.values import is_utf8, parse_bool, parse_number
from celora_cli.errors import ConfigError

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

# The `setting` of the local server's URL: no setting names it (DATABASE_URL is unset, so celora uses its own).
LOCAL_SETTING = "the local PostgreSQL"

_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg": "postgresql"}

# A PostgreSQL URL is a few hundred characters at most; a 40 kB one is a mistake (a file's content, a loop).
MAX_URL_LENGTH = 8192

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
    # Where the URL came from (DATABASE_URL, DIRECT_DATABASE_URL, LOCAL_SETTING, ...), for messages that tell the
    # user what to fix. Not part of equality: the same URL read from two settings is the same server.
    setting: str = field(default="DATABASE_URL", compare=False)

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
        pgbouncer=parse_bool(celora.get("pgbouncer", "false"), f"{setting} ?pgbouncer"),
        connection_limit=parse_number(celora.get("connection_limit"), int, f"{setting} ?connection_limit"),
        pool_timeout=parse_number(celora.get("pool_timeout"), float, f"{setting} ?pool_timeout"),
        schema=celora.get("schema") or None,
        setting=setting,
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
    if not is_utf8(url):  # os.environ keeps undecodable bytes as lone surrogates
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
