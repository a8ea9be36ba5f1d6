"""A broker restart under sustained traffic: the embedded broker (in memory) is SIGKILLed while an
outside producer writes completions at about 20 a second. The services rejoin the restarted
broker in place (no exit, no restart): drift keeps the open entries of its late join (they are in
the drift store) and stores what is sent afterwards; judging scores again.

Before, drift's join was a faust table whose changelog went with the broker: drift exited to
rebuild it, and once hung for good in faust's table recovery (the old process's producer drained
changelog records buffered during the outage to the new broker before the topic existed there;
see TopicKeeper._repair)."""
import asyncio
import random
import signal
import sqlite3
import time

from aiokafka import AIOKafkaProducer
from aiokafka.protocol import metadata
from llmops.cli.stack import Stack, free_port, health_status
from llmops.cli.workloads import synthetic_completion
from llmops.common.envelope import encode
from llmops.common.kafka import refuse_topic_auto_creation

from tests.support import consume, make_settings, until

SERVICES = ("tracing", "drift")
RATE_PER_S = 20


def stack_settings(tmp_path, drift_join_wait_s: float = 1.0):
    return make_settings(tmp_path / "data", "", kafka_embedded_port=free_port(), judge_backend="none",
                         kafka_session_timeout_ms=6000, shutdown_grace_s=6.0, topic_partitions=2,
                         drift_join_wait_s=drift_join_wait_s, drift_window_size=100)


def drift_has(s, trace_ids: set[str]) -> set[str]:
    """The trace ids of ``trace_ids`` that drift stored as observations."""
    db = s.data_dir / "drift.db"
    if not db.exists() or not trace_ids:
        return set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        marks = ",".join("?" * len(trace_ids))
        rows = con.execute(f"SELECT trace_id FROM drift_observations WHERE trace_id IN ({marks})",
                           tuple(trace_ids)).fetchall()
        return {r[0] for r in rows}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


class Traffic:
    """Completions at ``rate`` a second to the completions topic, through a broker that goes away
    and comes back; ``sent_after(t)``: the trace ids acknowledged after monotonic time ``t``."""

    def __init__(self, s, rate: float) -> None:
        self.s, self.rate = s, rate
        self.acked: list[tuple[float, str]] = []
        self.failed = 0
        self._rng = random.Random(7)

    async def run(self, stop: asyncio.Event) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.s.bootstrap_servers, enable_idempotence=False,
                                    acks="all", request_timeout_ms=5000)
        await producer.start()
        try:
            n = 0
            t0 = time.monotonic()
            pending: set[asyncio.Task] = set()
            while not stop.is_set():
                n += 1
                ev = synthetic_completion(f"question {n} about the handbook, section {n % 37}", self._rng)
                value, headers = encode(ev)
                pending.add(asyncio.create_task(self._send(producer, ev.trace_id, value, headers)))
                pending = {t for t in pending if not t.done()}
                await asyncio.sleep(max(0.0, t0 + n / self.rate - time.monotonic()))
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            await producer.stop()

    async def _send(self, producer, trace_id: str, value: bytes, headers) -> None:
        try:
            fut = await producer.send(self.s.topic("completions"), value, key=trace_id.encode(), headers=headers)
            await asyncio.wait_for(fut, 20)
            self.acked.append((time.monotonic(), trace_id))
        except Exception:   # noqa: BLE001 - the broker away: counted, not retried
            self.failed += 1

    def sent_after(self, t: float) -> set[str]:
        return {tid for at, tid in self.acked if at > t}


def run_under_traffic(stack: Stack, body) -> None:
    """Start ``stack`` and its supervisor, send completions at RATE_PER_S, and await
    ``body(traffic, sending)``; then stop the traffic, the supervisor (it must not have given up)
    and the stack, and give this process's clients back their metadata requests as they were."""
    init = metadata.MetadataRequest.__init__
    refuse_topic_auto_creation()   # as the services do: no client of this process re-creates a topic by accident

    async def main() -> None:
        try:
            await stack.start()
            stop, stop_traffic = asyncio.Event(), asyncio.Event()
            supervisor = asyncio.create_task(stack.watch(stop))
            traffic = Traffic(stack.settings, RATE_PER_S)
            sending = asyncio.create_task(traffic.run(stop_traffic))
            try:
                await body(traffic, sending)
            finally:
                stop_traffic.set()
                await asyncio.gather(sending, return_exceptions=True)
                stop.set()
                assert await supervisor is None
        finally:
            await stack.stop()

    try:
        asyncio.run(main())
    finally:
        metadata.MetadataRequest.__init__ = init


