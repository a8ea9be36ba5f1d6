"""The tracing service's use cases, between the gRPC servicer and the trace store: read traces,
list them by filters, record a user's feedback, and keep evaluation runs. Each checks its input
(INVALID_ARGUMENT says what is wrong), runs the store in a worker thread, and publishes what
other services consume."""
from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass, replace

from llmops.common.bus import EventPublisher
from llmops.common.errors import InvalidArgument, NotFound
from llmops.common.events import check_trace_id
from llmops.common.paging import page_size
from llmops.tracing.store import TraceQuery, TraceStore
from llmops.v1 import common_pb2, events_pb2, tracing_pb2

MAX_PAGE = 1000
MAX_RUN_NAME = 200
ARMS = ("primary", "canary", "shadow")
SERVED_BY_TERMS = ("route:", "deployment:", "arm:")


@dataclass(frozen=True)
class FeedbackIn:
    trace_id: str
    score: float
    comment: str = ""
    user_id: str = ""
    name: str = ""


def served_by_filter(q: TraceQuery) -> TraceQuery:
    """``q`` with its ``model`` filter read as how the request was served, when it is written so:
    whitespace-separated terms ``route:NAME``, ``deployment:NAME`` or ``deployment:NAME@VERSION``,
    ``arm:primary|canary|shadow`` and ``model:NAME`` (e.g. ``"deployment:smol@2 arm:canary"``).
    Any other ``model`` is a model name, matched exactly as before. (ListTracesRequest has no
    fields of its own for these; the filter rides on ``model``.)"""
    if q.arm and q.arm not in ARMS:
        raise InvalidArgument(f"arm is {q.arm!r}; one of {', '.join(ARMS)}")
    if q.deployment_version < 0 or (q.deployment_version and not q.deployment):
        raise InvalidArgument("deployment_version filters a deployment's versions: set deployment too (version >= 1)")
    text = q.model.strip()
    if not text.startswith(SERVED_BY_TERMS):
        return q
    if q.route or q.deployment or q.arm:
        raise InvalidArgument("filter by route, deployment and arm either with their fields or as terms of "
                              "`model`, not both")
    found: dict[str, object] = {"model": "", "route": "", "deployment": "", "deployment_version": 0, "arm": ""}
    for term in text.split():
        key, sep, value = term.partition(":")
        if not sep or key not in ("route", "deployment", "arm", "model"):
            raise InvalidArgument(f"model filter term {term!r}: use route:NAME, deployment:NAME[@VERSION], "
                                  f"arm:{'|'.join(ARMS)} or model:NAME")
        if not value:
            raise InvalidArgument(f"model filter term {term!r} has no value")
        if found[key]:
            raise InvalidArgument(f"model filter names {key} twice")
        if key == "deployment" and "@" in value:
            value, _, version = value.partition("@")
            if not value or not version.isdigit() or int(version) < 1:
                raise InvalidArgument(f"model filter term {term!r}: the version after @ is a number from 1")
            found["deployment_version"] = int(version)
        if key == "arm" and value not in ARMS:
            raise InvalidArgument(f"model filter term {term!r}: arm is one of {', '.join(ARMS)}")
        found[key] = value
    return replace(q, **found)


def checked_query(q: TraceQuery) -> TraceQuery:
    """``q`` with its page size resolved, or INVALID_ARGUMENT for a filter that cannot hold."""
    size = page_size(q.page_size, MAX_PAGE)
    q = served_by_filter(q)
    if q.start_us and q.end_us and q.end_us <= q.start_us:
        raise InvalidArgument("end_time must be after start_time")
    lo, hi = q.min_score, q.max_score
    if (lo is not None or hi is not None or q.evaluator) and not q.score_name:
        raise InvalidArgument("min_score, max_score and evaluator filter a score: set score_name too")
    if any(v is not None and not math.isfinite(v) for v in (lo, hi)):
        raise InvalidArgument("min_score and max_score must be finite numbers")
    if lo is not None and hi is not None and hi < lo:
        raise InvalidArgument(f"max_score ({hi}) is below min_score ({lo})")
    return replace(q, page_size=size)


class Traces:
    def __init__(self, store: TraceStore, publisher: EventPublisher, topic_prefix: str = "llmops.") -> None:
        self.store = store
        self.publisher = publisher
        self.feedback_topic = f"{topic_prefix}feedback"

    async def get(self, trace_id: str) -> tracing_pb2.Trace:
        check_trace_id(trace_id)
        trace = await asyncio.to_thread(self.store.get_trace, trace_id)
        if trace is None:
            raise NotFound(f"trace {trace_id} not found (spans arrive within seconds of the response)")
        return trace

    async def list(self, query: TraceQuery) -> tuple[list[tracing_pb2.TraceSummary], str]:
        """A page of trace summaries, newest first, and the token of the next page ("" at the end);
        a ``page_size`` of 0 means the default."""
        return await asyncio.to_thread(self.store.list_traces, checked_query(query))

    async def submit_feedback(self, f: FeedbackIn) -> common_pb2.Feedback:
        """Store a user's score of a trace and publish it (drift joins feedback to its window)."""
        check_trace_id(f.trace_id)
        if not math.isfinite(f.score):
            raise InvalidArgument("score must be a finite number")
        if not await asyncio.to_thread(self.store.trace_exists, f.trace_id):
            raise NotFound(f"trace {f.trace_id} not found")
        fb = common_pb2.Feedback(id=uuid.uuid4().hex, trace_id=f.trace_id, score=f.score, comment=f.comment,
                                 user_id=f.user_id, name=f.name or "user")
        fb.created_at.GetCurrentTime()
        await asyncio.to_thread(self.store.write_feedback, [fb])
        self.publisher.publish(self.feedback_topic, f.trace_id, events_pb2.FeedbackEvent(trace_id=f.trace_id, feedback=fb))
        return fb

    async def save_eval_run(self, run: tracing_pb2.EvalRun) -> tracing_pb2.EvalRun:
        if not run.name.strip():
            raise InvalidArgument("run.name is empty")
        if len(run.name) > MAX_RUN_NAME:
            raise InvalidArgument(f"run.name is longer than {MAX_RUN_NAME} characters")
        if not run.dataset_hash:
            raise InvalidArgument("run.dataset_hash is empty")
        ids = [i.item_id for i in run.items]
        if len(set(ids)) != len(ids) or not all(ids):
            raise InvalidArgument("every item needs an item_id, unique within the run")
        for n, item in enumerate(run.items):
            if item.trace_id:
                check_trace_id(item.trace_id, f"run.items[{n}].trace_id")
        return await asyncio.to_thread(self.store.save_eval_run, run)

    async def get_eval_run(self, name: str) -> tracing_pb2.EvalRun:
        if not name:
            raise InvalidArgument("name is empty (a run's name or run_id)")
        run = await asyncio.to_thread(self.store.get_eval_run, name)
        if run is None:
            raise NotFound(f"no evaluation run named {name!r}")
        return run

    async def list_eval_runs(self, dataset_hash: str = "", size: int = 0) -> list[tracing_pb2.EvalRun]:
        return await asyncio.to_thread(self.store.list_eval_runs, dataset_hash, page_size(size, MAX_PAGE))
