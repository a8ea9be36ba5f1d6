"""How a consumer tells its process that it is alive, making progress, holding a batch on a
transient failure, or dead.

Each consumer loop (a faust batch agent, the raw aiokafka batch worker, a companion with a loop
of its own) owns one :class:`ConsumerProgress` and reports into it; the runtime's watchdog
(:mod:`llmops.common.runtime`) reads them all. A consumer is

* ``starting`` until it holds its partitions,
* ``ok`` while it polls and commits,
* ``retrying`` while a transient failure (the store or the broker away) holds its batch: the
  batch is kept, retried with backoff, and nothing is committed or dead-lettered meanwhile,
* ``dead`` once its loop ended with an error.

A consumer that is ``dead``, or that made no progress for the stall limit while it had work
(lag grows, or a batch is in hand), makes the service NOT_SERVING and the process exit non-zero,
so that any supervisor (``llmops up``, Kubernetes, systemd) restarts it.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

STARTING, OK, RETRYING, DEAD = "starting", "ok", "retrying", "dead"


@dataclass
class ConsumerProgress:
    name: str
    clock: Callable[[], float] = time.monotonic
    state: str = STARTING
    reason: str = ""                 # why it is retrying or dead
    last_beat: float = field(default=0.0)       # the loop went round (polled, idle or not)
    last_progress: float = field(default=0.0)   # a batch was handled and committed
    last_work: float = field(default=0.0)       # the handler said it is still working (see still_working)
    retrying_since: float = 0.0
    in_hand: int = 0                 # records fetched and not yet committed
    handled: int = 0                 # records handled (committed) since start

    def __post_init__(self) -> None:
        now = self.clock()
        self.last_beat = self.last_progress = now

    def joined(self) -> None:
        self.state, self.reason = OK, ""
        self.beat()

    def beat(self) -> None:
        self.last_beat = self.clock()

    def fetched(self, n: int) -> None:
        self.in_hand = n
        self.beat()

    def progressed(self, n: int) -> None:
        now = self.clock()
        self.handled += n
        self.in_hand = 0
        self.last_beat = self.last_progress = now
        if self.state != DEAD:
            self.state, self.reason = OK, ""

    def retrying(self, reason: str) -> None:
        if self.state != RETRYING:
            self.retrying_since = self.clock()
        self.state, self.reason = RETRYING, reason
        self.beat()

    def died(self, reason: str) -> None:
        self.state, self.reason = DEAD, reason

    def worked(self) -> None:
        self.last_work = self.clock()

    def stalled_for(self) -> float:
        """Seconds without progress (a committed batch, or a handler's word that it is still
        working) while a batch is in hand; 0 when there is nothing to do."""
        return self.clock() - max(self.last_progress, self.last_work) if self.in_hand else 0.0


_handling: contextvars.ContextVar[ConsumerProgress | None] = contextvars.ContextVar("llmops_handling", default=None)


@contextlib.contextmanager
def handling(progress: ConsumerProgress) -> Iterator[None]:
    """Within it (a consumer's ``handle`` and the tasks and threads it starts), :func:`still_working`
    reports to ``progress``."""
    token = _handling.set(progress)
    try:
        yield
    finally:
        _handling.reset(token)


def still_working() -> None:
    """Tell the consumer whose batch is being handled that its handler moves on, if slowly (one
    judge-model call finished, one window judged): a batch that takes longer than the stall limit
    is then slow, not stuck, and the watchdog leaves the process alone. A handler that hangs says
    nothing and is caught. Does nothing outside a consumer's handler."""
    p = _handling.get()
    if p is not None:
        p.worked()
