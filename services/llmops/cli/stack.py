"""``llmops up``: the embedded broker (unless Kafka is external) and each service as its own
process; waits for their health checks, then supervises them: a service or broker that exits is
restarted with exponential backoff (1 s doubling, at most 30 s; the broker on its port) and each
restart is reported, until one exits ``LLMOPS_RESTART_MAX_FAILURES`` times within
``LLMOPS_RESTART_WINDOW_S`` (compose's ``restart: on-failure``): then the stack gives up and stops.
Ctrl-C stops them all (SIGTERM, then SIGKILL 10 s after their own ``LLMOPS_SHUTDOWN_GRACE_S``)."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmops.common.broker import BrokerError, EmbeddedBroker, wait_for_kafka
from llmops.common.channels import aio_channel
from llmops.common.settings import SERVICES, Settings

#: the order services start in: retrieval before inference (which calls it), the consumers before the producer
START_ORDER = ("retrieval", "tracing", "judging", "drift", "inference")

#: the supervisor's backoff: the first restart after this, doubling with each failure in a row, capped
RESTART_FIRST_BACKOFF_S = 1.0
RESTART_MAX_BACKOFF_S = 30.0
#: SIGKILL this long after a service's own stop budget (LLMOPS_SHUTDOWN_GRACE_S) has passed
KILL_MARGIN_S = 10.0


class StackError(RuntimeError):
    pass


_HANDED_OUT: set[int] = set()   # ports free_port gave this process: never twice


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (source ports of outgoing connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, for a service started later.

    Picked below the kernel's ephemeral range when there is room: a port from that range can be
    taken, before the service binds it, as the source port of any outgoing connection on the host
    (a full test run saw retrieval fail to bind its gRPC port that way). Random, so stacks picking
    side by side seldom meet, and never one this process handed out before."""
    import random

    low = _ephemeral_low()
    if low > 12_000:
        for _ in range(200):
            port = random.randint(10_000, low - 1)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _HANDED_OUT.add(port)
    return port


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


@dataclass
class Restarts:
    """The supervisor's books on one component (a service or ``broker``)."""
    exits: deque = field(default_factory=deque)   # monotonic times of its exits within the window
    attempt: int = 0              # failures in a row (the backoff's exponent)
    total: int = 0                # restarts so far
    due_at: float | None = None   # when the pending restart starts
    exited_at: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    recovering: bool = False      # restarted, not yet SERVING again


