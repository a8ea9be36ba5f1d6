"""One batch of consumed records, handled the way every consumer loop handles it: transient
failures hold the batch, deterministic ones dead-letter only the records that fail on their own.

Both consumer kinds (the faust batch agents of :mod:`llmops.common.stream` and the raw aiokafka
worker of :mod:`llmops.common.batch_worker`) call :func:`handle_batch` and commit the batch's
offsets only after it returns. It

1. hands the records to ``consumer.handle``;
2. on a *transient* exception (:func:`llmops.common.retry.is_transient`: the store or the broker
   away) reports ``retrying`` and retries the same records with backoff. Nothing is committed and
   nothing dead-lettered meanwhile; when the worker is stopping it raises :class:`BatchHeld`, so the
   caller commits nothing and the batch is redelivered after the restart;
3. on a *deterministic* exception splits the batch in halves (recursively), so that only the
   records that fail on their own go to the DLQ with the reason and their neighbours are handled;
4. dead-letters what ``handle`` returned as :class:`Rejected`. A DLQ send that fails transiently is
   retried like the batch; one that fails deterministically (a record too large for the DLQ, say) is
   retried without the value, and if even that fails it is logged and counted
   (``llmops_dlq_messages_total{error="DlqSendFailed"}``). A DLQ failure never ends the consumer;
5. reports ``progressed``.

A consumer may redo work for records it has already handled when a batch is split or retried, so
its sinks must be idempotent (they are: natural keys, see the architecture's delivery rule).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from llmops.common import metrics
from llmops.common.envelope import Record
from llmops.common.liveness import ConsumerProgress, handling
from llmops.common.retry import Backoff, is_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected:
    """A record the consumer refuses for good (undecodable, invalid): it goes to the DLQ with ``reason``."""
    record: Record
    reason: str
    error: str = "UndecodableMessage"


class BatchConsumer(Protocol):
    async def handle(self, records: list[Record]) -> list[Rejected]: ...


class DeadLetterSink(Protocol):
    """What :class:`llmops.common.bus.DeadLetterQueue` offers: send one record with why it failed."""
    async def send(self, record: Record, reason: str, error: str = "UndecodableMessage") -> None: ...


class BatchHeld(Exception):
    """The worker is stopping while a transient failure holds the batch: commit nothing."""


@dataclass
class BatchOutcome:
    handled: int = 0                 # records handled (stored or dead-lettered)
    dead_lettered: int = 0
    retries: int = 0                 # transient failures retried (handle and DLQ sends)
    splits: int = 0                  # times a batch was halved to find its poison records
    dlq_lost: int = 0                # dead letters that could not be sent at all (logged, counted)
    rejected: list[Rejected] = field(default_factory=list)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


class _Hold:
    """Backoff while a transient failure holds the batch; raises :class:`BatchHeld` once stopping."""

    def __init__(self, name: str, progress: ConsumerProgress, outcome: BatchOutcome, first_s: float, max_s: float,
                 stopping: Callable[[], bool], sleep: Callable[[float], object]) -> None:
        self.name, self.progress, self.outcome = name, progress, outcome
        self.backoff = Backoff(first_s=first_s, max_s=max_s)
        self.stopping, self.sleep = stopping, sleep
        self.since = 0.0

    async def wait(self, what: str, exc: BaseException, n: int) -> None:
        reason = f"{what}: {_describe(exc)}"
        if not self.since:
            self.since = time.monotonic()
            log.warning("%s: %s; holding %d records and retrying with backoff", self.name, reason, n)
        else:
            log.debug("%s: still failing (%s)", self.name, reason)
        self.progress.retrying(reason)
        self.outcome.retries += 1
        if self.stopping():
            raise BatchHeld(f"{self.name}: stopping while {reason}") from exc
        left = self.backoff.next_delay()
        while left > 0:           # sleep in slices so that a stopping worker is not kept waiting
            step = min(left, 0.25)
            await self.sleep(step)
            left -= step
            if self.stopping():
                raise BatchHeld(f"{self.name}: stopping while {reason}") from exc

    def passed(self) -> None:
        if self.since:
            log.info("%s: recovered after %.1fs (%d retries)", self.name, time.monotonic() - self.since,
                     self.outcome.retries)
            self.since = 0.0
        self.backoff.reset()


async def handle_batch(
    consumer: BatchConsumer, records: Sequence[Record], dlq: DeadLetterSink, progress: ConsumerProgress, *,
    backoff_first_s: float = 0.2, backoff_max_s: float = 10.0, stopping: Callable[[], bool] = lambda: False,
    group: str = "", name: str = "", sleep: Callable[[float], object] = asyncio.sleep,
) -> BatchOutcome:
    """Handle ``records`` completely (stored, or dead-lettered with a reason), or raise.

    Raises :class:`BatchHeld` when ``stopping()`` turns true while a transient failure holds the
    batch (and lets ``CancelledError`` through): then the caller must commit nothing. Any other
    return means every record is accounted for and the batch's offsets may be committed.
    """
    records = list(records)
    name = name or getattr(progress, "name", "consumer")
    outcome = BatchOutcome()
    if not records:
        return outcome
    progress.fetched(len(records))
    hold = _Hold(name, progress, outcome, backoff_first_s, backoff_max_s, stopping, sleep)

    async def handle(part: list[Record]) -> list[Rejected]:
        while True:
            try:
                with handling(progress):
                    result = await consumer.handle(part)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is either held or narrowed down
                if is_transient(exc):
                    await hold.wait("handler failed transiently", exc, len(part))
                    continue
                hold.passed()
                if len(part) == 1:
                    log.warning("%s: %s[%d]@%d fails on its own (%s); dead-lettering it", name, part[0].topic,
                                part[0].partition, part[0].offset, _describe(exc))
                    return [Rejected(part[0], f"handler failed: {_describe(exc)}", type(exc).__name__)]
                outcome.splits += 1
                if outcome.splits == 1:
                    log.warning("%s: batch of %d failed (%s); splitting it to find the records that fail",
                                name, len(part), _describe(exc))
                mid = len(part) // 2
                return await handle(part[:mid]) + await handle(part[mid:])
            hold.passed()
            return list(result or ())

    rejected = await handle(records)
    for r in rejected:
        await _dead_letter(r, dlq, hold, outcome, group, name)
    hold.passed()
    outcome.rejected = rejected
    outcome.handled = len(records)
    progress.progressed(len(records))
    return outcome


async def _dead_letter(r: Rejected, dlq: DeadLetterSink, hold: _Hold, outcome: BatchOutcome, group: str,
                       name: str) -> None:
    stripped = False
    while True:
        try:
            await dlq.send(r.record, r.reason, r.error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a DLQ failure must never end the consumer
            if is_transient(exc):
                await hold.wait("DLQ send failed transiently", exc, 1)
                continue
            if not stripped and r.record.value:
                # e.g. the record plus its dlq-* headers exceeds the broker's message size: keep where it
                # came from and why, so it can be found at its source offset and replayed from there
                log.error("%s: DLQ refused %s[%d]@%d (%s); sending it without its value", name, r.record.topic,
                          r.record.partition, r.record.offset, _describe(exc))
                r = replace(r, record=replace(r.record, value=None),
                            reason=f"{r.reason} [value dropped: {_describe(exc)}]"[:4096])
                stripped = True
                continue
            outcome.dlq_lost += 1
            metrics.DLQ_MESSAGES.labels(r.record.topic, group or name, "DlqSendFailed").inc()
            log.error("%s: could not dead-letter %s[%d]@%d (%s): %s", name, r.record.topic, r.record.partition,
                      r.record.offset, _describe(exc), r.reason)
            return
        hold.passed()
        outcome.dead_lettered += 1
        return
