"""Soak: the whole embedded stack under the highest rate it takes, for 30 minutes, with a slow
judge (the LLM tier judges every completion, so judging falls behind and its backlog grows in
Kafka), while the resident memory of every service process is sampled.

Bounded buffers and caches (publish buffer, consumer prefetch, embedding cache, label values)
must keep each process's RSS flat once warm, however far behind the judge falls. The table
shows RSS early (after warm-up), in the middle and at the end, and the growth over the second
half of the run, per service.

Traffic: a Kafka producer writes CompletionEvents (prompt of about 2 KB, three contexts) and their
spans as fast as the broker acknowledges them, with a distinct feedback name and collection in
metadata on every request (client strings that must not grow label sets), and a gRPC client
calls Generate back to back.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
import uuid

import grpc
from llmops.cli.stack import Stack
from llmops.cli.workloads import python_prompts, synthetic_completion
from llmops.common.envelope import encode, traceparent
from llmops.common.kafka import producer_options
from llmops.common.topics import ensure_topics
from llmops.v1 import common_pb2, events_pb2, inference_pb2, inference_pb2_grpc

from bench.common import bench_settings, report

FILLER = ("Context: " + "Python lists keep their items in order and grow as needed. " * 30)[:2000]


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` and its children (llama.cpp threads live in the same process)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def producer_traffic(s, stop: asyncio.Event, counts: dict) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**producer_options(s))
    await producer.start()
    rng = random.Random(3)
    prompts = python_prompts()
    try:
        while not stop.is_set():
            futures = []
            for _ in range(50):
                ev = synthetic_completion(f"{FILLER}\n\nQuestion: {rng.choice(prompts)}", rng)
                for text in (FILLER[:600], FILLER[600:1200], FILLER[1200:1800]):
                    ev.contexts.add(text=text, score=0.7)
                ev.metadata["collection"] = f"tenant-{uuid.uuid4().hex[:8]}"
                v, h = encode(ev, traceparent(ev.trace_id, "0" * 16))
                futures.append(await producer.send(s.topic("completions"), v, key=ev.trace_id.encode(), headers=h))
                for j in range(3):
                    sid = uuid.uuid4().hex[:16]
                    sp = events_pb2.SpanEvent(trace_id=ev.trace_id, span_id=sid, name=f"soak.step{j}",
                                              service="soak-app", start_time=ev.timestamp, end_time=ev.timestamp)
                    v, h = encode(sp, traceparent(ev.trace_id, sid))
                    futures.append(await producer.send(s.topic("spans"), v, key=ev.trace_id.encode(), headers=h))
                fb = events_pb2.FeedbackEvent(trace_id=ev.trace_id)
                fb.feedback.CopyFrom(common_pb2.Feedback(id=uuid.uuid4().hex, trace_id=ev.trace_id, name=f"fb-{uuid.uuid4().hex[:6]}",
                                                         score=1.0))
                v, h = encode(fb, "")
                futures.append(await producer.send(s.topic("feedback"), v, key=ev.trace_id.encode(), headers=h))
            done = await asyncio.gather(*futures, return_exceptions=True)
            counts["acked"] += sum(1 for d in done if not isinstance(d, Exception))
            counts["refused"] += sum(1 for d in done if isinstance(d, Exception))
    finally:
        await producer.stop()


async def generate_traffic(s, stop: asyncio.Event, counts: dict) -> None:
    prompts = python_prompts()
    i = 0
    async with grpc.aio.insecure_channel(s.grpc_target("inference")) as ch:
        stub = inference_pb2_grpc.InferenceServiceStub(ch)
        while not stop.is_set():
            req = inference_pb2.GenerateRequest(prompt=prompts[i % len(prompts)], user_id=f"user-{i}",
                                                session_id=uuid.uuid4().hex)
            req.parameters.max_new_tokens = 16
            req.metadata["feedback_name"] = f"n{i}"
            i += 1
            try:
                await stub.Generate(req, timeout=60)
                counts["generated"] += 1
            except grpc.aio.AioRpcError:
                counts["generate_failed"] += 1


async def _main(duration_s: float, sample_s: float, warmup_s: float) -> dict:
    s = bench_settings(judge_llm_sample_rate=1.0, drift_window_size=200)
    stack = Stack(s, on_progress=lambda m: print("  ", m))
    await stack.start()
    stop, stop_stack = asyncio.Event(), asyncio.Event()
    counts = {"acked": 0, "refused": 0, "generated": 0, "generate_failed": 0}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in stack.procs}
    supervisor = asyncio.create_task(stack.watch(stop_stack))   # a service that exits is restarted, and counted
    try:
        await ensure_topics(s)
        tasks = [asyncio.create_task(producer_traffic(s, stop, counts)),
                 asyncio.create_task(generate_traffic(s, stop, counts))]
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration_s:
            for name, sp in stack.procs.items():
                samples[name].append((time.monotonic() - t0, rss_mb(sp.proc.pid)))
            await asyncio.sleep(sample_s)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stop_stack.set()
        await supervisor
        restarts = {name: r.total for name, r in stack.restarts.items()}
        await stack.stop()
    rows = []
    flat = True
    for name, xs in samples.items():
        xs = [(t, m) for t, m in xs if m == m]          # not while it was being restarted (nan)
        warm = [m for t, m in xs if t >= warmup_s] or [m for _, m in xs]
        if not warm:
            continue
        n = len(warm)
        mid, end = warm[n // 2], warm[-1]
        growth = end - mid
        growth_pct = growth / mid * 100 if mid else float("nan")
        ok = growth_pct < 10.0 and not restarts.get(name)
        flat &= ok
        rows.append([name, warm[0], mid, end, max(warm), growth, growth_pct, restarts.get(name, 0), ok])
    extra = {"duration_s": duration_s, "warmup_s": warmup_s, "counts": counts, "restarts": restarts,
             "samples": samples, "goal": "RSS growth over the second half < 10% per service, and no restart", "goal_met": flat,
             "events_per_s": counts["acked"] / duration_s}
    report("soak", f"Soak: RSS (MB) per service, {duration_s / 60:.0f} min at max rate, LLM judge on every completion",
           ["service", "after warm-up", "middle", "end", "max", "growth 2nd half MB", "growth %", "restarts", "flat"], rows, extra)
    print(f"events acknowledged: {counts['acked']:,} ({extra['events_per_s']:,.0f}/s), Generate: {counts['generated']:,}")
    return extra


def run(duration_s: float | None = None, sample_s: float = 10.0, warmup_s: float = 300.0) -> dict:
    duration = duration_s if duration_s is not None else float(os.environ.get("SOAK_SECONDS", "1800"))
    return asyncio.run(_main(duration, sample_s, min(warmup_s, duration / 3)))


if __name__ == "__main__":
    run()
