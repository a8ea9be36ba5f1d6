"""Chaos: sustained traffic through the whole embedded stack while faults are injected one after
another, then an exact count of what was sent against what was stored.

Traffic is two doors at once:

* a Kafka producer (``acks=all``) writes, for each of ``rate`` traces a second, a CompletionEvent
  and three SpanEvents, as any outside app may (an event is *sent* once the broker acknowledged it);
* a gRPC client calls ``InferenceService.Generate`` back to back (a request is *sent* once the
  client got its response with a trace id).

Faults, in this order, each while traffic runs: SIGKILL of every service in turn, a restart of
the embedded broker, and the trace store refusing writes for 20 s (another connection holds
SQLite's exclusive lock). ``llmops up``'s supervisor restarts what was killed.

Before the broker restart, what the earlier faults' traffic sent is let to settle into the stores
(traffic goes on), so the broker's loss counts only what was sent from then on. Then the stream
is let to settle and counted in the stores: spans and completions (trace store),
scores (one per cheap online evaluator and completion), drift observations (drift store), and
judge spans per (trace, evaluator) and retrain events per window (duplicates). Each sent item is
attributed to the fault that was active when it was sent. The embedded broker keeps its log in
memory, so a broker restart loses what it had acknowledged and not yet delivered: that loss is
counted apart (acknowledged by the broker, never received by a consumer). Every other fault must
lose nothing.

Goal: 0 lost, 0 duplicated (broker-restart loss apart), every service SERVING again within 30 s.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import os
import random
import signal
import sqlite3
import time
import uuid

import grpc
from llmops.cli.stack import START_ORDER, Stack, health_status
from llmops.cli.workloads import python_prompts, synthetic_completion
from llmops.common.envelope import encode, traceparent
from llmops.common.kafka import producer_options, refuse_topic_auto_creation
from llmops.common.topics import ensure_topics
from llmops.v1 import events_pb2, inference_pb2, inference_pb2_grpc

from bench.common import bench_settings, report

SPANS_PER_TRACE = 3
RECOVERY_GOAL_S = 30.0
CONTEXTS = ("A list is an ordered, mutable sequence; items are added with append and read by index.",
            "A dictionary maps keys to values; looking up a key is fast on average.")


class Ledger:
    """What was sent, by phase: trace ids of completions, (trace, span) of spans, Generate traces."""

    def __init__(self) -> None:
        self.phase = "warm-up"
        self.completions: dict[str, str] = {}
        self.spans: dict[tuple[str, str], str] = {}
        self.generated: dict[str, str] = {}
        self.refused = collections.Counter()      # not acknowledged (never counted as sent)
        self.sent_at: dict[str, float] = {}       # completion trace id -> when the broker acknowledged it
        self.recovery: list[tuple[str, float, float, bool]] = []   # fault, s to SERVING, s to traffic flowing, ok


async def kafka_traffic(s, ledger: Ledger, rate: float, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**{**producer_options(s), "request_timeout_ms": 5000})
    await producer.start()
    rng = random.Random(7)
    prompts = python_prompts()
    interval = 1.0 / rate
    pending: set[asyncio.Task] = set()

    async def send_trace() -> None:
        phase = ledger.phase
        ev = synthetic_completion(rng.choice(prompts), rng)
        for text in CONTEXTS:
            ev.contexts.add(text=text, score=0.8)
        tid = ev.trace_id
        items = [(s.topic("completions"), ev, tid, "")]
        for j in range(SPANS_PER_TRACE):
            sid = uuid.uuid4().hex[:16]
            sp = events_pb2.SpanEvent(trace_id=tid, span_id=sid, name=f"chaos.step{j}", service="chaos-app",
                                      start_time=ev.timestamp, end_time=ev.timestamp, attributes={"j": str(j)})
            items.append((s.topic("spans"), sp, tid, sid))
        futures = []
        for topic, msg, key, sid in items:
            value, headers = encode(msg, traceparent(tid, sid or "0" * 16))
            try:
                futures.append((topic, sid, await producer.send(topic, value, key=key.encode(), headers=headers)))
            except Exception:  # noqa: BLE001 - any refusal means not sent
                ledger.refused[topic] += 1
        for topic, sid, fut in futures:
            try:
                await fut
            except Exception:  # noqa: BLE001 - any refusal means not sent
                ledger.refused[topic] += 1
                continue
            if sid:
                ledger.spans[(tid, sid)] = phase
            else:
                ledger.completions[tid] = phase
                ledger.sent_at[tid] = time.monotonic()

    try:
        nxt = time.monotonic()
        while not stop.is_set():
            t = asyncio.create_task(send_trace())
            pending.add(t)
            t.add_done_callback(pending.discard)
            nxt += interval
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        if pending:
            await asyncio.wait(pending, timeout=30)
    finally:
        await producer.stop()


async def generate_traffic(s, ledger: Ledger, stop: asyncio.Event) -> None:
    prompts = python_prompts()
    i = 0
    async with grpc.aio.insecure_channel(s.grpc_target("inference")) as ch:
        stub = inference_pb2_grpc.InferenceServiceStub(ch)
        while not stop.is_set():
            phase = ledger.phase
            req = inference_pb2.GenerateRequest(prompt=prompts[i % len(prompts)])
            req.parameters.max_new_tokens = 8
            i += 1
            try:
                resp = await stub.Generate(req, timeout=30)
            except grpc.aio.AioRpcError:
                ledger.refused["generate"] += 1
                await asyncio.sleep(0.2)
                continue
            ledger.generated[resp.trace_id] = phase


async def faults(s, stack: Stack, ledger: Ledger, dwell_s: float, refuse_s: float) -> None:
    await asyncio.sleep(dwell_s)
    for name in START_ORDER:
        ledger.phase = f"SIGKILL {name}"
        t0 = time.monotonic()
        os.killpg(stack.procs[name].proc.pid, signal.SIGKILL)
        await _wait_exit(stack, name)
        await recovered(s, ledger, t0)
        await asyncio.sleep(dwell_s)
    if stack.broker is not None:
        # what the faults before sent is settled into the stores first (traffic goes on), so the
        # broker's loss is counted only for what was exposed to it: sent from here on
        ledger.phase = "broker restart"
        before = {"completions": set(ledger.completions), "generated": set(ledger.generated),
                  "spans": set(ledger.spans)}
        took = await settled(s, before)
        print(f"   the earlier faults' traffic settled in {took:.0f}s; killing the broker")
        t0 = time.monotonic()
        stack.broker.proc.send_signal(signal.SIGKILL)
        await recovered(s, ledger, t0)
        await asyncio.sleep(dwell_s)
    ledger.phase = f"trace store refuses writes {refuse_s:.0f}s"
    t0 = time.monotonic()
    lock = sqlite3.connect(str(s.data_dir / "traces.db"), timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    await asyncio.sleep(refuse_s)
    lock.execute("COMMIT")
    lock.close()
    await recovered(s, ledger, time.monotonic())
    ledger.phase = "after the faults"
    await asyncio.sleep(dwell_s)


async def settled(s, sent: dict, quiet_s: float = 45.0, timeout_s: float = 300.0) -> float:
    """Wait until every item of ``sent`` is stored (spans, completions, a score and a drift
    observation per trace), or the stores stop changing for ``quiet_s``; seconds it took."""
    t0 = time.monotonic()
    last, last_change = None, t0
    traces = sent["completions"] | sent["generated"]
    while time.monotonic() - t0 < timeout_s:
        got = await asyncio.to_thread(stored, s)
        if traces <= got["completions"] and traces <= got["observed"] and sent["spans"] <= got["spans"] \
                and all(got["scores"][t] > 0 for t in traces):
            break
        sig = (len(got["spans"]), len(got["completions"]), sum(got["scores"].values()), len(got["observed"]))
        if sig != last:
            last, last_change = sig, time.monotonic()
        elif time.monotonic() - last_change > quiet_s:
            break
        await asyncio.sleep(2.0)
    return time.monotonic() - t0


async def recovered(s, ledger: Ledger, t0: float, timeout_s: float = 180.0, settle_s: float = 5.0) -> None:
    """Record how long after ``t0`` every service answered SERVING for good (the last time one of
    them was seen otherwise), and how long until traffic flowed end to end again: a completion sent
    after ``t0 + 1 s`` stored by tracing, scored by judging and observed by drift. Health is polled
    until ``settle_s`` after traffic flows, so a service that notices the fault late is counted."""
    deadline = t0 + timeout_s
    last_bad, flowing, flowing_at = 0.0, float("inf"), None
    while time.monotonic() < deadline:
        states = await asyncio.gather(*(health_status(s.grpc_target(n), 1.0) for n in START_ORDER))
        if any(st != "SERVING" for st in states):
            last_bad = time.monotonic() - t0
        if flowing_at is None:
            fresh = [t for t, at in list(ledger.sent_at.items())[-400:] if at > t0 + 1.0]
            if fresh and await asyncio.to_thread(_any_done, s, fresh):
                flowing_at = time.monotonic()
                flowing = flowing_at - t0
        if flowing_at is not None and time.monotonic() - flowing_at >= settle_s and time.monotonic() - t0 - last_bad >= settle_s:
            break
        await asyncio.sleep(0.3)
    serving = last_bad if flowing_at is not None or last_bad < timeout_s - settle_s else float("inf")
    ok = serving <= RECOVERY_GOAL_S
    ledger.recovery.append((ledger.phase, serving, flowing, ok))
    print(f"   {ledger.phase}: every service SERVING after {serving:.1f}s, traffic flowing end to end "
          f"after {flowing:.1f}s")


def _any_done(s, trace_ids: list[str]) -> bool:
    marks = ",".join("?" * len(trace_ids))
    with sqlite3.connect(f"file:{s.data_dir / 'traces.db'}?mode=ro", uri=True, timeout=5) as tr:
        scored = {t for (t,) in tr.execute(f"SELECT DISTINCT t.trace_id FROM traces t JOIN scores c ON "
                                           f"c.trace_id = t.trace_id WHERE t.has_completion = 1 AND "
                                           f"t.trace_id IN ({marks})", trace_ids)}
    if not scored:
        return False
    marks = ",".join("?" * len(scored))
    with sqlite3.connect(f"file:{s.data_dir / 'drift.db'}?mode=ro", uri=True, timeout=5) as dr:
        return dr.execute(f"SELECT count(*) FROM drift_observations WHERE has_completion = 1 AND "
                          f"trace_id IN ({marks})", list(scored)).fetchone()[0] > 0


async def _wait_exit(stack: Stack, name: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    proc = stack.procs[name].proc
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def stored(s) -> dict:
    tr = sqlite3.connect(f"file:{s.data_dir / 'traces.db'}?mode=ro", uri=True, timeout=30)
    dr = sqlite3.connect(f"file:{s.data_dir / 'drift.db'}?mode=ro", uri=True, timeout=30)
    try:
        spans = {(t, sid) for t, sid in tr.execute("SELECT trace_id, span_id FROM spans")}
        completions, no_contexts = set(), set()
        for t, pb in tr.execute("SELECT trace_id, completion_pb FROM traces WHERE has_completion = 1"):
            completions.add(t)
            if not events_pb2.CompletionEvent.FromString(base64.b64decode(pb or "")).contexts:
                no_contexts.add(t)   # a Generate whose retrieval found nothing: the context evaluators do not apply
        scores = collections.Counter(t for (t,) in tr.execute("SELECT trace_id FROM scores"))
        judge_spans = collections.Counter(
            (t, n) for t, n in tr.execute("SELECT trace_id, name FROM spans WHERE service = 'judging'"))
        observed = {t for (t,) in dr.execute("SELECT trace_id FROM drift_observations WHERE has_completion = 1")}
        retrain = collections.Counter()       # retrain events per window report that fired them
        for (pb,) in dr.execute("SELECT event_pb FROM drift_retrain_events"):
            ev = events_pb2.RetrainEvent.FromString(pb)
            retrain[(ev.monitor, ev.report_id or ev.id)] += 1
    finally:
        tr.close()
        dr.close()
    return {"spans": spans, "completions": completions, "scores": scores, "judge_spans": judge_spans,
            "observed": observed, "retrain": retrain, "no_contexts": no_contexts}


async def settle(s, ledger: Ledger, quiet_s: float = 45.0, timeout_s: float = 600.0) -> dict:
    """Wait until the stores hold everything sent, or stop changing for ``quiet_s``."""
    t0 = time.monotonic()
    last, last_change = None, time.monotonic()
    while True:
        got = await asyncio.to_thread(stored, s)
        sig = (len(got["spans"]), len(got["completions"]), sum(got["scores"].values()), len(got["observed"]))
        sent_traces = set(ledger.completions) | set(ledger.generated)
        if sent_traces <= got["completions"] and sent_traces <= got["observed"] and set(ledger.spans) <= got["spans"] \
                and all(got["scores"][t] > 0 for t in sent_traces):
            return got
        if sig != last:
            last, last_change = sig, time.monotonic()
        if time.monotonic() - last_change > quiet_s or time.monotonic() - t0 > timeout_s:
            return got
        await asyncio.sleep(2.0)


def tally(ledger: Ledger, got: dict) -> tuple[list[list], dict]:
    phases = list(dict.fromkeys([*ledger.completions.values(), *ledger.spans.values(), *ledger.generated.values()]))
    def mode(counts: list[int]) -> int:
        return max(collections.Counter(counts).items(), key=lambda kv: kv[1])[0] if counts else 0

    # scores a completion gets: one per cheap online evaluator that applies to it; a completion without
    # contexts (a Generate whose retrieval found nothing) gets none from the evaluators that need them
    per_completion = mode([n for t, n in got["scores"].items() if ledger.completions.get(t) == "warm-up"])
    per_bare = mode([n for t, n in got["scores"].items() if t in got["no_contexts"]]) or per_completion

    def expected(t: str) -> int:
        return per_bare if t in got["no_contexts"] else per_completion

    rows, totals = [], collections.Counter()
    for ph in phases:
        comp = [t for t, p in ledger.completions.items() if p == ph]
        gen = [t for t, p in ledger.generated.items() if p == ph]
        spans = [k for k, p in ledger.spans.items() if p == ph]
        traces = comp + gen
        lost_spans = sum(1 for k in spans if k not in got["spans"])
        lost_comp = sum(1 for t in traces if t not in got["completions"])
        lost_scores = sum(max(0, expected(t) - got["scores"].get(t, 0)) for t in traces)
        lost_obs = sum(1 for t in traces if t not in got["observed"])
        row = [ph, len(spans), lost_spans, len(traces), lost_comp, sum(expected(t) for t in traces), lost_scores,
               len(traces), lost_obs]
        rows.append(row)
        bucket = "broker" if ph == "broker restart" else "other"
        totals[f"{bucket}_lost"] += lost_spans + lost_comp + lost_scores + lost_obs
    dup_judge = sum(n - 1 for n in got["judge_spans"].values() if n > 1)
    dup_retrain = sum(n - 1 for n in got["retrain"].values() if n > 1)
    return rows, {"lost_excluding_broker_restart": totals["other_lost"],
                  "lost_in_broker_restart": totals["broker_lost"], "duplicate_judge_spans": dup_judge,
                  "duplicate_retrain_events": dup_retrain, "scores_per_completion": per_completion,
                  "scores_per_completion_without_contexts": per_bare,
                  "refused_not_acknowledged": dict(ledger.refused)}


async def _main(rate: float, dwell_s: float, refuse_s: float) -> dict:
    # after the broker restarted empty, the traffic's first send must not auto-create a topic with the
    # broker's partition count: it waits for the services' topic keeper, as the services' own clients do
    refuse_topic_auto_creation()
    s = bench_settings(judge_backend="none", drift_window_size=100, drift_join_wait_s=5.0,
                       restart_max_failures=10)
    stack = Stack(s, on_progress=lambda m: print("  ", m))
    await stack.start()
    stop_stack, stop_traffic = asyncio.Event(), asyncio.Event()
    supervisor = asyncio.create_task(stack.watch(stop_stack))
    ledger = Ledger()
    try:
        await ensure_topics(s)
        traffic = [asyncio.create_task(kafka_traffic(s, ledger, rate, stop_traffic)),
                   asyncio.create_task(generate_traffic(s, ledger, stop_traffic))]
        await faults(s, stack, ledger, dwell_s, refuse_s)
        stop_traffic.set()
        await asyncio.gather(*traffic)
        print("   traffic stopped; waiting for the stores to settle")
        got = await settle(s, ledger)
    finally:
        stop_stack.set()
        await supervisor
        await stack.stop()
    rows, summary = tally(ledger, got)
    summary["recovery_s"] = {ph: {"serving": serving, "flowing": flowing} for ph, serving, flowing, _ in ledger.recovery}
    summary["recovered_within_goal"] = all(ok for *_, ok in ledger.recovery)
    summary["goal_met"] = (summary["lost_excluding_broker_restart"] == 0 and summary["duplicate_judge_spans"] == 0
                           and summary["duplicate_retrain_events"] == 0 and summary["recovered_within_goal"])
    return {"rows": rows, "summary": summary}


def run(rate: float = 10.0, dwell_s: float = 12.0, refuse_s: float = 20.0) -> dict:
    out = asyncio.run(_main(rate, dwell_s, refuse_s))
    rows = out["rows"]
    report("chaos", "Chaos: sent vs stored per fault (lost = sent and never stored)",
           ["fault while sent", "spans", "lost", "completions", "lost", "scores", "lost", "drift obs", "lost"],
           rows, {**out["summary"], "rate_traces_per_s": rate, "dwell_s": dwell_s, "refuse_s": refuse_s})
    rec = out["summary"]["recovery_s"]
    report("chaos_recovery", "Chaos: seconds after each fault until every service is SERVING, and until traffic flows end to end",
           ["fault", "all SERVING s", f"<= {RECOVERY_GOAL_S:.0f}s", "stored+scored+observed s"],
           [[ph, r["serving"], r["serving"] <= RECOVERY_GOAL_S, r["flowing"]] for ph, r in rec.items()], {})
    print({k: v for k, v in out["summary"].items() if k != "recovery_s"})
    return out["summary"]


if __name__ == "__main__":
    run()
