"""The volume seed (`generate_volume`) against a raw `psql \\copy` of the same transaction rows, in the same run.

Two databases at head on a throwaway local PostgreSQL:
- volume: generate_volume() writes users, wallets, transactions and notifications (timed). The figure compared
  is the transactions table: from the start of its COPY to its end, generation included, >= 1,000,000 rows.
- copy: the same users and wallets are copied in first (untimed, the foreign keys need them), the same
  transaction rows are written to a CSV file (untimed), then `psql \\copy transactions ... FROM file` (timed,
  psql from the server's own binaries).

Target: the volume seed's transactions rate at least half of raw COPY's (time ratio at most 2.0x).
`python3 benchmarks/bench_seed.py [ROWS]` (ROWS defaults to 1,000,000 transactions).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _timing import report

REPO = Path(__file__).resolve().parent.parent
SEED = 2026
TRANSACTION_ROWS = 1_000_000


def users_for(rows: int, seed: int) -> int:
    """The smallest user count (to 1%) whose plan holds at least `rows` transactions."""
    from celora_cli.data.seed.volume import planned_counts

    users = max(1, rows // 19)
    while planned_counts(users=users, seed=seed)["transactions"] < rows:
        users = int(users * 1.01) + 1
    return users


def copy_table(source, target, table: str, columns: tuple[str, ...]) -> None:
    names = ", ".join(columns)
    with source.cursor().copy(f"COPY {table} ({names}) TO STDOUT (FORMAT binary)") as out, \
            target.cursor().copy(f"COPY {table} ({names}) FROM STDIN (FORMAT binary)") as into:
        for block in out:
            into.write(block)


def main() -> int:
    import psycopg

    from celora_cli.config.settings import load_settings
    from celora_cli.data.seed.volume import TRANSACTION_COLUMNS, USER_COLUMNS, WALLET_COLUMNS, generate_volume
    from celora_cli.local.server import LocalServer
    from celora_cli.migrate.deploy import deploy

    rows = int(sys.argv[1]) if len(sys.argv) > 1 else TRANSACTION_ROWS
    base = Path(tempfile.mkdtemp(prefix="celora-bench-seed-"))
    base.chmod(0o755)
    server = LocalServer(base / ".celora", fast=True, database="postgres")
    try:
        server.ensure_running()
        template = server.create_database("bench_template")
        deploy(load_settings(environ={"DATABASE_URL": template, "CELORA_ENV": "test"}, project_root=REPO))
        volume_url = server.create_database("bench_volume", template="bench_template")
        copy_url = server.create_database("bench_copy", template="bench_template")
        users = users_for(rows, SEED)

        marks: dict[tuple[str, str], float] = {}

        def progress(table: str, done: int, total: int) -> None:
            now = time.perf_counter()
            marks.setdefault((table, "start"), now)
            if done == total:
                marks[(table, "end")] = now

        with psycopg.connect(volume_url) as conn:
            started = time.perf_counter()
            counts = generate_volume(conn, users=users, seed=SEED, progress=progress)
            conn.commit()
            all_seconds = time.perf_counter() - started
        seed_seconds = marks[("transactions", "end")] - marks[("transactions", "start")]
        transactions = counts["transactions"]

        csv = base / "transactions.csv"
        columns = ", ".join(TRANSACTION_COLUMNS)
        with psycopg.connect(volume_url) as source, psycopg.connect(copy_url) as target:
            copy_table(source, target, "users", USER_COLUMNS)
            copy_table(source, target, "wallets", WALLET_COLUMNS)
            target.commit()
            with open(csv, "wb") as handle, source.cursor().copy(
                    f"COPY transactions ({columns}) TO STDOUT (FORMAT csv)") as out:
                for block in out:
                    handle.write(block)
        started = time.perf_counter()
        # The baseline is an unaudited COPY, as the volume seed's own COPYs are (the audit triggers would
        # make the baseline 3-4 times slower and the ratio flattering); the owner may turn auditing off.
        subprocess.run([str(server.bin_dir / "psql"), copy_url, "-v", "ON_ERROR_STOP=1", "-q",
                        "-c", "SET celora.audit = 'off'",
                        "-c", f"\\copy transactions ({columns}) FROM '{csv}' WITH (FORMAT csv)"], check=True)
        copy_seconds = time.perf_counter() - started
        with psycopg.connect(copy_url) as conn:
            copied = conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
        assert copied == transactions, (copied, transactions)

        total_rows = sum(counts.values())
        print(f"users={users} rows: {counts} (total {total_rows})")
        print(f"volume seed, all tables: {total_rows / all_seconds:,.0f} rows/s ({all_seconds:.1f} s, commit included)")
        print(f"volume seed, transactions: {transactions / seed_seconds:,.0f} rows/s ({seed_seconds:.1f} s)")
        print(f"psql \\copy, transactions: {transactions / copy_seconds:,.0f} rows/s ({copy_seconds:.1f} s)")
        print(f"rate ratio (volume / raw COPY): {copy_seconds / seed_seconds:.2f} (target >= 0.5)")
        return report([(f"volume seed vs psql \\copy, {transactions:,} transactions", seed_seconds, copy_seconds,
                        2.0)])
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
