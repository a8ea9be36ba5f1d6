"""Prometheus metrics shared by every service (one registry per process).

Names follow Prometheus conventions: ``llmops_`` prefix, base units (seconds), ``_total`` counters.
"""
from __future__ import annotations

import threading
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

GRPC_REQUESTS = Counter(
    "llmops_grpc_requests_total", "gRPC requests handled", ["service", "method", "code"], registry=REGISTRY
)
GRPC_LATENCY = Histogram(
    "llmops_grpc_request_duration_seconds", "gRPC request latency", ["service", "method"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "llmops_events_published_total", "Events delivered to Kafka", ["topic"], registry=REGISTRY
)
EVENTS_UNDELIVERED = Counter(
    "llmops_events_undelivered_total", "Events the request path could not deliver", ["topic", "reason"],
    registry=REGISTRY,
)
PUBLISH_QUEUE_DEPTH = Gauge(
    "llmops_publish_queue_depth", "Events waiting in the request path's publish buffer", registry=REGISTRY
)
PUBLISH_BUFFER_BYTES = Gauge(
    "llmops_publish_buffer_bytes", "Bytes of events the request path holds (buffered or awaiting acknowledgement)",
    registry=REGISTRY,
)
PUBLISH_ACK_TIMEOUTS = Counter(
    "llmops_publish_ack_timeouts_total",
    "Requests answered before the broker acknowledged their events (LLMOPS_PUBLISH_ACK_WAIT_S passed); "
    "the events are still delivered or counted undelivered later", registry=REGISTRY,
)
PUBLISH_UNITS = Counter(
    "llmops_publish_units_total",
    "Units the request path published (one request's spans and completion), by outcome: delivered, or the "
    "reason the unit was not (all of it or part of it)", ["outcome"], registry=REGISTRY,
)
EVENTS_CONSUMED = Counter(
    "llmops_events_consumed_total", "Events consumed and handled", ["topic", "group"], registry=REGISTRY
)
DLQ_MESSAGES = Counter(
    "llmops_dlq_messages_total", "Messages sent to the dead-letter topic", ["topic", "group", "error"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "llmops_tokens_total", "Tokens processed by the model backends", ["model", "kind"], registry=REGISTRY
)
COST = Counter(
    "llmops_cost_usd_total", "Cost of generations in USD, from the model's price (LLMOPS_MODEL_PRICES); unpriced models are left out",
    ["model"], registry=REGISTRY,
)
GENERATION_LATENCY = Histogram(
    "llmops_generation_duration_seconds", "Model generation latency", ["model"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
RETRIEVAL_HITS = Histogram(
    "llmops_retrieval_hits", "Results returned per search", ["collection"],
    buckets=(0, 1, 2, 3, 5, 10, 20, 50), registry=REGISTRY,
)
RETRIEVAL_TOP_SCORE = Histogram(
    "llmops_retrieval_top_score", "Fused score of the best hit", ["collection"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=REGISTRY,
)
DOCUMENTS_INGESTED = Counter(
    "llmops_documents_ingested_total", "Documents upserted", ["collection", "source"], registry=REGISTRY
)
JUDGE_SCORES = Histogram(
    "llmops_judge_score", "Judge scores (0-1 metrics, 1-5 rubrics, flags), by the deployment version that answered "
    "(both empty for completions not served through a route)",
    ["evaluator", "metric", "model", "prompt_version", "deployment", "deployment_version"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2, 3, 4, 5), registry=REGISTRY,
)
JUDGE_ERRORS = Counter(
    "llmops_judge_errors_total", "Evaluations that ended in an error score", ["evaluator"], registry=REGISTRY
)
JUDGE_SKIPPED = Counter(
    "llmops_judge_skipped_total", "Completions an online evaluator did not judge, by reason",
    ["evaluator", "reason"], registry=REGISTRY,
)
JUDGE_LATENCY = Histogram(
    "llmops_judge_batch_duration_seconds", "Time to judge one batch of completions", ["tier"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
JUDGE_DELAY = Histogram(
    "llmops_judge_delay_seconds", "From the completion's timestamp to its scores being published", ["tier"],
    buckets=LATENCY_BUCKETS + (120, 300, 600), registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "llmops_consumer_lag_messages", "Messages not yet committed by a consumer group", ["topic", "group"],
    registry=REGISTRY,
)
BROKER_UP = Gauge(
    "llmops_broker_up", "1 if the last consumer-lag round trip to the Kafka broker succeeded", registry=REGISTRY,
)
BROKER_ROUNDTRIP = Histogram(
    "llmops_broker_roundtrip_seconds", "Time to read a consumer group's committed and end offsets from the broker",
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
DRIFT_JOINED = Counter(
    "llmops_drift_joined_total", "Events the drift join closed, by outcome (new completion, merged late score, orphan score)",
    ["outcome"], registry=REGISTRY,
)
DRIFT_PENDING = Gauge("llmops_drift_join_pending", "Traces waiting in the drift join table", registry=REGISTRY)
DRIFT_WINDOWS = Counter(
    "llmops_drift_windows_total", "Drift windows evaluated", ["monitor", "drifted"], registry=REGISTRY,
)
DRIFT_SHARE = Gauge("llmops_drift_share", "Share of drifted tabular features in the last window", ["monitor"], registry=REGISTRY)
DRIFT_FEATURE = Gauge(
    "llmops_drift_feature_drifted", "1 if the feature drifted in the last window", ["monitor", "feature"], registry=REGISTRY,
)
DRIFT_REPORT_SECONDS = Histogram(
    "llmops_drift_report_seconds", "Evidently time per window", ["monitor"],
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
RETRAIN_EVENTS = Counter("llmops_retrain_events_total", "Retrain events emitted", ["monitor"], registry=REGISTRY)
# A histogram's _sum must only grow (rate() reads a drop as a restart, and prometheus-client drops
# _sum when a bucket is negative), so negative feedback (a -1 thumbs-down) is counted on its own.
FEEDBACK_SCORES = Histogram(
    "llmops_feedback_score", "Non-negative feedback scores stored (thumbs 0/1, ratings 1-5)", ["name"],
    buckets=(0, 0.25, 0.5, 0.75, 1, 2, 3, 4, 5), registry=REGISTRY,
)
FEEDBACK_NEGATIVE = Counter(
    "llmops_feedback_negative_total", "Negative feedback scores stored (e.g. a -1 thumbs-down)", ["name"],
    registry=REGISTRY,
)
SPANS_STORED = Counter("llmops_spans_stored_total", "Spans written to the trace store", registry=REGISTRY)
OTLP_SPANS = Counter(
    "llmops_otlp_spans_total", "OTLP spans received, by transport and outcome (accepted, rejected)",
    ["transport", "outcome"], registry=REGISTRY,
)
OTLP_REQUESTS = Counter(
    "llmops_otlp_requests_total", "OTLP export requests, by transport and status", ["transport", "status"],
    registry=REGISTRY,
)
OTLP_COMPLETIONS = Counter(
    "llmops_otlp_completions_total", "LLM calls read off OTLP spans and published as completions, by convention",
    ["convention"], registry=REGISTRY,
)
OTLP_EXPORTED = Counter(
    "llmops_otlp_exported_spans_total", "Spans (and judge scores as evaluation spans) exported over OTLP, by outcome",
    ["outcome"], registry=REGISTRY,
)
OTLP_WAITING = Gauge(
    "llmops_otlp_completions_waiting", "OTLP LLM calls waiting for the retrieval spans of their trace", registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "llmops_http_requests_total", "Requests to a service's HTTP doors, by route and status", ["service", "route", "code"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "llmops_http_request_duration_seconds", "HTTP door latency (to the last byte, streams included)",
    ["service", "route"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
SERVICE_READY = Gauge("llmops_service_ready", "1 when the service serves", ["service"], registry=REGISTRY)
STARTUP_SECONDS = Gauge(
    "llmops_service_startup_seconds", "Seconds of the service's last start, from its process's start until SERVING "
    "(phase total) and by phase (phases may overlap: a model loads while the consumer group is joined)",
    ["service", "phase"], registry=REGISTRY,
)
CONSUMER_STATE = Gauge(
    "llmops_consumer_state", "1 for the state each consumer of the service is in (starting, ok, retrying, dead, stalled)",
    ["service", "consumer", "state"], registry=REGISTRY,
)

# -- deployments, routes and rollouts ----------------------------------------------------------
ROUTE_REQUESTS = Counter(
    "llmops_route_requests_total", "Requests a route served, by the deployment version that answered and the arm",
    ["route", "deployment", "version", "arm", "outcome"], registry=REGISTRY,   # outcome: ok | error
)
ROUTE_ATTEMPTS = Counter(
    "llmops_route_attempts_total", "Attempts on a deployment version (retries and fallbacks included)",
    ["route", "deployment", "version", "outcome"], registry=REGISTRY,
    # outcome: ok | unavailable | timeout | rate_limited | error | circuit_open (skipped) | deadline
)
ROUTE_FALLBACKS = Counter(
    "llmops_route_fallbacks_total", "Requests answered by a fallback deployment", ["route"], registry=REGISTRY
)
CIRCUIT_OPEN = Gauge(
    "llmops_circuit_open", "1 while a deployment version's circuit breaker is open on this replica",
    ["deployment", "version"], registry=REGISTRY,
)
SHADOW_REQUESTS = Counter(
    "llmops_shadow_requests_total", "Copies of requests sent to a route's shadow deployment",
    ["route", "deployment", "version", "outcome"], registry=REGISTRY,   # outcome: ok | error | skipped (busy)
)
CONFIG_APPLIED = Counter(
    "llmops_config_records_applied_total", "Records of the config topic a replica applied", ["kind"], registry=REGISTRY
)
ROLLOUT_DECISIONS = Counter(
    "llmops_rollout_decisions_total", "Rollout decisions of the judge-driven canary monitor",
    ["route", "decision"], registry=REGISTRY,   # decision: rollback | promote | passed
)
ROLLOUT_SAMPLES = Gauge(
    "llmops_rollout_samples", "Judged requests of the running canary comparison", ["route", "arm"], registry=REGISTRY
)
ROLLOUT_SCORE_MEAN = Gauge(
    "llmops_rollout_score_mean", "Mean compared score of the running canary comparison", ["route", "arm"],
    registry=REGISTRY,
)
ROLLOUT_STATISTIC = Gauge(
    "llmops_rollout_statistic", "The sequential test's likelihood ratio of the running canary (rollback at 1/alpha)",
    ["route"], registry=REGISTRY,
)
ROLLOUT_THRESHOLD = Gauge(
    "llmops_rollout_threshold", "The running canary's rollback threshold of llmops_rollout_statistic (1/alpha)",
    ["route"], registry=REGISTRY,
)

LABEL_VALUES_FOLDED = Counter(
    "llmops_metric_label_values_folded_total",
    "Label values from clients folded into \"other\" (past LLMOPS_METRICS_MAX_LABEL_VALUES distinct values)",
    ["label"], registry=REGISTRY,
)

# -- label values that come from clients ---------------------------------------------------------
OTHER = "other"
DEFAULT_MAX_LABEL_VALUES = 100
MAX_LABEL_VALUE_LENGTH = 128
_max_label_values = DEFAULT_MAX_LABEL_VALUES


def set_max_label_values(n: int) -> None:
    """How many distinct client values each :class:`BoundedLabel` lets through (the service's
    ``LLMOPS_METRICS_MAX_LABEL_VALUES``, applied at start-up by the runtime)."""
    global _max_label_values
    _max_label_values = max(0, int(n))


class BoundedLabel:
    """The values of one label that clients choose (feedback names, collections, model names),
    kept to a bounded set so that no client can grow a metric's series without bound.

    A ``known`` value always passes; so do the first ``max_values`` other distinct values this
    process sees (default: :func:`set_max_label_values`). Any later new value, and any value longer
    than ``MAX_LABEL_VALUE_LENGTH`` characters, folds into ``"other"`` and is counted in
    ``llmops_metric_label_values_folded_total{label}``. One instance serves every metric that
    carries the label, so they share one set of values."""

    def __init__(self, name: str, known: Iterable[str] = (), max_values: int | None = None) -> None:
        self.name = name
        self.known = frozenset(known)
        self._max_values = max_values
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    @property
    def max_values(self) -> int:
        return _max_label_values if self._max_values is None else self._max_values

    def __call__(self, value: object) -> str:
        v = str(value)
        if v in self.known or v in self._seen or v == OTHER:
            return v
        if len(v) <= MAX_LABEL_VALUE_LENGTH:
            with self._lock:
                if v in self._seen:
                    return v
                if len(self._seen) < self.max_values:
                    self._seen.add(v)
                    return v
        LABEL_VALUES_FOLDED.labels(self.name).inc()
        return OTHER

    def values(self) -> frozenset[str]:
        """The client values let through so far (``known`` ones aside)."""
        with self._lock:
            return frozenset(self._seen)


class BoundedLabels:
    """:class:`BoundedLabel` over a combination of labels of one metric: the first ``max_values``
    distinct combinations pass, any other has all of its values folded into ``"other"`` (bounding
    each label alone would still allow the product of their counts)."""

    def __init__(self, name: str, max_values: int | None = None) -> None:
        self._combos = BoundedLabel(name, max_values=max_values)

    def __call__(self, *values: object) -> tuple[str, ...]:
        vs = tuple(str(v) for v in values)
        if any(len(v) > MAX_LABEL_VALUE_LENGTH for v in vs) or self._combos("\x1f".join(vs)) == OTHER:
            return tuple(OTHER for _ in vs)
        return vs


#: the client-chosen label values of the metrics above, bounded
FEEDBACK_NAME = BoundedLabel("feedback_name", known=("user",))
COLLECTION = BoundedLabel("collection", known=("default",))
JUDGED_SERIES = BoundedLabels("judge_score_series")   # (model, prompt_version, deployment, deployment_version)


_SERVING: set[tuple[str, int]] = set()


def serve_metrics(host: str, port: int, max_label_values: int | None = None) -> None:
    """Expose ``/metrics`` over HTTP on a daemon thread (once per address: a service restarted
    in the same process keeps the endpoint it has); ``max_label_values`` bounds the label values
    that come from clients (:class:`BoundedLabel`)."""
    if max_label_values is not None:
        set_max_label_values(max_label_values)
    if (host, port) in _SERVING:
        return
    start_http_server(port, addr=host, registry=REGISTRY)
    _SERVING.add((host, port))
