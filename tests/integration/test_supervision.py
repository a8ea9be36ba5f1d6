"""``llmops up``'s supervisor on real processes and a real embedded broker: a SIGKILLed service is
restarted and SERVING again; a restarted broker (in memory: every topic and offset gone) gets its
topics back and traffic flows again; a service that keeps crashing makes the stack give up; and a
service stops within its shutdown budget even when the broker is gone."""
import asyncio
import os
import signal
import sqlite3
import time

from aiokafka.admin import AIOKafkaAdminClient

from llmops.cli.stack import Stack, free_port, health_status
from llmops.common.envelope import encode
from llmops.common.topics import TOPICS
from llmops.v1 import events_pb2
from tests.support import make_settings, produce, until

SERVICES = ("tracing", "drift")


def stack_settings(tmp_path, **overrides):
    # an embedded broker of its own (it is killed here), quick consumer-group joins
    return make_settings(tmp_path / "data", "", kafka_embedded_port=free_port(), judge_backend="none",
                         kafka_session_timeout_ms=6000, shutdown_grace_s=6.0, topic_partitions=2, **overrides)




async def all_serving(s, names) -> bool:
    return all([await health_status(s.grpc_target(n), 1.0) == "SERVING" for n in names])


def span(trace_id: str) -> tuple[bytes, bytes, list]:
    ev = events_pb2.SpanEvent(trace_id=trace_id, span_id=trace_id[:16], name="after-the-fault", service="test")
    ev.start_time.GetCurrentTime()
    ev.end_time.GetCurrentTime()
    value, headers = encode(ev)
    return trace_id.encode(), value, headers


def stored(s, trace_id: str) -> bool:
    db = s.data_dir / "traces.db"
    if not db.exists():
        return False
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT 1 FROM spans WHERE trace_id = ?", (trace_id,)).fetchone() is not None
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


async def partitions(s) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    await admin.start()
    try:
        # only topics that exist: a metadata request naming a missing topic would create it
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([t for t in (s.topic(n) for n in TOPICS) if t in existing])
        return {d["topic"]: len(d["partitions"]) for d in described if d["error_code"] == 0}
    finally:
        await admin.close()


def test_killed_service_and_restarted_broker_come_back_and_traffic_flows(tmp_path):
    s = stack_settings(tmp_path)
    lines: list[str] = []
    stack = Stack(s, services=SERVICES, on_progress=lines.append)
    measured: dict[str, float] = {}

    async def main() -> None:
        try:
            await phases()
        finally:   # whatever failed, no process is left behind
            await stack.stop()

    async def phases() -> None:
        await stack.start()
        stop = asyncio.Event()
        supervisor = asyncio.create_task(stack.watch(stop))
        try:
            # 1. SIGKILL a service: restarted with backoff, SERVING again
            t0 = time.monotonic()
            os.killpg(stack.procs["tracing"].proc.pid, signal.SIGKILL)
            await until(lambda: _recovered(stack, "tracing"), 60, "tracing restarted and SERVING")
            measured["service kill -> SERVING"] = time.monotonic() - t0
            assert any("service 'tracing' exited with code -9: restarting it in 1s (restart #1" in ln for ln in lines)

            # 2. SIGKILL the broker: it comes back on its port, empty; topics are created again with their
            # partition counts, every service is SERVING again, and an event sent afterwards is consumed
            t0 = time.monotonic()
            stack.broker.proc.send_signal(signal.SIGKILL)
            await until(lambda: _broker_back(stack), 30, "the broker restarted")
            await until(lambda: _topics_back(s), 30, "the topics created again")
            counts = await partitions(s)
            assert counts.pop(s.topic("config")) == 1 and set(counts.values()) == {2}, counts
            # the services' consumers rejoin the reset broker in place (drift's join keeps its open
            # entries in its store, not in a faust changelog): none exits
            broker_exit = lines.index(next(ln for ln in lines if "Kafka broker exited" in ln))
            await until(lambda: all_serving(s, SERVICES), 60, "every service SERVING after the broker restart")
            measured["broker restart -> all SERVING"] = time.monotonic() - t0
            tid = os.urandom(16).hex()
            await asyncio.to_thread(produce, s.bootstrap_servers, s.topic("spans"), [span(tid)])
            await until(lambda: asyncio.to_thread(stored, s, tid), 60, "a span sent after the restart stored")
            measured["broker restart -> span stored"] = time.monotonic() - t0
            await until(lambda: all_serving(s, SERVICES), 30, "every service SERVING")
            assert not [ln for ln in lines[broker_exit:] if "exited with code" in ln and "service '" in ln], lines
        finally:
            stop.set()
            assert await supervisor is None
        # 3. the broker gone for good: each service still stops within its budget, without SIGKILL
        stack.broker.proc.send_signal(signal.SIGKILL)
        stack.broker.proc.wait()
        await asyncio.sleep(1.0)   # let the services notice
        t0 = time.monotonic()
        await stack.stop()
        measured["stop with the broker gone"] = time.monotonic() - t0

    asyncio.run(main())
    print(measured, "\n".join(lines))
    assert not any("did not stop within" in ln for ln in lines), lines
    assert measured["stop with the broker gone"] < s.shutdown_grace_s + 3
    for name in SERVICES:
        assert stack.procs[name].proc.returncode == 0, (name, stack.procs[name].log_tail())


def test_a_service_that_keeps_crashing_makes_the_stack_give_up(tmp_path):
    s = stack_settings(tmp_path, restart_max_failures=3, restart_window_s=60)
    lines: list[str] = []
    stack = Stack(s, services=("tracing",), on_progress=lines.append)

    async def main() -> str | None:
        stop = asyncio.Event()
        killed: set[int] = set()
        try:
            await stack.start()
            supervisor = asyncio.create_task(stack.watch(stop))
            while not supervisor.done():     # every process it starts dies at once
                proc = stack.procs["tracing"].proc
                if proc.pid not in killed and proc.poll() is None:
                    killed.add(proc.pid)
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.wait([supervisor], timeout=0.1)
            return supervisor.result()
        finally:
            stop.set()
            await stack.stop()

    report = asyncio.run(main())
    assert report and "service 'tracing' exited 3 times within 60s (last exit code -9): giving up" in report
    assert "--- last lines of" in report
    assert [ln for ln in lines if "restarting it in" in ln][:2] == [
        ln for ln in lines if "restarting it in 1s" in ln or "restarting it in 2s" in ln][:2]


async def _recovered(stack: Stack, name: str) -> bool:
    return any(n == name for n, _ in stack.recoveries) and await health_status(
        stack.settings.grpc_target(name), 1.0) == "SERVING"


async def _broker_back(stack: Stack) -> bool:
    return any(n == "broker" for n, _ in stack.recoveries)


async def _topics_back(s) -> bool:
    try:
        got = await partitions(s)
    except Exception:   # noqa: BLE001 - the broker still starting
        return False
    return len(got) == len(TOPICS)
