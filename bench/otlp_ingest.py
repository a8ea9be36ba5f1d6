"""OTLP ingest, side by side with Arize Phoenix in one run on this machine, on the same spans.

N spans in traces of 4 (an app's root span, a retrieval, the LLM call, a post-processing step);
the LLM span carries a ~500-character prompt and a ~300-character completion in the GenAI
conventions' attributes. The same serialized OTLP/HTTP protobuf export requests (512 spans each,
the OTel SDK's BatchSpanProcessor batch) go to both, two in flight; the clock runs from the first
export until every span can be queried: llmops' trace store holds them all and GetTrace of the last
trace returns its 4 spans; Phoenix's GraphQL ``Project.recordCount`` reaches N.

Goal: at least 10,000 spans/s on SQLite, and at least 50x Phoenix in the same run.
"""
from __future__ import annotations

import asyncio
import json
import random
import secrets
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2 as otlp_common
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace

from bench.common import bench_settings, report
from bench.peers import phoenix_server
from llmops.cli.client import Client
from llmops.cli.stack import Stack
from llmops.tracing.store import SqlTraceStore

BATCH = 512
WORDS = ("kafka stream partition offset consumer broker replica topic latency judge drift window span trace "
         "embedding retrieval context answer model token prompt").split()
PROJECT = "otlp-bench"


def _text(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:chars]


def _kv(key: str, value) -> otlp_common.KeyValue:
    if isinstance(value, int):
        return otlp_common.KeyValue(key=key, value=otlp_common.AnyValue(int_value=value))
    return otlp_common.KeyValue(key=key, value=otlp_common.AnyValue(string_value=value))


