"""Timing for the benchmarks: medians of interleaved repetitions, so that what other
processes on a shared machine do falls on every contender alike."""

import statistics
import time


def timed(fn, clock=time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def interleaved(fns: dict, reps: int, warmup: int = 1, clock=time.perf_counter) -> dict:
    """Median seconds of each function: ``warmup`` calls each, then ``reps`` rounds that
    call every function once; the order reverses every round, so that what one call
    leaves behind (caches, freed memory) falls on each alike. ``clock``:
    ``time.perf_counter`` (wall) or ``time.process_time`` (this process's CPU)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(reps):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(timed(fns[name], clock))
    return {name: statistics.median(ts) for name, ts in times.items()}
