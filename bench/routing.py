"""Routing overhead against LiteLLM's proxy, and failover time.

**Overhead.** One instant OpenAI-compatible upstream (:mod:`bench.instant_openai`, its own process)
and the same chat request (``POST /v1/chat/completions``, ``max_tokens`` 4) sent in a closed loop at
a fixed concurrency, side by side in one run, to:

- the upstream directly (the baseline: the client and the upstream alone);
- LiteLLM's proxy (``litellm[proxy]`` from the peer venv .peers/litellm, one worker, no database,
  offline, no callbacks, no access log) in front of it;
- the llmops inference service's OpenAI-compatible gateway (embedded broker, ``LLMOPS_MODEL_BACKEND
  =openai``) in front of it: spans and the ``CompletionEvent`` go to Kafka as on any request;
- once routes exist, the same gateway through a route (``model`` = the route's name).

Targets take turns in short slices (two per target and concurrency), so that all see the same
machine load. The added latency of a gateway is its p50 (p99) minus the direct p50 (p99): the calls
through different paths cannot be paired one to one, so these are differences of quantiles, not
quantiles of differences. Requests/s at the highest concurrency is the saturation throughput of the
whole loop on this machine's two cores (the client, the gateway and the upstream share them). The
upstream counts its requests per path, so the benchmark also checks that each gateway makes exactly
one upstream call per request in the steady state (token counting and chat-template probes cached).

**Failover.** Two upstreams A and B; a route with primary A, fallback B, one attempt, a short
per-attempt timeout and a circuit breaker (3 failures, 1 s cooldown) in llmops, and the same in
LiteLLM (``fallbacks``, ``num_retries: 0``, ``allowed_fails: 2``, ``cooldown_time: 1``); an open loop
at a fixed rate through the gateway; A is killed (SIGKILL), and the time from the kill to the first
answer served by B is measured (the upstream names itself in its answer). Its resolution is the
loop's interval (10 ms at 100 requests/s): that answer's own request latency is reported beside it.
A is restarted between rounds and the round ends when traffic is back on A (after the circuit's
cooldown). p50/p99 over the rounds, and every request that failed during the rounds (goal 0).

Goal: less added latency than LiteLLM at p50 and p99."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import httpx

from bench.common import bench_settings, percentile, report
from bench.peers import PEERS, http_server_process
from llmops.cli.client import Client
from llmops.cli.stack import Stack, free_port
from llmops.v1 import inference_pb2

MODEL = "bench-model"
ROUTE = "bench-route"
VLLM_ROUTE = "bench-route-vllm"
VLLM_TARGET = "llmops route, vLLM-like"
MAX_TOKENS = 4
MESSAGES = [{"role": "user", "content": "Answer with one word: is the sky blue?"}]
ROOT = Path(__file__).resolve().parents[1]


def chat_body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS}).encode()


# -- the processes -----------------------------------------------------------------------------------
@contextlib.contextmanager
def instant_upstream(name: str, port: int, log_dir: Path, vllm_extras: bool = False):
    """:mod:`bench.instant_openai` on ``port`` for the block's lifetime: (its base URL, its process)."""
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "bench.instant_openai", "--port", str(port), "--name", name, "--model", MODEL,
           *(["--vllm-extras"] if vllm_extras else [])]
    with http_server_process(f"upstream {name}", cmd, f"{url}/health", log_dir / f"upstream-{name}.log",
                             env=env, timeout_s=30) as proc:
        yield url, proc


#: uvicorn's loggers at WARNING: no access log line per request (the llmops gateway writes none either)
UVICORN_QUIET = {"version": 1, "disable_existing_loggers": False,
                 "loggers": {"uvicorn": {"level": "WARNING"}, "uvicorn.error": {"level": "WARNING"},
                             "uvicorn.access": {"level": "WARNING", "propagate": False}}}


