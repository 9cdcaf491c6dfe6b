"""celora db studio's start-up decisions: a taken port, read-only by default on production, the guard for
--writable there, and a missing display."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support import REPO, TEST_PROJECT, free_port, run_celora, settings_for


def test_a_taken_port_is_a_config_error_naming_the_port_and_the_fix():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        # The port is checked before anything else: this database URL is never contacted.
        result = run_celora("db", "studio", "--port", str(port), "--no-browser",
                            env={"DATABASE_URL": "postgresql://celora@127.0.0.1:1/nowhere"})
    assert result.returncode == 3, result.stderr
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr
    assert f"--port {port + 1}" in result.stderr and "Traceback" not in result.stderr


def _prepare(url: str, **kwargs):
    from celora_cli.data.studio.server import prepare

    env = kwargs.pop("env", {})
    return prepare(settings_for(url, **env), port=0, **kwargs)


def _close(studio) -> None:
    studio.sock.close()
    studio.engine.dispose()


def test_production_is_read_only_by_default_and_writable_needs_the_guard(migrated_db):
    from celora_cli.errors import Refused

    production = {"CELORA_ENV": "production"}
    studio = _prepare(migrated_db, env=production)
    assert studio.read_only and "--writable --allow-production" in studio.read_only_reason
    _close(studio)
    with pytest.raises(Refused, match="production database"):
        _prepare(migrated_db, env=production, read_only=False)
    with pytest.raises(Refused, match="without confirmation"):  # no terminal here: it cannot ask
        _prepare(migrated_db, env=production, read_only=False, allow_production=True)
    studio = _prepare(migrated_db, env=production, read_only=False, allow_production=True, force=True)
    assert not studio.read_only
    _close(studio)


def test_a_database_stamped_production_is_read_only_by_default_whatever_celora_env(migrated_db):
    from celora_cli.safety.stamp import stamp_environment

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        stamp_environment(conn, "production")
    studio = _prepare(migrated_db, env={"CELORA_ENV": "development"})
    assert studio.read_only  # the stamp wins over CELORA_ENV
    assert "stamped 'production'" in studio.read_only_reason
    _close(studio)


def test_a_development_database_is_writable_and_the_url_carries_a_fresh_token(migrated_db):
    first, second = _prepare(migrated_db), _prepare(migrated_db)
    try:
        assert not first.read_only
        assert first.url.startswith(f"http://127.0.0.1:{first.sock.getsockname()[1]}/studio/?token=")
        assert first.url.split("token=")[1] != second.url.split("token=")[1]
        assert len(first.url.split("token=")[1]) >= 40
    finally:
        _close(first)
        _close(second)


def test_no_display_means_no_browser_and_no_error(monkeypatch):
    from celora_cli.data.studio import server

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not server.has_display(platform="linux")
    assert server.has_display({"WAYLAND_DISPLAY": "wayland-0"}, platform="linux")
    assert server.has_display({}, platform="darwin")
    opened: list[str] = []
    studio = _unserved_studio(f"http://127.0.0.1:{free_port()}/studio/?token=secret-token")
    assert studio.open_browser(opener=lambda url: bool(opened.append(url)) or True) is False
    assert not opened and studio.redirect_dir is None


class _NoEngine:
    def dispose(self) -> None:
        pass


def _unserved_studio(url: str):
    """A PreparedStudio with no database behind it: for what happens around the server (the browser)."""
    from celora_cli.data.studio.server import PreparedStudio

    return PreparedStudio(url=url, database="postgresql://celora@127.0.0.1/celora", read_only=True,
                          read_only_reason="read-only", app=None, sock=socket.socket(), engine=_NoEngine())


def test_the_browser_is_given_a_private_redirect_file_never_the_token(monkeypatch):
    """A browser started with the URL has the token on its command line, which every local user can read
    (`ps`): it is given a 0600 file in a 0700 folder that redirects to the URL, removed when the studio stops."""
    import stat
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    monkeypatch.setenv("DISPLAY", ":0")
    url = "http://127.0.0.1:5555/studio/?token=secret-token-0123456789"
    opened: list[str] = []
    studio = _unserved_studio(url)
    assert studio.open_browser(opener=lambda target: bool(opened.append(target)) or True)
    assert len(opened) == 1 and opened[0].startswith("file://") and "secret-token" not in opened[0]
    page = Path(url2pathname(urlsplit(opened[0]).path))
    assert stat.S_IMODE(page.stat().st_mode) == 0o600 and page.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(page.parent.stat().st_mode) == 0o700
    text = page.read_text()
    assert f'content="0;url={url}"' in text and f'href="{url}"' in text
    studio.close()
    assert not page.exists() and not page.parent.exists()


def test_hosts_the_studio_answers_to():
    import socket

    from celora_cli.safety.local_http import allowed_hosts

    assert allowed_hosts("127.0.0.1", 5555) == {"127.0.0.1:5555", "localhost:5555", "[::1]:5555"}
    assert allowed_hosts("192.0.2.7", 5555) == {"192.0.2.7:5555"}  # a chosen address: that one only
    every = allowed_hosts("0.0.0.0", 5555)  # every interface: this machine's names too, never another's
    assert {"127.0.0.1:5555", f"{socket.gethostname().lower()}:5555"} <= every
    assert "evil.example:5555" not in every and "127.0.0.1:5556" not in every


@pytest.mark.parametrize("host", ["", "  ", "http://127.0.0.1", "127.0.0.1:8080", "no-such-host.invalid"])
def test_an_empty_or_unusable_host_is_a_config_error(host):
    # An empty --host bound every interface while printing `http://:PORT/...`. Checked before the database.
    result = run_celora("db", "studio", "--host", host, "--port", "0", "--no-browser",
                        env={"DATABASE_URL": "postgresql://celora@127.0.0.1:1/nowhere"})
    assert result.returncode == 3, result.stdout + result.stderr
    assert "--host" in result.stderr and "--host 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr and "Open:" not in result.stdout


def _studio_process(database_url: str, port: int = 0) -> tuple[subprocess.Popen, str]:
    """`celora db studio --port 0 --no-browser` running; (process, printed URL). SIGINT is reset to its default
    in the child: a test runner started in the background passes SIGINT on as ignored."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY", "DIRECT_DATABASE_URL") and not key.startswith("CELORA_")}
    env.update(DATABASE_URL=database_url, CELORA_ENV="test", CELORA_PROJECT_ROOT=str(TEST_PROJECT), NO_COLOR="1",
               PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "celora_cli", "db", "studio", "--port", str(port), "--no-browser"]
    process = subprocess.Popen(command, cwd=TEST_PROJECT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Open: "):
            return process, line.split("Open: ", 1)[1].strip()
    process.kill()
    raise AssertionError(f"no URL printed; stderr: {process.communicate()[1]}")


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_ctrl_c_exits_130_and_sigterm_0_as_the_docs_say(migrated_db, stop, code):
    import urllib.error
    import urllib.request

    process, url = _studio_process(migrated_db)
    try:
        with urllib.request.urlopen(url.replace("?token=", "?token=x"), timeout=30) as response:
            raise AssertionError(f"a wrong token was let in: {response.status}")
    except urllib.error.HTTPError as refused:
        assert refused.code == 401  # the server answers before it is stopped
    finally:
        process.send_signal(stop)
        _, errors = process.communicate(timeout=60)
    assert process.returncode == code, errors
    assert "Traceback" not in errors
    guide = (REPO / "docs" / "pages" / "guides" / "developer.md").read_text()
    start = guide.index("\n## `celora db studio`")
    end = guide.find("\n## ", start + 1)
    studio = " ".join(guide[start:end if end != -1 else None].split())
    assert "130 after Ctrl-C" in studio and "0 after SIGTERM" in studio


def test_on_port_80_the_url_and_the_host_check_leave_the_port_out(migrated_db):
    """Browsers omit the default port from Host: on --port 80 every request was a 421."""
    import http.client
    from urllib.parse import urlsplit

    try:
        socket.create_server(("127.0.0.1", 80)).close()
    except OSError:
        pytest.skip("port 80 is taken here, or binding it needs root")
    process, url = _studio_process(migrated_db, port=80)
    try:
        assert url.startswith("http://127.0.0.1/studio/?token=")
        parts = urlsplit(url)
        connection = http.client.HTTPConnection("127.0.0.1", 80, timeout=30)
        connection.request("GET", f"{parts.path}?{parts.query}", headers={"Host": "127.0.0.1"})  # as a browser
        response = connection.getresponse()
        assert response.status == 303 and response.getheader("location") == "/studio/"
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
