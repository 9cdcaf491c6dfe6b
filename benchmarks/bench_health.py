"""Cost of `check_database_health()` and a no-op `migrate-deploy`, as ratios against raw psycopg measured in
the same run on a throwaway local PostgreSQL.

Targets: the health check (two connections in threads, the Alembic script scan for migration state, the
connection count, one query each for pressure and replication) within 10x of one raw psycopg connect +
SELECT 1; a no-op migrate-deploy (lock, status, release) within 12x of the same baseline.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _timing import median_seconds, report

RUNS = 25


def main() -> int:
    import psycopg

    from celora_cli.config.settings import load_settings
    from celora_cli.local.server import LocalServer
    from celora_cli.migrate.deploy import deploy
    from celora_cli.ops.health import check_database_health

    base = Path(tempfile.mkdtemp(prefix="celora-bench-"))
    base.chmod(0o755)
    server = LocalServer(base / ".celora", fast=True)
    try:
        url = server.ensure_running()
        settings = load_settings(environ={"DATABASE_URL": url}, project_root=Path(__file__).parent.parent)
        deploy(settings)

        def raw() -> None:
            with psycopg.connect(url) as conn:
                conn.execute("SELECT 1").fetchone()

        baseline = median_seconds(raw, RUNS)
        health = median_seconds(lambda: check_database_health(settings), RUNS)
        noop_deploy = median_seconds(lambda: deploy(settings), RUNS)
        return report([
            ("check_database_health()", health, baseline, 10.0),
            ("deploy() with nothing pending", noop_deploy, baseline, 12.0),
        ])
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
