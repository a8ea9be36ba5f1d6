"""Gateway overhead: the same chat request on the same llama.cpp model through gRPC ``Generate``
and through the OpenAI-compatible HTTP gateway (``POST /v1/chat/completions``), calls alternating
(and which door goes first alternating too) so that both see the same machine load. Both doors
run the same engine: spans, CompletionEvent, tracing on.

The HTTP client is httpx (a keep-alive ``httpx.Client`` from the project's venv), in the same
process as the synchronous gRPC stub: two plain blocking clients of similar weight, so that the
difference measures the doors and not the clients. The official openai SDK adds its own pydantic
parsing on top of an httpx client (a client cost, not the gateway's), and runs in another venv.

Also measured: ``ListModels`` against ``GET /v1/models``, the doors with no model in the way.

Goal: the gateway within 1 ms of gRPC at p50."""
from __future__ import annotations

import asyncio
import time

import httpx

from bench.common import bench_settings, percentile, report
from llmops.cli.client import Client
from llmops.cli.stack import Stack
from llmops.v1 import inference_pb2

PROMPTS = [
    "Explain what a Python list is.", "What is a dictionary used for?", "Describe a for loop.",
    "What does the return statement do?", "Why are tuples immutable?", "What is recursion?",
    "How do you open a file in Python?", "What is an exception?", "Describe string slicing.",
    "What is a generator?",
]
GOAL_MS = 1.0


def run(rounds: int = 8, max_new_tokens: int = 8, door_calls: int = 300) -> dict:
    s = bench_settings()
    stack = Stack(s, services=("tracing", "inference"), on_progress=lambda m: print("  ", m))
    asyncio.run(stack.start())
    try:
        client = Client(s)
        http = httpx.Client(base_url=f"http://127.0.0.1:{s.inference_http_port}", timeout=300, trust_env=False)

        def via_grpc(prompt: str):
            req = inference_pb2.GenerateRequest(messages=[inference_pb2.ChatMessage(role="user", content=prompt)],
                                                model=s.model_name)
            req.parameters.max_new_tokens = max_new_tokens
            r = client.inference.Generate(req, timeout=300)
            return r.text, r.usage.completion_tokens

        def via_http(prompt: str):
            resp = http.post("/v1/chat/completions", json={
                "model": s.model_name, "max_tokens": max_new_tokens,
                "messages": [{"role": "user", "content": prompt}]})
            resp.raise_for_status()
            body = resp.json()
            return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"]

        for p in PROMPTS[:3]:   # warm both doors: model pages, KV cache, channel and connection
            via_grpc(p)
            via_http(p)
        grpc_ms, http_ms, paired, tokens = [], [], [], []
        for i in range(rounds):
            for j, p in enumerate(PROMPTS):
                order = (("grpc", via_grpc), ("http", via_http))
                if (i + j) % 2:
                    order = order[::-1]
                got = {}
                for name, fn in order:
                    t0 = time.perf_counter()
                    got[name] = fn(p)
                    got[name + "_ms"] = (time.perf_counter() - t0) * 1000
                # greedy: both doors must produce the same tokens (an OpenAI stop is not set)
                assert got["grpc"] == got["http"], f"the doors disagree on {p!r}: {got['grpc']} vs {got['http']}"
                grpc_ms.append(got["grpc_ms"])
                http_ms.append(got["http_ms"])
                paired.append(got["http_ms"] - got["grpc_ms"])
                tokens.append(got["grpc"][1])

        list_grpc, list_http = [], []
        for i in range(door_calls):
            for name in (("grpc", "http") if i % 2 else ("http", "grpc")):
                t0 = time.perf_counter()
                if name == "grpc":
                    client.inference.ListModels(inference_pb2.ListModelsRequest(), timeout=10)
                else:
                    http.get("/v1/models").raise_for_status()
                (list_grpc if name == "grpc" else list_http).append((time.perf_counter() - t0) * 1000)
        http.close()
        client.close()
    finally:
        asyncio.run(stack.stop())

    p50_diff = percentile(http_ms, 0.5) - percentile(grpc_ms, 0.5)
    p99_diff = percentile(http_ms, 0.99) - percentile(grpc_ms, 0.99)
    rows = [
        ["gRPC Generate", len(grpc_ms), percentile(grpc_ms, 0.5), percentile(grpc_ms, 0.99)],
        ["HTTP /v1/chat/completions", len(http_ms), percentile(http_ms, 0.5), percentile(http_ms, 0.99)],
        ["difference (HTTP - gRPC)", "", p50_diff, p99_diff],
        ["paired difference per request", len(paired), percentile(paired, 0.5), percentile(paired, 0.99)],
        ["gRPC ListModels (no model)", len(list_grpc), percentile(list_grpc, 0.5), percentile(list_grpc, 0.99)],
        ["HTTP GET /v1/models (no model)", len(list_http), percentile(list_http, 0.5), percentile(list_http, 0.99)],
    ]
    extra = {"max_new_tokens": max_new_tokens, "mean_completion_tokens": sum(tokens) / len(tokens),
             "http_client": "httpx.Client (keep-alive), same process as the gRPC stub",
             "p50_difference_ms": p50_diff, "paired_p50_difference_ms": percentile(paired, 0.5),
             "goal_p50_difference_ms": GOAL_MS, "goal_met": p50_diff < GOAL_MS}
    report("gateway", "Gateway overhead (ms, same chat request, greedy, interleaved)",
           ["path", "n", "p50 ms", "p99 ms"], rows, extra)
    print(f"p50 difference: {p50_diff:+.3f} ms (paired {percentile(paired, 0.5):+.3f} ms; goal < {GOAL_MS} ms)")
    return extra


if __name__ == "__main__":
    run()
