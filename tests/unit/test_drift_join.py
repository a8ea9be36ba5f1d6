"""The drift join without Kafka: the pure merge of completions, scores and feedback into a
:class:`JoinEntry`, the observation it closes into, the entry's JSON shape in the faust table
(the changelog's old dicts still read), and :meth:`DriftEngine.handle` over a plain dict."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmops.common.envelope import Record, encode
from llmops.drift.engine import DriftEngine
from llmops.drift.join import JoinEntry, merge, new_entry, observation
from llmops.drift.monitor_config import MonitorSpec
from llmops.v1 import common_pb2, events_pb2

WAIT = 30_000_000
TID = "a" * 32
KEY = TID.encode()


def completion(trace_id: str = TID, prompt: str = "how do I sort a list?") -> events_pb2.CompletionEvent:
    ev = events_pb2.CompletionEvent(trace_id=trace_id, model="m1", prompt=prompt, answer="sorted(xs)",
                                    prompt_template="rag", prompt_version=2, metadata={"tenant": "acme"},
                                    latency_ms=12.0, finish_reason="stop")
    ev.timestamp.FromMicroseconds(5_000_000)
    return ev


def score(value: float, name: str = "faithfulness", *, trace_id: str = TID, model: str = "m1", tier: str = "cheap",
          status: int = common_pb2.SCORE_STATUS_OK) -> events_pb2.ScoreEvent:
    return events_pb2.ScoreEvent(trace_id=trace_id, model=model, prompt_template="rag", prompt_version=2, tier=tier,
                                 score=common_pb2.Score(name=name, evaluator=f"rag.{name}.{tier}", value=value,
                                                        status=status))


def feedback(fid: str, value: float, name: str = "", *, trace_id: str = TID) -> events_pb2.FeedbackEvent:
    return events_pb2.FeedbackEvent(trace_id=trace_id,
                                    feedback=common_pb2.Feedback(id=fid, trace_id=trace_id, score=value, name=name))


def fold(*events, start: int = 100) -> JoinEntry:
    """The entry after ``events``, the i-th arriving at ``start + i``."""
    entry = new_entry(start, WAIT)
    for i, ev in enumerate(events):
        entry = merge(entry, ev, start + i, WAIT)
    return entry


# -- the pure merge and observation ----------------------------------------------------------
def test_a_score_before_its_completion_is_joined_and_the_completion_restarts_the_wait():
    entry = merge(new_entry(100, WAIT), score(0.7), 150, WAIT)
    assert (entry.first_us, entry.due_us, entry.completion) == (100, 100 + WAIT, None)
    entry = merge(entry, completion(), 400, WAIT)
    assert (entry.first_us, entry.due_us) == (100, 400 + WAIT)          # the wait starts over
    o = observation(KEY, entry)
    assert o.has_completion and o.trace_id == TID and o.prompt == "how do I sort a list?"
    assert o.metadata == {"tenant": "acme"} and o.features["latency_ms"] == 12.0 and o.ts_us == 5_000_000
    assert o.scores == {"score_faithfulness": 0.7}


def test_error_and_non_finite_scores_are_skipped_and_the_llm_tier_has_its_own_column():
    entry = fold(completion(), score(0.9))
    for bad in (score(0.1, status=common_pb2.SCORE_STATUS_ERROR), score(math.nan), score(math.inf)):
        assert merge(entry, bad, 500, WAIT) == entry
    assert merge(new_entry(1, WAIT), score(math.nan), 2, WAIT).meta is None   # a skipped score sets no meta
    entry = merge(entry, score(0.4, tier="llm"), 600, WAIT)
    assert observation(KEY, entry).scores == {"score_faithfulness": 0.9, "score_faithfulness_llm": 0.4}


def test_a_redelivered_feedback_counts_once_and_feedback_is_averaged_per_column():
    entry = fold(completion(), feedback("fb1", 1.0), feedback("fb1", 1.0), feedback("fb2", 0.0),
                 feedback("fb3", 4.0, "rating"), feedback("fb4", math.nan, "rating"))
    assert entry.feedback == {"feedback_user": {"fb1": 1.0, "fb2": 0.0}, "feedback_rating": {"fb3": 4.0}}
    assert observation(KEY, entry).scores == {"feedback_user": 0.5, "feedback_rating": 4.0}
    assert observation(KEY, fold(completion(), feedback("fb1", 0.0), feedback("fb1", 1.0))).scores == {
        "feedback_user": 1.0}                                             # the same id again: the last value


def test_an_orphan_observation_carries_the_model_and_prompt_of_its_first_score():
    entry = fold(score(0.2), score(0.3, "answer_relevancy", model="other"), start=7_000)
    o = observation(KEY, entry)
    assert not o.has_completion and o.trace_id == TID and o.ts_us == 7_000
    assert (o.model, o.prompt_template, o.prompt_version) == ("m1", "rag", 2)
    assert o.scores == {"score_faithfulness": 0.2, "score_answer_relevancy": 0.3}
    bare = observation(KEY, fold(feedback("fb1", 1.0)))                  # feedback alone: no meta at all
    assert (bare.model, bare.prompt_template, bare.prompt_version, bare.scores) == ("", "", 0, {"feedback_user": 1.0})


def test_merge_returns_a_new_entry_and_leaves_its_input_alone():
    entry = fold(completion(), score(0.5), feedback("fb1", 1.0))
    before = json.dumps(entry.to_dict(), sort_keys=True)
    after = merge(merge(entry, score(0.1, "other"), 900, WAIT), feedback("fb2", 0.0), 901, WAIT)
    assert json.dumps(entry.to_dict(), sort_keys=True) == before
    assert after.scores == {"score_faithfulness": 0.5, "score_other": 0.1}
    assert after.feedback == {"feedback_user": {"fb1": 1.0, "fb2": 0.0}}


def test_to_dict_is_the_old_table_shape_and_round_trips():
    entry = fold(score(0.7), completion(), feedback("fb1", 1.0))
    d = entry.to_dict()
    assert list(d) == ["first", "due", "c", "s", "fb", "meta"]
    assert d["s"] == {"score_faithfulness": 0.7} and d["fb"] == {"feedback_user": {"fb1": 1.0}}
    assert d["c"]["prompt"] == "how do I sort a list?" and d["meta"] == {"model": "m1", "prompt_template": "rag",
                                                                        "prompt_version": 2}
    assert JoinEntry.from_dict(json.loads(json.dumps(d))) == entry        # through the changelog's JSON
    assert list(new_entry(1, WAIT).to_dict()) == ["first", "due", "c", "s", "fb"]   # no score yet: no meta


def test_an_entry_in_the_old_dict_shape_is_read_back():
    """What the engine wrote into the changelog before :class:`JoinEntry` existed."""
    old = {"first": 1_000, "due": 31_000, "c": None, "s": {"score_faithfulness": 0.25},
           "fb": {"feedback_user": {"fb1": 1.0, "fb2": 0.0}},
           "meta": {"model": "m1", "prompt_template": "rag", "prompt_version": 3}}
    entry = JoinEntry.from_dict(old)
    assert (entry.first_us, entry.due_us, entry.completion) == (1_000, 31_000, None)
    assert entry.meta == {"model": "m1", "prompt_template": "rag", "prompt_version": 3}
    assert entry.to_dict() == old
    o = observation(KEY, merge(entry, feedback("fb3", 1.0), 2_000, WAIT))
    assert o.scores == {"score_faithfulness": 0.25, "feedback_user": pytest.approx(2 / 3)} and o.prompt_version == 3
    no_meta = JoinEntry.from_dict({"first": 5, "due": 6, "c": None, "s": {}, "fb": {}})
    assert no_meta.meta is None and "meta" not in no_meta.to_dict()


# -- DriftEngine.handle over a plain dict ----------------------------------------------------
class Untouched:
    """A part that handle must not use: any attribute of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"DriftEngine.handle used {name!r} of a part it must not touch")


