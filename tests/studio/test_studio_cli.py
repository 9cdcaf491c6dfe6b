"""celora db studio's start-up decisions: a taken port, read-only by default on production, the guard for
--writable there, and a missing display."""

from __future__ import annotations

import socket

import psycopg
import pytest

from tests.conftest import free_port, run_celora, settings_for


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
    from celora_cli.studio.server import prepare

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
    from celora_cli.environment_stamp import stamp_environment

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
    from celora_cli.studio import server

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not server.has_display(platform="linux")
    assert server.has_display({"WAYLAND_DISPLAY": "wayland-0"}, platform="linux")
    assert server.has_display({}, platform="darwin")
    if not server.has_display():
        assert server.open_browser(f"http://127.0.0.1:{free_port()}/") is False


def test_hosts_the_studio_answers_to():
    import socket

    from celora_cli.studio.security import allowed_hosts

    assert allowed_hosts("127.0.0.1", 5555) == {"127.0.0.1:5555", "localhost:5555", "[::1]:5555"}
    assert allowed_hosts("192.0.2.7", 5555) == {"192.0.2.7:5555"}  # a chosen address: that one only
    every = allowed_hosts("0.0.0.0", 5555)  # every interface: this machine's names too, never another's
    assert {"127.0.0.1:5555", f"{socket.gethostname().lower()}:5555"} <= every
    assert "evil.example:5555" not in every and "127.0.0.1:5556" not in every
