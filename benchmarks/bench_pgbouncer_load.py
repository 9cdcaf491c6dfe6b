"""1,000 concurrent clients running the app's typical queries, through PgBouncer and directly, on a throwaway
cluster with max_connections = 100 and the shipped pgbouncer.ini (transaction pooling, default_pool_size 20).

Three runs of BENCH_LOAD_SECONDS (default 20) each, on loopback only:
1. through PgBouncer: 1,000 psycopg AsyncConnections (asyncio), each looping over the four queries below;
2. the same load sent directly to PostgreSQL, for contrast: beyond ~100 clients the server refuses connections
   ("too many clients already"); refused clients retry once a second, and every refusal is counted;
3. the same load through celora's pooled engine (SQLAlchemy, ?pgbouncer=true) in 1,000 threads, each request
   wrapped in `celora_cli.db.retry.with_retry`, while PgBouncer is stopped (SIGTERM) and started again in the
   middle: a request that still fails after its retries is lost.

The queries (one transaction each, autocommit): a wallet's latest 20 transactions, a user's unread
notifications, an idempotency-key upsert, a rate-limit increment. Targets: 0 errors through PgBouncer, 0 lost
requests across the restart. Not a test (`make bench` runs it); it prints a table and exits 1 on a missed target.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CLIENTS = int(os.environ.get("BENCH_LOAD_CLIENTS", "1000"))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "20"))
MAX_CONNECTIONS = 100
SEED_USERS = 2000
CONNECT_CONCURRENCY = 50  # clients opening their connection at the same moment (an app fleet starting up)

LATEST_TRANSACTIONS = ("SELECT id, tx_hash, direction, status, amount, asset, block_timestamp FROM transactions"
                       " WHERE wallet_id = %s ORDER BY block_timestamp DESC NULLS LAST, id DESC LIMIT 20")
UNREAD_NOTIFICATIONS = ("SELECT id, title, created_at FROM notifications WHERE user_id = %s AND read_at IS NULL"
                        " ORDER BY created_at DESC LIMIT 20")
IDEMPOTENCY_UPSERT = (
    "INSERT INTO idempotency_keys (key, user_id, method, path, request_fingerprint, expires_at)"
    " VALUES (%s, %s, 'POST', '/v1/transfers', %s, now() + interval '1 day')"
    " ON CONFLICT (user_id, key) WHERE user_id IS NOT NULL DO UPDATE SET locked_at = now() RETURNING id")
RATE_LIMIT_INCREMENT = (
    "INSERT INTO rate_limits (key, window_start, window_seconds, count, expires_at)"
    " VALUES (%s, date_trunc('minute', now()), 60, 1, date_trunc('minute', now()) + interval '2 minutes')"
    " ON CONFLICT (key, window_seconds, window_start) DO UPDATE SET count = rate_limits.count + 1 RETURNING count")


@dataclass
class Ids:
    wallets: list[str]
    users: list[str]

    def request(self, rng: random.Random) -> tuple[str, tuple]:
        """One of the app's four typical queries with its parameters."""
        user = rng.choice(self.users)
        kind = rng.randrange(4)
        if kind == 0:
            return LATEST_TRANSACTIONS, (rng.choice(self.wallets),)
        if kind == 1:
            return UNREAD_NOTIFICATIONS, (user,)
        if kind == 2:
            key = f"transfer-{rng.randrange(100_000)}"
            return IDEMPOTENCY_UPSERT, (key, user, hashlib.sha256(key.encode()).hexdigest())
        return RATE_LIMIT_INCREMENT, (f"user:{user}:transfers",)


@dataclass
class Tally:
    name: str
    clients: int
    connected: int = 0  # the most connections the clients held at once
    open_now: int = 0
    requests: int = 0
    errors: int = 0  # failed requests and refused connection attempts
    connect_errors: int = 0
    retried: int = 0  # requests that succeeded only after a retry (phase 3)
    lost: int = 0  # requests that failed after their retries (phase 3)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    def failed(self, exc: BaseException, *, connecting: bool = False) -> None:
        self.errors += 1
        self.connect_errors += connecting
        self.first_error = self.first_error or f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:110]}"

    def opened(self, change: int) -> None:
        self.open_now += change
        self.connected = max(self.connected, self.open_now)

    def row(self) -> str:
        ordered = sorted(self.latencies) or [0.0]
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        rate = self.requests / self.seconds if self.seconds else 0.0
        return (f"{self.name:<44} {self.clients:>7} {self.connected:>9} {self.requests:>9} {self.errors:>7} "
                f"{rate:>9.0f}/s {p50:>7.1f}ms {p99:>7.1f}ms")


# -- the throwaway cluster ---------------------------------------------------------------------------------