@contextlib.contextmanager
def litellm_proxy(model_list: list[dict], work_dir: Path, router_settings: dict | None = None):
    """LiteLLM's proxy (peer venv .peers/litellm) serving ``model_list``: its base URL. Offline:
    the bundled cost map, no telemetry, no database, no .env lookup, no callbacks."""
    litellm = PEERS / "litellm" / "bin" / "litellm"
    if not litellm.exists():
        raise RuntimeError(f"{litellm} is missing: `make .peers/litellm/.ok` prepares it (make bench does)")
    work_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_list": model_list,
              "litellm_settings": {"telemetry": False, "drop_params": True, "set_verbose": False,
                                   "json_logs": False, "request_timeout": 30},
              "general_settings": {"disable_spend_logs": True, "disable_error_logs": True}}
    if router_settings:
        config["router_settings"] = router_settings
    (work_dir / "litellm.yaml").write_text(json.dumps(config))   # JSON is YAML
    (work_dir / "log_config.json").write_text(json.dumps(UVICORN_QUIET))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DIRECT_URL", "LITELLM_", "OPENAI_"))}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
                "LITELLM_OFFLINE_MODE": "true", "LITELLM_TELEMETRY": "False", "LITELLM_MODE": "PRODUCTION",
                "LITELLM_LOG": "ERROR", "NO_DOCS": "True", "NO_REDOC": "True"})
    cmd = [str(litellm), "--config", str(work_dir / "litellm.yaml"), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", "1", "--telemetry", "False", "--log_config", str(work_dir / "log_config.json")]
    url = f"http://127.0.0.1:{port}"
    with http_server_process("litellm", cmd, f"{url}/health/liveliness", work_dir / "litellm.log",
                             env=env, timeout_s=120):
        yield url


def upstream_stats(url: str) -> dict:
    return httpx.get(f"{url}/stats", timeout=5, trust_env=False).json()


# -- the closed loop ---------------------------------------------------------------------------------
@dataclass
class Slice:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    error_samples: list[str] = field(default_factory=list)


async def closed_loop(session: aiohttp.ClientSession, url: str, body: bytes, concurrency: int,
                      seconds: float) -> Slice:
    """``concurrency`` workers, each sending the next request when its last one is answered."""
    out = Slice()
    headers = {"Content-Type": "application/json"}
    start = time.perf_counter()
    end = start + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    payload = await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError as exc:
                ok, payload = False, repr(exc).encode()
            if ok:
                out.latencies_ms.append((time.perf_counter() - t0) * 1000)
            else:
                out.errors += 1
                if len(out.error_samples) < 3:
                    out.error_samples.append(payload[:300].decode(errors="replace"))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.seconds = time.perf_counter() - start
    return out


class Sessions:
    """One keep-alive aiohttp session per path, for the warm-up and the measured slices."""

    def __init__(self, targets: dict[str, str]) -> None:
        self.targets = targets
        self.by_name: dict[str, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> Sessions:
        self.by_name = {name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                    timeout=aiohttp.ClientTimeout(total=30)) for name in self.targets}
        return self

    async def __aexit__(self, *exc) -> None:
        for s in self.by_name.values():
            await s.close()


async def warm_up(sessions: Sessions, bodies: dict[str, bytes], seconds: float) -> None:
    """Connections, caches, a backend's first-request probes (token counting, chat template)."""
    for name, url in sessions.targets.items():
        await closed_loop(sessions.by_name[name], url, bodies[name], 4, seconds)


async def measure(sessions: Sessions, bodies: dict[str, bytes], concurrencies: tuple[int, ...],
                  seconds: float, slices: int) -> dict[int, dict[str, Slice]]:
    """Each (concurrency, target) ``seconds`` long, in ``slices`` turns interleaved with the others."""
    results: dict[int, dict[str, Slice]] = {}
    targets = sessions.targets
    for c in concurrencies:
        pooled = {name: Slice() for name in targets}
        for k in range(slices):
            for name in (list(targets) if k % 2 == 0 else list(reversed(targets))):
                got = await closed_loop(sessions.by_name[name], targets[name], bodies[name], c, seconds / slices)
                p = pooled[name]
                p.latencies_ms += got.latencies_ms
                p.errors += got.errors
                p.seconds += got.seconds
                p.error_samples += got.error_samples[: 3 - len(p.error_samples)]
        results[c] = pooled
    return results


async def warm_up_and_measure(targets: dict[str, str], bodies: dict[str, bytes], concurrencies: tuple[int, ...],
                              seconds: float, slices: int, warmup_s: float, upstreams: dict[str, str]):
    """(results, upstream counts before the measured slices, after them)."""
    async with Sessions(targets) as sessions:
        await warm_up(sessions, bodies, warmup_s)
        before = {k: await asyncio.to_thread(upstream_stats, u) for k, u in upstreams.items()}
        measured = await measure(sessions, bodies, concurrencies, seconds, slices)
        after = {k: await asyncio.to_thread(upstream_stats, u) for k, u in upstreams.items()}
    return measured, before, after


# -- the open loop of the failover rounds ------------------------------------------------------------
@dataclass
class Answer:
    sent: float            # time.monotonic()
    done: float
    served_by: str         # "A" / "B" from the answer's text; "" for a failure
    error: str = ""


class OpenLoop:
    """Requests at a fixed rate (not waiting for answers) from a thread with its own event loop."""

    def __init__(self, url: str, body: bytes, rate: float) -> None:
        self.url, self.body, self.interval = url, body, 1.0 / rate
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> OpenLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=20)) as session:
            pending: set[asyncio.Task] = set()
            n, t0 = 0, time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(self._one(session))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
                await asyncio.sleep(max(0.0, t0 + n * self.interval - time.monotonic()))
            if pending:
                await asyncio.wait(pending)

    async def _one(self, session: aiohttp.ClientSession) -> None:
        sent = time.monotonic()
        try:
            async with session.post(self.url, data=self.body, headers={"Content-Type": "application/json"}) as resp:
                payload = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.answers.append(Answer(sent, time.monotonic(), "", repr(exc)[:200]))
            return
        done = time.monotonic()
        if status != 200:
            self.answers.append(Answer(sent, done, "", f"HTTP {status}: {payload[:200].decode(errors='replace')}"))
            return
        text = json.loads(payload)["choices"][0]["message"]["content"]
        if text.startswith("ok from "):
            self.answers.append(Answer(sent, done, text.rsplit(" ", 1)[-1]))
        else:
            self.answers.append(Answer(sent, done, "", f"unexpected answer {text!r}"))

    def first_after(self, t: float, served_by: str, timeout_s: float) -> Answer | None:
        """The first answer done after ``t`` served by ``served_by``; waits up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            answers = self.answers
            for a in answers[seen:]:
                if a.done > t and a.served_by == served_by:
                    return a
            seen = max(0, len(answers) - 64)   # answers land out of order: look back a little
            if time.monotonic() > deadline:
                return None
            time.sleep(0.002)


class Killable:
    """An upstream that can be SIGKILLed and started again on the same port."""

    def __init__(self, name: str, port: int, log_dir: Path) -> None:
        self.name, self.port, self.log_dir = name, port, log_dir
        self._stack: contextlib.ExitStack | None = None
        self.proc = None

    def start(self) -> str:
        self._stack = contextlib.ExitStack()
        url, self.proc = self._stack.enter_context(instant_upstream(self.name, self.port, self.log_dir))
        return url

    def kill(self) -> float:
        t = time.monotonic()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.close()
        return t

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


@dataclass
class FailoverRounds:
    failover_ms: list[float] = field(default_factory=list)
    first_fallback_latency_ms: list[float] = field(default_factory=list)   # that answer's own request
    recovery_ms: list[float] = field(default_factory=list)    # A ready again -> first answer from A
    requests: int = 0
    failed: list[str] = field(default_factory=list)
    missed_rounds: int = 0
    unrecovered: str = ""   # why the rounds stopped early


def failover_rounds(url: str, body: bytes, a: Killable, rounds: int, rate: float, settle_s: float,
                    recover_s: float = 15.0) -> FailoverRounds:
    out = FailoverRounds()
    with OpenLoop(url, body, rate) as loop:
        start = time.monotonic()
        if loop.first_after(start, "A", 10.0) is None:
            raise RuntimeError(f"no answer from A through {url} within 10 s: {loop.answers[-3:]}")
        for _ in range(rounds):
            time.sleep(settle_s)    # steady traffic on A
            killed = a.kill()
            got = loop.first_after(killed, "B", 10.0)
            if got is None:
                out.missed_rounds += 1
            else:
                out.failover_ms.append((got.done - killed) * 1000)
                out.first_fallback_latency_ms.append((got.done - got.sent) * 1000)
            a.start()
            ready = time.monotonic()
            back = loop.first_after(ready, "A", recover_s)
            if back is None:   # the gateway keeps the primary out: no later round would mean anything
                last = loop.answers[-50:]
                out.unrecovered = (f"no answer from A within {recover_s:.0f} s of its restart; the last 50 answers: "
                                   f"{sum(x.served_by == 'B' for x in last)} from B, "
                                   f"{sum(not x.served_by for x in last)} failed")
                break
            out.recovery_ms.append((back.done - ready) * 1000)
        time.sleep(settle_s)
    window = [x for x in loop.answers if x.sent >= start]
    out.requests = len(window)
    out.failed = [x.error for x in window if not x.served_by]
    return out


def litellm_models(url_u: str, url_a: str, url_b: str, attempt_timeout_s: float) -> list[dict]:
    def entry(name: str, url: str, **params) -> dict:
        return {"model_name": name, "litellm_params": {"model": f"openai/{MODEL}", "api_base": f"{url}/v1",
                                                       "api_key": "none", **params}}

    return [entry(MODEL, url_u), entry(ROUTE, url_a, timeout=attempt_timeout_s),
            entry(f"{ROUTE}-fallback", url_b, timeout=attempt_timeout_s)]


# -- llmops routes -----------------------------------------------------------------------------------
def set_up_route(client: Client, primary: tuple[str, str], fallback: tuple[str, str] | None,
                 attempt_timeout_s: float, threshold: int, cooldown_s: float, route: str = ROUTE) -> str | None:
    """Register the deployments ((name, upstream URL) each) and route ``route`` to ``primary``, falling back
    to ``fallback``; None when done, else why not (a service without a registry: UNIMPLEMENTED)."""
    inf = client.inference
    try:
        for name, url in filter(None, (primary, fallback)):
            inf.RegisterDeployment(inference_pb2.Deployment(name=name, backend="openai", url=f"{url}/v1",
                                                            remote_model=MODEL, description="routing benchmark"),
                                   timeout=30)
        spec = inference_pb2.Route(
            name=route, primary=inference_pb2.DeploymentRef(name=primary[0]),
            fallbacks=[inference_pb2.DeploymentRef(name=fallback[0])] if fallback else [],
            retry=inference_pb2.RetryPolicy(attempts=1), attempt_timeout_s=attempt_timeout_s,
            circuit=inference_pb2.CircuitBreaker(failure_threshold=threshold, cooldown_s=cooldown_s))
        inf.SetRoute(inference_pb2.SetRouteRequest(route=spec, changed_by="bench", reason="routing benchmark"),
                     timeout=30)
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return None


def wait_route_served(url: str, route: str = ROUTE, timeout_s: float = 10.0) -> None:
    """Routes reach the gateway through the config topic: wait until the route answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = httpx.post(f"{url}/v1/chat/completions", content=chat_body(route), timeout=10, trust_env=False,
                       headers={"Content-Type": "application/json"})
        if r.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"route {route!r} not served within {timeout_s:.0f} s: HTTP {r.status_code} {r.text[:300]}")
        time.sleep(0.1)


