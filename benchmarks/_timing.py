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


def paired_seconds(fn: Callable[[], object], baseline: Callable[[], object], runs: int) -> tuple[float, float, float]:
    """(median of fn, median of baseline, median of the per-pair ratios), the two run alternately.

    On a shared machine the load drifts over seconds; medians of two separate blocks of runs then compare
    a quiet minute with a busy one. Alternating the two (ABBA, so neither always goes first) and taking the
    median of each pair's ratio compares like with like."""
    fn(), baseline()  # warm caches (page cache, .pyc)
    mine, theirs, ratios = [], [], []
    for index in range(runs):
        order = (fn, baseline) if index % 2 == 0 else (baseline, fn)
        timings = {}
        for each in order:
            started = time.perf_counter()
            each()
            timings[each] = time.perf_counter() - started
        mine.append(timings[fn])
        theirs.append(timings[baseline])
        ratios.append(timings[fn] / timings[baseline])
    return statistics.median(mine), statistics.median(theirs), statistics.median(ratios)


def paired_cpu_seconds(fn: Callable[[], object], baseline: Callable[[], object],
                       runs: int) -> tuple[float, float, float]:
    """paired_seconds for the CPU time (user + system) the child processes used: what the code costs, which the
    other tenants of a shared machine disturb less than the wall clock (it leaves out waiting for a core)."""
    import resource

    def cpu(each: Callable[[], object]) -> Callable[[], float]:
        def run() -> float:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            each()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

        return run

    mine, theirs = cpu(fn), cpu(baseline)
    mine(), theirs()
    pairs = []
    for index in range(runs):  # alternate which goes first, as paired_seconds does
        if index % 2 == 0:
            pairs.append((mine(), theirs()))
        else:
            first = theirs()
            pairs.append((mine(), first))
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
            statistics.median(p[0] / p[1] for p in pairs))


def command(*args: str, env: dict | None = None) -> Callable[[], object]:
    def run() -> None:
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    return run


def report(rows: list[tuple]) -> int:
    """rows: (name, measured s, baseline s, target ratio[, ratio]); the ratio, when given, is the median of
    paired runs (paired_seconds), else measured / baseline. A target of None prints the ratio for information
    (a figure with no target of its own). Prints a table; returns 1 if a target is missed."""
    missed = 0
    print(f"{'benchmark':<48} {'measured':>10} {'baseline':>10} {'ratio':>7} {'target':>7}")
    for name, measured, baseline, target, *paired in rows:
        ratio = paired[0] if paired else measured / baseline
        if target is None:
            verdict, shown = "(information)", "-"
        else:
            ok = ratio <= target
            missed += not ok
            verdict, shown = ("ok" if ok else "MISSED"), f"{target:.2f}x"
        print(f"{name:<48} {measured * 1000:>8.1f}ms {baseline * 1000:>8.1f}ms {ratio:>6.2f}x {shown:>7}  {verdict}")
    return 1 if missed else 0


PYTHON = sys.executable
