"""Prometheus metrics: `db health --format prometheus`, `db metrics` serving /metrics, and `db health --watch`."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from celora_cli.ops.health import check_database_health
from celora_cli.ops.metrics import METRICS, exposition
from tests.support import REPO, TEST_PROJECT, free_port, run_celora, settings_for


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _popen_celora(*args: str, env: dict) -> subprocess.Popen:
    """The real CLI as a long-running subprocess (run_celora's clean environment)."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    clean.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "NO_COLOR": "1", "COLUMNS": "200",
                  "PYTHONPATH": str(REPO), **env})
    return subprocess.Popen([sys.executable, "-m", "celora_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean, cwd=TEST_PROJECT,
                            stdin=subprocess.DEVNULL, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """In the child: a test runner started in the background (`make test &`) passes SIGINT on as ignored, and
    the tests that stop a command with SIGINT would then wait for it in vain."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_json_and_prometheus_carry_the_same_facts_from_one_report(migrated_db):
    report = check_database_health(settings_for(migrated_db))
    data = json.loads(json.dumps(report.to_json(), default=str))
    samples = _samples(exposition(report))
    assert samples[("celora_health_status", ())] == 0 and data["status"] == "healthy"
    assert samples[("celora_health_problems", ())] == len(data["problems"])
    for path in ("pooled", "direct"):
        labels = (("path", path),)
        assert samples[("celora_connection_up", labels)] == 1 and data["checks"][path]["ok"]
        assert samples[("celora_connection_latency_seconds", labels)] == data["checks"][path]["latency_ms"] / 1000
        assert samples[("celora_connection_ssl", labels)] == int(data["checks"][path]["ssl"])
    assert samples[("celora_migrations_pending", ())] == data["migrations"]["pending"] == 0
    assert samples[("celora_connections_max", ())] == data["pressure"]["max_connections"]
    for state, count in data["pressure"]["by_state"].items():
        assert samples[("celora_connections", (("state", state),))] == count
    assert samples[("celora_lock_waiting_sessions", ())] == len(data["pressure"]["lock_waits"])


def test_format_prometheus_prints_the_exposition(migrated_db):
    cli = run_celora("db", "health", "--format", "prometheus", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    samples = _samples(cli.stdout)
    assert samples[("celora_health_status", ())] == 0
    assert samples[("celora_connection_up", (("path", "pooled"),))] == 1
    assert "# HELP celora_health_status" in cli.stdout and "# TYPE celora_health_status gauge" in cli.stdout


def test_watch_json_prints_one_object_per_line_until_ctrl_c(migrated_db):
    password = "w4tchSecret"  # the test server trusts local connections: any password gets in, and none is shown
    url = migrated_db.replace("postgresql://celora@", f"postgresql://celora:{password}@", 1)
    process = _popen_celora("db", "health", "--watch", "0.5", "--json", env={"DATABASE_URL": url})
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, errors
    for line in lines:
        report = json.loads(line)  # each line one whole object
        assert report["format_version"] == 1 and report["ok"] and report["status"] == "healthy"
    assert "Traceback" not in errors
    assert all(not line.strip() or json.loads(line)["ok"] for line in rest.splitlines())
    assert password not in "".join(lines) + rest + errors and "****" in lines[0]  # masked like all --json output


def test_watch_at_a_terminal_redraws_in_place_until_ctrl_c(migrated_db):
    main, terminal = pty.openpty()
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    clean.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "COLUMNS": "200", "TERM": "xterm",
                  "PYTHONPATH": str(REPO), "DATABASE_URL": migrated_db})
    process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "health", "--watch", "0.5"],
                               stdout=terminal, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=clean,
                               cwd=TEST_PROJECT, text=True, preexec_fn=_default_sigint)
    os.close(terminal)
    screen = b""
    try:
        deadline = time.monotonic() + 30
        while screen.count(b"HEALTHY") < 2 and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                screen += os.read(main, 65536)
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
        os.close(main)
    assert screen.count(b"HEALTHY") >= 2, screen
    assert b"\x1b[1A" in screen  # cursor up: the second report was drawn over the first
    assert process.returncode == 130 and "Traceback" not in errors


def test_an_unknown_format_is_a_usage_error(migrated_db):
    cli = run_celora("db", "health", "--format", "xml", env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 64 and "--format" in cli.stderr


def _scrape(port: int, host_header: str | None = None, timeout: float = 10) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if host_header is not None:
        request.add_header("Host", host_header)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def _first_scrape(process: subprocess.Popen, port: int) -> str:
    """The first scrape, once the server listens."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return _scrape(port)
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.1)


def _scrapes_around_an_idle_transaction(migrated_db: str, *flags: str) -> tuple[str, str, str, int | None, int]:
    """Two scrapes, with a session left idle in a transaction between them; then SIGTERM.
    (first, second, stderr, exit code, port)"""
    port = free_port()
    process = _popen_celora("db", "metrics", "--port", str(port), *flags, env={"DATABASE_URL": migrated_db})
    try:
        first = _first_scrape(process, port)
        with psycopg.connect(migrated_db) as idle_in_transaction:
            idle_in_transaction.execute("SELECT 1")
            second = _scrape(port)
        process.send_signal(signal.SIGTERM)  # a service manager's stop: a normal end
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    return first, second, errors, process.returncode, port


IDLE = ("celora_connections", (("state", "idle in transaction"),))


def test_metrics_server_with_cache_0_runs_a_check_for_each_scrape(migrated_db):
    first, second, errors, code, port = _scrapes_around_an_idle_transaction(migrated_db, "--cache-seconds", "0")
    assert code == 0, errors
    assert f"127.0.0.1:{port}/metrics" in errors
    assert "each scrape runs a new check" in errors and "Warning" not in errors  # loopback: no warning
    for text in (first, second):
        samples = _samples(text)
        assert samples[("celora_health_status", ())] == 0
        assert samples[("celora_connection_up", (("path", "pooled"),))] == 1
        assert samples[("celora_connections_max", ())] > 0
    assert _samples(second)[IDLE] == _samples(first).get(IDLE, 0) + 1  # the second scrape's own check saw it


def test_metrics_server_reuses_a_report_for_cache_seconds(migrated_db):
    first, second, errors, code, _ = _scrapes_around_an_idle_transaction(migrated_db, "--cache-seconds", "3600")
    assert code == 0, errors
    assert "a report is reused for 3600 s" in errors
    assert first == second  # one report: the idle transaction opened between the scrapes is not in it yet


def test_the_default_cache_is_documented_and_within_a_scrape_interval():
    from celora_cli.cli.db_metrics import DEFAULT_CACHE_SECONDS

    assert 5 <= DEFAULT_CACHE_SECONDS <= 15
    guide = " ".join((REPO / "docs" / "pages" / "guides" / "on-call.md").read_text().split())
    assert f"`--cache-seconds` (default {DEFAULT_CACHE_SECONDS:g}," in guide


def test_concurrent_scrapes_share_the_one_check_in_flight():
    """Five scrapes at once, the first one's check held open until the other four have arrived: one check."""
    import threading

    from celora_cli.ops.metrics import SharedCheck

    release, started = threading.Event(), threading.Event()
    checks: list[object] = []

    def produce():
        started.set()
        release.wait(30)
        checks.append(object())
        return checks[-1]

    arrivals = threading.Semaphore(0)

    def clock() -> float:  # time stands still; counts who has arrived
        arrivals.release()
        return 100.0

    shared = SharedCheck(produce, max_age=0, clock=clock)
    results: list[object] = []
    first = threading.Thread(target=lambda: results.append(shared.get()))
    first.start()
    assert started.wait(30) and arrivals.acquire(timeout=30)
    others = [threading.Thread(target=lambda: results.append(shared.get())) for _ in range(4)]
    for thread in others:
        thread.start()
    for _ in others:
        assert arrivals.acquire(timeout=30)  # each has read the clock: it is waiting for the check in flight
    release.set()
    for thread in (first, *others):
        thread.join(30)
    assert len(checks) == 1 and results == [checks[0]] * 5


def test_a_report_is_reused_for_max_age_then_checked_again():
    from celora_cli.ops.metrics import SharedCheck

    now = [0.0]
    made: list[int] = []
    shared = SharedCheck(lambda: made.append(len(made)) or len(made), max_age=10, clock=lambda: now[0])
    assert shared.get() == 1
    now[0] = 9.5
    assert shared.get() == 1
    now[0] = 10.5
    assert shared.get() == 2 and len(made) == 2


def test_more_scrapes_at_once_than_the_bound_get_503():
    from celora_cli.ops.metrics import ScrapeGuard

    answered: list[str] = []

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"metrics"]

    guard = ScrapeGuard(app, frozenset({"127.0.0.1:9187"}), max_concurrent=1)
    environ = {"HTTP_HOST": "127.0.0.1:9187"}
    assert guard(environ, lambda status, headers: answered.append(status)) == [b"metrics"]
    assert guard.slots.acquire(blocking=False)  # one scrape in flight
    guard(environ, lambda status, headers: answered.append(status))
    guard.slots.release()
    guard({"HTTP_HOST": "evil.example:9187"}, lambda status, headers: answered.append(status))
    guard({}, lambda status, headers: answered.append(status))  # no Host at all
    assert answered == ["200 OK", "503 Service Unavailable", "421 Misdirected Request", "421 Misdirected Request"]


