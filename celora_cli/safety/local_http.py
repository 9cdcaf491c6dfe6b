"""The two HTTP servers celora runs (`db studio`, `db metrics`): which address they may listen on, and which
`Host` headers mean them.

A server on 127.0.0.1 is still reachable by every web page open in this machine's browser: a DNS-rebinding page
(evil.example resolving to 127.0.0.1) reaches it under its own name. Checking the Host header against the
names the server was started with refuses those requests (421 Misdirected Request), as Jupyter does.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

from celora_cli.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
EVERY_INTERFACE = ("0.0.0.0", "::")
ANY_HOST = "*"  # --allow-host '*': the Host check is off (a name the server cannot know, e.g. behind a proxy)
HTTP_DEFAULT_PORT = 80  # a browser leaves the port out of Host for it; these servers speak plain HTTP only
_FORBIDDEN = set("/?#@ \t\r\n'\"<>\\`")
_WITH_PORT = re.compile(r"(\[[^\]]+\]|[^:\[\]]+):\d+")


def listen_host(host: str, *, flag: str = "--host", command: str) -> str:
    """The address to bind, validated: an empty one (which binds every interface while printing `http://:PORT`),
    a URL or a name that does not resolve is a ConfigError (exit 3) naming the flag. `[::1]` is accepted as ::1."""
    value = host.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    fix = (f"Pass an address of this machine: `{command} {flag} 127.0.0.1` (the default, this machine only), "
           f"`{flag} ::1`, or an interface's address to expose it to that network.")
    if not value:
        raise ConfigError(f"{flag} is empty: an empty address would listen on every interface while the printed "
                          "URL names none.", fix)
    if any(char in _FORBIDDEN for char in value) or not value.isascii():
        raise ConfigError(f"{flag} {host!r} is not an address or a host name (no scheme, path, port or spaces: "
                          "the port is --port).", fix)
    if not _is_address(value):
        try:
            socket.getaddrinfo(value, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise ConfigError(f"{flag} {host!r} does not resolve to an address of this machine (checked with "
                              "getaddrinfo).", fix) from None
    return value


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Only this machine can connect (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shown_host(host: str) -> str:
    """The address to print (and open) for a server bound to `host`: the loopback address of the same family
    when it is bound to every interface (::, without dual stack, does not answer on 127.0.0.1)."""
    if host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def url_host(host: str) -> str:
    """`host` as it goes into a URL or a Host header: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host header values (lower case) that mean the server bound to host:port: the bound address, the loopback
    names when it is loopback or every interface, this machine's own names and addresses when it is every
    interface, and `extra` (--allow-host: a name, or name:port taken as written). On port 80 each also without its
    port (browsers leave it out)."""
    names = {host}
    if host in LOOPBACK or host in EVERY_INTERFACE:
        names |= set(LOOPBACK)
    if host in EVERY_INTERFACE:
        names |= _machine_names()
    allowed = set()
    for name in extra:
        if _WITH_PORT.fullmatch(name.strip()):
            allowed.add(name.strip().lower())
        else:
            names.add(name)
    for name in names:
        shown = url_host(name.strip().lower())
        allowed.add(f"{shown}:{port}")
        if port == HTTP_DEFAULT_PORT:
            allowed.add(shown)
    return frozenset(allowed)


def host_allowed(header: str | None, allowed: frozenset[str], *, any_host: bool = False) -> bool:
    return any_host or (header is not None and header.strip().lower() in allowed)


def _machine_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:  # no resolvable host name: the names themselves still count
        pass
    return names


def allowed_host_names(values: Iterable[str], *, flag: str = "--allow-host") -> tuple[list[str], bool]:
    """--allow-host values checked: (the names, whether '*' turned the check off). A value with a scheme, a
    path or spaces is a ConfigError (exit 3)."""
    names, any_host = [], False
    for value in values:
        name = value.strip()
        if name == ANY_HOST:
            any_host = True
            continue
        if not name or any(char in _FORBIDDEN for char in name) or not name.isascii():
            raise ConfigError(f"{flag} {value!r} is not a host name (no scheme, path or spaces).",
                              f"Pass the name a scraper uses in its URL, e.g. {flag} exporter.internal (or "
                              f"exporter.internal:9187), once per name; {flag} '*' turns the Host check off.")
        names.append(name)
    return names, any_host