# -- the benchmark -----------------------------------------------------------------------------------
def run(concurrencies: tuple[int, ...] = (1, 8, 32), seconds: float = 3.0, slices: int = 2, warmup_s: float = 0.5,
        failover_rounds_n: int = 12, rate: float = 100.0, attempt_timeout_s: float = 0.5, threshold: int = 3,
        cooldown_s: float = 1.0) -> dict:
    work = Path(tempfile.mkdtemp(prefix="llmops-bench-routing-"))
    extra: dict = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": MESSAGES, "seconds_per_point": seconds,
                   "client": "aiohttp, one keep-alive session per path, closed loop",
                   "added_latency": "p-quantile of the path minus the same p-quantile of the direct path "
                                    "(calls are not paired)"}
    with contextlib.ExitStack() as es:
        url_u, _ = es.enter_context(instant_upstream("U", free_port(), work))
        a, b = Killable("A", free_port(), work), Killable("B", free_port(), work)
        es.callback(a.close)
        es.callback(b.close)
        url_a, url_b = a.start(), b.start()
        # one LiteLLM proxy: MODEL for the overhead, ROUTE (A, falling back to B) for the failover
        ll_url = es.enter_context(litellm_proxy(litellm_models(url_u, url_a, url_b, attempt_timeout_s), work / "litellm",
                                                {"fallbacks": [{ROUTE: [f"{ROUTE}-fallback"]}], "num_retries": 0,
                                                 "allowed_fails": threshold - 1, "cooldown_time": cooldown_s}))
        s = bench_settings(model_backend="openai", openai_base_url=f"{url_u}/v1", model_name=MODEL)
        stack = Stack(s, services=("inference",), on_progress=lambda m: print("  ", m))
        asyncio.run(stack.start())
        es.callback(lambda: asyncio.run(stack.stop()))
        gw = f"http://127.0.0.1:{s.inference_http_port}"
        client = Client(s)
        es.callback(client.close)
        targets = {"direct": f"{url_u}/v1/chat/completions", "litellm": f"{ll_url}/v1/chat/completions",
                   "llmops": f"{gw}/v1/chat/completions"}
        bodies = {name: chat_body(MODEL) for name in targets}

        # the route's overhead on an upstream of its own (B), so that U's counts stay the other paths'
        route_error = set_up_route(client, ("bench-b", url_b), None, attempt_timeout_s, threshold, cooldown_s)
        upstreams = {"U": url_u, "B": url_b}
        if route_error is None:
            wait_route_served(gw)
            targets["llmops route"] = targets["llmops"]
            bodies["llmops route"] = chat_body(ROUTE)
            # and to a vLLM-like upstream V (its /tokenize and /detokenize: the chat template and token
            # counts come from the server), where the backend cannot fall back to ChatML and estimates
            url_v, _ = es.enter_context(instant_upstream("V", free_port(), work, vllm_extras=True))
            error = set_up_route(client, ("bench-v", url_v), None, attempt_timeout_s, threshold, cooldown_s,
                                 route=VLLM_ROUTE)
            if error is not None:
                raise RuntimeError(f"SetRoute to a vLLM-like upstream failed: {error}")
            wait_route_served(gw, VLLM_ROUTE)
            targets[VLLM_TARGET] = targets["llmops"]
            bodies[VLLM_TARGET] = chat_body(VLLM_ROUTE)
            upstreams["V"] = url_v
        extra["routes"] = "available" if route_error is None else f"not available ({route_error})"

        print(f"   measuring {', '.join(targets)} at concurrency {', '.join(map(str, concurrencies))}")
        measured, before, after = asyncio.run(warm_up_and_measure(targets, bodies, concurrencies, seconds, slices,
                                                                  warmup_s, upstreams))
        extra["upstream_calls"] = upstream_calls(measured, before, after)
        extra["upstream_calls_warm_up"] = {k: v["requests"] for k, v in before.items()}

        failover: dict = {}
        if route_error is None:
            error = set_up_route(client, ("bench-a", url_a), ("bench-b", url_b), attempt_timeout_s, threshold,
                                 cooldown_s)
            if error is not None:
                raise RuntimeError(f"SetRoute with a fallback failed: {error}")
            wait_route_served(gw)
            gateways = {"llmops": gw, "litellm": ll_url}
        else:
            failover["llmops"] = {"skipped": f"the inference service has no routes yet: {route_error}"}
            gateways = {"litellm": ll_url}
        for name, url in gateways.items():
            print(f"   failover through {name}: {failover_rounds_n} kills of the primary at {rate:.0f} requests/s")
            fo = failover_rounds(f"{url}/v1/chat/completions", chat_body(ROUTE), a, failover_rounds_n, rate, 0.5)
            failover[name] = failover_summary(fo, rate, attempt_timeout_s, threshold, cooldown_s)
        extra["failover"] = failover

    rows, goal = [], {}
    for c, by in measured.items():
        d = by["direct"]
        d50, d99 = percentile(d.latencies_ms, 0.5), percentile(d.latencies_ms, 0.99)
        for name, sl in by.items():
            p50, p99 = percentile(sl.latencies_ms, 0.5), percentile(sl.latencies_ms, 0.99)
            rps = len(sl.latencies_ms) / sl.seconds if sl.seconds else float("nan")
            added = ("", "") if name == "direct" else (p50 - d50, p99 - d99)
            rows.append([c, name, len(sl.latencies_ms), rps, p50, p99, *added, sl.errors])
            extra.setdefault(f"concurrency_{c}", {})[name] = {
                "requests": len(sl.latencies_ms), "requests_per_s": rps, "p50_ms": p50, "p99_ms": p99,
                "added_p50_ms": None if name == "direct" else p50 - d50,
                "added_p99_ms": None if name == "direct" else p99 - d99,
                "errors": sl.errors, "error_samples": sl.error_samples}
        # judged on the llmops paths that talk to the same plain OpenAI upstream as LiteLLM
        at = extra[f"concurrency_{c}"]
        ll = at["litellm"]
        goal[c] = all(at[n]["added_p50_ms"] < ll["added_p50_ms"] and at[n]["added_p99_ms"] < ll["added_p99_ms"]
                      for n in ("llmops", "llmops route") if n in at)
    top = max(measured)
    extra["saturation_requests_per_s"] = {name: v["requests_per_s"] for name, v in extra[f"concurrency_{top}"].items()}
    extra["goal_met_by_concurrency"] = goal
    extra["goal_met"] = all(goal.values())
    report("routing", "Routing overhead (same chat request, instant upstream; added = path - direct, per quantile)",
           ["conc.", "path", "n", "req/s", "p50 ms", "p99 ms", "added p50", "added p99", "errors"], rows, extra)
    calls = extra["upstream_calls"]
    for name in ("litellm", "llmops", "llmops route", VLLM_TARGET):
        if name in calls:
            print(f"   {name}: {calls[name]['per_request']:.3f} upstream calls per request {calls[name]['paths']}")
    print(f"   new connections to the upstream during the measurement: {calls['new_upstream_connections_on_U']} "
          f"for {calls['requests_on_U']} requests")
    for name, fo in extra["failover"].items():
        if "skipped" in fo:
            print(f"   failover through {name}: skipped ({fo['skipped']})")
        else:
            print(f"   failover through {name} (SIGKILL of the primary -> first answer from the fallback): "
                  f"p50 {fo['p50_ms']:.1f} ms, p99 {fo['p99_ms']:.1f} ms over {fo['rounds']} kills "
                  f"(that request itself: p50 {fo['first_fallback_request_p50_ms']:.1f} ms, "
                  f"p99 {fo['first_fallback_request_p99_ms']:.1f} ms) "
                  f"({fo['missed_rounds']} without a fallback answer); {fo['failed_requests']} of {fo['requests']} "
                  f"requests failed; back on the primary {fo['recovery_p50_ms']:.0f} ms (p50) after its restart"
                  + (f"; STOPPED EARLY: {fo['stopped_early']}" if fo["stopped_early"] else ""))
    print(f"   goal (llmops adds less than LiteLLM at p50 and p99): {'met' if extra['goal_met'] else 'NOT met'} {goal}")
    return extra


