"""The drift store's tables (SQLAlchemy Core); migrations in ``migrations/`` create them. Times
are integer microseconds since the epoch."""
from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()
SEQ = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER keys

# one row per completion (or per score/feedback whose completion never came), after its join
observations = Table(
    "drift_observations", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),  # arrival order: windows are seq ranges
    Column("trace_id", String(32), nullable=False, unique=True),
    Column("ts_us", BigInteger, nullable=False),
    Column("has_completion", Integer, nullable=False, default=0),
    Column("model", String(200), nullable=False, default=""),
    Column("prompt_template", String(200), nullable=False, default=""),
    Column("prompt_version", Integer, nullable=False, default=0),
    Column("metadata_json", Text, nullable=False, default="{}"),
    Column("prompt", Text, nullable=False, default=""),
    Column("answer", Text, nullable=False, default=""),
    Column("features_json", Text, nullable=False, default="{}"),
    Column("scores_json", Text, nullable=False, default="{}"),
    Column("embedding", LargeBinary, nullable=True),  # float32 prompt embedding
    # how the request was served (migration d0002): monitors can be scoped to a deployment
    Column("route", String(200), nullable=False, default=""),
    Column("deployment", String(200), nullable=False, default=""),
    Column("deployment_version", Integer, nullable=False, default=0),
    Column("arm", String(20), nullable=False, default=""),
)
Index("ix_drift_obs_ts", observations.c.ts_us)

references = Table(
    "drift_references", metadata,
    Column("reference_id", String(80), primary_key=True),
    Column("monitor", String(200), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("size", Integer, nullable=False, default=0),
)

# a reference is a copy of its rows: observations may be pruned, a reference must not change
reference_rows = Table(
    "drift_reference_rows", metadata,
    Column("reference_id", String(80), primary_key=True),
    Column("trace_id", String(32), primary_key=True),
    Column("row_json", Text, nullable=False),
    Column("embedding", LargeBinary, nullable=True),
)

monitor_state = Table(
    "drift_monitor_state", metadata,
    Column("monitor", String(200), primary_key=True),
    Column("reference_id", String(80), nullable=False, default=""),
    Column("consecutive", Integer, nullable=False, default=0),
    Column("last_seq", BigInteger, nullable=False, default=0),      # observations up to here are in closed windows
    Column("window_started_us", BigInteger, nullable=False, default=0),
    Column("last_retrain_us", BigInteger, nullable=False, default=0),
    Column("retrain_count", Integer, nullable=False, default=0),
    # monitor rows up to this position are in closed windows (migration d0003; -1: state from before it)
    Column("last_pos", BigInteger, nullable=False, default=0),
)

# the observations each monitor took, in the order its partition of drift-observations delivered
# them (migration d0003): a window is a range of positions, so a redelivery or a new owner of the
# monitor cuts the same windows, and an observation joins a monitor once
monitor_rows = Table(
    "drift_monitor_rows", metadata,
    Column("monitor", String(200), primary_key=True),
    Column("trace_id", String(32), primary_key=True),
    Column("pos", BigInteger, nullable=False),
    Column("ts_us", BigInteger, nullable=False),
)
Index("ix_drift_monitor_rows_pos", monitor_rows.c.monitor, monitor_rows.c.pos)

windows = Table(
    "drift_windows", metadata,
    Column("report_id", String(80), primary_key=True),
    Column("monitor", String(200), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("drift_detected", Integer, nullable=False, default=0),
    Column("event_pb", LargeBinary, nullable=False),  # DriftReportEvent
    Column("published", Integer, nullable=False, default=0),  # the outbox (migration d0003): 1 once acknowledged
)
Index("ix_drift_windows_monitor", windows.c.monitor, windows.c.created_us)

retrain_events = Table(
    "drift_retrain_events", metadata,
    Column("id", String(80), primary_key=True),
    Column("monitor", String(200), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("event_pb", LargeBinary, nullable=False),  # RetrainEvent
    Column("published", Integer, nullable=False, default=0),  # the outbox (migration d0003): 1 once acknowledged
)
Index("ix_drift_retrain_monitor", retrain_events.c.monitor, retrain_events.c.created_us)

# one rollout decision per route revision (migration d0002): a restart does not decide it again
deployment_events = Table(
    "drift_deployment_events", metadata,
    Column("route", String(200), primary_key=True),
    Column("route_revision", Integer, primary_key=True),
    Column("id", String(300), nullable=False),
    Column("decision", Integer, nullable=False),          # events_pb2.RolloutDecision
    Column("created_us", BigInteger, nullable=False),
    Column("event_pb", LargeBinary, nullable=False),      # DeploymentEvent
)
Index("ix_drift_deployment_events_created", deployment_events.c.created_us)

# the late join's open entries (migration d0004): trace id -> what came of it so far, as the JSON of
# llmops.drift.join.JoinEntry.to_dict, with the partition of the source topics it came on (a worker
# loads the entries of the partitions it is assigned); written before the batch is acknowledged,
# deleted once the entry is closed, so neither a process nor a broker restart loses one
join_entries = Table(
    "drift_join_entries", metadata,
    Column("trace_id", Text, primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("entry_json", Text, nullable=False),
)
Index("ix_drift_join_entries_partition", join_entries.c.partition)