def raise_open_files_limit() -> int:
    """PgBouncer (which inherits it) and this process each hold ~1,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192
    if hard != resource.RLIM_INFINITY and hard < wanted and os.geteuid() == 0:
        hard = wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def restart_with_max_connections(server) -> None:
    """LocalServer starts with max_connections = 200; this benchmark needs the 100 of the issue."""
    server.stop()
    options = (f"-p {server.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
               f"-c max_connections={MAX_CONNECTIONS} -c fsync=off -c synchronous_commit=off")
    kwargs: dict = {}
    if server.run_as is not None:
        user = pwd.getpwnam(server.run_as)
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    subprocess.run([str(server.bin_dir / "pg_ctl"), "start", "-D", str(server.data_dir), "-l", str(server.log_file),
                    "-w", "-t", "60", "-o", options], check=True, capture_output=True, cwd=server.base_dir,
                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}, **kwargs)


def load_ids(url: str) -> Ids:
    import psycopg

    with psycopg.connect(url) as conn:
        wallets = [str(r[0]) for r in conn.execute("SELECT wallet_id FROM transactions GROUP BY 1 LIMIT 5000")]
        users = [str(r[0]) for r in conn.execute("SELECT id FROM users LIMIT 5000")]
    return Ids(wallets, users)


# -- runs 1 and 2: asyncio clients ----------------------------------------------------------------------------

@dataclass
class Run:
    """What the clients of one asyncio run share: the connect gate, the moment all have tried, the deadline."""

    gate: asyncio.Semaphore
    all_tried: asyncio.Event
    start: asyncio.Event
    tried: int = 0
    deadline: float = 0.0


async def async_client(number: int, conninfo: dict, ids: Ids, tally: Tally, run: Run) -> None:
    import psycopg

    rng = random.Random(number)
    conn = None
    async with run.gate:
        try:
            conn = await psycopg.AsyncConnection.connect(autocommit=True, **conninfo)
            tally.opened(+1)
        except psycopg.Error as exc:
            tally.failed(exc, connecting=True)
    run.tried += 1
    if run.tried == tally.clients:
        run.all_tried.set()
    await run.start.wait()
    while time.monotonic() < run.deadline:
        if conn is None:  # refused (too many clients): try again in a second, like an app's pool would
            await asyncio.sleep(1.0)
            if time.monotonic() >= run.deadline:
                break
            try:
                conn = await psycopg.AsyncConnection.connect(autocommit=True, **conninfo)
                tally.opened(+1)
            except psycopg.Error as exc:
                tally.failed(exc, connecting=True)
                continue
        sql, params = ids.request(rng)
        began = time.perf_counter()
        try:
            await (await conn.execute(sql, params)).fetchall()
        except psycopg.Error as exc:
            tally.failed(exc)
            await conn.close()
            tally.opened(-1)
            conn = None
            continue
        tally.latencies.append(time.perf_counter() - began)
        tally.requests += 1
    if conn is not None:
        await conn.close()
        tally.opened(-1)


async def async_load(name: str, conninfo: dict, ids: Ids) -> Tally:
    """Every client connects first (CONNECT_CONCURRENCY at a time); the clock starts when all have tried."""
    tally = Tally(name, CLIENTS)
    run = Run(asyncio.Semaphore(CONNECT_CONCURRENCY), asyncio.Event(), asyncio.Event())
    tasks = [asyncio.create_task(async_client(n, conninfo, ids, tally, run)) for n in range(CLIENTS)]
    await run.all_tried.wait()
    began = time.monotonic()
    run.deadline = began + SECONDS
    run.start.set()
    await asyncio.gather(*tasks)
    tally.seconds = time.monotonic() - began
    return tally


# -- run 3: celora's pooled engine with with_retry, PgBouncer restarted in the middle ---------------------------

def engine_load(name: str, settings, ids: Ids, restart) -> Tally:
    from celora_cli.db.engine import get_engine
    from celora_cli.db.retry import with_retry

    engine = get_engine(settings)
    tally = Tally(name, CLIENTS)
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS + 1)
    deadline_box = [0.0]

    def run_request(sql: str, params: tuple, attempts: list[int]):
        attempts[0] += 1
        with engine.begin() as conn:
            return conn.exec_driver_sql(sql, params).fetchall()

    # Enough attempts to outlast a restart: waits of 0.1, 0.2, 0.4, 0.8, then 1 s (about 5.5 s in all).
    retrying = with_retry(attempts=9, initial_wait=0.1, max_wait=1.0)

    def worker(number: int) -> None:
        rng = random.Random(number)
        start.wait()
        while time.monotonic() < deadline_box[0]:
            sql, params = ids.request(rng)
            attempts = [0]
            began = time.perf_counter()
            try:
                retrying(run_request)(sql, params, attempts)
            except Exception as exc:  # noqa: BLE001 - a lost request, whatever it was
                with lock:
                    tally.lost += 1
                    tally.failed(exc)
                continue
            with lock:
                tally.requests += 1
                tally.retried += attempts[0] > 1
                tally.latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    deadline_box[0] = began + SECONDS
    start.wait()
    time.sleep(SECONDS / 2)
    restart()
    for thread in threads:
        thread.join()
    tally.seconds = time.monotonic() - began
    tally.connected = engine.pool.checkedin() + engine.pool.checkedout()  # connections the pool holds at the end
    engine.dispose()
    return tally


def main() -> int:
    from celora_cli.config.settings import load_settings
    from celora_cli.data.seed.apply import seed
    from celora_cli.local.pgbouncer import LocalPgBouncer
    from celora_cli.local.server import LocalServer
    from celora_cli.migrate.deploy import deploy

    files = raise_open_files_limit()
    if files < CLIENTS + 200:  # this process holds one socket per client (and PgBouncer inherits the limit)
        print(f"The open-files limit is {files}, too low for {CLIENTS} clients and could not be raised (not root). "
              f"Raise it (`ulimit -n {2 * CLIENTS + 200}`) or set BENCH_LOAD_CLIENTS lower.")
        return 1
    base = Path(tempfile.mkdtemp(prefix="celora-bench-load-"))
    base.chmod(0o755)
    server = LocalServer(base / ".celora", fast=True)
    bouncer = None
    try:
        server.ensure_running()
        restart_with_max_connections(server)
        direct = server.url()
        settings = load_settings(environ={"DATABASE_URL": direct}, project_root=REPO)
        deploy(settings)
        seed(settings, REPO / "fixtures", volume_users=SEED_USERS, volume_seed=11)
        ids = load_ids(direct)
        import psycopg

        with psycopg.connect(direct) as conn:
            limit = int(conn.execute("SHOW max_connections").fetchone()[0])
        assert limit == MAX_CONNECTIONS, f"max_connections is {limit}"
        bouncer = LocalPgBouncer(server, REPO / "pgbouncer.ini")  # the shipped file as it is (max_client_conn 2000)
        status = bouncer.start()
        pooled = status.database_url
        assert pooled is not None
        from urllib.parse import urlsplit

        parts = urlsplit(pooled)
        via_bouncer = {"host": "127.0.0.1", "port": parts.port, "user": parts.username, "password": parts.password,
                       "dbname": "celora", "prepare_threshold": None}
        print(f"{CLIENTS} clients, {SECONDS:g} s per run, max_connections {MAX_CONNECTIONS}, shipped pgbouncer.ini "
              f"(default_pool_size 20, max_client_conn 2000), open files {files}, seeded "
              f"{len(ids.users)} users / {len(ids.wallets)} wallets with transactions")
        tallies = [asyncio.run(async_load("through PgBouncer (pool 20)", via_bouncer, ids))]
        bouncer.stop()  # its idle server connections would take direct slots
        to_postgres = {"host": "127.0.0.1", "port": server.port, "user": "celora", "dbname": "celora"}
        tallies.append(asyncio.run(async_load(f"direct to PostgreSQL (max_connections {MAX_CONNECTIONS})",
                                              to_postgres, ids)))
        bouncer.start()
        engine_settings = load_settings(environ={
            "DATABASE_URL": f"{pooled}&connection_limit={CLIENTS}&pool_timeout=60", "DIRECT_DATABASE_URL": direct,
        }, project_root=REPO)
        restarted: list[float] = []

        def restart() -> None:
            began = time.monotonic()
            bouncer.stop()
            restarted.append(time.monotonic() - began)
            bouncer.start()  # includes a login through it
            restarted.append(time.monotonic() - began)

        tallies.append(engine_load("celora engine + with_retry, PgBouncer restarted", engine_settings, ids, restart))
    finally:
        if bouncer is not None:
            bouncer.stop()
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)

    print(f"{'run':<44} {'clients':>7} {'connected':>9} {'requests':>9} {'errors':>7} {'throughput':>11} "
          f"{'p50':>9} {'p99':>9}")
    for tally in tallies:
        print(tally.row())
    bounced, direct_run, engine_run = tallies
    print(f"direct: {direct_run.connect_errors} refused connection attempts"
          + (f" (first: {direct_run.first_error})" if direct_run.first_error else ""))
    print(f"restart: PgBouncer stopped in {restarted[0]:.2f} s, up again (a login through it checked) "
          f"{restarted[1]:.2f} s after the stop began; {engine_run.retried} request(s) needed a retry, "
          f"{engine_run.lost} lost" + (f" (first: {engine_run.first_error})" if engine_run.first_error else ""))
    missed = []
    if bounced.errors:
        missed.append(f"{bounced.errors} error(s) through PgBouncer (first: {bounced.first_error})")
    if bounced.connected != CLIENTS:
        missed.append(f"only {bounced.connected} of {CLIENTS} clients were connected through PgBouncer at once")
    if engine_run.lost:
        missed.append(f"{engine_run.lost} request(s) lost across the PgBouncer restart")
    for line in missed:
        print(f"MISSED: {line}")
    print("targets: 0 errors through PgBouncer, 0 lost across the restart: " + ("MISSED" if missed else "ok"))
    return 1 if missed else 0


if __name__ == "__main__":
    from celora_cli.errors import CeloraError

    try:
        sys.exit(main())
    except CeloraError as exc:  # PgBouncer not installed, no PostgreSQL binaries...
        print(f"bench_pgbouncer_load: {exc.message}" + (f" {exc.hint}" if exc.hint else ""))
        sys.exit(1)