def test_drift_rejoins_a_restarted_broker_in_place_and_keeps_its_open_join(tmp_path):
    """Drift's late join keeps its open entries in the drift store, not in a changelog on the
    broker: the completions drift had consumed but not yet closed when the broker died (they wait
    ``drift_join_wait_s`` for their scores) are stored after the broker's restart, and drift rejoins
    the new broker in place (no exit) and stores what is sent afterwards. With the join in a faust
    table, the broker took those entries with it and drift had to exit to rebuild the table."""
    s = stack_settings(tmp_path, drift_join_wait_s=6.0)
    lines: list[str] = []
    stack = Stack(s, services=SERVICES, on_progress=lines.append)
    measured: dict[str, float] = {}

    async def phases(traffic: Traffic, sending: asyncio.Task) -> None:
        t_start = time.monotonic()
        # drift consumes and closes the traffic before the fault
        await until(lambda: asyncio.to_thread(lambda: bool(drift_has(s, traffic.sent_after(t_start)))), 90,
                    "drift storing completions before the fault", lines)
        await asyncio.sleep(4)   # steady traffic: the last seconds of it wait in the join for their scores
        t_kill = time.monotonic()
        open_at_kill = {tid for at, tid in traffic.acked if t_kill - 6.0 < at < t_kill - 2.0}
        assert open_at_kill and not drift_has(s, open_at_kill), "these should still wait in the join"
        stack.broker.proc.send_signal(signal.SIGKILL)
        await until(lambda: _broker_back(lines), 30, "the broker back", lines)
        t_back = time.monotonic()
        # consumed (acknowledged 2 s or more before the kill), open in the join when the broker died: all stored
        await until(lambda: asyncio.to_thread(lambda: drift_has(s, open_at_kill) == open_at_kill), 60,
                    f"the {len(open_at_kill)} completions open in drift's join at the kill stored", lines)
        measured["broker back -> open join stored"] = time.monotonic() - t_back
        await until(lambda: asyncio.to_thread(lambda: bool(drift_has(s, traffic.sent_after(t_back + 2)))), 90,
                    "a completion sent after the broker came back stored by drift", lines)
        measured["broker back -> storing new traffic"] = time.monotonic() - t_back
        assert not any("service 'drift' exited" in ln for ln in lines), lines
        assert not sending.done(), sending

    run_under_traffic(stack, phases)
    print(measured, "\n".join(lines))


async def _exited(lines: list[str], name: str) -> bool:
    return any(f"service '{name}' exited with code" in ln for ln in lines)


async def _serving_again(stack: Stack, name: str) -> bool:
    return any(n == name for n, _ in stack.recoveries) and await health_status(
        stack.settings.grpc_target(name), 1.0) == "SERVING"


def scored(s, trace_ids: set[str]) -> set[str]:
    """The trace ids of ``trace_ids`` that have a score on the scores topic."""
    if not trace_ids:
        return set()
    return {m.key.decode() for m in consume(s.bootstrap_servers, s.topic("scores"), want=10**9, timeout_s=3)
            if m.key and m.key.decode() in trace_ids}


def test_judging_rejoins_a_restarted_broker_in_place_and_scores_again(tmp_path):
    """A stateless faust service (judging) outlives a broker reset: it rejoins its group on the new
    broker as it is (no exit, no restart) and scores what is sent afterwards. Under ``llmops up``
    it joins as a static member (LLMOPS_KAFKA_GROUP_INSTANCE_ID), which must not keep it out of the
    reset broker's group."""
    s = stack_settings(tmp_path)
    lines: list[str] = []
    stack = Stack(s, services=("judging",), on_progress=lines.append)

    async def phases(traffic: Traffic, _sending: asyncio.Task) -> None:
        t_start = time.monotonic()
        await until(lambda: asyncio.to_thread(lambda: bool(scored(s, traffic.sent_after(t_start)))), 60,
                    "judging scoring completions before the fault", lines)
        stack.broker.proc.send_signal(signal.SIGKILL)
        await until(lambda: _broker_back(lines), 30, "the broker back", lines)
        t_back = time.monotonic()
        await until(lambda: asyncio.to_thread(lambda: bool(scored(s, traffic.sent_after(t_back + 2)))), 90,
                    "a completion sent after the broker came back scored", lines)
        assert not any("service 'judging' exited" in ln for ln in lines), lines

    run_under_traffic(stack, phases)


async def _broker_back(lines: list[str]) -> bool:
    return any("broker is back" in ln for ln in lines)
