"""The retrain listener on the real broker: what it cannot write goes to the DLQ with the reason
and it keeps going; nothing lands outside --out; it commits only the partitions it wrote; a
transient failure is retried, not dead-lettered; a redelivered event leaves one identical file."""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from llmops.cli.retrain_listener import RetrainListener
from llmops.common.envelope import encode
from llmops.common.retry import Backoff
from llmops.common.topics import ensure_topics
from llmops.v1 import events_pb2, tracing_pb2
from tests.support import consume_until, make_settings


class Traces:
    """TracingService.GetTrace over a dict; UNAVAILABLE for ``down_s`` from the first call."""

    def __init__(self, traces=(), down_s: float = 0.0) -> None:
        self.traces = {t.trace_id: t for t in traces}
        self.down_s = down_s
        self.first_call = 0.0
        self.unavailable = 0

    async def GetTrace(self, req, timeout=None):
        self.first_call = self.first_call or time.monotonic()
        if time.monotonic() < self.first_call + self.down_s:
            self.unavailable += 1
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="connection refused")
        if req.trace_id not in self.traces:
            raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="no such trace")
        return self.traces[req.trace_id]


def trace(tid: str) -> tracing_pb2.Trace:
    t = tracing_pb2.Trace(trace_id=tid)
    t.completion.prompt, t.completion.answer, t.completion.model = "what is a lambda?", "an anonymous function", "m"
    return t


def event(id: str, monitor: str = "default", trace_ids=()) -> events_pb2.RetrainEvent:
    return events_pb2.RetrainEvent(id=id, monitor=monitor, reason="drift in 2 consecutive windows",
                                   trace_ids=list(trace_ids))


@pytest.fixture
def settings(kafka, tmp_path):
    s = make_settings(tmp_path / "data", kafka, topic_partitions=2)
    asyncio.run(ensure_topics(s, ["retrain", "dlq"]))
    return s


async def produce(s, items) -> None:
    """items: (partition, value bytes, headers) to the retrain topic."""
    p = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, enable_idempotence=False, acks="all")
    await p.start()
    try:
        for partition, value, headers in items:
            await p.send_and_wait(s.topic("retrain"), value, key=b"default", partition=partition, headers=headers)
    finally:
        await p.stop()


def item(ev: events_pb2.RetrainEvent, partition: int = 0):
    return (partition, *encode(ev))


