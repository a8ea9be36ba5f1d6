"""Online judging: a batch of ``CompletionEvent``s in, ``ScoreEvent``s (and judge spans) out.

One :class:`CompletionJudge` serves one group of tiers. The judging service runs two: the cheap
tier (embeddings, safety) on every completion, and the LLM tier in its own consumer group, so a
slow judge model lags behind on its own without ever holding up the cheap scores or the request
path. Scores are sent and acknowledged by the broker before the batch is committed: a crash means
a redelivery, and a redelivery overwrites the same (trace_id, evaluator, version) scores.

Every span the judging service emits has an id derived from what it is (:func:`derived_span_id`):
the judge span of an evaluation from (trace id, evaluator, version), its judge-model calls from
that and their index, a run span from (trace id, run label, its evaluators). A redelivered
completion judged again gives the same span ids, so the trace store (idempotent on span id) keeps
one set of judge spans.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Sequence


from llmops.common import metrics
from llmops.common.bus import EventPublisher, OutgoingEvent
from llmops.common.envelope import Record, UndecodableMessage, traceparent
from llmops.common.events import read_event
from llmops.common.retry import is_transient
from llmops.common.stream import Rejected
from llmops.judging.catalog import Catalog, Entry
from llmops.judging.embedding_tier import EmbeddingCache
from llmops.judging.evaluator import Evaluator, Judgement, Sample
from llmops.v1 import common_pb2, events_pb2

log = logging.getLogger(__name__)

CHEAP_TIERS = ("cheap", "safety")
LLM_TIERS = ("llm",)


def sample_of(c: events_pb2.CompletionEvent) -> Sample:
    return Sample(question=c.prompt, answer=c.answer, contexts=tuple(x.text for x in c.contexts),
                  trace_id=c.trace_id, model=c.model, prompt_template=c.prompt_template,
                  prompt_version=c.prompt_version, metadata=dict(c.metadata), deployment=c.deployment,
                  deployment_version=c.deployment_version)


async def prefetch(cache: EmbeddingCache | None, plan: Sequence[tuple[Evaluator, Sequence[Sample]]]) -> None:
    """One embedding call for everything the embedding evaluators of ``plan`` will need."""
    if cache is None:
        return
    texts = [t for ev, samples in plan if hasattr(ev, "texts") for s in samples for t in ev.texts(s)]
    if texts:
        await cache.prefetch(texts)


async def run_evaluator(ev: Evaluator, samples: Sequence[Sample], *, hold_transient: bool = False) -> list[Judgement]:
    """The evaluator's judgements; an evaluator that raises gives an error judgement per sample.

    ``hold_transient`` (the online path): a failure that may pass (the judge's server away, rate
    limited, timing out) is raised instead, so that the consumer holds the batch and retries it
    rather than storing error scores that would never be corrected."""
    if not samples:
        return []
    try:
        out = await ev.evaluate(samples)
        if len(out) != len(samples):
            raise RuntimeError(f"returned {len(out)} judgements for {len(samples)} samples")
        return out
    except Exception as exc:  # an evaluator bug must not stop the stream: it becomes an error score
        if hold_transient and is_transient(exc):
            log.warning("evaluator %s: %s; the batch is held and retried", ev.name, exc or type(exc).__name__)
            raise
        log.exception("evaluator %s failed on a batch of %d", ev.name, len(samples))
        return [Judgement.failed(f"{type(exc).__name__}: {exc}") for _ in samples]


def score_pb(ev: Evaluator, j: Judgement) -> common_pb2.Score:
    score = common_pb2.Score(name=ev.metric, value=j.value, evaluator=ev.name, version=ev.version,
                             explanation=j.explanation[:8000],
                             status=common_pb2.SCORE_STATUS_OK if j.ok else common_pb2.SCORE_STATUS_ERROR)
    score.created_at.GetCurrentTime()
    return score


def derived_span_id(*parts: str) -> str:
    """A W3C span id (16 hex digits, never all zero) that is a function of ``parts``: the same
    derived span gets the same id however often it is made."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    for i in range(0, len(digest) - 7, 8):
        if any(digest[i:i + 8]):
            return digest[i:i + 8].hex()
    return "0000000000000001"   # pragma: no cover - a digest of 32 zero bytes


def judge_span_id(trace_id: str, ev: Evaluator) -> str:
    return derived_span_id("judge", trace_id, ev.name, ev.version)


