"""Request fields outside what a store or a judge can take are refused with INVALID_ARGUMENT and
the limit: timestamps outside 1970..9999 (a start_time near 2**62 s overflowed the store's 64-bit
microseconds and answered INTERNAL), and more contexts than one Score or Compare may carry."""
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llmops.common.errors import InvalidArgument
from llmops.common.times import MAX_TS_SECONDS, request_ts_us
from llmops.judging.on_demand import MAX_CONTEXTS, MAX_TEXT, check_contexts
from llmops.v1 import drift_pb2, tracing_pb2


@pytest.mark.parametrize("make", [tracing_pb2.ListTracesRequest, drift_pb2.SetReferenceRequest])
def test_timestamps_outside_the_range_are_refused_with_the_range(make):
    assert request_ts_us(make(), "start_time") == 0                         # unset
    assert request_ts_us(make(start_time=Timestamp(seconds=5, nanos=7000)), "start_time") == 5_000_007
    assert request_ts_us(make(end_time=Timestamp(seconds=MAX_TS_SECONDS)), "end_time") == MAX_TS_SECONDS * 10**6
    for bad in (Timestamp(seconds=2**62), Timestamp(seconds=-1), Timestamp(seconds=MAX_TS_SECONDS + 1),
                Timestamp(seconds=1, nanos=-5), Timestamp(seconds=1, nanos=10**9)):
        with pytest.raises(InvalidArgument, match="start_time must be between 1970-01-01T00:00:00Z and 9999"):
            request_ts_us(make(start_time=bad), "start_time")


def test_contexts_are_bounded_in_count_and_size():
    check_contexts(["a context"] * MAX_CONTEXTS)
    with pytest.raises(InvalidArgument, match=f"contexts holds 5000 items; the limit is {MAX_CONTEXTS}"):
        check_contexts(["a context"] * 5000)
    with pytest.raises(InvalidArgument, match=r"contexts\[1\] is"):
        check_contexts(["ok", "x" * (MAX_TEXT + 1)])


def test_a_store_error_does_not_carry_the_sql_parameters(tmp_path):
    """An error's text reaches logs and dead-letter reasons: it must not hold the prompt or user id."""
    import sqlalchemy as sa

    from llmops.common.sql import SqlDialect

    sql = SqlDialect(f"sqlite:///{tmp_path / 'x.db'}")
    with sql.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, prompt TEXT NOT NULL)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, 'x')"))
    with pytest.raises(sa.exc.IntegrityError) as err:
        with sql.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (:id, :p)"), {"id": 1, "p": "alice@example.com card 4111"})
    assert "UNIQUE" in str(err.value) and "alice@example.com" not in str(err.value) + repr(err.value)
    sql.engine.dispose()


async def test_the_trace_pruner_cuts_at_the_retention_and_is_off_at_zero():
    import time

    from llmops.tracing.retention import TracePruner

    class Store:
        def __init__(self):
            self.cutoffs = []

        def prune(self, before_us):
            self.cutoffs.append(before_us)
            return {"traces": 1, "spans": 2, "scores": 0, "feedback": 0}

    store = Store()
    p = TracePruner(store, 30.0)
    assert await p.prune_once() == {"traces": 1, "spans": 2, "scores": 0, "feedback": 0}
    expected = time.time() * 1e6 - 30 * 86_400e6
    assert abs(store.cutoffs[0] - expected) < 5e6
    off = TracePruner(store, 0.0)
    await off.start()
    assert off._task is None
    await off.stop()
