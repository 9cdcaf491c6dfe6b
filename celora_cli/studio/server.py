"""Prepare and run the studio: decide read-only, bind the port, build the app, serve it with uvicorn.

`prepare` does everything that can fail (port taken, database unreachable, production refused) before
anything is served, and returns a PreparedStudio the CLI prints and then runs."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celora_cli.errors import ConfigError, UsageError
from celora_cli.settings import Settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555
WRITABLE_FLAG = "--writable"


@dataclass
class PreparedStudio:
    url: str  # carries the access token: printed for the user, never logged elsewhere
    database: str  # masked
    read_only: bool
    read_only_reason: str
    app: Any
    sock: socket.socket
    engine: Any = field(repr=False)

    def run(self) -> None:
        """Serve until interrupted (uvicorn handles Ctrl-C); the socket and the engine are closed after."""
        import uvicorn

        # A browser keeps connections open: Ctrl-C should not wait for it to let go.
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=1)
        try:
            uvicorn.Server(config).run(sockets=[self.sock])
        finally:
            self.sock.close()
            self.engine.dispose()


def prepare(settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, read_only: bool | None = None,
            allow_production: bool = False, force: bool = False,
            ask: Callable[[str], bool] | None = None) -> PreparedStudio:
    """read_only None: read-only on a production database, writable elsewhere."""
    from celora_cli.db.connect import resolve_urls
    from celora_cli.db.engine import build_engine
    from celora_cli.db.errors import translating
    from celora_cli.environment_stamp import database_environment
    from celora_cli.guard import confirm_destructive, production_verdict
    from celora_cli.studio.app import BASE_PATH, StudioOptions, create_app

    if not 0 <= port < 65536:  # 0: any free port (tests)
        raise UsageError(f"--port {port} is not a TCP port.", "Pass a port from 1 to 65535 (default 5555).")
    sock = bind(host, port)
    try:
        url = resolve_urls(settings).pooled
        engine = build_engine(url, settings, pooled=True, application_name="celora db studio")
        with translating(url), engine.connect() as conn:
            stamp = database_environment(conn)
        verdict = production_verdict(settings.env, stamp)
        if read_only is None:
            read_only = verdict.production
            reason = (f"read-only: {verdict.reason}; pass {WRITABLE_FLAG} --allow-production to edit"
                      if read_only else "writable (pass --read-only to browse without changing anything)")
        elif read_only:
            reason = "read-only (--read-only)"
        else:
            confirm_destructive("open a writable studio (every edit, insert and delete is written at once)",
                                target=url.masked, losses=[], forced=force or not verdict.production,
                                settings=settings, database_env=stamp,
                                production_override=allow_production, command=f"celora db studio {WRITABLE_FLAG}",
                                ask=ask)
            reason = "writable (--writable)"
        token = secrets.token_urlsafe(32)
        port = sock.getsockname()[1]  # the real one when 0 asked for any free port
        app = create_app(engine, url, StudioOptions(host=host, port=port, token=token, read_only=read_only))
    except BaseException:
        sock.close()
        raise
    # Bound to every interface: the URL to print (and open) is this machine's loopback one.
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    address = f"[{shown}]" if ":" in shown else shown
    return PreparedStudio(url=f"http://{address}:{port}{BASE_PATH}/?token={token}", database=url.masked,
                          read_only=read_only, read_only_reason=reason, app=app, sock=sock, engine=engine)


def bind(host: str, port: int) -> socket.socket:
    """Listen on host:port now, so a taken port is a clear error before anything else happens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"Port {port} on {host} is already in use (checked by binding it): another studio or program "
                f"listens there.", f"Pass another port (`celora db studio --port {port + 1}`) or stop that "
                f"program (`lsof -i :{port}` names it).") from None
        raise ConfigError(f"Can't listen on {host}:{port}: {exc.strerror or exc}.",
                          "Pass --host 127.0.0.1 (the default) or an address of this machine.") from None


def has_display(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """A browser can be shown: always on macOS and Windows, with an X11 or Wayland display elsewhere."""
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def open_browser(url: str) -> bool:
    """Try to open `url`; never fails (no display, no browser: the printed URL is enough)."""
    if not has_display():
        return False
    import webbrowser

    try:
        return bool(webbrowser.open(url, new=2))
    except Exception:  # noqa: BLE001 - any browser failure leaves the printed URL to use by hand
        return False
