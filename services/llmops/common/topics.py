"""Topic names and their creation. Every topic the platform reads or writes is listed here."""
from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from llmops.common.kafka import client_options
from llmops.common.settings import Settings

log = logging.getLogger(__name__)

# name -> (key, payload type, purpose)
TOPICS: dict[str, tuple[str, str, str]] = {
    "spans": ("trace_id", "SpanEvent", "one span per step of every request"),
    "completions": ("trace_id", "CompletionEvent", "prompt, contexts, answer, usage, latency per request"),
    "scores": ("trace_id", "ScoreEvent", "judge scores"),
    "feedback": ("trace_id", "FeedbackEvent", "user feedback"),
    "documents": ("document id", "DocumentEvent", "documents to index (any producer)"),
    "drift": ("monitor", "DriftReportEvent", "one report per drift window"),
    "retrain": ("monitor", "RetrainEvent", "retraining signals with evidence"),
    "dlq": ("original key", "original bytes", "what a consumer could not decode or handle"),
    "deployments": ("route", "DeploymentEvent", "rollout decisions (rollback, promote) with their evidence"),
    "config": ("route/deployment/prompt key", "ConfigRecord", "current routes, deployments and prompt labels (compacted)"),
}

#: compacted topics: the newest record of each key is the state; one partition keeps them in order
COMPACTED = {"config"}

#: the topics any producer may write, in protobuf or in protobuf's JSON mapping
#: (``content-type: application/json``; :data:`llmops.common.envelope.JSON_PAYLOADS`)
INPUT_TOPICS = ("documents", "spans", "completions", "scores", "feedback")


async def ensure_topics(settings: Settings, names: list[str] | None = None, timeout_s: float = 30.0) -> None:
    """Create the platform's topics (idempotent)."""
    wanted = [settings.topic(n) for n in (names or TOPICS)]
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(timeout_s * 1000))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            compacted = {settings.topic(n) for n in COMPACTED}
            new = [NewTopic(t, 1, settings.topic_replication, topic_configs={"cleanup.policy": "compact"})
                   if t in compacted else NewTopic(t, settings.topic_partitions, settings.topic_replication)
                   for t in missing]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # a racing service created them first
            log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()
