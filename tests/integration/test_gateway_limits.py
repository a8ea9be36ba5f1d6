"""The gateway's edges that a real model makes hard to reach on cue: a full house (429), a client
that leaves mid-stream, an unavailable dependency (503), a failure mid-stream and a bug (500).
The real gateway and engine on a real port, driven by curl; the model is a backend whose tokens
the test releases, and the events land in a list."""
import asyncio
import subprocess
import threading

import pytest

from llmops.backends.protocol import Generation, ModelLimits, TokenOut
from llmops.common.errors import Unavailable
from llmops.common.http import HttpDoor
from llmops.inference.engine import InferenceEngine
from llmops.inference.router import Router
from llmops.inference.gateway import OpenAIGateway
from llmops.inference.prompts import PromptRegistry
from llmops.v1 import common_pb2, events_pb2
from tests.support import free_port, wait_until


class GatedBackend:
    """Streams ``tokens``: the first at once, each later one when the test releases it.
    A prompt containing ``FAIL-LATE`` fails after the first token, ``BUG`` fails at once."""
    name, kind = "gated", "llama_cpp"

    def __init__(self, tokens=("Hel", "lo", "!")) -> None:
        self.tokens = tokens
        self.released = threading.Semaphore(0)
        self.started = 0
        self.emitted = 0

    def limits(self):
        return ModelLimits(1000, 2000)

    def render_chat(self, messages):
        return "\n".join(f"{m.role}: {m.content}" for m in messages)

    def count_tokens(self, text):
        return len(text.split())

    async def generate(self, prompt, params):
        out = None
        async for item in self.generate_stream(prompt, params):
            out = item
        return out

    async def generate_stream(self, prompt, params):
        self.started += 1
        if "BUG" in prompt:
            raise RuntimeError("a bug in the backend")
        for i, t in enumerate(self.tokens):
            if i:
                while not self.released.acquire(blocking=False):
                    await asyncio.sleep(0.005)
            if i and "FAIL-LATE" in prompt:
                raise Unavailable("the model server went away")
            self.emitted += 1
            yield TokenOut(i, t)
        yield Generation("".join(self.tokens), "eos_token", self.count_tokens(prompt), len(self.tokens))

    def close(self):
        pass


class ListPublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def publish(self, topic, key, message, traceparent=""):
        self.events.append((topic, message))
        return True

    def publish_unit(self, events):
        self.events.extend((topic, message) for topic, _, message, _ in events)
        return True

    async def send_many(self, messages):
        raise NotImplementedError


class DownRetrieval:
    async def search(self, *args, **kwargs):
        raise Unavailable("retrieval service at 127.0.0.1:1 is unavailable: UNAVAILABLE")


