"""Timing helpers shared by the benchmark scripts (not a benchmark: CI's smoke loop skips ``_*.py``).

The scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path`` and they import
this module as ``_timing``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeat: int, *, warm_up: bool = True,
              sync: Callable[[], None] | None = None) -> float:
    """Smallest wall time of ``repeat`` calls of ``fn`` [s].

    Parameters
    ----------
    fn : callable
        The work; its result is discarded.
    repeat : int
        Timed calls (>= 1).
    warm_up : bool
        One untimed call first (allocator, oneDNN primitives, JAX or torch.compile compilation).
    sync : callable, optional
        Called after each call before the clock is read (``torch.cuda.synchronize`` on a GPU).
    """
    sync = sync or (lambda: None)
    if warm_up:
        fn()
        sync()
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def smoke_banner(smoke: bool) -> None:
    """Say, first thing, that a smoke run's numbers mean nothing (CI runs every script this way)."""
    if smoke:
        print("SMOKE MODE: smallest sizes, every code path exercised; the numbers below mean nothing", flush=True)