def judge_spans(ev: Evaluator, j: Judgement, trace_id: str, parent: str) -> list[events_pb2.SpanEvent]:
    """A span for the evaluation and one child per judge-model call, with token usage."""
    if not j.calls:
        return []
    root = events_pb2.SpanEvent(trace_id=trace_id, span_id=judge_span_id(trace_id, ev), parent_span_id=parent,
                                name=f"judge {ev.name}", service="judging")
    start = min(c.start_ns for c in j.calls)
    root.start_time.FromNanoseconds(start)
    root.end_time.FromNanoseconds(max(c.end_ns for c in j.calls))
    prompt_tokens = sum(c.prompt_tokens for c in j.calls)
    completion_tokens = sum(c.completion_tokens for c in j.calls)
    root.attributes.update({
        "judge.evaluator": ev.name, "judge.version": ev.version, "judge.model": j.calls[0].model,
        "judge.calls": str(len(j.calls)), "llm.usage.prompt_tokens": str(prompt_tokens),
        "llm.usage.completion_tokens": str(completion_tokens),
        "llm.usage.total_tokens": str(prompt_tokens + completion_tokens), "judge.score": f"{j.value:.4f}",
    })
    root.status = common_pb2.SPAN_STATUS_OK if j.ok else common_pb2.SPAN_STATUS_ERROR
    root.status_message = j.error[:2000]
    out = [root]
    for i, c in enumerate(j.calls):
        span = events_pb2.SpanEvent(trace_id=trace_id, span_id=derived_span_id("judge.call", root.span_id, str(i)),
                                    parent_span_id=root.span_id,
                                    name="judge.call", service="judging")
        span.start_time.FromNanoseconds(c.start_ns or start)
        span.end_time.FromNanoseconds(c.end_ns or start)
        span.attributes.update({"judge.purpose": c.purpose, "judge.model": c.model,
                                "llm.usage.prompt_tokens": str(c.prompt_tokens),
                                "llm.usage.completion_tokens": str(c.completion_tokens)})
        span.status = common_pb2.SPAN_STATUS_ERROR if c.error else common_pb2.SPAN_STATUS_OK
        span.status_message = c.error[:2000]
        out.append(span)
    return out


@dataclass
class Outcome:
    sample: Sample
    evaluator: Evaluator
    judgement: Judgement


def run_span(outcomes: Sequence[Outcome], trace_id: str, parent: str, label: str, start_ns: int,
             end_ns: int) -> events_pb2.SpanEvent:
    """The span of a judge run over one trace, for the evaluations that called no judge model
    (the cheap and safety tiers): their scores name it, so the trace shows when they were made.
    Its id is derived from the trace, the run's label and its evaluators (name and version)."""
    members = sorted(f"{o.evaluator.name}@{o.evaluator.version}" for o in outcomes)
    span_id = derived_span_id("judge.run", trace_id, label, *members)
    span = events_pb2.SpanEvent(trace_id=trace_id, span_id=span_id, parent_span_id=parent,
                                name=f"judge {label}", service="judging")
    span.start_time.FromNanoseconds(start_ns)
    span.end_time.FromNanoseconds(max(end_ns, start_ns))
    span.attributes["judge.evaluators"] = ",".join(o.evaluator.name for o in outcomes)
    for o in outcomes:
        j = o.judgement
        span.attributes[f"judge.score.{o.evaluator.name}"] = f"{j.value:.4f}" if j.ok else "error"
    failed = [o for o in outcomes if not o.judgement.ok]
    span.status = common_pb2.SPAN_STATUS_ERROR if failed else common_pb2.SPAN_STATUS_OK
    span.status_message = "; ".join(f"{o.evaluator.name}: {o.judgement.error}" for o in failed)[:2000]
    return span


def events_for(outcomes: Sequence[Outcome], completions: dict[str, events_pb2.CompletionEvent],
               topic_prefix: str, *, label: str, start_ns: int, end_ns: int) -> list[OutgoingEvent]:
    """The scores of ``outcomes`` and the spans they name. Every score names a span that is
    published with it: its own judge span (with one child per judge-model call) when the evaluator
    called a judge model, else the run span of its trace (:func:`run_span`). Its traceparent header
    names the same span."""
    by_trace: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_trace.setdefault(o.sample.trace_id, []).append(o)
    out: list[OutgoingEvent] = []
    for tid, group in by_trace.items():
        c = completions[tid]
        scores: list[tuple[Outcome, str]] = []
        without_calls = [o for o in group if not o.judgement.calls]
        shared = (run_span(without_calls, c.trace_id, c.root_span_id, label, start_ns, end_ns)
                  if without_calls else None)
        if shared is not None:
            out.append((f"{topic_prefix}spans", c.trace_id, shared, traceparent(c.trace_id, shared.span_id)))
        for o in group:
            spans = judge_spans(o.evaluator, o.judgement, c.trace_id, c.root_span_id)
            for sp in spans:
                out.append((f"{topic_prefix}spans", c.trace_id, sp, traceparent(c.trace_id, sp.span_id)))
            scores.append((o, spans[0].span_id if spans else shared.span_id))
        for o, span_id in scores:
            ev = events_pb2.ScoreEvent(trace_id=c.trace_id, score=score_pb(o.evaluator, o.judgement),
                                       span_id=span_id, model=c.model, prompt_template=c.prompt_template,
                                       prompt_version=c.prompt_version, tier=o.evaluator.tier, route=c.route,
                                       route_revision=c.route_revision, deployment=c.deployment,
                                       deployment_version=c.deployment_version, arm=c.arm)
            out.append((f"{topic_prefix}scores", c.trace_id, ev, traceparent(c.trace_id, span_id)))
    return out