@pytest.fixture
def gateway(tmp_path):
    backend, publisher = GatedBackend(), ListPublisher()
    engine = InferenceEngine(Router.of_backends({"gated": backend}, "gated"), PromptRegistry(tmp_path / "prompts.db"), DownRetrieval(),
                             publisher)
    door = HttpDoor("test gateway", OpenAIGateway(engine, 16, 64 * 1024, max_concurrent=1).app(), "127.0.0.1",
                    free_port())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(door.start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{door.port}", backend, publisher
    finally:
        for _ in range(10):
            backend.released.release()
        asyncio.run_coroutine_threadsafe(door.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def curl_args(url: str, content: str, stream: bool = False, **extra) -> list[str]:
    import json

    body = json.dumps({"messages": [{"role": "user", "content": content}], "stream": stream, **extra})
    return ["curl", "-sS", "-N", "--noproxy", "*", "-D", "-", "-H", "content-type: application/json",
            "-d", body, f"{url}/v1/chat/completions"]


def run_curl(url, content, **kw) -> tuple[int, dict, str]:
    out = subprocess.run(curl_args(url, content, **kw), capture_output=True, text=True, timeout=60).stdout
    head, _, body = out.partition("\n\n")   # text mode reads CRLF as LF
    lines = head.splitlines()
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def spans_of(publisher: ListPublisher, trace_id: str) -> list[events_pb2.SpanEvent]:
    return [m for t, m in publisher.events if isinstance(m, events_pb2.SpanEvent) and m.trace_id == trace_id]


def test_a_full_house_gets_429_with_retry_after(gateway):
    url, backend, publisher = gateway
    first = subprocess.Popen(curl_args(url, "hi"), stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: backend.emitted == 1, what="the first request to hold the only slot")
        status, headers, body = run_curl(url, "hi again")
        assert status == 429 and headers["retry-after"] == "1"
        assert '"type":"rate_limit_error"' in body and "at most 1" in body
    finally:
        for _ in range(2):
            backend.released.release()
        out, _ = first.communicate(timeout=30)
    assert "HTTP/1.1 200" in out and '"content":"Hello!"' in out
    for _ in range(2):
        backend.released.release()
    assert run_curl(url, "and now")[0] == 200   # the slot was given back


def test_a_client_that_leaves_mid_stream_cancels_the_request(gateway):
    url, backend, publisher = gateway
    proc = subprocess.Popen(curl_args(url, "hi", stream=True), stdout=subprocess.PIPE, text=True)
    trace_id = ""
    for line in proc.stdout:   # headers, then the role chunk and the first token
        if line.lower().startswith("x-llmops-trace-id:"):
            trace_id = line.split(":", 1)[1].strip()
        if '"content":"Hel"' in line:
            break
    proc.kill()
    proc.wait()
    backend.released.release()   # the next token finds the connection closed
    root = wait_until(lambda: next((s for s in spans_of(publisher, trace_id) if s.name == "generate_stream"), None),
                      what="the spans of the abandoned stream")
    assert root.status == common_pb2.SPAN_STATUS_ERROR and "RequestCancelled" in root.status_message
    assert not [m for t, m in publisher.events if isinstance(m, events_pb2.CompletionEvent)]
    assert backend.emitted < len(backend.tokens)


def test_unavailable_retrieval_is_503(gateway):
    url, backend, publisher = gateway
    status, headers, body = run_curl(url, "hi", llmops={"retrieval": True})
    assert status == 503 and '"type":"server_error"' in body and "retrieval service" in body
    trace_id = headers["x-llmops-trace-id"]
    assert {s.name for s in spans_of(publisher, trace_id)} == {"generate", "retrieval"}


def test_a_failure_after_the_first_token_ends_the_stream_with_an_error_event(gateway):
    url, backend, publisher = gateway
    backend.released.release()
    status, headers, body = run_curl(url, "FAIL-LATE", stream=True)
    events = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert status == 200 and '"content":"Hel"' in events[1]
    assert '"error":' in events[-1] and "went away" in events[-1] and "[DONE]" not in events


def test_a_bug_is_500_with_the_trace_id_and_no_stack_trace(gateway):
    url, backend, publisher = gateway
    for stream in (False, True):
        status, headers, body = run_curl(url, "BUG", stream=stream)
        assert status == 500 and '"type":"server_error"' in body
        assert headers["x-llmops-trace-id"] in body and "Traceback" not in body and "a bug in" not in body


def test_json_nested_beyond_the_parser_is_a_400(gateway):
    url, backend, publisher = gateway
    deep = "[" * 30_000 + "]" * 30_000   # within the 64 KiB body limit, deeper than Python's recursion limit
    out = subprocess.run(["curl", "-sS", "--noproxy", "*", "-w", "\n%{http_code}", "-H", "content-type: application/json",
                          "--data-binary", "@-", f"{url}/v1/chat/completions"], input=deep, capture_output=True,
                         text=True, timeout=60).stdout
    body, _, status = out.rpartition("\n")
    assert status == "400" and "could not parse the JSON body" in body
