"""celora db studio on a 1,000,000-row transactions table (issue 21): every page kind of the issue's table, over
real HTTP (the real `celora db studio --read-only` process, uvicorn on a free port, httpx over TCP), median of 5,
each run paired with the bare SQL for the same rows through psycopg (ABBA, benchmarks/_timing.py).

Targets (issue 21): every page kind under 150 ms at the median, except a page that must read the whole table (a
sort or a substring over a column with no index, the all-column search, the walk to a typed deep page), which
stays within 1.2x of its bare SQL; the substring filter at or under Prisma Studio's 386 ms. A whole-table page
served under 150 ms meets the first target whatever its ratio (the 1.2x bound is for pages the bare SQL alone
keeps above it); its ratio is printed either way.

The table is built in SQL (INSERT ... SELECT generate_series), respecting the schema's CHECKs and the
(wallet_id, chain) foreign key, on a throwaway cluster this script starts and removes. `--url URL` measures an
existing database instead (built by this script's BUILD), and leaves it as it was.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))  # _timing

REPO = Path(__file__).resolve().parent.parent
USERS = 10_000
WALLETS_PER_USER = 2
TRANSACTIONS = 1_000_000
RUNS = 5
RATIO_TARGET = 1.2
PRISMA_SUBSTRING_MS = 386.0
TARGET_MS = 150.0
TOKEN = "bench-token"

BUILD = f"""
SET LOCAL celora.audit = 'off';
-- The throwaway cluster commits asynchronously (fast=True). VACUUM cannot mark a page all-visible until the
-- inserting transaction's commit is flushed, so right after an asynchronous commit it leaves the table with no
-- all-visible page: every index-only walk then visits the heap, and the first reads of each page set hint bits
-- and write them out, whichever query comes first. A table in production is vacuumed: commit this one durably.
SET LOCAL synchronous_commit = on;
INSERT INTO users (firebase_uid, email, display_name)
SELECT 'bench-' || i, 'user' || i || '@bench.example', 'Bench user ' || i FROM generate_series(1, {USERS}) AS i;
INSERT INTO wallets (user_id, chain, address, label)
SELECT u.id, c.chain::chain, '0x' || lpad(to_hex(u.n * 2 + c.k), 40, '0'), 'bench wallet'
FROM (SELECT id, row_number() OVER (ORDER BY firebase_uid) AS n FROM users) AS u,
     (VALUES ('ethereum', 0), ('celo', 1)) AS c(chain, k);
CREATE TEMP TABLE bench_wallets AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, chain FROM wallets;
INSERT INTO transactions (wallet_id, chain, tx_hash, direction, status, from_address, to_address, amount, asset,
                          decimals, fee, block_number, block_timestamp, confirmations)
SELECT w.id, w.chain, '0x' || lpad(to_hex(i), 64, '0'),
       (CASE WHEN i % 2 = 0 THEN 'incoming' ELSE 'outgoing' END)::transaction_direction,
       (CASE WHEN i % 20 = 0 THEN 'failed' WHEN i % 50 = 1 THEN 'pending' ELSE 'confirmed' END)::transaction_status,
       '0x' || lpad(to_hex(i * 7), 40, '0'), '0x' || lpad(to_hex(i * 11), 40, '0'),
       (i::numeric * 1000000000000), CASE WHEN i % 3 = 0 THEN 'USDC' ELSE 'ETH' END, 18, 21000,
       18000000 + i, now() - make_interval(secs => i * 12), 12
