"""A service's start on a real broker and gRPC server: what the composition root loads in the
background (a model) is loaded while the consumer group is joined, and the service is SERVING
only once both are done (joined and able to consume), with the phases of its start reported
(``llmops_service_startup_seconds``)."""
import asyncio

from llmops.cli.stack import health_status
from llmops.common import metrics
from llmops.common.bus import EventBus
from llmops.common.runtime import ServiceParts, run_service, streaming_parts
from llmops.common.stream import make_app

from tests.support import make_settings, until




def test_serving_waits_for_the_join_and_for_what_loads_alongside_it(tmp_path, kafka):
    s = make_settings(tmp_path, kafka, kafka_session_timeout_ms=6000)
    target = s.grpc_target("retrieval")
    seen: dict = {}

    async def main() -> None:
        model = asyncio.Event()
        load_began = asyncio.Event()

        async def load() -> None:   # a model loading in its own thread, as the embedder does
            seen["joined when the load began"] = joined()
            load_began.set()
            await model.wait()

        def joined() -> bool:
            return any(p.name.startswith("faust:") and p.state == "ok" for p in seen["parts"].progress)

        async def build(settings) -> ServiceParts:
            app = make_app(settings, "startup")
            app.topic(settings.topic("documents"))
            parts = streaming_parts(settings, EventBus(settings), app, lambda srv: None, [], loading=[load])
            seen["parts"] = parts
            return parts

        stop = asyncio.Event()
        svc = asyncio.create_task(run_service("retrieval", s, build, stop))
        await until(lambda: _now(load_began.is_set()), 30, "the load to begin")
        # the faust app joins its group while the model loads ...
        await until(lambda: _now(joined()), 60, "the group join")
        assert seen["joined when the load began"] is False
        # ... and the service is not SERVING until the model is there too
        assert await health_status(target, 1.0) == "NOT_SERVING"
        await asyncio.sleep(1.0)
        assert await health_status(target, 1.0) == "NOT_SERVING"
        model.set()
        await until(lambda: _is(target, "SERVING"), 10, "SERVING once the model is loaded")
        stop.set()
        assert await asyncio.wait_for(svc, 60) == 0

    asyncio.run(main())
    phases = {smp.labels["phase"]: smp.value for fam in metrics.REGISTRY.collect()
              for smp in fam.samples if smp.name == "llmops_service_startup_seconds"
              and smp.labels["service"] == "retrieval"}
    assert {"build", "group join", "models (alongside the join)", "total"} <= set(phases)
    # the load was waited for from the start, alongside the join: it took at least as long as the join
    assert phases["models (alongside the join)"] >= phases["group join"]
    assert phases["total"] >= phases["models (alongside the join)"]


async def _now(value: bool) -> bool:
    return value


async def _is(target: str, state: str) -> bool:
    return await health_status(target, 1.0) == state


def test_a_killed_service_under_llmops_up_takes_its_own_place_in_its_group(tmp_path):
    """Static membership: the restarted process rejoins as the member that died (its name is the
    service's), so it neither joins beside it nor waits for its session to run out."""
    from aiokafka.admin import AIOKafkaAdminClient

    from llmops.cli.stack import Stack, free_port

    s = make_settings(tmp_path / "data", "", kafka_embedded_port=free_port(), judge_backend="none",
                      shutdown_grace_s=6.0, topic_partitions=1)
    lines: list[str] = []
    stack = Stack(s, services=("retrieval",), on_progress=lines.append)
    group = f"{s.topic_prefix}retrieval"

    async def members() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
        await admin.start()
        try:
            described = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
        return [m[0] for g in described for m in g.groups[0][5]] if described else []

    async def main() -> tuple[list[str], list[str]]:
        await stack.start(timeout_s=180)
        stop = asyncio.Event()
        watch = asyncio.create_task(stack.watch(stop))
        try:
            before = await until(members, 30, "a member in the group")
            pid = stack.procs["retrieval"].proc.pid
            import os
            import signal
            os.killpg(pid, signal.SIGKILL)
            await until(lambda: _now(any(n == "retrieval" for n, _ in stack.recoveries)), 120, "SERVING again")
            assert stack.procs["retrieval"].proc.pid != pid
            return before, await members()
        finally:
            stop.set()
            await watch
            await stack.stop()

    before, after = asyncio.run(main())
    assert len(before) == 1 and before[0].startswith("llmops-up-retrieval-"), before
    assert len(after) == 1 and after[0].startswith("llmops-up-retrieval-"), after
    assert any("retrieval is SERVING again" in ln for ln in lines), lines
