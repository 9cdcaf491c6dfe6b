"""The studio's front door: a pure ASGI middleware in front of everything, including static files.

A local web server is reachable by every page open in the developer's browser. So, as Jupyter does:
- a random token made at start is required on every request; it comes once in the printed URL (`?token=`),
  is then kept in an HttpOnly, SameSite=Strict cookie, and the browser is sent to the clean URL (the token
  does not stay in the history or in Referer headers);
- the Host header must name the address the studio is bound to: a DNS-rebinding page (evil.example
  resolving to 127.0.0.1) sends its own name;
- the Origin header, whenever a request carries one and on every request that may write, must be the
  studio itself: another site's form or fetch is refused even if the browser would attach the cookie;
- read-only mode refuses every method that can write before the request reaches the admin (the database
  transaction is read-only too, see app.py), except the two POSTs that only read: the export and the SQL console
  (whose transactions are READ ONLY in that mode);
- a WebSocket handshake passes the same Host and token checks and must carry the studio's Origin, or is closed
  with 1008 (the client sees 403).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

EXPORT_ACTION = re.compile(r"/_api/[^/]+/action$")
# The SQL console posts its statement (it is not put in a URL); read-only, it runs READ ONLY transactions and
# refuses a write itself (console.py).
CONSOLE_PATH = re.compile(r"^/studio/-/console/?$")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_PARAMETER = "token"
WEBSOCKET_POLICY_VIOLATION = 1008  # RFC 6455; before the handshake is accepted the client sees HTTP 403


def same_secret(supplied: str, token: str) -> bool:
    """Constant-time comparison of bytes: compare_digest refuses a str with a non-ASCII character (a token
    `%C3%A9` in the URL would be a 500 and a traceback instead of a 401)."""
    return secrets.compare_digest(supplied.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass"))


def cookie_name(port: int) -> str:
    # Cookies ignore the port: two studios on one machine must not overwrite each other's.
    return f"celora_studio_{port}"


class StudioGuard:
    def __init__(self, app: ASGIApp, *, token: str, hosts: Iterable[str], port: int, read_only: bool) -> None:
        self.app = app
        self.token = token
        self.hosts = frozenset(host.lower() for host in hosts)
        self.origins = frozenset(f"http://{host}" for host in self.hosts)
        self.cookie = cookie_name(port)
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # No route takes a WebSocket today; one added later must not open a door the guard does not watch.
            # A WebSocket is not bound by the same-origin policy, so the Origin is required, as for a write.
            if self.websocket_refusal(scope) is not None:
                await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION})
                return
        elif scope["type"] == "http":
            response = self.refusal(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def websocket_refusal(self, scope: Scope) -> str | None:
        """Why a WebSocket handshake is refused (the same Host, Origin and token rules), or None."""
        headers = Headers(scope=scope)
        if headers.get("host", "").lower() not in self.hosts:
            return "wrong host"
        origin = headers.get("origin")
        if origin is None or origin.lower() not in self.origins:
            return "foreign or missing origin"
        if not self._has_token(headers):
            return "no token"
        return None

    def refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        method = scope["method"]
        if headers.get("host", "").lower() not in self.hosts:
            return _page(421, "Wrong host", "This studio answers only to the address it printed at start. A "
                         "page that reached it under another name (DNS rebinding) is refused.")
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            return _page(403, "Foreign origin", "Requests from other sites are refused.")
        if method not in SAFE_METHODS and origin is None and not self._same_origin_referer(headers):
            return _page(403, "Origin missing", "A request that may write must come from the studio's own pages.")
        if not self._has_token(headers):
            supplied = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get(TOKEN_PARAMETER)
            if supplied is not None and same_secret(supplied, self.token) and method in SAFE_METHODS:
                return self._adopt_token(scope)
            return _page(401, "Token required", "Open the studio with the URL `celora db studio` printed (it "
                         "carries the access token); this browser has no valid token for it.")
        if self.read_only and method not in SAFE_METHODS and not self._read_only_post(scope):
            return _page(403, "Read-only", "The studio runs read-only (--read-only, the default with "
                         "CELORA_ENV=production): nothing is written to the database.")
        return None

    def _has_token(self, headers: Headers) -> bool:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed Cookie header is the same as none
            return False
        morsel = cookies.get(self.cookie)
        return morsel is not None and same_secret(morsel.value, self.token)

    def _same_origin_referer(self, headers: Headers) -> bool:
        referer = urlsplit(headers.get("referer", ""))
        return f"{referer.scheme}://{referer.netloc}".lower() in self.origins

    @staticmethod
    def _read_only_post(scope: Scope) -> bool:
        """The export of the current view is a POST that only reads (the admin's export action); so is the SQL
        console's, in read-only mode."""
        if CONSOLE_PATH.match(scope["path"]):
            return True
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        return bool(EXPORT_ACTION.search(scope["path"])) and query.get("name") == "export"

    def _adopt_token(self, scope: Scope) -> Response:
        """Keep the token in a cookie and send the browser to the same URL without it."""
        query = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                                keep_blank_values=True) if k != TOKEN_PARAMETER]
        path = scope.get("root_path", "") + scope["path"]
        response = RedirectResponse(path + (f"?{urlencode(query)}" if query else ""), status_code=303)
        response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
        response.headers["Cache-Control"] = "no-store"
        return response


def _page(status: int, title: str, text: str) -> Response:
    body = (f"<!doctype html><title>celora studio: {title}</title><h1>{title}</h1><p>{text}</p>")
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
