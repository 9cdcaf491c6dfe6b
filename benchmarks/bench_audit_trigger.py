"""The audit triggers' cost on the volume seed and on an audited bulk load: migration 20261207023000 (SECURITY
DEFINER row function deciding per row, no WHEN on the trigger) against 20261126170000 (the WHEN clause skipped the
function call entirely when celora.audit = 'off'), in the same run, alternating.

Two databases on a throwaway local PostgreSQL, one at each revision. Each pair of runs, in alternating order:
- the volume seed (generate_volume; the owner skips auditing, so this is the cost of deciding to skip), timed from
  the start of the transactions COPY to its end;
- an audited UPDATE of the same transaction rows (auditing on: one audit entry per row).
Each run is rolled back, so every run starts from the same tables.
`python3 benchmarks/bench_audit_trigger.py [ROWS] [PAIRS]` (defaults: 100,000 transactions, 5 pairs).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

REPO = Path(__file__).resolve().parent.parent
SEED = 2026
BEFORE = "20261126170000"


def migrate_to(url: str, target: str) -> None:
    from alembic import command

    from celora_cli.config.settings import load_settings
    from celora_cli.db.engine import get_direct_engine
    from celora_cli.migrate.scripts import alembic_config

    settings = load_settings(environ={"DATABASE_URL": url, "CELORA_ENV": "test"}, project_root=REPO)
    engine = get_direct_engine(settings)
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(settings, connection=conn), target)
            conn.commit()
    finally:
        engine.dispose()


def main() -> int:
    import psycopg
    from bench_seed import users_for

    from celora_cli.data.seed.volume import generate_volume
    from celora_cli.local.server import LocalServer

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    base = Path(tempfile.mkdtemp(prefix="celora-bench-audit-"))
    base.chmod(0o755)
    server = LocalServer(base / ".celora", fast=True, database="postgres")
    try:
        server.ensure_running()
        urls = {"before": server.create_database("bench_before"), "after": server.create_database("bench_after")}
        migrate_to(urls["before"], BEFORE)
        migrate_to(urls["after"], "head")
        users = users_for(rows, SEED)

        def seed_once(url: str) -> tuple[float, float]:
            marks: dict[tuple[str, str], float] = {}

            def progress(table: str, done: int, total: int) -> None:
                now = time.perf_counter()
                marks.setdefault((table, "start"), now)
                if done == total:
                    marks[(table, "end")] = now

            with psycopg.connect(url) as conn:
                generate_volume(conn, users=users, seed=SEED, progress=progress)
                seeded = marks[("transactions", "end")] - marks[("transactions", "start")]
                # The same rows again, audited (the seed set celora.audit back): one audit entry per row.
                started = time.perf_counter()
                conn.execute("UPDATE transactions SET confirmations = confirmations + 1")
                audited = time.perf_counter() - started
                conn.rollback()
            return seeded, audited

        seed_once(urls["before"]), seed_once(urls["after"])  # warm caches
        results: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        for index in range(pairs):
            for which in (("before", "after") if index % 2 == 0 else ("after", "before")):
                results[which].append(seed_once(urls[which]))
        for kind, position in (("volume seed (auditing skipped), transactions COPY", 0),
                               ("audited UPDATE of the same transactions", 1)):
            before = [r[position] for r in results["before"]]
            after = [r[position] for r in results["after"]]
            ratios = [a / b for a, b in zip(after, before, strict=True)]
            print(f"{kind}: before {statistics.median(before):.2f} s, after {statistics.median(after):.2f} s, "
                  f"ratio after/before median {statistics.median(ratios):.2f} (range {min(ratios):.2f}-"
                  f"{max(ratios):.2f}), {pairs} pairs, {rows:,}+ rows")
        return 0
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
