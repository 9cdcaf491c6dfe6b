"""What a health check reports: one ConnectionCheck per path, the migration state, connection usage, and the
HealthReport that gathers them with the in-depth parts (server.py, pgbouncer.py, replicas.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from celora_cli.errors import ExitCode
from celora_cli.ops.health.pgbouncer import PgBouncerCheck
from celora_cli.ops.health.replicas import ReplicaCheck
from celora_cli.ops.health.server import Pressure, Replication

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
SLOW_LATENCY_MS = 1000.0  # a round trip slower than this is reported as degraded
BUSY_CONNECTIONS = 0.8  # share of max_connections in use that counts as degraded


@dataclass
class ConnectionCheck:
    name: str  # "pooled" or "direct"
    setting: str  # the setting it came from
    url: str | None  # masked
    ok: bool = False  # SELECT 1 answered
    skipped: bool = False
    latency_ms: float | None = None  # round trip of SELECT 1 on an open connection
    connect_ms: float | None = None
    server_version: str | None = None
    server_port: int | None = None  # the port PostgreSQL itself listens on (a mapped port differs: no alarm)
    pgbouncer: bool = False  # declared with ?pgbouncer=true
    # Evidence-based: True when celora's startup marker did not reach the server session or PgBouncer
    # rejected the startup options; False when the marker arrived; None when it could not be tested
    # (?pgbouncer=true sends no startup options, nor does a URL with its own ?options=).
    pooler_detected: bool | None = None
    pooler_evidence: str | None = None
    ssl: bool | None = None  # libpq's own answer: is this connection (to PostgreSQL or the pooler) encrypted
    error: str | None = None
    hint: str | None = None


@dataclass
class MigrationState:
    current: list[str]
    head: str | None
    pending: int
    pending_names: list[str]
    up_to_date: bool


@dataclass
class ConnectionUsage:
    in_use: int
    max_connections: int

    @property
    def ratio(self) -> float:
        return self.in_use / self.max_connections if self.max_connections else 0.0


@dataclass
class HealthReport:
    status: str
    latency: int | None  # ms, the app path's round trip (the seed's `{status, latency}`)
    checks: dict[str, ConnectionCheck]
    migrations: MigrationState | None = None  # None: not known (see warnings)
    connections: ConnectionUsage | None = None
    pressure: Pressure | None = None
    replication: Replication | None = None  # on the primary: standbys and slots
    pgbouncer: PgBouncerCheck | None = None  # with CELORA_PGBOUNCER_ADMIN_URL
    replicas: list[ReplicaCheck] = field(default_factory=list)  # CELORA_REPLICA_URLS
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timeout_s: float = 0.0
    duration_ms: float = 0.0
    local_server: bool = False

    @property
    def exit_code(self) -> int:
        return {HEALTHY: ExitCode.OK, DEGRADED: ExitCode.DEGRADED, UNHEALTHY: ExitCode.UNHEALTHY}[self.status]

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        if self.connections is not None:
            data["connections"]["ratio"] = round(self.connections.ratio, 3)
        return data
