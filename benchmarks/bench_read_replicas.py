"""What routing reads to a replica costs: `session_scope(read_only=True)` on a real streaming standby against
`session_scope()` on the primary, measured in the same run (alternating pairs) on throwaway local servers.

Target: a read-only session (with its fitness check at most once per CELORA_REPLICA_CHECK_INTERVAL, default 1 s)
within 1.2x of a plain session doing the same SELECT. For context it also prints the cost with the check made
before every session (interval 0: what the interval saves) and the check's own duration.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _timing import paired_seconds, report

PAIRS = 15
SESSIONS = 200  # per sample: a session is a fraction of a millisecond, too short to time one by one


def main() -> int:
    from sqlalchemy import text

    from celora_cli import get_read_router, session_scope
    from tests.conftest import settings_for
    from tests.standby import replication

    with replication("celora-bench-replicas-", migrate=False) as (primary, (standby,)):
        plain = settings_for(primary.url("app"))
        routed = settings_for(primary.url("app"), CELORA_REPLICA_URLS=standby.url("app"))
        every = settings_for(primary.url("app"), CELORA_REPLICA_URLS=standby.url("app"),
                             CELORA_REPLICA_CHECK_INTERVAL="0")

        def sessions(settings, read_only: bool):
            def run() -> None:
                for _ in range(SESSIONS):
                    with session_scope(settings, read_only=read_only) as session:
                        session.execute(text("SELECT 1")).scalar()

            return run

        with session_scope(routed, read_only=True) as session:  # the standby really serves these reads
            assert session.execute(text("SELECT pg_is_in_recovery()")).scalar()
        mine, theirs, ratio = paired_seconds(sessions(routed, True), sessions(plain, False), PAIRS)
        every_mine, every_theirs, every_ratio = paired_seconds(sessions(every, True), sessions(plain, False), PAIRS)
        replica = get_read_router(routed).replicas[0]
        checks = []
        for _ in range(200):
            started = time.perf_counter()
            replica.check()
            checks.append(time.perf_counter() - started)
        status = report([
            (f"{SESSIONS} read-only sessions (check <= 1/s)", mine, theirs, 1.2, ratio),
            (f"{SESSIONS} read-only sessions (check each)", every_mine, every_theirs, 3.0, every_ratio),
        ])
        print(f"one fitness check (lag query on a pooled connection): {statistics.median(checks) * 1000:.2f} ms "
              f"median of {len(checks)}")
        return status


if __name__ == "__main__":
    sys.exit(main())
