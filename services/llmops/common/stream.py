"""faust-streaming plumbing: the app factory, the worker that runs beside a gRPC server in one
event loop, and batch agents whose failures go to the dead-letter topic.

A service's consumer is a plain object with ``async handle(records) -> list[Rejected]``. It
decodes, validates and stores; whatever it rejects is sent to the DLQ (and awaited) before the
batch is acknowledged, so nothing is skipped silently and a bad message never stops the consumer.
It raises for a failure that may pass (the store away): the batch is then held and retried, not
dead-lettered (:mod:`llmops.common.batch_handling`).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

import faust

from llmops.common import metrics
from llmops.common.batch_handling import BatchConsumer, BatchHeld, Rejected, handle_batch
from llmops.common.bus import DeadLetterQueue
from llmops.common.envelope import Record
from llmops.common.liveness import ConsumerProgress
from llmops.common.settings import Settings

log = logging.getLogger(__name__)


def make_app(settings: Settings, service: str) -> faust.App:
    creds = None
    tls = ssl.create_default_context() if settings.kafka_security_protocol in ("SSL", "SASL_SSL") else None
    if settings.kafka_security_protocol.startswith("SASL"):
        creds = faust.SASLCredentials(
            username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=tls,
        )
    elif tls is not None:
        creds = tls
    session_s = settings.kafka_session_timeout_ms / 1000
    slots = consumer_buffer_slots(settings)
    datadir = settings.data_dir / "faust" / service
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}{service}",
        broker=[f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")],
        broker_credentials=creds,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(1.0, session_s / 5),
        broker_rebalance_timeout=max(session_s * 2, 20.0),
        consumer_group_instance_id=settings.kafka_group_instance_id or None,   # one group per app: the name may repeat across apps
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        web_enabled=False,
        stream_buffer_maxsize=slots,          # prefetch while a batch is being written, bounded in bytes
        consumer_max_fetch_size=settings.kafka_max_message_bytes,   # per partition: one message at the limit
        datadir=str(datadir),
        store="memory://",
        autodiscover=False,
    )
    app.llmops_max_batch = slots              # batch_agent caps its batches with it
    app.llmops_progress = []                  # batch_agent appends each agent's ConsumerProgress
    return app


def consumer_buffer_slots(settings: Settings) -> int:
    """Records a faust app may queue ahead of an agent, and at most in one batch in hand.

    ``LLMOPS_CONSUMER_BUFFER_BYTES`` bounds what one app holds of records not yet handled: half of
    it for faust's stream buffer, half for the batch in hand, each counted at the largest message
    (``LLMOPS_KAFKA_MAX_MESSAGE_BYTES``), since faust bounds its buffer by count only. aiokafka
    holds at most one fetch per assigned partition on top (``consumer_max_fetch_size`` = the
    largest message). At least 4 slots, so a tiny budget still makes progress.
    """
    return max(4, settings.consumer_buffer_bytes // (2 * settings.kafka_max_message_bytes))


class StreamWorker(faust.Worker):
    """A faust worker started with ``await start()`` inside the service's own loop.

    Signals belong to :mod:`llmops.common.server` (it drains gRPC first), logging to
    :mod:`llmops.common.logging`. ``ready`` is set once the app has joined its group and
    recovered its tables.
    """

    def __init__(self, app: faust.App, ready: asyncio.Event) -> None:
        super().__init__(app, loop=asyncio.get_running_loop(), override_logging=False, quiet=True,
                         redirect_stdouts=False, daemon=False)
        self.spinner = None
        self._ready_event = ready

    def install_signal_handlers(self) -> None:
        return None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        for progress in getattr(self.app, "llmops_progress", ()):
            progress.joined()
        self._ready_event.set()


def to_record(event) -> Record:
    msg = event.message
    headers = msg.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return Record(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
                  value=msg.value, headers=[(k, bytes(v) if v is not None else b"") for k, v in headers],
                  timestamp_ms=int((msg.timestamp or 0) * 1000))


async def deliver_rejections(rejected: list[Rejected], dlq: DeadLetterQueue) -> None:
    for r in rejected:
        await dlq.send(r.record, r.reason, r.error)


def _keep_uncommitted(events) -> None:
    """Make sure faust never commits these events' offsets.

    ``Stream.take_events`` acks the batch it yielded in a ``finally``, also when the agent's body
    raised or was cancelled (the generator is closed later, and acking then marks the offsets
    safe to commit, and the consumer commits them at its next commit or on stop). A batch that was
    not handled must not be committed: flagging its messages as acked beforehand makes faust's
    ``Message.ack`` a no-op, so their offsets never reach the consumer's commit bookkeeping and the
    ones after them cannot be committed either (faust commits only up to the first gap).
    """
    for e in events:
        e.message.acked = True


def batch_agent(
    app: faust.App, topics: list[str], consumer: BatchConsumer, dlq_factory: Callable[[], DeadLetterQueue],
    *, name: str, max_batch: int = 500, within_s: float = 0.05, backoff_first_s: float = 0.2,
    backoff_max_s: float = 10.0,
) -> ConsumerProgress:
    """Register an agent on ``topics`` that hands batches of raw records to ``consumer`` through
    :func:`~llmops.common.batch_handling.handle_batch`, and return its :class:`ConsumerProgress`
    (also appended to ``app.llmops_progress``, where the runtime's watchdog finds it).

    A batch is acknowledged (faust then commits it) only once every record is handled or
    dead-lettered. A transient failure holds the batch (retried with backoff, progress
    ``retrying``); the agent keeps the batch unacknowledged until it passes, so a worker stopped
    meanwhile commits nothing and its successor receives the batch again. The agent never dies from
    a handler or DLQ error; if its loop fails anyway, it marks its progress dead, keeps the batch
    uncommitted and consumes nothing more, so the watchdog restarts the process and the batch is
    redelivered (faust would restart the actor past the records it held).
    """
    channel = app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    group = app.conf.id
    progress = ConsumerProgress(f"{group}/{name}")
    if not hasattr(app, "llmops_progress"):   # an app not made by make_app
        app.llmops_progress = []
    app.llmops_progress.append(progress)
    max_batch = max(1, min(max_batch, getattr(app, "llmops_max_batch", max_batch)))

    async def agent(stream):
        def stopping() -> bool:
            return bool(app.should_stop or stream.should_stop)

        dlq = dlq_factory()
        events: list = []
        try:
            async for events in stream.take_events(max_batch, within=within_s):
                records = [to_record(e) for e in events]
                try:
                    await handle_batch(consumer, records, dlq, progress, backoff_first_s=backoff_first_s,
                                       backoff_max_s=backoff_max_s, stopping=stopping, group=group, name=name)
                except BatchHeld as exc:       # the worker stops while the batch is held: commit nothing
                    _keep_uncommitted(events)
                    log.warning("%s: %s; %d records left uncommitted for redelivery", name, exc, len(records))
                    return
                per_topic: dict[str, int] = {}
                for r in records:
                    per_topic[r.topic] = per_topic.get(r.topic, 0) + 1
                for topic, n in per_topic.items():
                    metrics.EVENTS_CONSUMED.labels(topic, group).inc(n)
                events = []
        except asyncio.CancelledError:
            if events:                         # cancelled with a batch in hand (a stop): commit none of it
                _keep_uncommitted(events)
                if not stopping():
                    progress.died(f"agent {name} cancelled holding {len(events)} records")
            raise
        except Exception as exc:
            if events:
                _keep_uncommitted(events)
            log.exception("%s: consumer loop failed; consuming nothing more until the process restarts", name)
            progress.died(f"agent {name} failed: {exc!r}"[:500])
            await asyncio.Event().wait()       # parked: no later offset is acked past the held records

    agent.__name__ = name
    app.agent(channel, name=name)(agent)

    @app.timer(interval=5.0, name=f"{name}-idle-beat")
    async def idle_beat() -> None:             # an idle agent is alive too (its loop only turns on events)
        if not progress.in_hand:
            progress.beat()

    return progress


async def run_worker(app: faust.App, ready: asyncio.Event) -> StreamWorker:
    worker = StreamWorker(app, ready)
    await worker.start()
    return worker
