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
def phoenix_server(work_dir: Path, timeout_s: float = 180.0):
    """A real Arize Phoenix server (SQLite, from the peer venv .peers/phoenix) for the test's
    lifetime: (its HTTP base URL, its OTLP/gRPC port). Offline switches keep it from reaching out."""
    import os

    import httpx

    phoenix = PEERS / "phoenix" / "bin" / "phoenix"
    if not phoenix.exists():
        raise RuntimeError(f"{phoenix} is missing: `make .peers/phoenix/.ok` prepares it (make test does)")
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PHOENIX_WORKING_DIR": str(work_dir), "PHOENIX_PORT": str(http_port),
           "PHOENIX_GRPC_PORT": str(grpc_port), "PHOENIX_HOST": "127.0.0.1",
           "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false", "PHOENIX_TELEMETRY_ENABLED": "false",
           "PHOENIX_DISABLE_AGENT_ASSISTANT": "true", "PHOENIX_LOG_MIGRATIONS": "false"}
    log = (work_dir / "phoenix.log").open("w+")
    proc = subprocess.Popen([str(phoenix), "serve"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"phoenix exited with {proc.returncode}: {log.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"phoenix did not answer /healthz within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield url, grpc_port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