class Stack:
    def __init__(self, settings: Settings, services: tuple[str, ...] = START_ORDER,
                 on_progress: Callable[[str], None] = lambda s: None) -> None:
        self.settings = settings
        self.services = services
        self.on_progress = on_progress
        self.log_dir = settings.data_dir / "logs"
        self.broker: EmbeddedBroker | None = None
        self.procs: dict[str, ServiceProcess] = {}
        self.restarts: dict[str, Restarts] = {name: Restarts() for name in (*services, "broker")}
        #: (component, seconds from its exit until SERVING again), one per completed recovery
        self.recoveries: list[tuple[str, float]] = []
        self._env: dict[str, str] = {}

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
        self._env = self.child_env()
        for name in self.services:
            sp = self._spawn(name)
            self.on_progress(f"started {name} (pid {sp.proc.pid}, log {sp.log_path})")
        await self.wait_healthy(timeout_s)

    def _spawn(self, name: str) -> ServiceProcess:
        log_path = self.log_dir / f"{name}.log"
        out = open(log_path, "ab")
        env = self._env
        if self.settings.embedded_broker:
            # the stack's own broker: nobody else joins these groups, and one process runs each service.
            # Its static member name (the same after a restart) takes the place of the member that died,
            # instead of joining beside it until its session runs out (on Tansu, ~20 s instead of 6)
            env = {**env, "LLMOPS_KAFKA_GROUP_INSTANCE_ID": f"llmops-up-{name}"}
        proc = subprocess.Popen([sys.executable, "-m", "llmops.cli", "serve", name], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        sp = self.procs[name] = ServiceProcess(name, proc, log_path)
        self.restarts[name].started_at = sp.started_at
        return sp

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
        """Supervise until ``stop`` is set (returns None) or a component keeps failing (returns the
        report of why the stack gives up)."""
        while not stop.is_set():
            report = await self.supervise_once()
            if report:
                return report
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return None

    async def supervise_once(self) -> str | None:
        """One round: note what exited, start what is due, see what came back."""
        now = time.monotonic()
        if self.broker is not None:
            r = self.restarts["broker"]
            if r.due_at is None and self.broker.proc is not None and self.broker.proc.poll() is not None:
                report = self._exited("the embedded Kafka broker", "broker", self.broker.proc.returncode,
                                      self.log_dir / "broker.log", now)
                if report:
                    return report
            if r.due_at is not None and now >= r.due_at:
                r.due_at = None
                try:
                    await self.broker.start()
                except BrokerError as exc:
                    self.on_progress(f"the embedded Kafka broker did not come back: {exc}")
                    return self._exited("the embedded Kafka broker", "broker", -1, self.log_dir / "broker.log",
                                        time.monotonic())
                r.started_at = time.monotonic()
                self.recoveries.append(("broker", r.started_at - r.exited_at))
                self.on_progress(f"the embedded Kafka broker is back on {self.broker.bootstrap} "
                                 f"({r.started_at - r.exited_at:.1f}s after it exited)")
        for name in list(self.procs):
            sp, r = self.procs[name], self.restarts[name]
            if r.due_at is None and sp.proc.poll() is not None:
                report = self._exited(f"service {name!r}", name, sp.proc.returncode, sp.log_path, now, sp)
                if report:
                    return report
            if r.due_at is not None and time.monotonic() >= r.due_at:
                r.due_at = None
                sp = self._spawn(name)
                r.recovering = True
                self.on_progress(f"restarted {name} (pid {sp.proc.pid}, restart #{r.total})")
            elif r.recovering and sp.proc.poll() is None \
                    and await health_status(self.settings.grpc_target(name), 1.0) == "SERVING":
                r.recovering = False
                took = time.monotonic() - r.exited_at
                self.recoveries.append((name, took))
                self.on_progress(f"{name} is SERVING again ({took:.1f}s after it exited)")
        return None

    def _exited(self, what: str, key: str, code: int | None, log_path: Path, now: float,
                sp: ServiceProcess | None = None) -> str | None:
        """Book an exit: schedule the restart with backoff, or give up (the report)."""
        r = self.restarts[key]
        window, most = self.settings.restart_window_s, self.settings.restart_max_failures
        if now - r.started_at >= window:
            r.attempt = 0          # it had run for a while: this is a new failure, not one in a row
        r.exits.append(now)
        while r.exits and r.exits[0] < now - window:
            r.exits.popleft()
        r.exited_at = now
        r.recovering = False
        if len(r.exits) >= most:
            tail = sp.log_tail() if sp is not None else _tail(log_path)
            return (f"{what} exited {len(r.exits)} times within {window:.0f}s (last exit code {code}): giving up.\n"
                    f"--- last lines of {log_path} ---\n{tail}")
        delay = min(RESTART_MAX_BACKOFF_S, RESTART_FIRST_BACKOFF_S * 2 ** r.attempt)
        r.attempt += 1
        r.total += 1
        r.due_at = now + delay
        self.on_progress(f"{what} exited with code {code}: restarting it in {delay:.0f}s "
                         f"(restart #{r.total}; {len(r.exits)} of {most} exits allowed within {window:.0f}s)")
        return None

    @property
    def restart_count(self) -> int:
        return sum(r.total for r in self.restarts.values())

    async def stop(self, grace_s: float | None = None) -> None:
        # inference first (it publishes), consumers after, so their last events are consumed
        for name in reversed(list(self.procs)):
            sp = self.procs[name]
            if sp.proc.poll() is None:
                sp.proc.send_signal(signal.SIGTERM)
        if grace_s is None:   # a service stops within its own budget; SIGKILL only well after it
            grace_s = self.settings.shutdown_grace_s + KILL_MARGIN_S
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


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
