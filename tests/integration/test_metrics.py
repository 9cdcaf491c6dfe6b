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
import urllib.request

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from celora_cli.health import check_database_health
from celora_cli.metrics import METRICS, exposition
from tests.conftest import REPO, TEST_PROJECT, free_port, run_celora, settings_for


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
                            stdin=subprocess.DEVNULL)


def test_json_and_prometheus_carry_the_same_facts_from_one_report(migrated_db):
    report = check_database_health(settings_for(migrated_db))
    data = json.loads(json.dumps(report.as_dict(), default=str))
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
    process = _popen_celora("db", "health", "--watch", "0.5", "--json", env={"DATABASE_URL": migrated_db})
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


def test_watch_at_a_terminal_redraws_in_place_until_ctrl_c(migrated_db):
    main, terminal = pty.openpty()
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "DIRECT_DATABASE_URL") and not k.startswith("CELORA_")}
    clean.update({"CELORA_PROJECT_ROOT": str(TEST_PROJECT), "COLUMNS": "200", "TERM": "xterm",
                  "PYTHONPATH": str(REPO), "DATABASE_URL": migrated_db})
    process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "health", "--watch", "0.5"],
                               stdout=terminal, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=clean,
                               cwd=TEST_PROJECT, text=True)
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


def test_metrics_server_runs_the_check_on_each_scrape(migrated_db):
    port = free_port()
    process = _popen_celora("db", "metrics", "--port", str(port), env={"DATABASE_URL": migrated_db})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    first = response.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        # A session left idle in a transaction between the scrapes: the second scrape's own check sees it.
        with psycopg.connect(migrated_db) as idle_in_transaction:
            idle_in_transaction.execute("SELECT 1")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                second = response.read().decode()
        process.send_signal(signal.SIGTERM)  # a service manager's stop: a normal end
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert f"127.0.0.1:{port}/metrics" in errors
    for text in (first, second):
        samples = _samples(text)
        assert samples[("celora_health_status", ())] == 0
        assert samples[("celora_connection_up", (("path", "pooled"),))] == 1
        assert samples[("celora_connections_max", ())] > 0
    idle = ("celora_connections", (("state", "idle in transaction"),))
    assert _samples(second)[idle] == _samples(first).get(idle, 0) + 1  # nothing cached between scrapes


def test_metrics_on_a_port_in_use_is_a_config_error(migrated_db):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli = run_celora("db", "metrics", "--port", str(port), env={"DATABASE_URL": migrated_db})
    assert cli.returncode == 3, cli.stdout + cli.stderr
    assert f"127.0.0.1:{port}" in cli.stderr and "--port" in cli.stderr and "Traceback" not in cli.stderr


def test_every_metric_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [name for name in METRICS if f"`{name}`" not in readme]
    assert not missing, f"metrics missing from the README's metrics table: {missing}"


def test_the_grafana_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads((REPO / "docs" / "grafana-celora.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"celora_[a-z_]+", target["expr"])}
    assert queried and queried <= set(METRICS), queried - set(METRICS)
