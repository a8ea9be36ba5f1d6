"""``llmops retrain-listener``: a consumer of ``llmops.retrain`` that turns each retrain event
into a training-candidate dataset, the seed of a training pipeline.

For each event it writes ``<out>/<monitor>/<event id>.jsonl``: one line per candidate trace (the
low-scored answers first, then the drifted window's sample) with the prompt, the retrieved
contexts, the answer, the scores and the feedback, read from the trace store through
``TracingService.GetTrace``; and ``<event id>.json``: the event itself, and the trace ids that
could not be read. Each file is written whole (a temporary file renamed over it), so a
redelivered event leaves the same two files.

Delivery: at least once, and each partition's offset is committed only past the records this
listener handled (written, or sent to the DLQ). What it does with a record:

* written: both files are in place, then its offset is committed;
* dead-lettered, with the reason, and the listener goes on: what can never be written — an
  undecodable message, an event id or monitor name that is not a plain file name (1-200 of
  ``A-Z a-z 0-9 _ . -``, not ``.`` or ``..``: nothing may land outside ``--out``), a write that
  fails the same way every time;
* held and retried with backoff, never dead-lettered: what may pass — the disk full, the tracing
  service or the broker away. The partitions are rewound to the first record not handled, so the
  next poll brings them again.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from google.protobuf.json_format import MessageToDict

from llmops.cli.console import load_settings
from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.channels import aio_channel
from llmops.common.envelope import Record, UndecodableMessage
from llmops.common.events import read_event
from llmops.common.kafka import client_options
from llmops.common.liveness import ConsumerProgress
from llmops.common.retry import Backoff, Transient, is_transient
from llmops.common.settings import Settings
from llmops.common.signals import install_stop_signals
from llmops.v1 import events_pb2, tracing_pb2, tracing_pb2_grpc

log = logging.getLogger(__name__)

#: an event id or a monitor name as a file name: a plain name, never a path
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")

#: write errors retrying cannot cure: the name or the place is wrong, not the moment
DETERMINISTIC_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EINVAL, errno.EILSEQ,
                                  errno.ELOOP, errno.EEXIST})

#: GetTrace codes that mean "not there (yet)": waited for, then listed as missing
_WAIT_CODES = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
               grpc.StatusCode.RESOURCE_EXHAUSTED)
#: GetTrace codes that may pass but are not about the trace: the event is held and retried
_HOLD_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
               grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class InvalidRetrainEvent(ValueError):
    """An event this listener can never write (its id or monitor is not a safe file name)."""


def check_name(value: str, what: str) -> str:
    if not SAFE_NAME.fullmatch(value) or value in (".", ".."):
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise InvalidRetrainEvent(f"{what} {shown!r} is not a file name: 1-200 letters, digits, '_', '.' or '-', "
                                  "not '.' or '..'")
    return value


def event_paths(out: Path, ev: events_pb2.RetrainEvent) -> tuple[Path, Path]:
    """The dataset and metadata files of ``ev`` under ``out``; InvalidRetrainEvent when its id or
    monitor is not a safe name or the files would resolve outside ``out``."""
    event_id = check_name(ev.id, "event id")
    monitor = check_name(ev.monitor or "unknown", "monitor name")
    root = out.resolve()
    folder = (root / monitor).resolve()
    if folder.parent != root:   # a symlinked monitor folder pointing elsewhere, say
        raise InvalidRetrainEvent(f"monitor folder {monitor!r} resolves outside {root}")
    return folder / f"{event_id}.jsonl", folder / f"{event_id}.json"


def is_transient_failure(exc: BaseException) -> bool:
    """Whether handling may succeed later (hold and retry) rather than never (dead-letter)."""
    if isinstance(exc, (InvalidRetrainEvent, UndecodableMessage)):
        return False
    if isinstance(exc, OSError) and exc.errno in DETERMINISTIC_ERRNOS:
        return False
    return is_transient(exc)


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as one step: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def candidate_ids(ev: events_pb2.RetrainEvent) -> list[tuple[str, str]]:
    """(trace id, why) pairs: low-scored answers first, then the window sample, each once."""
    out, seen = [], set()
    for why, ids in (("low_score", ev.low_score_trace_ids), ("drift_sample", ev.trace_ids)):
        for tid in ids:
            if tid not in seen:
                seen.add(tid)
                out.append((tid, why))
    return out


def candidate_line(trace: tracing_pb2.Trace, why: str, ev: events_pb2.RetrainEvent) -> dict:
    c = trace.completion
    return {
        "trace_id": trace.trace_id, "why": why, "retrain_event": ev.id, "monitor": ev.monitor,
        "model": c.model or trace.summary.model, "prompt_template": c.prompt_template,
        "prompt_version": c.prompt_version, "prompt": c.prompt or trace.summary.prompt,
        "contexts": [{"document_id": x.document_id, "text": x.text, "score": round(x.score, 6),
                      "collection": x.collection} for x in c.contexts],
        "answer": c.answer or trace.summary.answer,
        "scores": {f"{s.evaluator}/{s.name}": s.value for s in trace.scores if s.status != 2},
        "feedback": [{"name": f.name or "user", "score": f.score, "comment": f.comment} for f in trace.feedback],
    }


@dataclass
class ListenerStats:
    events: int = 0
    lines: int = 0
    missing: int = 0
    dead_lettered: int = 0
    retries: int = 0
    files: list[Path] = field(default_factory=list)


class RetrainListener:
    """``traces``: anything with ``TracingService``'s async ``GetTrace`` (default: a stub on the
    tracing service of ``settings``)."""

    def __init__(self, settings: Settings, out: Path, *, group: str = "", trace_wait_s: float = 30.0,
                 traces=None, backoff: Backoff | None = None) -> None:
        self.settings = settings
        self.out = out
        self.group = group or f"{settings.topic_prefix}retrain-listener"
        self.trace_wait_s = trace_wait_s
        self.traces = traces
        self.backoff = backoff or Backoff(first_s=0.2, max_s=10.0)
        self.stats = ListenerStats()
        self.progress = ConsumerProgress("retrain-listener")

    async def _get_trace(self, stub, trace_id: str, deadline: float) -> tracing_pb2.Trace | None:
        """The trace, waiting (until ``deadline``) for the tracing service to have stored it; None
        when it is not there by then. Raises Transient when the tracing service itself is away."""
        while True:
            try:
                return await stub.GetTrace(tracing_pb2.GetTraceRequest(trace_id=trace_id), timeout=10)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in _WAIT_CODES and code not in _HOLD_CODES:
                    log.warning("trace %s cannot be read (%s: %s); listed as missing", trace_id, code.name,
                                exc.details())
                    return None
                if time.monotonic() >= deadline or code not in _WAIT_CODES:
                    if code in _HOLD_CODES:
                        raise Transient(f"tracing service: {code.name}: {exc.details()}") from exc
                    return None
                await asyncio.sleep(0.5)

    async def write_event(self, ev: events_pb2.RetrainEvent, stub) -> Path:
        path, meta_path = event_paths(self.out, ev)
        deadline = time.monotonic() + self.trace_wait_s
        lines, missing = [], []
        for tid, why in candidate_ids(ev):
            trace = await self._get_trace(stub, tid, deadline)
            if trace is None:
                missing.append(tid)
            else:
                lines.append(candidate_line(trace, why, ev))
        meta = {"event": MessageToDict(ev, preserving_proto_field_name=True), "candidates": len(lines),
                "missing_trace_ids": missing}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        write_whole(meta_path, json.dumps(meta, indent=2, ensure_ascii=False))
        self.stats.events += 1
        self.stats.lines += len(lines)
        self.stats.missing += len(missing)
        self.stats.files.append(path)
        if missing:
            log.warning("retrain event %s: %d of %d traces not in the trace store: %s", ev.id, len(missing),
                        len(lines) + len(missing), ", ".join(missing[:5]))
        log.info("retrain event %s (%s): %d candidates -> %s", ev.id, ev.reason, len(lines), path)
        return path

    async def handle(self, rec: Record, stub, dlq: DeadLetterQueue, on_event=None) -> bool:
        """Write ``rec``'s event, or dead-letter it when it can never be written: True when it was
        written. A transient failure (and a failed DLQ send) raises, for the caller to hold."""
        try:
            ev = read_event(rec, events_pb2.RetrainEvent)
            path = await self.write_event(ev, stub)
        except Exception as exc:
            if is_transient_failure(exc):
                raise
            error = type(exc).__name__
            await dlq.send(rec, f"{error}: {exc}", error)
            self.stats.dead_lettered += 1
            return False
        if on_event is not None:
            on_event(ev, path)
        return True

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(self.settings.topic("retrain"), group_id=self.group, enable_auto_commit=False,
                                auto_offset_reset="earliest",
                                session_timeout_ms=self.settings.kafka_session_timeout_ms,
                                heartbeat_interval_ms=max(1000, self.settings.kafka_session_timeout_ms // 5),
                                **client_options(self.settings))

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        """Commit ``tp`` up to ``offset`` (the next record to read) and no other partition. A failed
        commit is not fatal: the next one covers it, and a redelivery rewrites the same files."""
        try:
            await consumer.commit({tp: OffsetAndMetadata(offset, "")})
        except Exception as exc:
            log.warning("commit of %s[%d]@%d failed (%s); the record may be delivered again",
                        tp.topic, tp.partition, offset, exc)

    async def run(self, stop: asyncio.Event | None = None, max_events: int = 0, on_event=None) -> ListenerStats:
        stop = stop or asyncio.Event()
        consumer = self._consumer()
        bus = EventBus(self.settings)
        await bus.start()
        dlq = DeadLetterQueue(bus, self.group)
        await consumer.start()
        channel = None
        stub = self.traces
        if stub is None:
            channel = aio_channel(self.settings.grpc_target("tracing"))
            stub = tracing_pb2_grpc.TracingServiceStub(channel)
        self.progress.joined()

        def done() -> bool:
            return stop.is_set() or bool(max_events and self.stats.events >= max_events)

        try:
            while not done():
                batches = await consumer.getmany(timeout_ms=500, max_records=10)
                self.progress.fetched(sum(len(m) for m in batches.values()))
                held: str = ""
                for tp, msgs in batches.items():
                    handled = 0
                    for m in msgs:
                        if held or done():
                            break
                        rec = Record(topic=m.topic, partition=m.partition, offset=m.offset, key=m.key,
                                     value=m.value, headers=list(m.headers or []), timestamp_ms=m.timestamp)
                        try:
                            await self.handle(rec, stub, dlq, on_event)
                        except Exception as exc:   # transient, or the DLQ send failed: hold it
                            held = f"{type(exc).__name__}: {exc}"
                            break
                        handled += 1
                        await self._commit(consumer, tp, m.offset + 1)
                        self.progress.progressed(1)
                    if handled < len(msgs):   # rewind: the next poll brings the rest again
                        try:
                            consumer.seek(tp, msgs[handled].offset)
                        except Exception as exc:   # revoked meanwhile: its new owner reads from the commit
                            log.info("not rewinding %s[%d]: %s", tp.topic, tp.partition, exc)
                if held:
                    self.stats.retries += 1
                    self.progress.retrying(held)
                    delay = self.backoff.next_delay()
                    log.warning("retrain listener: %s; retrying in %.1f s (nothing committed, nothing dead-lettered)",
                                held, delay)
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
                elif batches:
                    self.backoff.reset()
                else:
                    self.progress.beat()
        finally:
            if channel is not None:
                await channel.close()
            await consumer.stop()
            await bus.stop()
        return self.stats


@click.command("retrain-listener")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Directory for the datasets.")
@click.option("--group", default="", help="Consumer group (default: <prefix>retrain-listener).")
@click.option("--max-events", type=int, default=0, help="Stop after this many events (0: run until Ctrl-C).")
@click.option("--trace-wait", type=float, default=30.0, show_default=True,
              help="Seconds to wait for an event's traces to reach the trace store.")
def retrain_listener(out, group, max_events, trace_wait) -> None:
    """Consume llmops.retrain; write each event's training candidates as JSONL under OUT."""
    from llmops.common.logging import configure_logging

    settings = load_settings()
    configure_logging("retrain-listener", settings.log_level, settings.log_format)
    listener = RetrainListener(settings, Path(out), group=group, trace_wait_s=trace_wait)

    async def run():
        stop = asyncio.Event()
        install_stop_signals(stop)
        return await listener.run(stop, max_events,
                                  on_event=lambda ev, path: click.echo(f"{ev.id}: {path}"))

    stats = asyncio.run(run())
    click.echo(f"{stats.events} events, {stats.lines} candidates written, {stats.missing} traces missing, "
               f"{stats.dead_lettered} messages dead-lettered")


COMMANDS = (retrain_listener,)
