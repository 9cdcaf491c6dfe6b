"""`celora db changes` against PostgreSQL's own client, `pg_recvlogical`, in the same run, on the same server.

A throwaway local PostgreSQL (the binaries celora's local server uses; pg_recvlogical from the same bin dir, so
the same major version as the server), one database at head. Each shape gets two fresh slots created before the
writes: one for celora (with its publication, `db changes --setup-only`), one for pg_recvlogical with the same
plugin and publication (pgoutput, `-o proto_version=1 -o publication_names=...`). Then the writes, then each
client catches up from its slot to the WAL position at the end of the writes (celora: a one-shot run, which stops
there; pg_recvlogical: `--endpos`), output to /dev/null. Timed: the whole process, start-up included. Peak memory:
the child's maximum RSS (resource.getrusage, RUSAGE_CHILDREN, measured in a fresh process per client).

Shapes: one transaction of 200,000 rows; 2,000 transactions of 100 rows; and (memory only) one transaction of
1,000,000 rows. Then latency: a follower on its own slot while single-row transactions are written at 1,000 a
second for 10 s; from each commit (the line's commit_time, the server's clock on this machine) to its line on the
follower's stdout. Targets: time ratio at most 2.0x for both; celora's peak RSS under 150 MB for the million rows;
median commit-to-line under 100 ms.

Each slot is consumed once, so each figure is one run (no repeats): read them with the machine's load in mind.
`python3 benchmarks/bench_changes.py [--quick]` (--quick: a tenth of the rows, for a smoke run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

REPO = Path(__file__).resolve().parent.parent


def child_run(argv: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child, measured in a fresh process so RUSAGE_CHILDREN is its own."""
    probe = ("import resource, subprocess, sys, time, json\n"
             "t = time.perf_counter()\n"
             "r = subprocess.run(json.loads(sys.argv[1]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
             "s = time.perf_counter() - t\n"
             "assert r.returncode == 0, r.stderr.decode()[-2000:]\n"
             "print(s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n")
    import json

    out = subprocess.run([sys.executable, "-c", probe, json.dumps(argv)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {out.stderr[-2000:]}")
    seconds, rss = out.stdout.split()
    return float(seconds), float(rss)


def commit_to_line(url: str, env: dict, *, seconds: float, rate: int) -> float:
    """Median seconds from a transaction's commit (its commit_time, the server's clock, this machine) to its line
    on a follower's stdout, while single-row transactions are written at `rate` a second."""
    import datetime as dt
    import json
    import statistics
    import threading

    import psycopg

    subprocess.run([sys.executable, "-m", "celora_cli", "db", "changes", "--slot", "b_latency", "--setup-only"],
                   env=env, check=True, capture_output=True)
    follower = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "changes", "--follow", "--slot",
                                 "b_latency"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    delays: list[float] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            arrived = dt.datetime.now(dt.UTC)
            delays.append((arrived - dt.datetime.fromisoformat(json.loads(line)["commit_time"])).total_seconds())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(3)  # the follower's start-up is not what is measured
    written = 0
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            conn.execute("INSERT INTO users (firebase_uid) VALUES (%s)", (f"lat-{written}",))
            written += 1
            ahead = written / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
    time.sleep(2)
    follower.terminate()
    follower.wait(30)
    median = statistics.median(delays) if delays else float("inf")
    print(f"commit to line: {written / elapsed:.0f} transactions/s written for {elapsed:.0f} s, {len(delays)} lines, "
          f"median {median * 1000:.0f} ms, 95th percentile "
          f"{sorted(delays)[int(len(delays) * 0.95)] * 1000 if delays else float('inf'):.0f} ms", flush=True)
    return median


def main() -> None:
    import psycopg

    from celora_cli.config.settings import load_settings
    from celora_cli.local.server import LocalServer
    from celora_cli.migrate.deploy import deploy

    quick = "--quick" in sys.argv
    scale = 10 if quick else 1
    base = Path(tempfile.mkdtemp(prefix="celora-bench-changes-"))
    base.chmod(0o755)
    server = LocalServer(base / ".celora", fast=True, database="postgres")
    try:
        server.ensure_running()
        url = server.create_database("bench_changes")
        deploy(load_settings(environ={"DATABASE_URL": url, "CELORA_ENV": "test"}, project_root=REPO))
        recvlogical = Path(server.bin_dir) / "pg_recvlogical"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELORA_") and k != "DATABASE_URL"}
        env.update({"DATABASE_URL": url, "CELORA_PROJECT_ROOT": str(REPO), "PYTHONPATH": str(REPO)})
        with psycopg.connect(url, autocommit=True) as conn:
            print(f"server {conn.info.server_version}, pg_recvlogical "
                  f"{subprocess.run([recvlogical, '--version'], capture_output=True, text=True).stdout.strip()}")
        results = []

        def shape(name: str, write, memory_only: bool = False) -> None:
            slot = f"b_{len(results)}"
            celora = [sys.executable, "-m", "celora_cli", "db", "changes", "--slot", slot]
            subprocess.run([*celora, "--setup-only"], env=env, check=True, capture_output=True)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"{slot}_recv",))
                write(conn)
                conn.execute("SET synchronous_commit = on")
                end = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
            mine = child_run(celora, env)
            theirs = (None, None) if memory_only else child_run(
                [str(recvlogical), "-d", url, "-S", f"{slot}_recv", "--start", "--no-loop", "-E", end, "-f", "-",
                 "-o", "proto_version=1", "-o", f"publication_names={slot}"], env)
            results.append((name, mine, theirs))
            ratio = f"{mine[0] / theirs[0]:.2f}x" if theirs[0] else "-"
            print(f"{name}: celora {mine[0]:.2f} s, {mine[1]:.0f} MB peak"
                  + (f"; pg_recvlogical {theirs[0]:.2f} s, {theirs[1]:.0f} MB peak; ratio {ratio}"
                     if theirs[0] else ""), flush=True)

        def one_big(rows: int):
            def write(conn) -> None:
                conn.execute("INSERT INTO users (firebase_uid) SELECT 'bench-' || %s || '-' || g "
                             "FROM generate_series(1, %s) g", (len(results), rows))
            return write

        def many_small(conn) -> None:
            for t in range(2_000 // scale):
                conn.execute("INSERT INTO users (firebase_uid) SELECT 'small-' || %s || '-' || g "
                             "FROM generate_series(1, 100) g", (t,))

        shape(f"one transaction of {200_000 // scale:,} rows", one_big(200_000 // scale))
        shape(f"{2_000 // scale:,} transactions of 100 rows", many_small)
        shape(f"one transaction of {1_000_000 // scale:,} rows (memory)", one_big(1_000_000 // scale),
              memory_only=True)
        latency = commit_to_line(url, env, seconds=10 if not quick else 3, rate=1_000)
        ratios = [mine[0] / theirs[0] for _, mine, theirs in results if theirs[0]]
        peak = results[-1][1][1]
        print(f"target: time ratio <= 2.0x for both shapes: {'met' if max(ratios) <= 2.0 else 'MISSED'} "
              f"(worst {max(ratios):.2f}x); peak RSS < 150 MB for the million rows: "
              f"{'met' if peak < 150 else 'MISSED'} ({peak:.0f} MB); commit to line < 100 ms median: "
              f"{'met' if latency < 0.1 else 'MISSED'} ({latency * 1000:.0f} ms)")
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