def engine(table: dict) -> DriftEngine:
    return DriftEngine([MonitorSpec("m")], Untouched(), Untouched(), Untouched(), table,
                       reports_dir=Path("unused-reports"), join_wait_s=30.0)


def record(topic: str, ev, offset: int = 0) -> Record:
    value, headers = encode(ev)
    return Record(topic=topic, partition=0, offset=offset, key=ev.trace_id.encode(), value=value, headers=headers)


async def test_garbage_and_records_of_other_topics_come_back_rejected_with_the_reason():
    table: dict = {}
    junk = Record(topic="llmops.completions", partition=0, offset=1, key=b"k", value=b"\xff\x00junk", headers=[])
    bad_id = record("llmops.scores", score(0.5, trace_id="not-a-trace-id"))
    spans = record("llmops.spans", completion())
    rejected = await engine(table).handle([junk, bad_id, spans, record("llmops.completions", completion())])
    assert [r.record for r in rejected] == [junk, bad_id, spans]
    assert "not a valid llmops.v1.CompletionEvent" in rejected[0].reason
    assert "'not-a-trace-id' is not 32 lowercase hex characters" in rejected[1].reason
    assert rejected[2].reason == "drift does not consume topic 'llmops.spans'" and rejected[2].error == "UnexpectedTopic"
    assert list(table) == [KEY]                                          # the good record still joined


