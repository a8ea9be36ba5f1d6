"""Peers the benchmarks (and the tests) run beside the platform, from the virtual environments
`make peers` prepares under .peers/ (their pins never touch ours)."""
from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from llmops.cli.stack import free_port


PEERS = Path(__file__).resolve().parents[1] / ".peers"


@contextlib.contextmanager
def http_server_process(name: str, cmd: list[str], health_url: str, log_path: Path, *, env: dict | None = None,
                        timeout_s: float = 120.0, stop_timeout_s: float = 20.0):
    """Run ``cmd`` (a server) for the block's lifetime: wait until ``health_url`` answers 200, fail
    with the tail of its log if it exits or does not answer in time, and stop it (TERM, then KILL)."""
    import httpx

    log = log_path.open("w+")   # a pipe would fill up and block it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read()[-3000:]}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not answer {health_url} within {timeout_s:.0f} s")
            time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def phoenix_server(work_dir: Path, timeout_s: float = 180.0):
    """A real Arize Phoenix server (SQLite, from the peer venv .peers/phoenix) for the test's
    lifetime: (its HTTP base URL, its OTLP/gRPC port). Offline switches keep it from reaching out."""
    import os

    phoenix = PEERS / "phoenix" / "bin" / "phoenix"
    if not phoenix.exists():
        raise RuntimeError(f"{phoenix} is missing: `make .peers/phoenix/.ok` prepares it (make test does)")
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(work_dir), "PHOENIX_PORT": str(http_port),
           "PHOENIX_GRPC_PORT": str(grpc_port), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false", "PHOENIX_TELEMETRY_ENABLED": "false",
           "PHOENIX_DISABLE_AGENT_ASSISTANT": "true", "PHOENIX_LOG_MIGRATIONS": "false"}
    url = f"http://127.0.0.1:{http_port}"
    with http_server_process("phoenix", [str(phoenix), "serve"], f"{url}/healthz", work_dir / "phoenix.log",
                             env=env, timeout_s=timeout_s):
        yield url, grpc_port