def upstream_calls(measured: dict[int, dict[str, Slice]], before: dict, after: dict) -> dict:
    """Upstream calls per request of each gateway during the measured slices (the warm-up's first-request
    probes excluded). U serves the direct calls and LiteLLM's (both on /v1/chat/completions) and llmops'
    (on /v1/completions: it renders the chat itself); B serves the llmops route, V the vLLM-like one."""
    def diff(up: str) -> dict[str, int]:
        b, a = before[up]["requests"], after[up]["requests"]
        return {p: n - b.get(p, 0) for p, n in a.items() if n - b.get(p, 0)}

    sent = {name: sum(len(by[name].latencies_ms) + by[name].errors for by in measured.values())
            for name in next(iter(measured.values()))}
    u = diff("U")
    chat = u.pop("/v1/chat/completions", 0)
    out = {"litellm": {"paths": {"/v1/chat/completions": chat - sent["direct"]},
                       "per_request": (chat - sent["direct"]) / sent["litellm"]},
           "llmops": {"paths": u, "per_request": sum(u.values()) / sent["llmops"]},
           # U's connections: the direct client's and LiteLLM's pools (a few each) and llmops'
           "new_upstream_connections_on_U": after["U"]["connections"] - before["U"]["connections"],
           "requests_on_U": {k: sent[k] for k in ("direct", "litellm", "llmops")}}
    for name, up in (("llmops route", "B"), (VLLM_TARGET, "V")):
        if name in sent:
            calls = diff(up)
            out[name] = {"paths": calls, "per_request": sum(calls.values()) / sent[name],
                         "new_upstream_connections": after[up]["connections"] - before[up]["connections"]}
    return out


