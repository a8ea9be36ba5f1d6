"""Generate on the real event bus and broker: a request's spans and its CompletionEvent reach Kafka
as one unit (all of them or none, also when the buffer is full), and a request its events could
never carry (a 2 MB metadata value) is refused at both doors, gRPC and OpenAI, with
INVALID_ARGUMENT / 400 naming the field and the limit, before anything runs or is published.
The model is a small fake backend (the llama backend would add nothing here but minutes)."""
import asyncio
import json
from collections import defaultdict

import aiohttp
import grpc

from llmops.backends.protocol import Generation, ModelLimits, TokenOut
from llmops.common.bus import EventBus
from llmops.common.http import HttpDoor
from llmops.common.server import GrpcServer
from llmops.common.topics import ensure_topics
from llmops.inference.api import InferenceServicer
from llmops.inference.engine import GenerateInput, InferenceEngine
from llmops.inference.gateway import OpenAIGateway
from llmops.inference.prompts import PromptRegistry
from llmops.inference.router import Router
from llmops.v1 import events_pb2, inference_pb2, inference_pb2_grpc
from tests.support import consume_until, free_port, make_settings


class EchoBackend:
    name, kind = "echo", "llama_cpp"

    def limits(self):
        return ModelLimits(1000, 2000)

    def render_chat(self, messages):
        return "\n".join(f"{m.role}: {m.content}" for m in messages)

    def count_tokens(self, text):
        return len(text.split())

    async def generate(self, prompt, params):
        return Generation("hello there", "eos_token", self.count_tokens(prompt), 2)

    async def generate_stream(self, prompt, params):
        yield TokenOut(0, "hello")
        yield await self.generate(prompt, params)

    def close(self):
        pass


def engine_on(bus, tmp_path) -> InferenceEngine:
    return InferenceEngine(Router.of_backends({"echo": EchoBackend()}, "echo"), PromptRegistry(tmp_path / "p.db"),
                           None, bus, bus.settings.topic_prefix)


def events_by_trace(kafka, s, spans: int, completions: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for topic, cls, n in ((s.topic("spans"), events_pb2.SpanEvent, spans),
                          (s.topic("completions"), events_pb2.CompletionEvent, completions)):
        if n:
            for m in consume_until(kafka, topic, lambda got, n=n: len(got) >= n, what=f"{n} events"):
                out[cls.FromString(m.value).trace_id].append(cls.__name__)
    return out


def test_each_request_reaches_kafka_whole_or_not_at_all_even_with_a_full_buffer(kafka, tmp_path):
    s = make_settings(tmp_path, kafka, publish_queue_size=10)   # room for two requests of 4 events and a bit

    async def run():
        await ensure_topics(s)
        bus = EventBus(s)
        await bus.start()
        engine = engine_on(bus, tmp_path)
        results = await asyncio.gather(*(engine.generate(GenerateInput(prompt=f"q{i}")) for i in range(12)))
        await bus.flush()
        await bus.stop()
        return [r.trace_id for r in results], bus.stats

    trace_ids, stats = asyncio.run(run())
    assert stats.units_published + stats.units_undelivered == 12
    assert stats.units_published >= 2 and stats.units_undelivered >= 1   # the buffer did fill
    assert set(stats.undelivered_by_reason) <= {"buffer_full"}
    assert stats.published == 4 * stats.units_published   # generate, prompt, generation + the completion
    assert stats.undelivered == 4 * stats.units_undelivered
    got = events_by_trace(kafka, s, 3 * stats.units_published, stats.units_published)
    assert len(got) == stats.units_published and set(got) <= set(trace_ids)
    assert all(sorted(v) == ["CompletionEvent", "SpanEvent", "SpanEvent", "SpanEvent"] for v in got.values())


def test_a_2_mb_metadata_value_is_refused_at_both_doors_and_nothing_is_published(kafka, tmp_path):
    s = make_settings(tmp_path, kafka)
    blob = "x" * (2 * 1024 * 1024)

    async def run():
        await ensure_topics(s)
        bus = EventBus(s)
        await bus.start()
        engine = engine_on(bus, tmp_path)
        server = GrpcServer("inference", s, [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name])
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(engine, engine.prompts, 16), server.server)
        port = server.bind(free_port())
        await server.start()
        door = HttpDoor("gateway", OpenAIGateway(engine, 16, 8 * 1024 * 1024, 4).app(), "127.0.0.1", free_port())
        await door.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
                    ("grpc.max_send_message_length", 64 * 1024 * 1024)]) as ch:
                stub = inference_pb2_grpc.InferenceServiceStub(ch)
                req = inference_pb2.GenerateRequest(prompt="hi", metadata={"blob": blob})
                try:
                    await stub.Generate(req, timeout=30)
                    grpc_error = None
                except grpc.aio.AioRpcError as exc:
                    grpc_error = (exc.code(), exc.details())
                ok = await stub.Generate(inference_pb2.GenerateRequest(prompt="hi", metadata={"app": "t"}), timeout=30)
            async with aiohttp.ClientSession() as http:
                body = {"messages": [{"role": "user", "content": "hi"}], "metadata": {"blob": blob}}
                async with http.post(f"http://127.0.0.1:{door.port}/v1/chat/completions", json=body) as r:
                    http_error = (r.status, json.loads(await r.read())["error"])
            await bus.flush()
        finally:
            await door.stop()
            await server.server.stop(None)
            await bus.stop()
        return grpc_error, ok.trace_id, http_error, bus.stats

    grpc_error, ok_trace, http_error, stats = asyncio.run(run())
    code, details = grpc_error
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata['blob']" in details and "at most 4096 characters" in details
    status, err = http_error
    assert status == 400 and err["param"] == "metadata.blob" and "4096" in err["message"]
    assert (stats.units_published, stats.units_undelivered) == (1, 0)   # only the good request was published
    got = events_by_trace(kafka, s, 3, 1)
    assert set(got) == {ok_trace}
