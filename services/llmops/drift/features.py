"""What a drift monitor sees of one completion: tabular features and the prompt's text (its
embedding is computed by the monitor). Judge scores and feedback arrive later and are joined by
trace id (issue 4)."""
from __future__ import annotations

from llmops.v1 import events_pb2

NUMERIC = ("prompt_chars", "answer_chars", "prompt_tokens", "completion_tokens", "latency_ms", "retrieval_top_score")
CATEGORICAL = ("finish_reason",)


def completion_features(c: events_pb2.CompletionEvent) -> dict[str, float | str]:
    return {
        "prompt_chars": float(len(c.prompt)),
        "answer_chars": float(len(c.answer)),
        "prompt_tokens": float(c.usage.prompt_tokens),
        "completion_tokens": float(c.usage.completion_tokens),
        "latency_ms": float(c.latency_ms),
        "retrieval_top_score": float(c.retrieval_top_score),
        "finish_reason": c.finish_reason or "unknown",
    }
