"""What a drift monitor sees of one request: an :class:`Observation` holds the completion's
tabular features and texts, its prompt embedding, and the judge scores and feedback joined to it
by trace id."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from llmops.common.times import ts_to_us
from llmops.v1 import events_pb2

NUMERIC = ("prompt_chars", "answer_chars", "prompt_tokens", "completion_tokens", "latency_ms", "retrieval_top_score")
CATEGORICAL = ("finish_reason",)
TEXT = ("prompt", "answer")
_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


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


def score_column(name: str, tier: str = "") -> str:
    """Feature column of a judge score: ``score_<name>``, with ``_llm`` for the LLM tier (which
    judges a sample), so the cheap and the LLM judgement of one metric stay apart."""
    col = "score_" + _UNSAFE.sub("_", name)
    return col + "_llm" if tier == "llm" else col


def feedback_column(name: str) -> str:
    return "feedback_" + _UNSAFE.sub("_", name or "user")


def quality_column(key: str) -> str:
    """Column of a quality rule's key: ``faithfulness`` → ``score_faithfulness``;
    ``feedback_user`` and ``score_*`` names are taken as they are."""
    return key if key.startswith(("score_", "feedback_")) else score_column(key)


@dataclass
class Observation:
    trace_id: str
    ts_us: int
    has_completion: bool = False
    model: str = ""
    prompt_template: str = ""
    prompt_version: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    prompt: str = ""
    answer: str = ""
    features: dict[str, float | str] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)   # score_* and feedback_* columns
    embedding: np.ndarray | None = None
    seq: int = 0
    # how the request was served (empty for completions that did not come through a route)
    route: str = ""
    deployment: str = ""
    deployment_version: int = 0
    arm: str = ""            # "primary" | "canary" | "shadow"

    @classmethod
    def of_completion(cls, c: events_pb2.CompletionEvent) -> "Observation":
        return cls(trace_id=c.trace_id, ts_us=ts_to_us(c.timestamp),
                   has_completion=True, model=c.model, prompt_template=c.prompt_template,
                   prompt_version=c.prompt_version, metadata=dict(c.metadata), prompt=c.prompt, answer=c.answer,
                   features=completion_features(c), route=c.route, deployment=c.deployment,
                   deployment_version=c.deployment_version, arm=c.arm)

    def to_json(self) -> dict:
        """The completion's fields (no embedding, no scores) as JSON, for the join table."""
        return {"trace_id": self.trace_id, "ts_us": self.ts_us, "model": self.model,
                "prompt_template": self.prompt_template, "prompt_version": self.prompt_version,
                "metadata": self.metadata, "prompt": self.prompt, "answer": self.answer, "features": self.features,
                "route": self.route, "deployment": self.deployment, "deployment_version": self.deployment_version,
                "arm": self.arm}

    @classmethod
    def from_json(cls, d: dict) -> "Observation":
        """Also the JSON of join entries written before the served-by fields (they default to empty)."""
        return cls(has_completion=True, **d)

    def row(self) -> dict:
        """One row of a window's data frame."""
        return {**self.features, "prompt": self.prompt, "answer": self.answer, **self.scores}
