"""Prometheus metrics from the health report: `celora db health --format prometheus` and `celora db metrics`.

Both read one HealthReport through `report_metrics`, so the JSON report and the exposition carry the same
facts. prometheus_client is imported only here, and only when metrics are asked for: `celora db health`
stays light. The server runs the whole health check for a scrape (bounded by CELORA_HEALTH_TIMEOUT), one check
at a time, and reuses its report for --cache-seconds; nothing runs between scrapes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from celora_cli.ops.health.report import HealthReport
from celora_cli.safety.local_http import host_allowed

STATUS_VALUES = {"healthy": 0, "degraded": 1, "unhealthy": 2}  # the exit codes of `celora db health`

# name -> (help, label names). The README's metrics table lists the same names (a test checks it).
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "celora_health_status": ("0 healthy, 1 degraded, 2 unhealthy (the exit code of celora db health)", ()),
    "celora_health_problems": ("Problems found (each one makes the status degraded)", ()),
    "celora_health_warnings": ("Warnings found", ()),
    "celora_health_check_duration_seconds": ("How long the health check took", ()),
    "celora_connection_up": ("1 when SELECT 1 answered on the path (pooled = DATABASE_URL, direct)", ("path",)),
    "celora_connection_latency_seconds": ("Round trip of SELECT 1 on an open connection", ("path",)),
    "celora_connection_ssl": ("1 when the connection is encrypted", ("path",)),
    "celora_migrations_pending": ("Migrations not applied yet", ()),
    "celora_connections_max": ("The server's max_connections", ()),
    "celora_connections": ("Client connections by pg_stat_activity state", ("state",)),
    "celora_oldest_transaction_seconds": ("Age of the oldest open transaction (0 when none)", ()),
    "celora_lock_waiting_sessions": ("Sessions waiting on a lock", ()),
    "celora_lock_wait_longest_seconds": ("How long the longest lock wait has lasted (0 when none)", ()),
    "celora_pgbouncer_up": ("1 when PgBouncer's admin console answered SHOW POOLS", ()),
    "celora_pgbouncer_clients_active": ("Clients paired with a server connection", ("database", "user")),
    "celora_pgbouncer_clients_waiting": ("Clients waiting for a server connection", ("database", "user")),
    "celora_pgbouncer_servers_active": ("Server connections in use by a client", ("database", "user")),
    "celora_pgbouncer_servers_idle": ("Server connections idle and ready", ("database", "user")),
    "celora_pgbouncer_max_wait_seconds": ("How long the oldest waiting client has waited", ("database", "user")),
    "celora_standby_replay_lag_seconds": ("pg_stat_replication replay_lag of each standby (on the primary)",
                                          ("standby",)),
    "celora_standby_bytes_behind": ("WAL bytes each standby has not replayed (on the primary)", ("standby",)),
    "celora_replica_up": ("1 when the replica (CELORA_REPLICA_URLS) answered", ("replica",)),
    "celora_replica_in_recovery": ("1 when the replica is in recovery (a standby, as it should be)", ("replica",)),
    "celora_replica_lag_seconds": ("Replay lag of the replica (0 when it replayed all it received)", ("replica",)),
    "celora_replica_bytes_behind": ("WAL bytes the replica has not replayed yet", ("replica",)),
    "celora_replication_slot_active": ("1 when a consumer is attached to the slot", ("slot", "slot_type")),
    "celora_replication_slot_retained_bytes": ("WAL kept on the primary for the slot", ("slot", "slot_type")),
    "celora_replication_slot_over_threshold": ("1 when the slot retains more WAL than CELORA_SLOT_WAL_THRESHOLD",
                                               ("slot", "slot_type")),
}


@dataclass
class Metric:
    name: str
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, value: float | int | bool | None, *labels: str) -> None:
        if value is not None:
            self.samples.append((labels, float(value)))


def report_metrics(report: HealthReport) -> list[Metric]:
    """Every metric's samples from one report (a fact the report does not have is left out, not zero)."""
    metrics = {name: Metric(name) for name in METRICS}

    def add(name: str, value, *labels: str) -> None:
        metrics[name].add(value, *labels)

    add("celora_health_status", STATUS_VALUES[report.status])
    add("celora_health_problems", len(report.problems))
    add("celora_health_warnings", len(report.warnings))
    add("celora_health_check_duration_seconds", report.duration_ms / 1000)
    for name, check in report.checks.items():
        if check.skipped:
            continue
        add("celora_connection_up", check.ok, name)
        add("celora_connection_latency_seconds", None if check.latency_ms is None else check.latency_ms / 1000, name)
        add("celora_connection_ssl", check.ssl, name)
    if report.migrations is not None:
        add("celora_migrations_pending", report.migrations.pending)
    _pressure(report, add)
    _pgbouncer(report, add)
    _replication(report, add)
    return [metrics[name] for name in METRICS]


def _pressure(report: HealthReport, add: Callable[..., None]) -> None:
    pressure = report.pressure
    if pressure is None:
        return
    add("celora_connections_max", pressure.max_connections)
    for state, count in pressure.by_state.items():
        add("celora_connections", count, state)
    oldest = pressure.oldest_transaction
    add("celora_oldest_transaction_seconds", oldest.seconds if oldest is not None and oldest.seconds else 0.0)
    add("celora_lock_waiting_sessions", len(pressure.lock_waits))
    add("celora_lock_wait_longest_seconds", max((w.waiting.seconds or 0.0 for w in pressure.lock_waits), default=0.0))


