"""Prepare and run the studio: decide read-only, bind the port, build the app, serve it with uvicorn.

`prepare` does everything that can fail (port taken, database unreachable, production refused) before
anything is served, and returns a PreparedStudio the CLI prints and then runs."""

from __future__ import annotations

import errno
import functools
import html
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celora_cli.config.settings import Settings
from celora_cli.db.connect import resolve_urls
from celora_cli.db.errors import translating
from celora_cli.errors import ConfigError, UsageError
from celora_cli.safety.guard import confirm_destructive, production_verdict
from celora_cli.safety.local_http import HTTP_DEFAULT_PORT, listen_host, shown_host, url_host
from celora_cli.safety.stamp import database_environment

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555
WRITABLE_FLAG = "--writable"


class _Terminated(Exception):
    """SIGTERM arrived: a service manager's (or `kill`'s) stop, a normal end."""


@dataclass
class PreparedStudio:
    url: str = field(repr=False)  # carries the access token: printed for the user, never logged elsewhere
    database: str  # masked
    read_only: bool
    read_only_reason: str
    app: Any = field(repr=False)
    sock: socket.socket
    engine: Any = field(repr=False)
    redirect_dir: Path | None = None  # the browser's redirect file (open_browser), removed when the studio ends

    def open_browser(self, opener: Callable[[str], bool] | None = None) -> bool:
        """Open the studio in a browser, when a display exists; never fails (the printed URL is enough).

        The browser is given a local file that redirects to the URL, not the URL itself: a browser started
        with the URL has it, token included, on its command line, which every user of the machine can read
        (`ps`). The file is 0600 in a 0700 folder of its own (as Jupyter does), and is removed when the studio
        stops."""
        if not has_display():
            return False
        if opener is None:
            import webbrowser

            opener = functools.partial(webbrowser.open, new=2)
        try:
            self.redirect_dir = Path(tempfile.mkdtemp(prefix="celora-studio-"))  # 0700
            page = self.redirect_dir / "open.html"
            descriptor = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(redirect_page(self.url))
            return bool(opener(page.as_uri()))
        except Exception:  # noqa: BLE001 - any browser failure leaves the printed URL to use by hand
            return False

    def run(self) -> None:
        """Serve until Ctrl-C (KeyboardInterrupt, which the CLI turns into exit 130) or SIGTERM (returns: a
        normal end); the socket, the engine and the browser's redirect file are closed or removed after."""
        import uvicorn

        # A browser keeps connections open: Ctrl-C should not wait for it to let go.
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=1)
        # uvicorn stops on SIGINT and SIGTERM, then raises the signal again under the handlers it found: SIGINT
        # then becomes KeyboardInterrupt, and SIGTERM this exception instead of killing the process.
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            uvicorn.Server(config).run(sockets=[self.sock])
        except _Terminated:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.close()

    def close(self) -> None:
        """Idempotent: the CLI calls it again after run() in case run() never started."""
        self.sock.close()
        self.engine.dispose()
        if self.redirect_dir is not None:
            shutil.rmtree(self.redirect_dir, ignore_errors=True)
            self.redirect_dir = None


def _raise_terminated(signum, frame) -> None:
    raise _Terminated


def redirect_page(url: str) -> str:
    """An HTML page that sends the browser on to `url` (meta refresh, script, and a link as the last resort)."""
    quoted = html.escape(url, quote=True)
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={quoted}">'
            f"<title>celora studio</title></head><body><script>window.location.replace({json.dumps(url)});"
            f'</script><p>Opening <a href="{quoted}">celora studio</a>...</p></body></html>\n')


def prepare(settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, read_only: bool | None = None,
            allow_production: bool = False, force: bool = False,
            ask: Callable[[str], bool] | None = None) -> PreparedStudio:
    """read_only None: read-only on a production database, writable elsewhere."""
    # Here, not at the top: the app (Starlette, starlette-admin, the models) and SQLAlchemy are this command's
    # slowest imports, and a wrong --port or --host is refused before paying for them.
    from celora_cli.data.studio.app import BASE_PATH, StudioOptions, create_app
    from celora_cli.data.studio.pages import StudioTuning
    from celora_cli.db.engine import build_engine

    if not 0 <= port < 65536:  # 0: any free port (tests)
        raise UsageError(f"--port {port} is not a TCP port.", "Pass a port from 1 to 65535 (default 5555).")
    host = listen_host(host, command="celora db studio")
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
        app = create_app(engine, url, StudioOptions(host=host, port=port, token=token, read_only=read_only,
                                                    console_timeout=settings.studio_console_timeout,
                                                    tuning=StudioTuning.from_settings(settings)))
    except BaseException:
        sock.close()
        raise
    # Bound to every interface: the URL to print (and open) is this machine's loopback one. Port 80 is left out,
    # as a browser leaves it out of the Host header.
    address = url_host(shown_host(host)) + ("" if port == HTTP_DEFAULT_PORT else f":{port}")
    return PreparedStudio(url=f"http://{address}{BASE_PATH}/?token={token}", database=url.masked,
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
