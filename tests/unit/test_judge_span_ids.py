"""Judge spans have ids derived from what they are, so a redelivered completion judged again
publishes the same spans and the same scores (the trace store, idempotent on span id, keeps one set)."""
from __future__ import annotations

import asyncio

from llmops.common.envelope import Record, encode
from llmops.judging.catalog import Catalog, Entry, Sampling
from llmops.judging.evaluator import JudgeCall, Judgement
from llmops.judging.online import CompletionJudge, derived_span_id
from llmops.v1 import events_pb2


class Cheap:
    name, metric, version, tier = "t.cheap", "relevancy", "1", "cheap"
    description, needs_reference, needs_contexts, scale = "", False, False, "0-1"

    def settings(self):
        return {}

    async def evaluate(self, samples):
        return [Judgement(0.75, "fine") for _ in samples]


class WithCalls(Cheap):
    name, metric, version = "t.llm", "faithfulness", "3"

    async def evaluate(self, samples):
        import time

        now = time.time_ns()   # the calls' times differ on every run; their spans' ids do not
        return [Judgement(0.5, "half", calls=[JudgeCall(f"claim {i}", "judge", now, now + 10, 5, 1) for i in range(2)])
                for _ in samples]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[list] = []

    def publish(self, *a, **k):  # pragma: no cover - the consumer path never uses it
        return True

    async def send_many(self, messages) -> None:
        self.sent.append(list(messages))


def record(ev: events_pb2.CompletionEvent, offset: int) -> Record:
    value, headers = encode(ev)
    return Record("llmops.completions", 0, offset, ev.trace_id.encode(), value, headers)


def split(messages):
    spans = sorted((m[2].span_id, m[2].parent_span_id, m[2].name) for m in messages if m[0].endswith("spans"))
    scores = []
    for topic, key, msg, tp in messages:
        if topic.endswith("scores"):
            copy = events_pb2.ScoreEvent()
            copy.CopyFrom(msg)
            copy.score.ClearField("created_at")   # when it was scored: the one field a redelivery changes
            scores.append((copy.SerializeToString(deterministic=True), tp))
    return spans, sorted(scores)


def test_a_redelivered_completion_gets_the_same_span_ids_and_scores():
    entries = {e.name: Entry(e, True, Sampling()) for e in (Cheap(), WithCalls())}
    sender = Recorder()
    judge = CompletionJudge(Catalog(entries), ("cheap",), sender, None)
    ev = events_pb2.CompletionEvent(trace_id="a" * 32, root_span_id="b" * 16, prompt="q", answer="a", model="m")
    ev.timestamp.GetCurrentTime()
    asyncio.run(judge.handle([record(ev, 0)]))
    asyncio.run(judge.handle([record(ev, 1)]))   # the redelivery
    first, second = (split(batch) for batch in sender.sent)
    assert first == second
    spans, scores = first
    assert len(spans) == 4 and len({s[0] for s in spans}) == 4   # run span, judge span and its 2 calls
    judge_span = next(s for s in spans if s[2] == "judge t.llm")
    assert judge_span[1] == "b" * 16
    assert [s[1] for s in spans if s[2] == "judge.call"] == [judge_span[0]] * 2
    assert len(scores) == 2


def test_span_ids_differ_by_trace_evaluator_and_version():
    ids = {derived_span_id("judge", t, e, v) for t in ("a" * 32, "c" * 32) for e in ("x", "y") for v in ("1", "2")}
    assert len(ids) == 8
    assert all(len(i) == 16 and int(i, 16) != 0 for i in ids)
