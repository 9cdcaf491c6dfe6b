"""Shared timing helpers: medians of repeated runs, ratios against a baseline measured in the same run."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm caches (page cache, .pyc) so the first run does not skew the median
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def command(*args: str, env: dict | None = None) -> Callable[[], object]:
    def run() -> None:
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    return run


def report(rows: list[tuple[str, float, float, float]]) -> int:
    """rows: (name, measured s, baseline s, target ratio). Prints a table; returns 1 if a target is missed."""
    missed = 0
    print(f"{'benchmark':<44} {'measured':>10} {'baseline':>10} {'ratio':>7} {'target':>7}")
    for name, measured, baseline, target in rows:
        ratio = measured / baseline
        ok = ratio <= target
        missed += not ok
        print(f"{name:<44} {measured * 1000:>8.1f}ms {baseline * 1000:>8.1f}ms {ratio:>6.2f}x {target:>6.1f}x"
              f"  {'ok' if ok else 'MISSED'}")
    return 1 if missed else 0


PYTHON = sys.executable
