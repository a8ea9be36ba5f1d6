"""LLM calls of OTLP traces into ``CompletionEvent``s, with the contexts their retrievals returned.

A trace's spans may reach the receiver in several export requests (an SDK exports each span when it
ends, in batches), so the completion of a trace waits, within a bounded time, for the retrieval
spans of the same trace:

* it is emitted at once when the trace's root span has arrived (children end before their root,
  so by then the trace's retrievals are in), or when the LLM span is itself the root;
* otherwise ``wait_s`` after its LLM span arrived, with the contexts seen by then.

One completion per trace: the last LLM call to end (in an agent loop, the final answer); the other
LLM spans are stored as spans. Retrievals that end before their LLM call (the usual order) are
remembered for ``keep_s`` seconds. At most ``max_traces`` traces are held: past that, the oldest is
emitted early (with what it has) or, when it holds no LLM call, forgotten. Traces already emitted
are remembered (a bounded set), so an exporter's retry of the same spans emits nothing twice.

Pure apart from the clock: the receiver feeds it and publishes what it returns.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from llmops.tracing.otlp.conventions import LlmCall, llm_call, retrieved
from llmops.tracing.otlp.spans import MappedSpan
from llmops.v1 import common_pb2, events_pb2

MAX_CONTEXTS = 50


@dataclass
class _Trace:
    seen_at: float
    llm: MappedSpan | None = None
    call: LlmCall | None = None
    llm_at: float = 0.0
    contexts: dict[str, common_pb2.Context] = field(default_factory=dict)


def completion_event(span: MappedSpan, call: LlmCall, contexts: list[common_pb2.Context]) -> events_pb2.CompletionEvent:
    ev = events_pb2.CompletionEvent(
        trace_id=span.trace_id, model=call.model[:200], prompt=call.prompt, contexts=contexts, answer=call.answer,
        usage=common_pb2.Usage(prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                               total_tokens=call.prompt_tokens + call.completion_tokens),
        latency_ms=(span.end_ns - span.start_ns) / 1e6, session_id=call.session_id[:200], user_id=call.user_id[:200],
        metadata=call.metadata, finish_reason=call.finish_reason[:50], rendered_prompt=call.rendered,
        retrieval_top_score=max((c.score for c in contexts), default=0.0), root_span_id=span.span_id,
    )
    ev.timestamp.FromNanoseconds(span.end_ns)
    return ev


class CompletionAssembler:
    def __init__(self, wait_s: float = 5.0, keep_s: float = 120.0, max_traces: int = 20_000,
                 remember: int = 200_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s = wait_s
        self.keep_s = max(keep_s, wait_s)
        self.max_traces = max_traces
        self.remember = remember
        self.clock = clock
        self._traces: OrderedDict[str, _Trace] = OrderedDict()   # oldest first
        self._emitted: OrderedDict[str, None] = OrderedDict()
        self._deadlines: deque[tuple[float, str]] = deque()     # (LLM call arrived, trace): oldest first
        self.waiting = 0          # held traces with an LLM call, waiting for their contexts
        self.evicted_early = 0

    def __len__(self) -> int:
        return len(self._traces)

    def add(self, spans: list[MappedSpan]) -> list[events_pb2.CompletionEvent]:
        """Take one export's spans; return the completions that are complete now."""
        now = self.clock()
        roots: set[str] = set()
        for s in spans:
            if s.is_root:
                roots.add(s.trace_id)
            call = llm_call(s)
            docs = retrieved(s) if call is None else None
            if call is None and docs is None:
                continue                                  # nothing a completion needs
            tid = s.trace_id
            if tid in self._emitted:
                continue                                  # a retry of spans already handled
            t = self._traces.get(tid)
            if t is None:
                t = self._traces[tid] = _Trace(seen_at=now)
            if docs:
                for c in docs:
                    if len(t.contexts) < MAX_CONTEXTS:
                        t.contexts.setdefault(c.id, c)
            if call is not None and (t.llm is None or s.end_ns >= t.llm.end_ns):
                if t.llm is None:
                    t.llm_at = now
                    self._deadlines.append((now, tid))
                    self.waiting += 1
                t.llm, t.call = s, call
        ready = []
        for tid in roots:
            t = self._traces.pop(tid, None)            # the trace is complete: its root has ended
            if t is not None and t.llm is not None:
                ready.append(self._emit(tid, t))
        ready.extend(self._evict())
        return ready

    def due(self) -> list[events_pb2.CompletionEvent]:
        """Completions whose wait is over; forgets retrievals kept longer than ``keep_s``."""
        now = self.clock()
        out = []
        while self._deadlines and now - self._deadlines[0][0] >= self.wait_s:
            at, tid = self._deadlines.popleft()
            t = self._traces.get(tid)
            if t is not None and t.llm_at == at:          # else emitted already (its root came)
                del self._traces[tid]
                out.append(self._emit(tid, t))
        for tid, t in list(self._traces.items()):         # oldest first: stop at the first one kept
            if now - t.seen_at < self.keep_s:
                break
            if t.llm is None:
                del self._traces[tid]
        return out

    def drain(self) -> list[events_pb2.CompletionEvent]:
        """Every held completion now (on shutdown)."""
        out = [self._emit(tid, t) for tid, t in self._traces.items() if t.llm is not None]
        self._traces.clear()
        self._deadlines.clear()
        return out

    def _evict(self) -> list[events_pb2.CompletionEvent]:
        out = []
        while len(self._traces) > self.max_traces:
            tid, t = self._traces.popitem(last=False)
            self.evicted_early += 1
            if t.llm is not None:
                out.append(self._emit(tid, t))
        return out

    def _emit(self, tid: str, t: _Trace) -> events_pb2.CompletionEvent:
        assert t.llm is not None and t.call is not None
        self.waiting -= 1
        self._emitted[tid] = None
        while len(self._emitted) > self.remember:
            self._emitted.popitem(last=False)
        return completion_event(t.llm, t.call, list(t.contexts.values()))
