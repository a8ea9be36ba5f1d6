"""A request answered is a request recorded: ``llmops serve inference`` (a real process, the
packaged model, a real embedded broker) answers Generate only once the broker acknowledged the
request's spans and completion (``LLMOPS_PUBLISH_ACK_WAIT_S``). SIGKILLed the instant the last
answer arrives, it has lost none of them (before: the answer came first and the events waited in
the publish buffer, so the chaos bench lost the last requests' completions and spans at each
SIGKILL of inference)."""
import asyncio
import os
import signal

import grpc

from llmops.cli.stack import Stack, free_port
from llmops.common.topics import ensure_topics
from llmops.v1 import inference_pb2, inference_pb2_grpc
from tests.support import consume_until, make_settings

REQUESTS = 12


def test_what_generate_answered_survives_a_sigkill_right_after(tmp_path):
    s = make_settings(tmp_path / "data", "", kafka_embedded_port=free_port(), judge_backend="none",
                      kafka_session_timeout_ms=6000, shutdown_grace_s=6.0, publish_ack_wait_s=5.0)
    stack = Stack(s, services=("inference",), on_progress=lambda _m: None)
    answered: list[str] = []

    async def main() -> None:
        await stack.start()
        try:
            await ensure_topics(s)
            async with grpc.aio.insecure_channel(s.grpc_target("inference")) as ch:
                stub = inference_pb2_grpc.InferenceServiceStub(ch)
                for i in range(REQUESTS):
                    req = inference_pb2.GenerateRequest(prompt=f"Name a Python keyword ({i}).")
                    req.parameters.max_new_tokens = 4
                    if i % 2:   # the streaming door too: its last message is the answer
                        last = None
                        async for last in stub.GenerateStream(req, timeout=60):
                            pass
                        answered.append(last.trace_id)
                    else:
                        answered.append((await stub.Generate(req, timeout=60)).trace_id)
            os.killpg(stack.procs["inference"].proc.pid, signal.SIGKILL)   # the instant the last answer came
            await asyncio.to_thread(stack.procs["inference"].proc.wait, 10)
            # the broker (in memory) outlives inference until the stack stops: what it holds now is all
            # there will ever be of these requests
            want = set(answered)
            completions = await asyncio.to_thread(
                consume_until, s.bootstrap_servers, s.topic("completions"),
                lambda out: want <= {m.key.decode() for m in out}, 30.0, "every answered request's completion")
            spans = await asyncio.to_thread(
                consume_until, s.bootstrap_servers, s.topic("spans"),
                lambda out: want <= {m.key.decode() for m in out}, 30.0, "every answered request's spans")
            got["completions"] = {m.key.decode() for m in completions}
            got["span traces"] = {m.key.decode() for m in spans}
        finally:
            await stack.stop()

    got: dict[str, set] = {}
    asyncio.run(main())
    assert len(set(answered)) == REQUESTS and all(answered)
    assert stack.procs["inference"].proc.returncode == -signal.SIGKILL
    assert set(answered) <= got["completions"] and set(answered) <= got["span traces"]
