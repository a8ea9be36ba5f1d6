"""The health watchdog of a service process: it reads every consumer's
:class:`~llmops.common.liveness.ConsumerProgress` (and a few checks of its own, such as a crashed
faust app or a broker that lost its state) and decides what the process is.

* every consumer ``ok`` (or ``starting``): SERVING;
* a consumer ``retrying`` (a transient failure holds its batch): NOT_SERVING while it lasts, SERVING
  again once it progresses; the process stays;
* a consumer ``dead``: NOT_SERVING and the process exits with :data:`EXIT_CONSUMER_DEAD`;
* a consumer with work (records in hand, or lag) and no progress for ``LLMOPS_CONSUMER_STALL_S``,
  and not retrying: NOT_SERVING and exit with :data:`EXIT_CONSUMER_STALLED`;
* the broker lost its state (restarted in memory) under a consumer that cannot rejoin in place
  (faust): exit with :data:`EXIT_BROKER_RESET`.

Exiting is the point: a dead consumer in a live process is invisible to a supervisor (``llmops
up``, Kubernetes, systemd); a process that exits is restarted. The state of each consumer is the
``llmops_consumer_state{service,consumer,state}`` gauge (1 for its current state).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

from llmops.common.liveness import DEAD, OK, RETRYING, STARTING, ConsumerProgress

#: exit codes of a service process that its watchdog ended (0 and 1 keep their usual meaning)
EXIT_CONSUMER_DEAD = 3
EXIT_CONSUMER_STALLED = 4
EXIT_BROKER_RESET = 5
EXIT_SHUTDOWN_OVERRUN = 6   # the stop did not finish within LLMOPS_SHUTDOWN_GRACE_S: cut short

STATES = (STARTING, OK, RETRYING, DEAD, "stalled")


@dataclass(frozen=True)
class Verdict:
    serving: bool
    exit_code: int = 0      # non-zero: the process must exit with it
    reason: str = ""


SERVING = Verdict(True)

#: a check of its own: a Verdict when something is wrong, else None
Check = Callable[[], "Verdict | None"]


class Watchdog:
    def __init__(self, progress: Callable[[], Iterable[ConsumerProgress]], stall_s: float,
                 checks: Iterable[Check] = (), clock: Callable[[], float] = time.monotonic) -> None:
        self.progress = progress
        self.stall_s = stall_s
        self.checks = list(checks)
        self.clock = clock
        self._retried_at = float("-inf")   # last time a consumer was seen retrying

    def states(self) -> dict[str, str]:
        """{consumer: state}, ``stalled`` for a consumer past the stall limit."""
        consumers = list(self.progress())
        return {p.name: ("stalled" if self._stalled(p, consumers) else p.state) for p in consumers}

    def _stalled(self, p: ConsumerProgress, consumers: Iterable[ConsumerProgress] = ()) -> bool:
        # a consumer that knowingly holds its batch on a transient failure is retrying, not stuck: a
        # restart would not bring the store back, and it is NOT_SERVING meanwhile. Nor is anything stuck
        # until a stall limit has passed since the last retry (offsets stood still while it lasted)
        if p.state in (DEAD, RETRYING) or p.stalled_for() < self.stall_s or self.clock() - self._retried_at < self.stall_s:
            return False
        # a group's committed offsets (``lag:<group>``) stand still while one of its consumers works
        # through a slow batch (a judge model on every completion): slow is not stuck
        if p.name.startswith("lag:"):
            group = p.name[4:] + "/"
            worked = [q.last_work for q in consumers if q.name.startswith(group)]
            if worked and self.clock() - max(worked) < self.stall_s:
                return False
        return True

    def check(self) -> Verdict:
        consumers = list(self.progress())
        found = [v for v in (c() for c in self.checks) if v is not None]
        for p in consumers:
            if p.state == DEAD:
                return Verdict(False, EXIT_CONSUMER_DEAD, f"consumer {p.name} is dead: {p.reason or 'its loop ended'}")
        for v in found:
            if v.exit_code:
                return v
        retrying = [p for p in consumers if p.state == RETRYING]
        if retrying:
            self._retried_at = self.clock()
        for p in consumers:
            if self._stalled(p, consumers):
                return Verdict(False, EXIT_CONSUMER_STALLED, f"consumer {p.name} made no progress for "
                               f"{p.stalled_for():.0f}s with {p.in_hand} records to do")
        if retrying:
            return Verdict(False, 0, "; ".join(f"consumer {p.name} is retrying: {p.reason}" for p in retrying))
        return found[0] if found else SERVING