def make_requests(n: int, seed: int = 7) -> list[bytes]:
    """Serialized ExportTraceServiceRequests of BATCH spans, N spans in traces of 4."""
    rng = random.Random(seed)
    t0 = time.time_ns()
    spans: list[otlp_trace.Span] = []
    for i in range(n // 4):
        tid = secrets.token_bytes(16)
        root, ret, llm, post = (secrets.token_bytes(8) for _ in range(4))
        start = t0 + i * 1_000_000
        prompt, answer = _text(rng, 500), _text(rng, 300)
        messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": prompt}]}])
        output = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": answer}], "finish_reason": "stop"}])
        spans += [
            otlp_trace.Span(trace_id=tid, span_id=ret, parent_span_id=root, name="retrieve kb", kind=3,
                            start_time_unix_nano=start + 1_000, end_time_unix_nano=start + 5_000_000,
                            attributes=[_kv("gen_ai.operation.name", "retrieval"), _kv("gen_ai.data_source.id", "kb")]),
            otlp_trace.Span(trace_id=tid, span_id=llm, parent_span_id=root, name="chat gpt-4o-mini", kind=3,
                            start_time_unix_nano=start + 6_000_000, end_time_unix_nano=start + 300_000_000,
                            attributes=[_kv("gen_ai.operation.name", "chat"), _kv("gen_ai.request.model", "gpt-4o-mini"),
                                        _kv("gen_ai.usage.input_tokens", 120), _kv("gen_ai.usage.output_tokens", 70),
                                        _kv("gen_ai.input.messages", messages), _kv("gen_ai.output.messages", output)]),
            otlp_trace.Span(trace_id=tid, span_id=post, parent_span_id=root, name="postprocess", kind=1,
                            start_time_unix_nano=start + 300_000_000, end_time_unix_nano=start + 301_000_000,
                            attributes=[_kv("step", "format")]),
            otlp_trace.Span(trace_id=tid, span_id=root, name="rag", kind=2,
                            start_time_unix_nano=start, end_time_unix_nano=start + 302_000_000,
                            attributes=[_kv("session.id", f"s{i % 50}")]),
        ]
    out = []
    for k in range(0, len(spans), BATCH):
        req = trace_service_pb2.ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([_kv("service.name", "bench-app"), _kv("openinference.project.name", PROJECT)])
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        ss.spans.extend(spans[k:k + BATCH])
        out.append(req.SerializeToString())
    return out


async def export_all(url: str, bodies: list[bytes], in_flight: int = 2) -> None:
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(timeout=120) as client:
        async def worker():
            while queue:
                body = queue.pop()
                while True:
                    r = await client.post(url, content=body, headers={"Content-Type": "application/x-protobuf"})
                    if r.status_code in (429, 503):      # the receiver asks for a retry (OTLP semantics)
                        await asyncio.sleep(0.2)
                        continue
                    r.raise_for_status()
                    break
        await asyncio.gather(*(worker() for _ in range(in_flight)))


def wait_for(count, n: int, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while (got := count()) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {got} of {n} spans queryable after {timeout_s:.0f} s")
        time.sleep(0.05)


def run_llmops(bodies: list[bytes], n: int) -> dict:
    s = bench_settings(publish_queue_size=50_000)
    stack = Stack(s, services=("tracing",), on_progress=lambda m: None)
    asyncio.run(stack.start())
    store = SqlTraceStore(s.trace_db_url, run_migrations=False)
    client = Client(s)
    try:
        t0 = time.perf_counter()
        asyncio.run(export_all(f"http://127.0.0.1:{s.otlp_http_port}/v1/traces", bodies))
        exported_s = time.perf_counter() - t0
        wait_for(store.count_spans, n, 600)
        last = trace_service_pb2.ExportTraceServiceRequest.FromString(bodies[-1]).resource_spans[0].scope_spans[0].spans[-1]
        wait_for(lambda: len(client.get_trace(last.trace_id.hex()).spans), 4, 60)
        total_s = time.perf_counter() - t0
    finally:
        client.close()
        store.close()
        asyncio.run(stack.stop())
    return {"exported_s": exported_s, "queryable_s": total_s}


def phoenix_count(url: str) -> int:
    q = {"query": "query($n:String!){ projects(filter:{col:name, value:$n}) { edges { node { recordCount } } } }",
         "variables": {"n": PROJECT}}
    r = httpx.post(f"{url}/graphql", json=q, timeout=30)
    r.raise_for_status()
    edges = r.json()["data"]["projects"]["edges"]
    return edges[0]["node"]["recordCount"] if edges else 0


def run_phoenix(bodies: list[bytes], n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-") as work, phoenix_server(Path(work)) as (url, _):
        t0 = time.perf_counter()
        asyncio.run(export_all(f"{url}/v1/traces", bodies))
        exported_s = time.perf_counter() - t0
        deadline = time.perf_counter() + 1800
        while phoenix_count(url) < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"Phoenix holds only {phoenix_count(url)} of {n} spans after 1800 s")
            time.sleep(0.5)
        return {"exported_s": exported_s, "queryable_s": time.perf_counter() - t0}


def run(n: int = 5_000, n_sustained: int = 40_000) -> dict:
    bodies = make_requests(n)
    ours = run_llmops(bodies, n)
    theirs = run_phoenix(bodies, n)
    sustained = run_llmops(make_requests(n_sustained, seed=11), n_sustained)
    ours_rate, theirs_rate = n / ours["queryable_s"], n / theirs["queryable_s"]
    sustained_rate = n_sustained / sustained["queryable_s"]
    rows = [
        ["llmops (SQLite)", n, ours["exported_s"], ours["queryable_s"], ours_rate, ours_rate / theirs_rate],
        ["Phoenix 20.26 (SQLite)", n, theirs["exported_s"], theirs["queryable_s"], theirs_rate, 1.0],
        ["llmops (SQLite), sustained", n_sustained, sustained["exported_s"], sustained["queryable_s"], sustained_rate,
         sustained_rate / theirs_rate],
    ]
    extra = {"goal_spans_per_s": 10_000, "goal_ratio": 50,
             "goal_met": {"rate": sustained_rate >= 10_000, "ratio": ours_rate / theirs_rate >= 50},
             "ratio_vs_phoenix": ours_rate / theirs_rate}
    report("otlp_ingest", "OTLP/HTTP ingest: first export -> every span queryable (same spans, same requests)",
           ["receiver", "spans", "exported s", "queryable s", "spans/s", "x Phoenix"], rows, extra)
    return extra


if __name__ == "__main__":
    run()
