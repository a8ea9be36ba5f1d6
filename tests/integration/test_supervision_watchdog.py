"""The runtime's health watchdog, on a real gRPC server and broker: a consumer that is retrying
makes the service NOT_SERVING while it lasts; a dead or stuck one (or a crashed faust agent)
makes it NOT_SERVING and ends the process with its own exit code."""
import asyncio
import time

from llmops.cli.stack import health_status
from llmops.common.liveness import ConsumerProgress
from llmops.common.runtime import ServiceParts, run_service, streaming_parts
from llmops.common.watchdog import EXIT_CONSUMER_DEAD, EXIT_CONSUMER_STALLED

from tests.support import make_settings, produce, until


def plain_parts(progress: list[ConsumerProgress]):
    async def build(settings) -> ServiceParts:
        ready = asyncio.Event()

        async def start() -> None:
            for p in progress:
                p.joined()
            ready.set()

        async def stop() -> None:
            return None

        return ServiceParts(lambda s: None, [], start, stop, ready, progress=progress)

    return build




def test_retrying_is_not_serving_until_it_recovers_and_a_dead_consumer_exits_non_zero(tmp_path, kafka):
    s = make_settings(tmp_path, kafka)
    target = s.grpc_target("tracing")
    ingest = ConsumerProgress("ingest")

    async def main() -> int:
        svc = asyncio.create_task(run_service("tracing", s, plain_parts([ingest])))
        await until(lambda: _is(target, "SERVING"), 30, "SERVING")
        ingest.retrying("the trace store is away")
        await until(lambda: _is(target, "NOT_SERVING"), 5, "NOT_SERVING while retrying")
        assert not svc.done()
        ingest.progressed(10)
        await until(lambda: _is(target, "SERVING"), 5, "SERVING again after the retry succeeded")
        ingest.died("the DLQ send failed")
        code = await asyncio.wait_for(svc, 20)
        return code

    t0 = time.monotonic()
    assert asyncio.run(main()) == EXIT_CONSUMER_DEAD
    assert time.monotonic() - t0 < 40


def test_a_consumer_with_work_and_no_progress_for_the_stall_limit_exits(tmp_path, kafka):
    s = make_settings(tmp_path, kafka, consumer_stall_s=2.0)
    stuck = ConsumerProgress("stuck")

    async def main() -> tuple[int, float]:
        svc = asyncio.create_task(run_service("drift", s, plain_parts([stuck])))
        await until(lambda: _is(s.grpc_target("drift"), "SERVING"), 30, "SERVING")
        stuck.fetched(7)          # a batch in hand that is never committed
        t = time.monotonic()
        code = await asyncio.wait_for(svc, 30)
        return code, time.monotonic() - t

    code, took = asyncio.run(main())
    assert code == EXIT_CONSUMER_STALLED and 1.5 < took < 15


def test_a_faust_agent_that_raises_makes_its_service_exit(tmp_path, kafka):
    from llmops.common.bus import EventBus
    from llmops.common.stream import make_app

    s = make_settings(tmp_path, kafka, kafka_session_timeout_ms=6000)
    topic = s.topic("feedback")

    async def build(settings) -> ServiceParts:
        app = make_app(settings, "crashy")
        channel = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

        @app.agent(channel, name="crashy")
        async def crashy(stream):
            async for _ in stream:
                raise RuntimeError("a bug in the agent")

        return streaming_parts(settings, EventBus(settings), app, lambda srv: None, [])

    async def main() -> int:
        svc = asyncio.create_task(run_service("judging", s, build))
        await until(lambda: _is(s.grpc_target("judging"), "SERVING"), 60, "SERVING")
        await asyncio.to_thread(produce, kafka, topic, [(b"k", b"v", [])])
        return await asyncio.wait_for(svc, 30)

    assert asyncio.run(main()) == EXIT_CONSUMER_DEAD


async def _is(target: str, state: str) -> bool:
    return await health_status(target, 1.0) == state


def test_a_group_whose_committed_offsets_stand_still_behind_lag_is_stuck(tmp_path, kafka):
    """Seen from outside the consumer: the lag monitor's committed-offset view (whatever the consumer
    reports, or when it reports nothing) ends a service whose group has lag and commits nothing."""
    from llmops.common.bus import EventBus
    from llmops.common.lag import LagMonitor
    from llmops.common.topics import ensure_topics

    s = make_settings(tmp_path, kafka, consumer_stall_s=3.0)
    topic = s.topic("feedback")
    asyncio.run(ensure_topics(s))
    produce(kafka, topic, [(b"k%d" % i, b"v", []) for i in range(5)])   # a group that never commits them

    async def build(settings) -> ServiceParts:
        lag = LagMonitor(settings, {f"{settings.topic_prefix}nobody-reads": [topic]}, interval_s=0.5)
        return streaming_parts(settings, EventBus(settings), [], lambda srv: None, [], companions=[lag])

    async def main() -> tuple[int, float]:
        svc = asyncio.create_task(run_service("retrieval", s, build))
        await until(lambda: _is(s.grpc_target("retrieval"), "SERVING"), 30, "SERVING")
        t = time.monotonic()
        return await asyncio.wait_for(svc, 30), time.monotonic() - t

    code, took = asyncio.run(main())
    assert code == EXIT_CONSUMER_STALLED and took < 15
