"""``llmops up``: the embedded broker (unless Kafka is external) and each service as its own
process; waits for their health checks, reports a crashed service by name, stops them all on
Ctrl-C (SIGTERM, then SIGKILL after a grace period)."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmops.common.broker import EmbeddedBroker, wait_for_kafka
from llmops.common.channels import aio_channel
from llmops.common.settings import SERVICES, Settings

#: the order services start in: retrieval before inference (which calls it), the consumers before the producer
START_ORDER = ("retrieval", "tracing", "judging", "drift", "inference")


class StackError(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_settings(data_dir: Path, bootstrap: str = "", **overrides) -> Settings:
    """Settings for a stack beside others on the same host (the benchmarks, the tests): free
    gRPC and metrics ports, a data dir and a topic prefix of its own, one partition per topic."""
    values: dict = {"data_dir": data_dir, "kafka_bootstrap": bootstrap, "topic_partitions": 1,
                    "topic_prefix": f"t{uuid.uuid4().hex[:8]}."}
    for svc in SERVICES:
        values[f"{svc}_port"] = free_port()
        values[f"{svc}_metrics_port"] = free_port()
    values["inference_http_port"] = free_port()
    values["otlp_grpc_port"] = free_port()
    values["otlp_http_port"] = free_port()
    values.update(overrides)
    return Settings(**values)


async def health_status(target: str, timeout_s: float = 2.0) -> str:
    """SERVING / NOT_SERVING / UNREACHABLE."""
    async with aio_channel(target) as ch:
        try:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


@dataclass
class ServiceProcess:
    name: str
    proc: subprocess.Popen
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Stack:
    def __init__(self, settings: Settings, services: tuple[str, ...] = START_ORDER,
                 on_progress: Callable[[str], None] = lambda s: None) -> None:
        self.settings = settings
        self.services = services
        self.on_progress = on_progress
        self.log_dir = settings.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.procs: dict[str, ServiceProcess] = {}

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
        env.update(self.settings.to_env())
        env["LLMOPS_KAFKA_BOOTSTRAP"] = self.settings.bootstrap_servers
        env["LLMOPS_DATA_DIR"] = str(self.settings.data_dir.resolve())
        return env

    async def start(self, timeout_s: float = 240.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded_broker:
            self.on_progress(f"starting embedded Kafka broker (Tansu) on {self.settings.bootstrap_servers}")
            self.broker = EmbeddedBroker(self.settings.kafka_embedded_port, self.log_dir / "broker.log")
            await self.broker.start()
        else:
            self.on_progress(f"using Kafka at {self.settings.bootstrap_servers}")
            await wait_for_kafka(self.settings.bootstrap_servers)
        env = self.child_env()
        for name in self.services:
            log_path = self.log_dir / f"{name}.log"
            out = open(log_path, "ab")
            proc = subprocess.Popen([sys.executable, "-m", "llmops.cli", "serve", name], env=env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            out.close()
            self.procs[name] = ServiceProcess(name, proc, log_path)
            self.on_progress(f"started {name} (pid {proc.pid}, log {log_path})")
        await self.wait_healthy(timeout_s)

    async def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(self.services)
        while pending:
            for name in sorted(pending):
                sp = self.procs[name]
                if sp.proc.poll() is not None:
                    raise StackError(f"service {name!r} exited with code {sp.proc.returncode} while starting.\n"
                                     f"--- last lines of {sp.log_path} ---\n{sp.log_tail()}")
                if await health_status(self.settings.grpc_target(name), 1.0) == "SERVING":
                    pending.discard(name)
                    self.on_progress(f"{name} is SERVING on {self.settings.grpc_target(name)} "
                                     f"({time.monotonic() - sp.started_at:.1f}s)")
            if pending and time.monotonic() > deadline:
                raise StackError(f"not healthy after {timeout_s:.0f}s: {', '.join(sorted(pending))}")
            if pending:
                await asyncio.sleep(0.3)

    async def watch(self, stop: asyncio.Event) -> str | None:
        """Wait until ``stop`` is set (returns None) or a service dies (returns a report)."""
        while not stop.is_set():
            for name, sp in self.procs.items():
                if sp.proc.poll() is not None:
                    return (f"service {name!r} crashed with exit code {sp.proc.returncode}.\n"
                            f"--- last lines of {sp.log_path} ---\n{sp.log_tail()}")
            if self.broker and self.broker.proc and self.broker.proc.poll() is not None:
                return f"the embedded Kafka broker exited with code {self.broker.proc.returncode}"
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return None

    async def stop(self, grace_s: float = 20.0) -> None:
        # inference first (it publishes), consumers after, so their last events are consumed
        for name in reversed(list(self.procs)):
            sp = self.procs[name]
            if sp.proc.poll() is None:
                sp.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, sp in self.procs.items():
            while sp.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if sp.proc.poll() is None:
                self.on_progress(f"{name} did not stop within {grace_s:.0f}s: killing it")
                sp.proc.kill()
                sp.proc.wait()
        if self.broker:
            self.broker.stop()