def test_a_foreign_host_is_refused_and_a_network_bind_warns(migrated_db):
    port = free_port()
    process = _popen_celora("db", "metrics", "--port", str(port), "--host", "0.0.0.0", "--allow-host",
                            "exporter.internal", env={"DATABASE_URL": migrated_db})
    try:
        _first_scrape(process, port)
        with pytest.raises(urllib.error.HTTPError) as refused:
            _scrape(port, f"evil.example:{port}")  # a DNS-rebinding page in a browser on this machine
        assert refused.value.code == 421
        assert "celora_health_status" in _scrape(port, f"exporter.internal:{port}")
        assert "celora_health_status" in _scrape(port, f"localhost:{port}")
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert "Warning: /metrics on 0.0.0.0 is reachable from the network" in errors


@pytest.mark.parametrize("flags", [("--host", ""), ("--host", "http://0.0.0.0"), ("--allow-host", "a b"),
                                   ("--cache-seconds", "nan")])
def test_an_empty_or_unusable_host_is_a_config_error(flags):
    cli = run_celora("db", "metrics", "--port", str(free_port()), *flags,
                     env={"DATABASE_URL": "postgresql://celora@127.0.0.1:1/nowhere"})
    assert cli.returncode == 3, cli.stdout + cli.stderr
    assert flags[0] in cli.stderr and "Traceback" not in cli.stderr


def test_help_does_not_suggest_every_interface():
    cli = run_celora("db", "metrics", "--help")
    assert cli.returncode == 0 and "0.0.0.0" not in cli.stdout
    assert "--cache-seconds" in cli.stdout and "--allow-host" in cli.stdout


def test_metrics_on_a_port_in_use_is_a_config_error(migrated_db):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli = run_celora("db", "metrics", "--port", str(port), env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 3, cli.stdout + cli.stderr
    assert f"127.0.0.1:{port}" in cli.stderr and "--port" in cli.stderr and "Traceback" not in cli.stderr


def test_every_metric_is_documented_in_the_docs():
    page = (REPO / "docs" / "pages" / "reference" / "metrics.md").read_text()
    missing = [name for name in METRICS if f"`{name}`" not in page]
    assert not missing, f"metrics missing from the docs' metrics table (docs/pages/reference/metrics.md): {missing}"


def test_the_grafana_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads((REPO / "docs" / "grafana-celora.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"celora_[a-z_]+", target["expr"])}
    assert queried and queried <= set(METRICS), queried - set(METRICS)