def failover_summary(fo: FailoverRounds, rate: float, attempt_timeout_s: float, threshold: int,
                     cooldown_s: float) -> dict:
    return {"rounds": len(fo.failover_ms) + fo.missed_rounds, "missed_rounds": fo.missed_rounds,
            "p50_ms": percentile(fo.failover_ms, 0.5), "p99_ms": percentile(fo.failover_ms, 0.99),
            "max_ms": max(fo.failover_ms, default=float("nan")), "failover_ms": fo.failover_ms,
            # the kill lands between two requests: the first answer from B waits up to one interval for
            # its request to be sent; its own latency (sent -> answered) is the gateway's part
            "first_fallback_request_p50_ms": percentile(fo.first_fallback_latency_ms, 0.5),
            "first_fallback_request_p99_ms": percentile(fo.first_fallback_latency_ms, 0.99),
            "first_fallback_request_ms": fo.first_fallback_latency_ms,
            "recovery_p50_ms": percentile(fo.recovery_ms, 0.5), "recovery_ms": fo.recovery_ms,
            "requests": fo.requests, "failed_requests": len(fo.failed), "failures": fo.failed[:10],
            "stopped_early": fo.unrecovered or None,
            "rate_per_s": rate, "attempt_timeout_s": attempt_timeout_s, "circuit_threshold": threshold,
            "cooldown_s": cooldown_s, "resolution_ms": 1000.0 / rate,
            "measured": "SIGKILL of the primary's process -> the first answer (any request) served by the fallback"}


if __name__ == "__main__":
    run()