FROM generate_series(1, {TRANSACTIONS}) AS i
JOIN bench_wallets AS w ON w.n = i % ({USERS * WALLETS_PER_USER});
"""


def main() -> int:
    import psycopg

    if "--url" in sys.argv:
        url = sys.argv[sys.argv.index("--url") + 1]
        return _measure(url)
    from celora_cli.local.server import LocalServer

    base = Path(tempfile.mkdtemp(prefix="celora-bench-studio-"))
    base.chmod(0o755)
    server = LocalServer(base / ".celora", fast=True, database="postgres")
    try:
        server.ensure_running()
        url = server.create_database("bench_studio")
        from celora_cli.migrate.deploy import deploy

        deploy(_settings(url))
        started = time.perf_counter()
        with psycopg.connect(url) as conn:
            conn.execute(BUILD)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE users, wallets, transactions")
        print(f"built {TRANSACTIONS:,} transactions ({USERS * WALLETS_PER_USER:,} wallets) in "
              f"{time.perf_counter() - started:.1f} s")
        return _measure(url)
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def _settings(url: str):
    from celora_cli.config.settings import load_settings

    return load_settings(environ={"DATABASE_URL": url, "CELORA_ENV": "development"}, project_root=REPO)


def _start_studio(url: str) -> tuple[subprocess.Popen, str]:
    """The real command, read-only, on a free port; returns (process, base URL with the token)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY", "DIRECT_DATABASE_URL") and not key.startswith("CELORA_")}
    env.update(DATABASE_URL=url, CELORA_ENV="development", NO_COLOR="1", PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "celora_cli", "db", "studio", "--read-only", "--port", "0",
                                "--no-browser"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Open: "):
            return process, line.split("Open: ", 1)[1].strip()
    process.kill()
    raise SystemExit(f"the studio printed no URL: {process.stderr.read() if process.stderr else ''}")


def _measure(url: str) -> int:
    from urllib.parse import quote, urlsplit

    import httpx
    import psycopg
    from _timing import paired_seconds

    process, opened = _start_studio(url)
    parts = urlsplit(opened)
    client = httpx.Client(base_url=f"{parts.scheme}://{parts.netloc}", timeout=60)
    assert client.get(opened).status_code in (200, 303)  # the token becomes the cookie
    with psycopg.connect(url) as conn:
        (wallet_id,), = conn.execute("SELECT wallet_id FROM transactions OFFSET 500000 LIMIT 1").fetchall()
        visible = conn.execute("SELECT relallvisible::float / greatest(relpages, 1) FROM pg_class "
                               "WHERE relname = 'transactions'").fetchone()[0]
        print(f"all-visible pages of transactions: {visible:.0%}")
        if visible < 0.99:
            print("  (less than 99%: run VACUUM transactions first, or the walks and scans are not comparable)")
    # The studio's search: each text and enum column, cast to varchar, ILIKE (starlette-admin's).
    searched = ("id wallet_id chain tx_hash direction status from_address to_address asset token_contract"
                ).split()
    text_columns = [c for c in searched if c not in ("id", "wallet_id")]
    search_term = "abcdef"
    search = " OR ".join(f"CAST({c} AS VARCHAR) ILIKE '%{search_term}%'" for c in text_columns)
    full = "SELECT * FROM transactions"
    # (name, studio path, bare SQL for the same rows, reads the whole table?)
    pages = [
        ("table list (home, estimated counts)", "/studio/", "SELECT reltuples FROM pg_class WHERE relkind = 'r'",
         False),
        ("transactions, first page", "/studio/transaction/list", f"{full} ORDER BY id LIMIT 25", False),
        ("last page", "/studio/transaction/list?last=1", f"{full} ORDER BY id DESC LIMIT 25", False),
        ("page 36,001 (a typed number: walks 900,000 keys)", "/studio/transaction/list?page=36001",
         f"{full} JOIN (SELECT id FROM transactions ORDER BY id OFFSET 900000 LIMIT 25) AS k USING (id) "
         "ORDER BY id", True),
        ("page 36,002 (Next from 36,001: keyset)", None, None, False),
        ("sort by created_at desc (no index)", "/studio/transaction/list?sort=created_at__desc",
         f"{full} ORDER BY created_at DESC, id DESC LIMIT 25", True),
        ("sort by amount desc (no index)", "/studio/transaction/list?sort=amount__desc",
         f"{full} ORDER BY amount DESC, id DESC LIMIT 25", True),
        ("filter status = failed", "/studio/transaction/list?filter=" + quote("status__eq=failed"),
         f"{full} WHERE status = 'failed' ORDER BY id LIMIT 25", False),
        ("filter tx_hash contains abcde (ILIKE)", "/studio/transaction/list?filter=" +
         quote("tx_hash__contains=abcde"), f"{full} WHERE tx_hash ILIKE '%abcde%' ORDER BY id LIMIT 25", True),
        ("filter tx_hash contains 12345 (no letters: LIKE)", "/studio/transaction/list?filter=" +
         quote("tx_hash__contains=12345"), f"{full} WHERE tx_hash LIKE '%12345%' ORDER BY id LIMIT 25", True),
        (f"search every column ({search_term})", f"/studio/transaction/list?q={search_term}",
         f"{full} WHERE {search} ORDER BY id LIMIT 25", True),
        ("a wallet's transactions", "/studio/transaction/list?filter=" + quote(f'wallet_id__eq="{wallet_id}"'),
         f"{full} WHERE wallet_id = '{wallet_id}' ORDER BY id LIMIT 25", False),
    ]
    missed = 0
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
          f"median of {RUNS} over HTTP, each run paired with the bare SQL")
    print(f"{'page (1,000,000 transactions)':<52} {'studio':>9} {'bare SQL':>9} {'ratio':>6}  target")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for name, path, sql, whole in pages:
                if path is None:  # the keyset page after 36,001: its Next link
                    deep = client.get("/studio/transaction/list?page=36001").text
                    match = re.search(r'data-celora-page="next" href="([^"]+)"', deep)
                    assert match, "page 36,001 has no Next link"
                    path = html.unescape(match.group(1))
                    last_id = re.findall(r'data-sa-pk="([^"]+)"', deep)[-1]
                    sql = f"{full} WHERE id > '{last_id}' ORDER BY id LIMIT 25"
                response = client.get(path)
                assert response.status_code == 200, (path, response.status_code, response.text[-800:])
                rows = len(set(re.findall(r'data-sa-pk="([^"]+)"', response.text)))
                studio, bare, ratio = paired_seconds(lambda path=path: client.get(path),
                                                     lambda sql=sql: conn.execute(sql).fetchall(), RUNS)
                if whole:
                    ok = ratio <= RATIO_TARGET or studio * 1000 < TARGET_MS
                    target = f"<= {RATIO_TARGET}x bare SQL or < {TARGET_MS:.0f} ms"
                    if "contains" in name:
                        ok = ok and studio * 1000 <= PRISMA_SUBSTRING_MS
                        target += f", <= {PRISMA_SUBSTRING_MS:.0f} ms"
                else:
                    ok, target = studio * 1000 < TARGET_MS, f"< {TARGET_MS:.0f} ms"
                explained = "data-celora-slow-page" in response.text
                verdict = "ok" if ok else "MISSED"
                if "celora-partial" in response.text:
                    # Stopped at CELORA_STUDIO_SEARCH_TIMEOUT and said so: bounded, but not the bare SQL's rows.
                    verdict, target = "PARTIAL", "bounded by CELORA_STUDIO_SEARCH_TIMEOUT"
                else:
                    missed += not ok
                print(f"{name:<52} {studio * 1000:>7.1f}ms {bare * 1000:>7.1f}ms {ratio:>5.2f}x  {target} "
                      f"{verdict} ({rows} rows{', explained' if explained else ''})")
    finally:
        client.close()
        process.terminate()
        process.wait(20)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