async def until(cond, timeout_s: float = 60.0, what: str = "condition", task: asyncio.Task | None = None):
    deadline = time.monotonic() + timeout_s
    while not cond():
        if task is not None and task.done():
            task.result()   # the listener ended: raise its error
            raise AssertionError(f"the listener stopped before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


async def committed(s, group: str) -> dict[int, int | None]:
    c = AIOKafkaConsumer(bootstrap_servers=s.bootstrap_servers, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        return {p: await c.committed(TopicPartition(s.topic("retrain"), p)) for p in (0, 1)}
    finally:
        await c.stop()


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_what_cannot_be_written_is_dead_lettered_and_the_listener_goes_on(settings, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "elsewhere").mkdir()
    out.mkdir()
    (out / "evil").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (out / "default").mkdir()
    (out / "default" / "taken.jsonl").mkdir()      # a directory where the file should go: EISDIR every time
    bad = [event("a/b"), event("../../escape"), event("/etc/passwd"), event("x\x00y"), event("z" * 300),
           event(".."), event("ok-id", monitor="../up"), event("ok-id", monitor="evil"), event("taken"), event("")]
    listener = RetrainListener(settings, out, trace_wait_s=1, traces=Traces())

    async def main():
        await produce(settings, [item(e) for e in bad] + [(0, b"\xff not protobuf", [])] + [item(event("good-1"))])
        stop = asyncio.Event()
        task = asyncio.create_task(listener.run(stop))
        await until(lambda: (out / "default" / "good-1.json").exists(), what="the event after the bad ones", task=task)
        assert not task.done()                      # still running
        stop.set()
        await task

    asyncio.run(main())
    assert listener.stats.dead_lettered == len(bad) + 1 and listener.stats.events == 1
    assert files_under(tmp_path / "elsewhere") == [] and not (tmp_path / "escape.jsonl").exists()
    assert files_under(out) == ["default/good-1.json", "default/good-1.jsonl"]
    group = listener.group
    dlq = consume_until(settings.bootstrap_servers, settings.topic("dlq"),
                        lambda ms: sum(dict(m.headers).get("dlq-consumer-group") == group.encode() for m in ms) >= 11,
                        what="the 11 dead letters of the listener")
    reasons = [dict(m.headers)["dlq-reason"].decode() for m in dlq if dict(m.headers)["dlq-consumer-group"] == group.encode()]
    assert sum("event id" in r and "is not a file name" in r for r in reasons) == 6
    assert sum("monitor name '../up'" in r for r in reasons) == 1
    assert sum("resolves outside" in r for r in reasons) == 1
    assert sum(r.startswith("IsADirectoryError") for r in reasons) == 1
    assert sum(r.startswith("UndecodableMessage") for r in reasons) == 2   # no id; not protobuf
    assert {dict(m.headers)["dlq-source-topic"] for m in dlq
            if dict(m.headers)["dlq-consumer-group"] == group.encode()} == {settings.topic("retrain").encode()}


def test_only_the_written_partition_is_committed_and_a_restart_reads_the_other(settings, tmp_path):
    out = tmp_path / "out"
    group = f"{settings.topic_prefix}listener-commit"

    async def main():
        await produce(settings, [item(event("on-p0"), 0), item(event("on-p1"), 1)])
        first = await RetrainListener(settings, out, group=group, traces=Traces()).run(max_events=1)
        assert first.events == 1
        offsets = await committed(settings, group)
        written = 0 if (out / "default" / "on-p0.jsonl").exists() else 1
        assert offsets[written] == 1 and offsets[1 - written] in (None, 0), offsets
        second = await RetrainListener(settings, out, group=group, traces=Traces()).run(max_events=1)
        assert second.events == 1
        assert await committed(settings, group) == {0: 1, 1: 1}

    asyncio.run(main())
    assert files_under(out) == ["default/on-p0.json", "default/on-p0.jsonl", "default/on-p1.json", "default/on-p1.jsonl"]


def test_a_redelivered_event_leaves_one_identical_file(settings, tmp_path):
    out = tmp_path / "out"
    tid = "ab" * 16
    ev = event("window-7", trace_ids=[tid])
    contents: list[tuple[bytes, bytes]] = []

    def written(e, path):
        if e.id == ev.id:
            contents.append((path.read_bytes(), path.with_suffix(".json").read_bytes()))

    async def main():
        await produce(settings, [item(ev), item(ev), item(event("sentinel"))])
        return await RetrainListener(settings, out, traces=Traces([trace(tid)])).run(max_events=3, on_event=written)

    stats = asyncio.run(main())
    assert stats.events == 3 and stats.dead_lettered == 0
    assert files_under(out) == ["default/sentinel.json", "default/sentinel.jsonl",
                                "default/window-7.json", "default/window-7.jsonl"]
    assert len(contents) == 2 and contents[0] == contents[1]
    assert tid in contents[0][0].decode()


def test_a_transient_failure_is_retried_not_dead_lettered(settings, tmp_path):
    out = tmp_path / "out"
    tid = "cd" * 16
    traces = Traces([trace(tid)], down_s=3.0)   # the tracing service away for 3 s

    async def main():
        await produce(settings, [item(event("held", trace_ids=[tid]))])
        listener = RetrainListener(settings, out, trace_wait_s=0.5, traces=traces,
                                   backoff=Backoff(first_s=0.2, max_s=0.5))
        return await listener.run(max_events=1)

    stats = asyncio.run(main())
    assert stats.dead_lettered == 0 and stats.missing == 0 and stats.retries >= 1 and traces.unavailable >= 2
    assert tid in (out / "default" / "held.jsonl").read_text()
