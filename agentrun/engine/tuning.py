"""Process-wide settings a long-running engine process wants.

The engine allocates many small, short-lived objects per node (records, events); with
CPython's default collector thresholds a 10,000-node run spends ~40% of its time in
generation-0 collections that find nothing to free. Processes that host the engine (the
server, `agentrun run`, benchmarks) call `tune_gc()` once at start; a library importing
the engine keeps the interpreter's defaults.
"""

from __future__ import annotations

import gc


def tune_gc() -> None:
    gc.collect()
    # Objects alive at start-up (modules, compiled plans) are never collected again.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