def observe(outcomes: Sequence[Outcome]) -> None:
    for o in outcomes:
        ev, j, s = o.evaluator, o.judgement, o.sample
        if j.ok:
            # model, versions and deployment come from the event (any producer, OTLP apps): bounded
            model, prompt_version, deployment, deployment_version = metrics.JUDGED_SERIES(
                s.model, s.prompt_version, s.deployment, s.deployment_version if s.deployment else "")
            metrics.JUDGE_SCORES.labels(
                evaluator=ev.name, metric=ev.metric, model=model, prompt_version=prompt_version,
                deployment=deployment, deployment_version=deployment_version,
            ).observe(j.value)
        else:
            metrics.JUDGE_ERRORS.labels(ev.name).inc()


class CompletionJudge:
    """Batch consumer of ``llmops.completions`` for the online evaluators of ``tiers``."""

    def __init__(self, catalog: Catalog, tiers: Sequence[str], sender: EventPublisher, cache: EmbeddingCache | None,
                 topic_prefix: str = "llmops.", label: str = "cheap") -> None:
        self.catalog = catalog
        self.tiers = tuple(tiers)
        self.sender = sender
        self.cache = cache
        self.topic_prefix = topic_prefix
        self.label = label
        self.topics = [f"{topic_prefix}completions"]

    @property
    def entries(self) -> list[Entry]:
        return self.catalog.online(self.tiers)

    def skip_failed(self, completions: dict[str, events_pb2.CompletionEvent]) -> None:
        """Drop the completions of failed requests (``error`` set, no answer): inference publishes
        them for the rollouts' error accounting only. Each is counted as skipped by every evaluator
        of these tiers, so nothing disappears silently."""
        failed = [tid for tid, c in completions.items() if c.error]
        for tid in failed:
            del completions[tid]
        if failed:
            for entry in self.entries:
                metrics.JUDGE_SKIPPED.labels(entry.evaluator.name, "failed_request").inc(len(failed))

    def selected(self, entry: Entry, samples: Sequence[Sample]) -> list[Sample]:
        ev = entry.evaluator
        out = []
        for s in samples:
            if not entry.sampling.selects(s, ev.name):
                metrics.JUDGE_SKIPPED.labels(ev.name, "sampling").inc()
            elif ev.needs_reference and not s.reference:
                metrics.JUDGE_SKIPPED.labels(ev.name, "no_reference").inc()
            elif ev.needs_contexts and not s.contexts:   # a chat completion: nothing to be faithful to
                metrics.JUDGE_SKIPPED.labels(ev.name, "no_contexts").inc()
            else:
                out.append(s)
        return out

    async def judge(self, samples: Sequence[Sample]) -> list[Outcome]:
        plan = [(e, self.selected(e, samples)) for e in self.entries]
        await prefetch(self.cache, [(e.evaluator, chosen) for e, chosen in plan])
        outcomes: list[Outcome] = []
        for entry, chosen in plan:
            for s, j in zip(chosen, await run_evaluator(entry.evaluator, chosen, hold_transient=True)):
                outcomes.append(Outcome(s, entry.evaluator, j))
        return outcomes

    async def handle(self, records: list[Record]) -> list[Rejected]:
        rejected: list[Rejected] = []
        completions: dict[str, events_pb2.CompletionEvent] = {}
        for r in records:
            try:
                c = read_event(r, events_pb2.CompletionEvent)
            except UndecodableMessage as exc:
                rejected.append(Rejected(r, str(exc)))
                continue
            completions[c.trace_id] = c     # a trace repeated within a batch is judged once
        self.skip_failed(completions)
        if not completions:
            return rejected
        started, start_ns = time.perf_counter(), time.time_ns()
        outcomes = await self.judge([sample_of(c) for c in completions.values()])
        if outcomes:
            await self.sender.send_many(events_for(outcomes, completions, self.topic_prefix, label=self.label,
                                                   start_ns=start_ns, end_ns=time.time_ns()))
        observe(outcomes)
        metrics.JUDGE_LATENCY.labels(self.label).observe(time.perf_counter() - started)
        now = time.time()
        for tid in {o.sample.trace_id for o in outcomes}:  # only completions this tier judged
            c = completions[tid]
            metrics.JUDGE_DELAY.labels(self.label).observe(max(0.0, now - c.timestamp.ToNanoseconds() / 1e9))
        return rejected


async def judge_once(catalog: Catalog, names: Sequence[str], sample: Sample,
                     cache: EmbeddingCache | None) -> list[Outcome]:
    """Run the named evaluators on one sample (the ``Score`` RPC)."""
    evaluators = [catalog.get(n) for n in names]
    await prefetch(cache, [(ev, [sample]) for ev in evaluators])
    results = await asyncio.gather(*(run_evaluator(ev, [sample]) for ev in evaluators))
    return [Outcome(sample, ev, js[0]) for ev, js in zip(evaluators, results)]
