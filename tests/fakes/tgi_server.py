"""A wire-level fake of text-generation-inference's HTTP API (router 2.x).

No TGI server can run on these machines, so the TGI backend is tested against this fake, built
from TGI's published OpenAPI document and router source: the same routes (``/``, ``/generate``,
``/generate_stream``, ``/info``, ``/tokenize``, ``/chat_tokenize``, ``/health``), the same JSON
shapes (``details`` with ``tokens``/``top_tokens``, SSE events ``data:{...}`` whose last one carries
``generated_text`` and ``details``), and the same validation errors (HTTP 422
``{"error": "Input validation error: ...", "error_type": "validation"}``; on ``/generate_stream`` the
error is an SSE event of a 200 response, as TGI sends it).

The "model" is deterministic, not a language model: it continues any prompt with words of a
fixed passage, starting at an offset derived from the prompt (greedy) or from the seed
(sampling), ends with an EOS token after a prompt-dependent length, and honours
``max_new_tokens``, ``stop`` and ``top_n_tokens`` (at most ``max_top_n_tokens``, default 5 as in
TGI). Its tokenizer splits text into words with their leading space.

Fault injection, for the routing tests: :meth:`FakeTgi.set_fault` makes the next N generation
requests (``/``, ``/generate``, ``/generate_stream``; or all of them until :meth:`FakeTgi.clear_fault`)
answer HTTP 503 (as a load balancer or an endpoint that is scaling does), HTTP 429 (TGI's own
``overloaded`` error), or hang without answering (past any client timeout; released at
:meth:`FakeTgiServer.stop`). ``FakeTgiConfig.delay_s`` delays every generation answer (a slow model)
and ``FakeTgiConfig.passage`` sets the words answers are made of (to tell two fakes apart).
Every generation request is counted in :attr:`FakeTgi.calls`, with the time it arrived.
"""
from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PASSAGE = ("Paris is the capital of France . It lies on the river Seine , and it is known for art , food "
           "and history . Many people visit the city every year to see its museums and parks .").split()
EOS = {"id": 2, "text": "</s>", "special": True}
_TOKEN = re.compile(r"<\|[a-z_]+\|>|\s*[^\s<]+|\s+|<")
MODEL_ID = "fake/smol-tgi"


def tokenize(text: str) -> list[dict[str, Any]]:
    """TGI's ``/tokenize`` answer: ``[{"id", "text", "start", "stop"}]`` (character offsets)."""
    out = []
    for m in _TOKEN.finditer(text):
        out.append({"id": token_id(m.group()), "text": m.group(), "start": m.start(), "stop": m.end()})
    return out


def token_id(text: str) -> int:
    return 100 + zlib.crc32(text.encode()) % 30_000


def chatml(messages: list[dict[str, Any]]) -> str:
    """The fake model's chat template (ChatML, as SmolLM2's), with the generation prompt."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


class ValidationFailed(Exception):
    """TGI's ``InferError::ValidationError``: HTTP 422, ``error_type`` ``validation``."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Input validation error: {message}")


@dataclass
class FakeTgiConfig:
    max_input_tokens: int = 1024
    max_total_tokens: int = 2048
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5      # TGI's --max-top-n-tokens default
    passage: list[str] = field(default_factory=lambda: list(PASSAGE))   # the words answers are made of
    delay_s: float = 0.0           # every generation request is answered (or failed) after this long


FAULTS = ("503", "429", "hang")


@dataclass(frozen=True)
class GenerationCall:
    """One generation request the fake received: its route, when it arrived (``time.monotonic()``, the
    same clock as the test's: the fake runs in the test's process) and what it was answered."""
    path: str
    started: float
    outcome: str   # "ok" or the fault: "503", "429", "hang"


