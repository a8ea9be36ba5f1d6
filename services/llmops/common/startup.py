"""How long a service took from its process's start until SERVING, phase by phase.

A restarted service is out of the platform until it is SERVING again, so its start is the recovery
time of every fault that restarts it. The runtime marks each phase (imports, build, topics, the
group join, models still loading, ...) on a :class:`StartupClock`; the total and the phases are
logged once SERVING (``retrieval: SERVING 9.8s after its process started: imports 3.1s, ...``)
and exported as ``llmops_service_startup_seconds{service,phase}``.
"""
from __future__ import annotations

import os
import time


def process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or None where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        # field 22 of stat (starttime, in clock ticks after boot); the list starts at field 3
        return max(0.0, uptime_s - int(after_name[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class StartupClock:
    """Phases of one start, in the order they ended. Phases may overlap (a model loads while the
    consumer group is joined): each phase's seconds are from its own start to its end, and the
    total is the wall time from the process's start."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        age = process_age_s()
        self.started = clock() - (age or 0.0)     # the process's start, on this clock
        self._last = clock()
        self.phases: dict[str, float] = {}
        if age is not None:
            self.phases["process start to runtime"] = age   # the interpreter and the imports

    def mark(self, phase: str, since: float | None = None) -> float:
        """End ``phase``: it began at ``since`` (a time of this clock) or when the last one ended."""
        now = self.clock()
        took = now - (self._last if since is None else since)
        self.phases[phase] = self.phases.get(phase, 0.0) + took
        self._last = max(self._last, now)
        return took

    def now(self) -> float:
        return self.clock()

    def total(self) -> float:
        return self.clock() - self.started

    def summary(self) -> str:
        return ", ".join(f"{phase} {s:.1f}s" for phase, s in self.phases.items())
