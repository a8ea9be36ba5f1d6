"""Request-path overhead: the same prompts on the same llama.cpp model, through the gRPC
inference service (tracing on: spans and completions go to Kafka, the tracing service stores
them) versus a direct in-process call. Calls alternate A/B so both see the same machine load.

Goal: the platform adds under 2% to p50 generation latency."""
from __future__ import annotations

import asyncio
import time

from bench.common import bench_settings, percentile, report
from llmops.cli.client import Client
from llmops.backends.llama_cpp import LlamaCppBackend
from llmops.backends.protocol import ChatTurn, GenerationParams
from llmops.inference.prompts import DEFAULTS
from llmops.cli.stack import Stack
from llmops.v1 import inference_pb2

PROMPTS = [
    "Explain what a Python list is.", "What is a dictionary used for?", "Describe a for loop.",
    "What does the return statement do?", "Why are tuples immutable?", "What is recursion?",
    "How do you open a file in Python?", "What is an exception?", "Describe string slicing.",
    "What is a generator?",
]


def run(rounds: int = 4, max_new_tokens: int = 32) -> dict:
    s = bench_settings()
    stack = Stack(s, services=("tracing", "inference"), on_progress=lambda m: print("  ", m))
    asyncio.run(stack.start())
    try:
        client = Client(s)
        direct = LlamaCppBackend(s.resolved_model_path, s.model_name, s.model_ctx, s.model_threads)
        system, user = DEFAULTS["chat"]
        params = GenerationParams(max_new_tokens=max_new_tokens)
        # warm both paths (model pages, KV cache allocation, gRPC channel)
        for p in PROMPTS[:2]:
            _grpc(client, p, max_new_tokens)
            asyncio.run(direct.generate(direct.render_chat([ChatTurn("system", system), ChatTurn("user", p)]), params))
        via_grpc, in_process, tokens = [], [], []
        for _ in range(rounds):
            for p in PROMPTS:
                t0 = time.perf_counter()
                r = _grpc(client, p, max_new_tokens)
                via_grpc.append((time.perf_counter() - t0) * 1000)
                prompt = direct.render_chat([ChatTurn("system", system), ChatTurn("user", p)])
                t0 = time.perf_counter()
                g = asyncio.run(direct.generate(prompt, params))
                in_process.append((time.perf_counter() - t0) * 1000)
                assert g.text == r.text, "both paths must generate the same tokens (greedy)"
                tokens.append(r.usage.completion_tokens)
        direct.close()
    finally:
        asyncio.run(stack.stop())
    rows = []
    for name, xs in (("gRPC service (tracing on)", via_grpc), ("direct in-process llama.cpp", in_process)):
        rows.append([name, len(xs), percentile(xs, 0.5), percentile(xs, 0.99)])
    p50_ratio = percentile(via_grpc, 0.5) / percentile(in_process, 0.5)
    p99_ratio = percentile(via_grpc, 0.99) / percentile(in_process, 0.99)
    rows.append(["ratio service / direct", "", p50_ratio, p99_ratio])
    extra = {"max_new_tokens": max_new_tokens, "mean_completion_tokens": sum(tokens) / len(tokens),
             "p50_overhead_pct": (p50_ratio - 1) * 100, "goal_p50_overhead_pct": 2.0,
             "goal_met": (p50_ratio - 1) * 100 < 2.0}
    report("request_path", "Request-path overhead (ms, same prompts, greedy, interleaved)",
           ["path", "n", "p50 ms", "p99 ms"], rows, extra)
    print(f"p50 overhead: {(p50_ratio - 1) * 100:+.2f}% (goal < 2%)")
    return extra


def _grpc(client: Client, prompt: str, max_new_tokens: int):
    req = inference_pb2.GenerateRequest(prompt=prompt)
    req.parameters.max_new_tokens = max_new_tokens
    return client.inference.Generate(req, timeout=300)


if __name__ == "__main__":
    run()