async def test_events_of_one_trace_merge_into_one_entry_across_batches():
    table: dict = {}
    e = engine(table)
    other = "b" * 32
    assert await e.handle([record("llmops.scores", score(0.7)), record("llmops.feedback", feedback("fb1", 1.0)),
                           record("llmops.completions", completion(other))]) == []
    assert set(table) == {KEY, other.encode()}
    assert await e.handle([record("llmops.completions", completion()), record("llmops.feedback", feedback("fb1", 1.0)),
                           record("llmops.feedback", feedback("fb2", 0.0))]) == []
    assert set(table) == {KEY, other.encode()}                           # still one entry per trace
    stored = table[KEY]
    assert set(stored) == {"first", "due", "c", "s", "fb", "meta"}       # the table holds the old JSON shape
    entry = JoinEntry.from_dict(json.loads(json.dumps(stored)))
    assert entry.completion["trace_id"] == TID and entry.due_us > entry.first_us
    assert entry.feedback == {"feedback_user": {"fb1": 1.0, "fb2": 0.0}}
    assert observation(KEY, entry).scores == {"score_faithfulness": 0.7, "feedback_user": 0.5}
    assert observation(other.encode(), JoinEntry.from_dict(table[other.encode()])).scores == {}


class MemoryStore:
    """The drift store's ``upsert`` in memory; it refuses the prompts that contain ``refuse``."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.rows: list = []

    def upsert(self, items):
        if any(self.refuse in o.prompt for o in items):
            raise ValueError("refused by the store")
        self.rows += items
        return [(o, "new" if o.has_completion else "orphan") for o in items]

    def add_rows(self, monitor, rows):
        """A monitor's rows: every trace id is new to it here."""
        return {tid for tid, _pos, _ts in rows}


class MemoryDlq:
    def __init__(self) -> None:
        self.sent: list[tuple[Record, str, str]] = []

    async def send(self, record: Record, reason: str, error: str) -> None:
        self.sent.append((record, reason, error))


async def test_closing_stores_the_joined_rows_and_parks_a_refused_entry_as_its_table_json():
    table: dict = {}
    store, dlq = MemoryStore(refuse="NUL"), MemoryDlq()
    e = DriftEngine([MonitorSpec("m")], store, lambda texts: [[0.0, 1.0] for _ in texts], Untouched(), table,
                    reports_dir=Path("unused-reports"), dlq=dlq)
    bad_tid = "c" * 32
    await e.handle([record("llmops.completions", completion()), record("llmops.scores", score(0.6)),
                    record("llmops.completions", completion(bad_tid, prompt="a NUL prompt"))])
    parked_json = json.loads(json.dumps(table[bad_tid.encode()]))
    assert await e.sweep(force=True) == []                               # no window is due yet
    assert table == {}                                                   # stored or parked: gone from the table
    assert [(o.trace_id, o.scores) for o in store.rows] == [(TID, {"score_faithfulness": 0.6})]
    assert store.rows[0].embedding.tolist() == [0.0, 1.0]
    assert list(e.monitors["m"].current) == [TID]                        # the new completion entered the window
    [(rec, reason, error)] = dlq.sent
    assert rec.key == bad_tid.encode() and rec.topic == "llmops.drift-join" and error == "ValueError"
    assert json.loads(rec.value) == parked_json and json.loads(rec.value)["c"]["prompt"] == "a NUL prompt"
    assert "could not be stored" in reason
