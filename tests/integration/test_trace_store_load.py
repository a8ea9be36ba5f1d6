"""The PostgreSQL trace store under concurrent load, and its schema migrations on a database that
already holds data: what several tracing workers sharing one database would do."""
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from llmops.tracing.store import MIGRATIONS, SqlTraceStore, TraceQuery
from llmops.v1 import common_pb2

from tests.integration.test_trace_store import completion, score_event, span

pytestmark = pytest.mark.postgres

TRACES = 300
SPANS_PER_TRACE = 6
WRITERS = 6
HEAD = "0004"


def test_concurrent_writers_with_redeliveries_lose_and_duplicate_nothing(postgres_url):
    """Six writers (threads, each its own connection) store overlapping, shuffled batches of
    spans, completions, scores and feedback: every event twice or more, in any order, as
    redelivery and rebalancing across tracing workers would deliver them."""
    # lock waits behind the other writers may be long on a busy machine: the ingest retries one that
    # runs out (transient); here only a deadlock or a duplicate may fail the test
    store = SqlTraceStore(postgres_url, write_lock_timeout_s=120)
    tids = [f"{i:032x}" for i in range(1, TRACES + 1)]
    events = []
    for n, tid in enumerate(tids):
        base = 1_000_000 + n * 1000
        events += [("span", span(tid, f"{k + 1:016x}", f"s{k}", base + k, base + k + 10)) for k in range(SPANS_PER_TRACE)]
        events.append(("completion", completion(tid, base + 500)))
        events.append(("score", score_event(tid, "faithfulness", (n % 10) / 10, "rag.faithfulness.cheap")))
        events.append(("feedback", common_pb2.Feedback(id=f"fb-{tid}", trace_id=tid, score=n % 2)))
    rng = random.Random(7)
    deliveries = events * 2 + rng.sample(events, len(events) // 3)   # every event at least twice
    rng.shuffle(deliveries)
    batches = [deliveries[i:i + 97] for i in range(0, len(deliveries), 97)]
    errors: list[BaseException] = []
    lock = threading.Lock()

    def write(batch) -> None:
        kinds: dict[str, list] = {}
        for kind, ev in batch:
            kinds.setdefault(kind, []).append(ev)
        try:
            for kind, evs in kinds.items():
                {"span": store.write_spans, "completion": store.write_completions,
                 "score": store.write_scores, "feedback": store.write_feedback}[kind](evs)
        except BaseException as exc:   # a deadlock or a serialization failure would land here
            with lock:
                errors.append(exc)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, batches))
    assert not errors, errors[:3]

    with store.engine.connect() as conn:
        count = lambda table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
        assert count("spans") == TRACES * SPANS_PER_TRACE
        assert count("traces") == TRACES and count("scores") == TRACES and count("feedback") == TRACES
        # the per-trace span counter is added to concurrently: it must equal the distinct spans
        wrong = conn.execute(sa.text(
            "SELECT t.trace_id, t.span_count, count(s.span_id) FROM traces t JOIN spans s USING (trace_id) "
            "GROUP BY t.trace_id, t.span_count HAVING t.span_count <> count(s.span_id)")).all()
        assert wrong == []
    trace = store.get_trace(tids[42])
    assert len(trace.spans) == SPANS_PER_TRACE and trace.summary.span_count == SPANS_PER_TRACE
    assert [s.value for s in trace.scores] == [0.2] and len(trace.feedback) == 1
    assert trace.completion.answer == "a"
    page, token = store.list_traces(TraceQuery(page_size=50))
    assert len(page) == 50 and token
    store.close()


def test_upgrading_a_populated_database_keeps_its_traces_and_adds_cost(postgres_url):
    """A database at revision 0002 (before costs) with a trace in it is upgraded in place."""
    engine = sa.create_engine(postgres_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    with engine.begin() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns("traces")}
        assert "cost_usd" not in cols
        conn.execute(sa.text(
            "INSERT INTO traces (trace_id, start_us, end_us, latency_ms, model, session_id, user_id, prompt, answer,"
            " prompt_tokens, completion_tokens, prompt_template, prompt_version, finish_reason, metadata_json, status,"
            " span_count, has_completion, completion_pb) VALUES ('" + "e" * 32 + "', 1, 2, 1.0, 'm', '', '', 'q', 'a',"
            " 3, 4, '', 0, 'length', '{}', 0, 0, 1, '')"))
    engine.dispose()

    store = SqlTraceStore(postgres_url)   # migrates to head on open
    old = store.get_trace("e" * 32)
    assert old is not None and old.summary.usage.completion_tokens == 4
    assert not old.summary.usage.HasField("cost_usd")          # unpriced, not "free"
    priced = completion("f" * 32, 2_000_000)
    priced.usage.cost_usd = 0.00125
    store.write_completions([priced])
    assert store.get_trace("f" * 32).summary.usage.cost_usd == pytest.approx(0.00125)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    store.close()


def test_upgrading_to_served_by_keeps_old_traces_unrouted_and_stores_new_ones(postgres_url):
    """0004 adds how a request was served to a database that holds traces from before routes."""
    engine = sa.create_engine(postgres_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    with engine.begin() as conn:
        assert "deployment" not in {c["name"] for c in sa.inspect(conn).get_columns("traces")}
    engine.dispose()
    old_store = SqlTraceStore(postgres_url, run_migrations=False)
    with old_store.engine.begin() as conn:   # a row as 0003 wrote it (the columns it had then)
        conn.execute(sa.text(
            "INSERT INTO traces (trace_id, start_us, end_us, latency_ms, model, session_id, user_id, prompt, answer,"
            " prompt_tokens, completion_tokens, prompt_template, prompt_version, finish_reason, metadata_json, status,"
            " span_count, has_completion, completion_pb) VALUES ('" + "e" * 32 + "', 1, 2, 1.0, 'm', '', '', 'q',"
            " 'a', 3, 4, '', 0, 'length', '{\"app\": \"x\"}', 0, 0, 1, '')"))
    old_store.close()

    store = SqlTraceStore(postgres_url)   # migrates to head on open
    assert store.get_trace("e" * 32).summary.metadata == {"app": "x"}
    routed = completion("f" * 32, 2_000_000)
    routed.route, routed.deployment, routed.deployment_version, routed.arm = "chat", "smol", 3, "canary"
    store.write_completions([routed])
    assert store.get_trace("f" * 32).summary.metadata["llmops.deployment_version"] == "3"
    page, _ = store.list_traces(TraceQuery(deployment="smol", deployment_version=3))
    assert [t.trace_id for t in page] == ["f" * 32]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    store.close()
