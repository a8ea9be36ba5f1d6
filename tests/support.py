"""Helpers shared by the integration and e2e tests: free ports, settings, Kafka I/O, and a
service run in-process on its own thread exactly as ``llmops serve`` runs it."""
from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from pathlib import Path

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.peers import http_server_process, phoenix_server  # noqa: F401 - the tests' too
from llmops.cli.stack import free_port, isolated_settings  # noqa: F401 - free_port is the tests' too
from llmops.common.settings import Settings


def make_settings(data_dir: Path, bootstrap: str, **overrides) -> Settings:
    """Settings with free ports and a topic prefix of their own, so tests never share topics."""
    return isolated_settings(data_dir, bootstrap, **overrides)


async def _produce(bootstrap: str, topic: str, items) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await p.start()
    try:
        for key, value, headers in items:
            await p.send_and_wait(topic, value, key=key, headers=headers or [])
    finally:
        await p.stop()


def produce(bootstrap: str, topic: str, items) -> None:
    """items: (key bytes, value bytes, headers list)."""
    asyncio.run(_produce(bootstrap, topic, items))


async def _read(bootstrap: str, topic: str, done, timeout_s: float) -> tuple[list, bool]:
    """Read ``topic`` from its start until ``done(messages so far)``: (messages, whether it was)."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, group_id=None)
    await c.start()
    out: list = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=300)
            for msgs in batch.values():
                out.extend(msgs)
            if done(out):
                return out, True
    finally:
        await c.stop()
    return out, False


def consume(bootstrap: str, topic: str, want: int = 1, timeout_s: float = 20.0):
    """Up to the first ``want`` messages or so of ``topic`` (fewer when ``timeout_s`` runs out)."""
    return asyncio.run(_read(bootstrap, topic, lambda out: len(out) >= want, timeout_s))[0]


def consume_until(bootstrap: str, topic: str, done, timeout_s: float = 30.0, what: str = "messages"):
    """Read ``topic`` from its start until ``done(messages so far)`` is true and return them;
    fail when that has not happened within ``timeout_s``. For a topic that several producers
    share (the DLQ), where the number of messages is not known but the ones to check are."""
    out, ok = asyncio.run(_read(bootstrap, topic, done, timeout_s))
    if not ok:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what} on {topic} ({len(out)} messages read)")
    return out


def wait_until(fn, timeout_s: float = 20.0, interval_s: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # keep polling; report the last error on timeout
            last = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


async def until(pred, timeout_s: float, what: str, context: list[str] | None = None, interval_s: float = 0.1):
    """Await ``pred()`` (a coroutine function) until it returns something true, and return that;
    fail after ``timeout_s``, with ``context`` (e.g. the stack's progress lines) in the message."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}" + (
            "\n" + "\n".join(context) if context else "")
        await asyncio.sleep(interval_s)


def interrupt(proc, timeout_s: float = 60.0) -> int:
    """Stop ``llmops up`` (or any process) as Ctrl-C does; its exit code. Killed, and the timeout
    raised, when it has not stopped within ``timeout_s``."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def health(target: str) -> str:
    with grpc.insecure_channel(target) as ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)


def _ignore_grpc_multi_loop_wakeups(loop, context) -> None:
    """grpc.aio wakes every event loop of a process on each completion; all but one find the
    notification socket empty and raise BlockingIOError (grpc/grpc#25364). Harmless, and only
    seen here, where several services share one test process; anything else is reported."""
    if isinstance(context.get("exception"), BlockingIOError) and "PollerCompletionQueue" in repr(context.get("handle")):
        return
    loop.default_exception_handler(context)


class ServiceThread:
    """Runs ``run_service(name, settings, build)`` on a thread with its own event loop."""

    def __init__(self, name: str, settings: Settings, build) -> None:
        self.name, self.settings, self.build = name, settings, build
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"svc-{name}", daemon=True)

    def _run(self) -> None:
        from llmops.common.runtime import run_service

        async def main():
            self.loop = asyncio.get_running_loop()
            self.loop.set_exception_handler(_ignore_grpc_multi_loop_wakeups)
            self.stop_event = asyncio.Event()
            await run_service(self.name, self.settings, self.build, self.stop_event)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc

    def start(self, timeout_s: float = 120.0) -> "ServiceThread":
        self.thread.start()
        target = self.settings.grpc_target(self.name)
        deadline = time.monotonic() + timeout_s
        while health(target) != "SERVING":
            if self.error or not self.thread.is_alive():
                raise RuntimeError(f"{self.name} failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not SERVING after {timeout_s}s")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.loop and self.stop_event:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(60)


@contextlib.contextmanager
def running_services(settings: Settings, builds):
    """Start ``(name, build)`` services in order on their own threads; stop them in reverse."""
    threads: list[ServiceThread] = []
    try:
        for name, build in builds:
            threads.append(ServiceThread(name, settings, build).start())
        yield threads
    finally:
        for t in reversed(threads):
            t.stop()


@contextlib.contextmanager
def llama_openai_server(log_dir: Path, alias: str = "smollm2", timeout_s: float = 90.0):
    """llama-cpp-python's real OpenAI-compatible server (``python -m llama_cpp.server``) on the
    packaged GGUF, for the test's lifetime: its base URL (…/v1). Offline: it inherits llmops' switches."""
    port = free_port()
    with llama_openai_process(log_dir / "llama-server.log", port, alias, timeout_s):
        yield f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def llama_openai_process(log_path: Path, port: int, alias: str = "smollm2", timeout_s: float = 90.0):
    """:func:`llama_openai_server` on a given ``port``, yielding its process: a test can SIGKILL it
    and start it again on the same port (the same base URL, http://127.0.0.1:<port>/v1)."""
    from llmops.common.settings import packaged_gguf

    url = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", packaged_gguf(), "--model_alias", alias,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
           "--interrupt_requests", "False"]
    with http_server_process("llama_cpp.server", cmd, f"{url}/models", log_path,
                             timeout_s=timeout_s, stop_timeout_s=10.0) as proc:
        yield proc
