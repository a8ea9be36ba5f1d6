"""faust-streaming plumbing: the app factory, the worker that runs beside a gRPC server in one
event loop, and batch agents whose failures go to the dead-letter topic.

A service's consumer is a plain object with ``async handle(records) -> list[Rejected]``. It
decodes, validates and stores; whatever it rejects is sent to the DLQ (and awaited) before the
batch is acknowledged, so nothing is skipped silently and a bad message never stops the consumer.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Callable

import faust

from llmops.common import metrics
from llmops.common.batch_handling import BatchConsumer, Rejected  # noqa: F401 - re-exported: consumers import them from here
from llmops.common.bus import DeadLetterQueue
from llmops.common.envelope import Record
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
    datadir = settings.data_dir / "faust" / service
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        f"{settings.topic_prefix}{service}",
        broker=[f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")],
        broker_credentials=creds,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(1.0, session_s / 5),
        broker_rebalance_timeout=max(session_s * 2, 20.0),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        web_enabled=False,
        stream_buffer_maxsize=32768,       # prefetch while a batch is being written
        datadir=str(datadir),
        store="memory://",
        autodiscover=False,
    )


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

    def install_signal_handlers(self) -> None:  # noqa: D401 - see class docstring
        return None

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
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


def batch_agent(
    app: faust.App, topics: list[str], consumer: BatchConsumer, dlq_factory: Callable[[], DeadLetterQueue],
    *, name: str, max_batch: int = 500, within_s: float = 0.05,
) -> None:
    """Register an agent on ``topics`` that hands batches of raw records to ``consumer``."""
    channel = app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    group = app.conf.id

    async def agent(stream):
        dlq = dlq_factory()
        async for events in stream.take_events(max_batch, within=within_s):
            records = [to_record(e) for e in events]
            try:
                rejected = await consumer.handle(records)
            except Exception as exc:  # the consumer must survive anything: park the batch, go on
                log.exception("%s: batch of %d failed; sending it to the DLQ", name, len(records))
                rejected = [Rejected(r, f"handler failed: {exc!r}", type(exc).__name__) for r in records]
            await deliver_rejections(rejected, dlq)
            for r in records:
                metrics.EVENTS_CONSUMED.labels(r.topic, group).inc()

    agent.__name__ = name
    app.agent(channel, name=name)(agent)


async def run_worker(app: faust.App, ready: asyncio.Event) -> StreamWorker:
    worker = StreamWorker(app, ready)
    await worker.start()
    return worker