def _pgbouncer(report: HealthReport, add: Callable[..., None]) -> None:
    bouncer = report.pgbouncer
    if bouncer is None:
        return
    add("celora_pgbouncer_up", bouncer.ok)
    for pool in bouncer.pools:
        add("celora_pgbouncer_clients_active", pool.clients_active, pool.database, pool.user)
        add("celora_pgbouncer_clients_waiting", pool.clients_waiting, pool.database, pool.user)
        add("celora_pgbouncer_servers_active", pool.servers_active, pool.database, pool.user)
        add("celora_pgbouncer_servers_idle", pool.servers_idle, pool.database, pool.user)
        add("celora_pgbouncer_max_wait_seconds", pool.max_wait_s, pool.database, pool.user)


def _replication(report: HealthReport, add: Callable[..., None]) -> None:
    if report.replication is not None:
        for standby in report.replication.standbys:
            label = standby.name or standby.client or "unknown"
            add("celora_standby_replay_lag_seconds", standby.replay_lag_s, label)
            add("celora_standby_bytes_behind", standby.bytes_behind, label)
        for slot in report.replication.slots:
            add("celora_replication_slot_active", slot.active, slot.name, slot.slot_type)
            add("celora_replication_slot_retained_bytes", slot.retained_bytes, slot.name, slot.slot_type)
            add("celora_replication_slot_over_threshold", slot.over_threshold, slot.name, slot.slot_type)
    for replica in report.replicas:
        label = replica.url  # masked; the same URL the JSON report shows
        add("celora_replica_up", replica.ok, label)
        add("celora_replica_in_recovery", replica.in_recovery, label)
        add("celora_replica_lag_seconds", replica.lag_s, label)
        add("celora_replica_bytes_behind", replica.bytes_behind, label)


class HealthCollector:
    """A prometheus_client collector: each collect() turns one report (fresh from `produce`) into metrics."""

    def __init__(self, produce: Callable[[], HealthReport]) -> None:
        self.produce = produce

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        for metric in report_metrics(self.produce()):
            help_text, label_names = METRICS[metric.name]
            family = GaugeMetricFamily(metric.name, help_text, labels=list(label_names))
            for labels, value in metric.samples:
                family.add_metric(list(labels), value)
            yield family


def exposition(report: HealthReport) -> str:
    """The Prometheus text exposition format of one report."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(lambda: report))
    return generate_latest(registry).decode()


class SharedCheck:
    """The health check behind /metrics, bounded: one check at a time, its report reused for `max_age` seconds.

    A scrape that arrives while a check is in flight waits for that check and shares its report (even with
    max_age 0), so ten scrapers at once cost one check, not ten checks with ten sets of connections and threads.
    `clock` is injectable for tests."""

    def __init__(self, produce: Callable[[], HealthReport], max_age: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.produce = produce
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._report: HealthReport | None = None
        self._finished = -math.inf

    def get(self) -> HealthReport:
        arrived = self.clock()
        with self._lock:
            # Finished after this scrape arrived: it was in flight meanwhile, so it is as fresh as a new one.
            if self._report is None or not (self._finished >= arrived or arrived - self._finished < self.max_age):
                self._report = self.produce()
                self._finished = self.clock()
            return self._report


MAX_CONCURRENT_SCRAPES = 8  # more at once get 503 at once: each waiting scrape holds a thread and a socket
SCRAPE_SOCKET_TIMEOUT = 30.0  # a client that connects and sends nothing does not hold a thread for ever


class ScrapeGuard:
    """WSGI middleware in front of prometheus_client's app: the Host check (421) and the concurrency bound (503)."""

    def __init__(self, app: Callable, hosts: frozenset[str], *, any_host: bool = False,
                 max_concurrent: int = MAX_CONCURRENT_SCRAPES) -> None:
        self.app = app
        self.hosts = hosts
        self.any_host = any_host
        self.slots = threading.BoundedSemaphore(max_concurrent)

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        if not host_allowed(environ.get("HTTP_HOST"), self.hosts, any_host=self.any_host):
            return _plain(start_response, "421 Misdirected Request",
                          "This exporter answers only to the names it was started with (--host, --allow-host).")
        if not self.slots.acquire(blocking=False):
            return _plain(start_response, "503 Service Unavailable",
                          f"More than {MAX_CONCURRENT_SCRAPES} scrapes at once; try again.")
        try:
            return list(self.app(environ, start_response))  # the body is made while the slot is held
        finally:
            self.slots.release()


def _plain(start_response: Callable, status: str, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def serve(produce: Callable[[], HealthReport], host: str, port: int, *, max_age: float, hosts: frozenset[str],
          any_host: bool = False) -> Callable[[], None]:
    """Serve /metrics on host:port in a background thread; returns the function that stops it.

    Every scrape reads the report through one SharedCheck (max_age seconds of reuse) behind a ScrapeGuard
    (`hosts`: the Host header values it answers to). Raises OSError when the address cannot be bound (the
    caller names the flag)."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(SharedCheck(produce, max_age).get))
    app = ScrapeGuard(make_wsgi_app(registry), hosts, any_host=any_host)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class QuietHandler(WSGIRequestHandler):
        timeout = SCRAPE_SOCKET_TIMEOUT

        def log_message(self, format: str, *args) -> None:
            pass  # no line per scrape on stderr

    server = make_server(host, port, app, server_class=Server, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="celora-metrics", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
