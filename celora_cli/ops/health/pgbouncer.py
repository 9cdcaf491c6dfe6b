"""PgBouncer's own view of its pools, read from its admin console (CELORA_PGBOUNCER_ADMIN_URL).

The console is the virtual database `pgbouncer`; it speaks only the simple query protocol and has no
transactions, so the connection is autocommit, never prepares, and sends none of celora's startup options
(PgBouncer would refuse them). The user must be listed in PgBouncer's admin_users or stats_users.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from celora_cli.config.settings import DatabaseURL
from celora_cli.db.connect import libpq_params
from celora_cli.db.errors import postgres_message

ADMIN_DATABASE = "pgbouncer"


@dataclass
class PoolInfo:
    """One line of SHOW POOLS (a database/user pair)."""

    database: str
    user: str
    pool_mode: str | None
    clients_active: int
    clients_waiting: int
    servers_active: int
    servers_idle: int
    max_wait_s: float  # how long the oldest waiting client has waited (maxwait + maxwait_us)


@dataclass
class PoolTraffic:
    """One line of SHOW STATS (per database, averages over PgBouncer's last stats_period)."""

    database: str
    total_xact_count: int
    total_query_count: int
    avg_xact_time_ms: float
    avg_query_time_ms: float
    avg_wait_time_ms: float


@dataclass
class PgBouncerCheck:
    url: str  # masked
    setting: str = "CELORA_PGBOUNCER_ADMIN_URL"
    ok: bool = False
    pools: list[PoolInfo] = field(default_factory=list)
    stats: list[PoolTraffic] = field(default_factory=list)
    clients_active: int = 0
    clients_waiting: int = 0
    servers_active: int = 0
    servers_idle: int = 0
    max_wait_s: float = 0.0
    error: str | None = None
    hint: str | None = None


def check_pgbouncer(check: PgBouncerCheck, url: DatabaseURL, connect_timeout: float) -> None:
    """Fill `check` from SHOW POOLS and SHOW STATS (runs in a thread that may be abandoned: never raises)."""
    import math

    import psycopg

    try:
        params = libpq_params(url)
        params.setdefault("connect_timeout", max(2, math.ceil(connect_timeout)))
        with psycopg.connect("", autocommit=True, prepare_threshold=None, **params) as conn:
            pools = _rows(conn, "SHOW POOLS")
            stats = _rows(conn, "SHOW STATS")
    except Exception as exc:  # noqa: BLE001 - an unreachable console is a line of the report
        check.error, check.hint = _describe_failure(exc, url)
        return
    check.pools = [_pool(row) for row in pools if row.get("database") != ADMIN_DATABASE]
    check.stats = [_traffic(row) for row in stats if row.get("database") != ADMIN_DATABASE]
    check.clients_active = sum(pool.clients_active for pool in check.pools)
    check.clients_waiting = sum(pool.clients_waiting for pool in check.pools)
    check.servers_active = sum(pool.servers_active for pool in check.pools)
    check.servers_idle = sum(pool.servers_idle for pool in check.pools)
    check.max_wait_s = max((pool.max_wait_s for pool in check.pools), default=0.0)
    check.ok = True


def _rows(conn, command: str) -> list[dict]:
    # No parameters and no preparing: psycopg sends it with the simple query protocol, all the console accepts.
    cursor = conn.execute(command)
    names = [column.name for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _number(row: dict, key: str) -> int:
    value = row.get(key)
    return int(value) if value is not None else 0


def _pool(row: dict) -> PoolInfo:
    return PoolInfo(
        database=str(row.get("database")), user=str(row.get("user")), pool_mode=row.get("pool_mode"),
        clients_active=_number(row, "cl_active"), clients_waiting=_number(row, "cl_waiting"),
        servers_active=_number(row, "sv_active"), servers_idle=_number(row, "sv_idle"),
        max_wait_s=_number(row, "maxwait") + _number(row, "maxwait_us") / 1_000_000)


def _traffic(row: dict) -> PoolTraffic:
    return PoolTraffic(
        database=str(row.get("database")), total_xact_count=_number(row, "total_xact_count"),
        total_query_count=_number(row, "total_query_count"),
        avg_xact_time_ms=_number(row, "avg_xact_time") / 1000, avg_query_time_ms=_number(row, "avg_query_time") / 1000,
        avg_wait_time_ms=_number(row, "avg_wait_time") / 1000)


def _describe_failure(exc: BaseException, url: DatabaseURL) -> tuple[str, str]:
    reason = postgres_message(exc) or str(exc)
    message = f"PgBouncer's admin console at {url.display_host} (CELORA_PGBOUNCER_ADMIN_URL) did not answer: {reason}"
    if url.database != ADMIN_DATABASE:
        return message, (f"The console is the database {ADMIN_DATABASE!r}: set CELORA_PGBOUNCER_ADMIN_URL to "
                         f"postgresql://USER@{url.display_host}/{ADMIN_DATABASE}.")
    return message, ("Check that PgBouncer runs there and that the user is in its admin_users or stats_users "
                     "(pgbouncer.ini), then `psql -p PORT -U USER pgbouncer -c 'SHOW POOLS'`.")
