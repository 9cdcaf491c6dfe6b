"""`check_database_health()`: the one-screen answer on-call needs, always within its timeout.

Each connection path (pooled = DATABASE_URL, maybe PgBouncer; direct = DIRECT_DATABASE_URL) is checked in
its own daemon thread and the caller waits at most `timeout` seconds in all: libpq's connect_timeout does
not cover a host that accepts the TCP connection and then goes silent, and a thread we stop waiting for
cannot hold the report hostage.

Status: UNHEALTHY only when SELECT 1 on the app path fails; DEGRADED for a real problem found on the way
(the direct path down or reaching a pooler, an undeclared pooler on the app path, pending migrations, a slow
round trip, connections nearly exhausted); otherwise HEALTHY. What health cannot find out (the migration
state when the role may not read alembic_version) is a warning, not a problem. A pooler is reported only on
evidence (celora's startup marker missing, or PgBouncer rejecting the startup options), never because the
server's port differs from the URL's: Docker `-p 5433:5432`, SSH tunnels and port-forwards do that too.

The modules: report.py (what a check reports), check.py (the threads and the deadline), paths.py (one
connection path), verdict.py (problems and status), findings.py (the in-depth problems and warnings).
In depth (each part in its own module, each read within the same deadline): PgBouncer's pools from its admin
console (pgbouncer.py), pressure and replication as the server sees them (server.py: connections by state,
the oldest transaction, lock waits and their blockers, standbys, replication slots), and the read replicas
named in the settings (replicas.py). Each threshold is a setting (CELORA_HEALTH_*, CELORA_SLOT_WAL_THRESHOLD).

Health never starts anything: a stopped (or never created) local PostgreSQL is reported as unhealthy.
"""

from celora_cli.ops.health.check import check_database_health
from celora_cli.ops.health.report import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    ConnectionCheck,
    ConnectionUsage,
    HealthReport,
    MigrationState,
)

__all__ = [
    "DEGRADED", "HEALTHY", "UNHEALTHY", "ConnectionCheck", "ConnectionUsage", "HealthReport", "MigrationState",
    "check_database_health",
]
