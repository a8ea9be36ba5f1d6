"""``llmops retrain-listener``: a consumer of ``llmops.retrain`` that turns each retrain event
into a training-candidate dataset, the seed of a training pipeline.

For each event it writes ``<out>/<monitor>/<event id>.jsonl``: one line per candidate trace (the
low-scored answers first, then the drifted window's sample) with the prompt, the retrieved
contexts, the answer, the scores and the feedback, read from the trace store through
``TracingService.GetTrace``; and ``<event id>.json``: the event itself, and the trace ids that
could not be read. The offset is committed after both files are written (at least once; a
redelivery rewrites the same files). An undecodable message goes to the dead-letter topic.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import grpc
from aiokafka import AIOKafkaConsumer
from google.protobuf.json_format import MessageToDict

from llmops.cli.console import load_settings
from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.channels import aio_channel
from llmops.common.envelope import Record, UndecodableMessage
from llmops.common.events import read_event
from llmops.common.kafka import client_options
from llmops.common.settings import Settings
from llmops.common.signals import install_stop_signals
from llmops.v1 import events_pb2, tracing_pb2, tracing_pb2_grpc

log = logging.getLogger(__name__)


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
    files: list[Path] = field(default_factory=list)


class RetrainListener:
    def __init__(self, settings: Settings, out: Path, *, group: str = "", trace_wait_s: float = 30.0) -> None:
        self.settings = settings
        self.out = out
        self.group = group or f"{settings.topic_prefix}retrain-listener"
        self.trace_wait_s = trace_wait_s
        self.stats = ListenerStats()

    async def _get_trace(self, stub, trace_id: str, deadline: float) -> tracing_pb2.Trace | None:
        """The trace, waiting (until ``deadline``) for the tracing service to have stored it."""
        while True:
            try:
                return await stub.GetTrace(tracing_pb2.GetTraceRequest(trace_id=trace_id), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    raise
                if time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(0.5)

    async def write_event(self, ev: events_pb2.RetrainEvent, stub) -> Path:
        folder = self.out / (ev.monitor or "unknown")
        folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.trace_wait_s
        lines, missing = [], []
        for tid, why in candidate_ids(ev):
            trace = await self._get_trace(stub, tid, deadline)
            if trace is None:
                missing.append(tid)
            else:
                lines.append(candidate_line(trace, why, ev))
        path = folder / f"{ev.id}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        tmp.replace(path)
        meta = {"event": MessageToDict(ev, preserving_proto_field_name=True), "candidates": len(lines),
                "missing_trace_ids": missing}
        (folder / f"{ev.id}.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        self.stats.events += 1
        self.stats.lines += len(lines)
        self.stats.missing += len(missing)
        self.stats.files.append(path)
        if missing:
            log.warning("retrain event %s: %d of %d traces not in the trace store: %s", ev.id, len(missing),
                        len(lines) + len(missing), ", ".join(missing[:5]))
        log.info("retrain event %s (%s): %d candidates -> %s", ev.id, ev.reason, len(lines), path)
        return path

    async def run(self, stop: asyncio.Event | None = None, max_events: int = 0, on_event=None) -> ListenerStats:
        stop = stop or asyncio.Event()
        topic = self.settings.topic("retrain")
        consumer = AIOKafkaConsumer(topic, group_id=self.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", session_timeout_ms=self.settings.kafka_session_timeout_ms,
                                    heartbeat_interval_ms=max(1000, self.settings.kafka_session_timeout_ms // 5),
                                    **client_options(self.settings))
        bus = EventBus(self.settings)
        await bus.start()
        dlq = DeadLetterQueue(bus, self.group)
        await consumer.start()
        channel = aio_channel(self.settings.grpc_target("tracing"))
        stub = tracing_pb2_grpc.TracingServiceStub(channel)
        try:
            while not stop.is_set() and not (max_events and self.stats.events >= max_events):
                batches = await consumer.getmany(timeout_ms=500, max_records=10)
                for tp, msgs in batches.items():
                    for m in msgs:
                        rec = Record(topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                                     headers=list(m.headers or []), timestamp_ms=m.timestamp)
                        try:
                            ev = read_event(rec, events_pb2.RetrainEvent)
                        except UndecodableMessage as exc:
                            await dlq.send(rec, str(exc))
                            self.stats.dead_lettered += 1
                            continue
                        path = await self.write_event(ev, stub)
                        if on_event is not None:
                            on_event(ev, path)
                    await consumer.commit()
        finally:
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