class FakeTgi:
    """The request handling; :class:`FakeTgiServer` serves it over HTTP."""

    def __init__(self, config: FakeTgiConfig | None = None) -> None:
        self.config = config or FakeTgiConfig()
        self.requests: list[dict[str, Any]] = []   # every /generate* body, for assertions
        self.authorizations: list[tuple[str, str]] = []   # (path, Authorization header) of every request
        self.calls: list[GenerationCall] = []             # every generation request, faulted or not
        self._fault: str = ""
        self._fault_left: int | None = None
        self._lock = threading.Lock()

    # -- fault injection (set from the test's thread, read on the server's loop) -------------------
    def set_fault(self, kind: str, times: int | None = None) -> None:
        """The next ``times`` generation requests (None: every one until :meth:`clear_fault`) get
        ``kind``: "503", "429" or "hang"."""
        if kind not in FAULTS:
            raise ValueError(f"fault {kind!r} is not one of {FAULTS}")
        with self._lock:
            self._fault, self._fault_left = kind, times

    def clear_fault(self) -> None:
        with self._lock:
            self._fault, self._fault_left = "", None

    def _next_outcome(self, path: str) -> str:
        with self._lock:
            outcome = self._fault or "ok"
            if self._fault and self._fault_left is not None:
                self._fault_left -= 1
                if self._fault_left <= 0:
                    self._fault, self._fault_left = "", None
            self.calls.append(GenerationCall(path, time.monotonic(), outcome))
        return outcome

    # -- validation, as router/src/validation.rs ----------------------------------------------
    def validate(self, body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        c = self.config
        inputs = body.get("inputs", "")
        p = dict(body.get("parameters") or {})
        if p.get("best_of") not in (None, 1):
            raise ValidationFailed("`best_of` is not supported by this fake")
        t = p.get("temperature")
        if t is not None and t <= 0:
            raise ValidationFailed("`temperature` must be strictly positive")
        rp = p.get("repetition_penalty")
        if rp is not None and rp <= 0:
            raise ValidationFailed("`repetition_penalty` must be strictly positive")
        tp = p.get("top_p")
        if tp is not None and not 0.0 < tp < 1.0:
            raise ValidationFailed("`top_p` must be > 0.0 and < 1.0")
        tk = p.get("top_k")
        if tk is not None and tk <= 0:
            raise ValidationFailed("`top_k` must be strictly positive")
        n = p.get("top_n_tokens")
        if n is not None and not 0 <= n <= c.max_top_n_tokens:
            raise ValidationFailed(f"`top_n_tokens` must be >= 0 and <= {c.max_top_n_tokens}. Given: {n}")
        stop = p.get("stop") or []
        if len(stop) > c.max_stop_sequences:
            raise ValidationFailed(f"`stop` supports up to {c.max_stop_sequences} stop sequences. Given: {len(stop)}")
        max_new = p.get("max_new_tokens")
        max_new = 100 if max_new is None else max_new
        if max_new <= 0:
            raise ValidationFailed("`max_new_tokens` must be strictly positive")
        if not inputs:
            raise ValidationFailed("`inputs` cannot be empty")
        input_length = len(tokenize(inputs))
        if input_length + max_new > c.max_total_tokens:
            raise ValidationFailed(f"`inputs` tokens + `max_new_tokens` must be <= {c.max_total_tokens}. "
                                   f"Given: {input_length} `inputs` tokens and {max_new} `max_new_tokens`")
        if input_length > c.max_input_tokens:
            raise ValidationFailed(f"`inputs` must have less than {c.max_input_tokens} tokens. Given: {input_length}")
        p["max_new_tokens"] = max_new
        return inputs, p, input_length

    # -- the deterministic "model" ----------------------------------------------------------------
    def run(self, inputs: str, p: dict[str, Any]) -> tuple[list[tuple[dict, list[dict]]], str, str, int | None]:
        """(tokens with their top alternatives, generated_text, finish_reason, seed)."""
        sampling = bool(p.get("do_sample")) or any(p.get(k) is not None for k in ("temperature", "top_p", "top_k"))
        seed = None
        passage = self.config.passage
        h = zlib.crc32(inputs.encode())
        start, answer_len = h % len(passage), 6 + (h >> 8) % 10
        if sampling:
            seed = p["seed"] if p.get("seed") is not None else random.getrandbits(63)
            start = random.Random(seed).randrange(len(passage))
        top_n = p.get("top_n_tokens") or 0
        stops = p.get("stop") or []
        steps: list[tuple[dict, list[dict]]] = []
        text, finish = "", "length"
        for i in range(p["max_new_tokens"]):
            if i == answer_len:
                steps.append(({**EOS, "logprob": -0.3}, self._top(EOS["text"], start + i, top_n, special=True)))
                finish = "eos_token"
                break
            word = passage[(start + i) % len(passage)]
            piece = word if i == 0 else f" {word}"
            steps.append(({"id": token_id(piece), "text": piece, "logprob": -0.2, "special": False},
                          self._top(piece, start + i, top_n)))
            text += piece
            if any(s in text for s in stops):
                finish = "stop_sequence"   # TGI keeps the stop sequence in generated_text
                break
        return steps, text, finish, seed

    @staticmethod
    def _top(chosen: str, at: int, n: int, special: bool = False) -> list[dict]:
        if n <= 0:
            return []
        out = [{"id": EOS["id"] if special else token_id(chosen), "text": chosen, "logprob": -0.2, "special": special}]
        k = 1
        while len(out) < n:
            alt = " " + PASSAGE[(at + 7 * k) % len(PASSAGE)]
            if all(t["text"] != alt for t in out):
                out.append({"id": token_id(alt), "text": alt, "logprob": -3.0 - 0.5 * (len(out) - 1),
                            "special": False})
            k += 1
        return out

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs, p, _ = self.validate(body)
        steps, text, finish, seed = self.run(inputs, p)
        out: dict[str, Any] = {"generated_text": (inputs + text) if p.get("return_full_text") else text}
        if p.get("details") or p.get("decoder_input_details"):
            details: dict[str, Any] = {
                "finish_reason": finish, "generated_tokens": len(steps), "seed": seed,
                "prefill": [{"id": t["id"], "text": t["text"], "logprob": None} for t in tokenize(inputs)]
                if p.get("decoder_input_details") else [],
                "tokens": [tok for tok, _ in steps],
            }
            if any(top for _, top in steps):   # serde skips an empty top_tokens
                details["top_tokens"] = [top for _, top in steps]
            out["details"] = details
        return out

    def stream_events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            inputs, p, input_length = self.validate(body)
        except ValidationFailed as exc:
            return [{"error": str(exc), "error_type": "validation"}]
        steps, text, finish, seed = self.run(inputs, p)
        events = []
        for i, (tok, top) in enumerate(steps, 1):
            last = i == len(steps)
            ev: dict[str, Any] = {"index": i, "token": tok, "generated_text": None, "details": None}
            if top:
                ev["top_tokens"] = top
            if last:
                ev["generated_text"] = (inputs + text) if p.get("return_full_text") else text
                if p.get("details"):
                    ev["details"] = {"finish_reason": finish, "generated_tokens": len(steps), "seed": seed,
                                     "input_length": input_length}
            events.append(ev)
        return events

    def info(self) -> dict[str, Any]:
        c = self.config
        return {"model_id": MODEL_ID, "model_sha": None, "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128, "max_best_of": 2, "max_stop_sequences": c.max_stop_sequences,
                "max_input_tokens": c.max_input_tokens, "max_total_tokens": c.max_total_tokens,
                "validation_workers": 2, "max_client_batch_size": 4, "router": "text-generation-router",
                "version": "2.4.1", "sha": None, "docker_label": None}


def _error(status: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=status)


FAULT_ANSWERS = {
    "503": (503, "Service Unavailable", "unavailable"),   # a load balancer / an endpoint scaling up
    "429": (429, "Model is overloaded", "overloaded"),    # TGI's InferError::Overloaded
}


def make_app(tgi: FakeTgi, release: asyncio.Event) -> web.Application:
    """``release`` ends every hanging request (set at shutdown)."""

    async def faulted(request: web.Request) -> web.Response | None:
        """The fault this generation request gets (after the configured delay), or None: answer it."""
        outcome = tgi._next_outcome(request.path)
        if tgi.config.delay_s:
            await asyncio.sleep(tgi.config.delay_s)
        if outcome == "hang":
            await release.wait()
            return _error(503, "the fake TGI was stopped while hanging", "unavailable")
        if outcome in FAULT_ANSWERS:
            return _error(*FAULT_ANSWERS[outcome])
        return None

    async def generate(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tgi.requests.append(body)
        if (fault := await faulted(request)) is not None:
            return fault
        try:
            return web.json_response(tgi.generate(body))
        except ValidationFailed as exc:
            return _error(422, str(exc), "validation")

    async def generate_stream(request: web.Request, counted: bool = False) -> web.StreamResponse:
        body = await request.json()
        tgi.requests.append(body)
        if not counted and (fault := await faulted(request)) is not None:
            return fault
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        for ev in tgi.stream_events(body):
            await resp.write(f"data:{json.dumps(ev)}\n\n".encode())   # axum writes `data:` without a space
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    async def compat(request: web.Request) -> web.StreamResponse:
        """``POST /``: what the ``text-generation`` client calls; a list for ``stream: false``."""
        body = await request.json()
        if (fault := await faulted(request)) is not None:
            tgi.requests.append(body)
            return fault
        if body.get("stream"):
            return await generate_stream(request, counted=True)
        tgi.requests.append(body)
        try:
            return web.json_response([tgi.generate(body)])
        except ValidationFailed as exc:
            return _error(422, str(exc), "validation")

    async def tokenize_route(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(tokenize(body.get("inputs", "")))

    async def chat_tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        text = chatml(body.get("messages") or [])
        return web.json_response({"tokenize_response": tokenize(text), "templated_text": text})

    async def info(request: web.Request) -> web.Response:
        return web.json_response(tgi.info())

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    @web.middleware
    async def record_auth(request: web.Request, handler):
        tgi.authorizations.append((request.path, request.headers.get("Authorization", "")))
        return await handler(request)

    app = web.Application(middlewares=[record_auth])
    app.add_routes([web.post("/", compat), web.post("/generate", generate),
                    web.post("/generate_stream", generate_stream), web.post("/tokenize", tokenize_route),
                    web.post("/chat_tokenize", chat_tokenize), web.get("/info", info), web.get("/health", health)])
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeTgiServer:
    """Serves :class:`FakeTgi` on 127.0.0.1 (a free port) from a thread with its own event loop."""

    def __init__(self, config: FakeTgiConfig | None = None, port: int | None = None) -> None:
        self.tgi = FakeTgi(config)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-tgi", daemon=True)

    def start(self) -> "FakeTgiServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        self._release = asyncio.Event()
        self._runner = web.AppRunner(make_app(self.tgi, self._release))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._release is not None:   # hanging requests end first, so the cleanup need not wait for them
            self._loop.call_soon_threadsafe(self._release.set)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> "FakeTgiServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
