"""The trace store's tables (SQLAlchemy Core). Migrations in ``migrations/`` create them; this
module is what queries are written against. Times are integer microseconds since the epoch, the
same in SQLite and PostgreSQL."""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

traces = Table(
    "traces", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("start_us", BigInteger, nullable=False),
    Column("end_us", BigInteger, nullable=False),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("model", String(200), nullable=False, default=""),
    Column("session_id", String(200), nullable=False, default=""),
    Column("user_id", String(200), nullable=False, default=""),
    Column("prompt", Text, nullable=False, default=""),
    Column("answer", Text, nullable=False, default=""),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=True),           # NULL: the model has no price
    Column("prompt_template", String(200), nullable=False, default=""),
    Column("prompt_version", Integer, nullable=False, default=0),
    Column("finish_reason", String(50), nullable=False, default=""),
    Column("metadata_json", Text, nullable=False, default="{}"),
    Column("status", Integer, nullable=False, default=0),
    Column("span_count", Integer, nullable=False, default=0),
    Column("has_completion", Integer, nullable=False, default=0),
    Column("completion_pb", Text, nullable=False, default=""),  # base64 CompletionEvent (contexts etc.)
    # how the request was served (migration 0004; empty for completions that did not come through a route)
    Column("route", String(200), nullable=False, default=""),
    Column("route_revision", Integer, nullable=False, default=0),
    Column("deployment", String(200), nullable=False, default=""),
    Column("deployment_version", Integer, nullable=False, default=0),
    Column("arm", String(20), nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("fallback", Integer, nullable=False, default=0),
    Column("shadow_of", String(32), nullable=False, default=""),
    Column("error", Text, nullable=False, default=""),
)
Index("ix_traces_start", traces.c.start_us)
Index("ix_traces_session", traces.c.session_id, traces.c.start_us)
Index("ix_traces_user", traces.c.user_id, traces.c.start_us)
Index("ix_traces_model", traces.c.model, traces.c.start_us)
Index("ix_traces_deployment", traces.c.deployment, traces.c.deployment_version, traces.c.start_us)
Index("ix_traces_route", traces.c.route, traces.c.start_us)

spans = Table(
    "spans", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("span_id", String(16), primary_key=True),
    Column("parent_span_id", String(16), nullable=False, default=""),
    Column("name", String(200), nullable=False),
    Column("service", String(100), nullable=False, default=""),
    Column("start_us", BigInteger, nullable=False),
    Column("end_us", BigInteger, nullable=False),
    Column("status", Integer, nullable=False, default=0),
    Column("status_message", Text, nullable=False, default=""),
    Column("attributes_json", Text, nullable=False, default="{}"),
)

scores = Table(
    "scores", metadata,
    Column("trace_id", String(32), primary_key=True),
    Column("evaluator", String(200), primary_key=True),
    Column("version", String(50), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", Float, nullable=False),
    Column("explanation", Text, nullable=False, default=""),
    Column("status", Integer, nullable=False, default=0),
    Column("created_us", BigInteger, nullable=False),
)

feedback = Table(
    "feedback", metadata,
    Column("id", String(64), primary_key=True),
    Column("trace_id", String(32), nullable=False),
    Column("name", String(200), nullable=False, default="user"),
    Column("score", Float, nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("user_id", String(200), nullable=False, default=""),
    Column("created_us", BigInteger, nullable=False),
)
Index("ix_feedback_trace", feedback.c.trace_id)
Index("ix_scores_name_value", scores.c.name, scores.c.value)

eval_runs = Table(
    "eval_runs", metadata,
    Column("run_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("dataset", String(500), nullable=False, default=""),
    Column("dataset_hash", String(64), nullable=False),
    Column("model", String(200), nullable=False, default=""),
    Column("prompt_template", String(200), nullable=False, default=""),
    Column("prompt_version", Integer, nullable=False, default=0),
    Column("retrieval", Integer, nullable=False, default=0),
    Column("evaluators_json", Text, nullable=False, default="[]"),
    Column("created_us", BigInteger, nullable=False),
    Column("item_count", Integer, nullable=False, default=0),
    Column("error_count", Integer, nullable=False, default=0),
    Column("aggregates_json", Text, nullable=False, default="{}"),
    Column("metadata_json", Text, nullable=False, default="{}"),
)
Index("ix_eval_runs_dataset", eval_runs.c.dataset_hash, eval_runs.c.created_us)

eval_items = Table(
    "eval_items", metadata,
    Column("run_id", String(32), ForeignKey("eval_runs.run_id", ondelete="CASCADE"), primary_key=True),
    Column("item_id", String(200), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("question", Text, nullable=False, default=""),
    Column("reference", Text, nullable=False, default=""),
    Column("answer", Text, nullable=False, default=""),
    Column("contexts_json", Text, nullable=False, default="[]"),
    Column("trace_id", String(32), nullable=False, default=""),
    Column("scores_json", Text, nullable=False, default="[]"),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("error", Text, nullable=False, default=""),
    Column("metadata_json", Text, nullable=False, default="{}"),
)
