"""Any OpenAI-compatible server as a model backend: vLLM, TGI's messages API, llama.cpp's servers.

The protocol generates from a rendered prompt, so this backend uses the legacy ``/v1/completions``
(a raw prompt, plus ``logprobs: n`` for the n likeliest tokens at each step, which the judge
needs; ``/v1/chat/completions`` would apply the server's template to messages we no longer have).
Plain HTTP with ``httpx``: ``Authorization: Bearer <key>`` when a key is set, SSE for streaming.

Semantics are TGI's, as for the other backends:

- greedy unless sampling is asked for (``temperature: 0``), ``max_tokens`` = ``max_new_tokens``;
- stop sequences are matched here, on the streamed text, not by the server: OpenAI servers cut the
  stop sequence out of the text and most (llama.cpp) report ``finish_reason: "stop"`` for both a
  stop sequence and the end-of-sequence token. Matching them here keeps the stop sequence in the
  text and tells ``stop_sequence`` from ``eos_token`` on every server; the response is closed at
  the match, so the server stops soon after (one or two extra tokens are computed, not returned);
- ``finish_reason``: ``length`` → ``length``, ``stop`` → ``eos_token`` (TGI's own names pass through);
- token counts from ``usage`` (``stream_options.include_usage`` when streaming); a stream cut at a
  stop sequence counts the tokens it received (``logprobs.tokens`` when asked for, else one per
  chunk) and a server without ``usage`` has its prompt counted with ``count_tokens``.
- token ids are not part of the completions API: :class:`TokenOut` ``id`` is -1.

The model id sent is the configured one; if the server serves exactly one other model, that one is
used (with a warning). Limits: ``max_model_len`` from ``/v1/models`` (vLLM), else the configured
context. ``count_tokens`` asks the server (``POST /tokenize`` of vLLM and TGI, llama-cpp-python's
``/extras/tokenize/count``) and ``render_chat`` uses TGI's ``/chat_tokenize`` or vLLM's
``/tokenize`` + ``/detokenize`` with messages, so the model's own chat template is applied; a server
with neither (llama-cpp-python, OpenAI) gets ChatML, and an estimate stands in for token counts.
Those two calls are synchronous in the protocol: short blocking requests, with counts cached.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
import weakref
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

import httpx

from llmops.common.errors import InvalidArgument, RateLimited, Unavailable
from llmops.backends.protocol import (ChatTurn, Generation, GenerationParams, ModelLimits,
                                                TokenOut)
from llmops.backends.tgi import chatml, estimate_tokens

log = logging.getLogger(__name__)

TGI_FINISH = ("length", "eos_token", "stop_sequence")
_TOKENIZE_ROUTES = ("/tokenize", "/extras/tokenize/count")   # vLLM and TGI; llama-cpp-python


def _finish_reason(reason: str | None) -> str:
    if reason in TGI_FINISH:     # TGI's messages API reports its own names
        return str(reason)
    return "length" if reason == "length" else "eos_token"   # "stop": stop sequences are matched here


def _error_message(resp: httpx.Response) -> str:
    """The message of an OpenAI (``{"error": {"message"}}``), TGI (``{"error": str}``), vLLM
    (``{"message"}``) or FastAPI (``{"detail"}``) error body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300]
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message") or err.get("detail") or err)
    return str(err)


def _top(entry: dict[str, float] | None, n: int) -> list[tuple[str, float]]:
    return sorted(((t, float(lp)) for t, lp in (entry or {}).items()), key=lambda a: -a[1])[:n]


class OpenAICompatBackend:
    kind = "openai"

    def __init__(self, base_url: str, name: str, model: str = "", api_key: str = "", timeout_s: float = 120.0,
                 n_ctx: int = 2048) -> None:
        if not base_url:
            raise ValueError("the openai backend needs the base URL of an OpenAI-compatible API (LLMOPS_OPENAI_BASE_URL)")
        base = base_url.rstrip("/")
        if urlsplit(base).path in ("", "/"):
            base += "/v1"
        self.name = name
        self.base_url = base
        self.root = base[: -len("/v1")] if base.endswith("/v1") else base   # where vLLM/TGI extras live
        self.model = model or name
        self.n_ctx = n_ctx
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._ssl = ssl.create_default_context()   # shared: a client per request stays cheap
        self._http = httpx.Client(headers=self._headers, timeout=min(timeout_s, 30.0))
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())
        self._max_model_len: int | None = None
        self._models_loaded = False
        self._tokenize_route: str | None = None   # None: not probed yet; "": the server has none
        self._chat_render = "probe"   # "tgi" | "vllm" | "chatml" once known
        self._count = functools.lru_cache(maxsize=2048)(self._count_uncached)
        try:
            self._load_models()
        except Unavailable as exc:  # the server may start after us: limits() asks again
            log.warning("%s", exc)

    # -- the sync side: models, tokens, chat template -----------------------------------------------
    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._http.request(method, url, json=body)
        except httpx.TransportError as exc:
            raise Unavailable(f"the model server at {self.base_url} is unreachable: {exc}") from exc

    def _load_models(self) -> None:
        resp = self._request("GET", f"{self.base_url}/models")
        if resp.status_code != 200:
            raise Unavailable(f"GET {self.base_url}/models: HTTP {resp.status_code} {_error_message(resp)}")
        data = resp.json().get("data") or []
        entry = next((m for m in data if m.get("id") == self.model), None)
        if entry is None and len(data) == 1:
            log.warning("%s serves %r, not %r: using %r", self.base_url, data[0].get("id"), self.model, data[0].get("id"))
            entry = data[0]
            self.model = str(entry["id"])
        if entry is None:
            raise Unavailable(f"{self.base_url} does not serve model {self.model!r}; it serves "
                              f"{[m.get('id') for m in data]} (set LLMOPS_OPENAI_MODEL)")
        self._max_model_len = entry.get("max_model_len")
        self._models_loaded = True

    def limits(self) -> ModelLimits:
        if not self._models_loaded:
            self._load_models()
        total = int(self._max_model_len or self.n_ctx)
        return ModelLimits(max_input_tokens=total - 1, max_total_tokens=total)

    def renders_locally(self) -> bool:
        """True once the server is known to offer neither chat rendering nor token counting: then
        ``render_chat``, ``count_tokens`` and ``limits`` make no call and may run on the event loop."""
        return self._models_loaded and self._chat_render == "chatml" and self._tokenize_route == ""

    def render_chat(self, messages: Sequence[ChatTurn]) -> str:
        msgs = [{"role": m.role, "content": m.content} for m in messages]
        renderers = {"tgi": self._tgi_render, "vllm": self._vllm_render}
        if self._chat_render in renderers:
            text = renderers[self._chat_render](msgs)
            if text is None:
                raise Unavailable(f"{self.root} stopped rendering chats ({self._chat_render} dialect)")
            return text
        if self._chat_render == "probe":
            for dialect, render in renderers.items():
                text = render(msgs)
                if text is not None:
                    self._chat_render = dialect
                    return text
            log.warning("%s renders no chat template (neither TGI's /chat_tokenize nor vLLM's /tokenize "
                        "with messages); using ChatML", self.root)
            self._chat_render = "chatml"
        return chatml(messages)

    def _json(self, method: str, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer of a 200, else None (a route this server does not have)."""
        resp = self._request(method, f"{self.root}{path}", body)
        if resp.status_code != 200:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def _tgi_render(self, msgs: list[dict[str, str]]) -> str | None:
        out = self._json("POST", "/chat_tokenize", {"model": self.model, "messages": msgs})
        return str(out["templated_text"]) if isinstance(out, dict) and "templated_text" in out else None

    def _vllm_render(self, msgs: list[dict[str, str]]) -> str | None:
        out = self._json("POST", "/tokenize", {"model": self.model, "messages": msgs, "add_generation_prompt": True,
                                               "add_special_tokens": False})
        if not isinstance(out, dict) or "tokens" not in out:
            return None
        back = self._json("POST", "/detokenize", {"model": self.model, "tokens": out["tokens"]})
        return str(back["prompt"]) if isinstance(back, dict) and "prompt" in back else None

    def count_tokens(self, text: str) -> int:
        return self._count(text) if text else 0

    def _count_uncached(self, text: str) -> int:
        routes = _TOKENIZE_ROUTES if self._tokenize_route is None else (self._tokenize_route,)
        for route in filter(None, routes):
            # one body in three dialects: vLLM reads `prompt`, llama-cpp-python `input`, TGI `inputs`
            body = self._json("POST", route, {"model": self.model, "prompt": text, "input": text, "inputs": text,
                                              "add_special_tokens": True})
            count = None
            if isinstance(body, list):                          # TGI: one entry per token
                count = len(body)
            elif isinstance(body, dict) and "count" in body:    # vLLM, llama-cpp-python's /extras/tokenize/count
                count = int(body["count"])
            if count is not None:
                self._tokenize_route = route
                return count
        if self._tokenize_route != "":
            log.warning("%s counts no tokens (tried %s); estimating token counts", self.root, ", ".join(routes))
            self._tokenize_route = ""
        return estimate_tokens(text)

    # -- generation ---------------------------------------------------------------------------------
    def _body(self, prompt: str, params: GenerationParams, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": params.max_new_tokens,
                                "stream": stream}
        if params.sampling:
            body["temperature"] = params.temperature if params.temperature is not None else 1.0
            if params.top_p is not None:
                body["top_p"] = params.top_p
            if params.top_k is not None:
                body["top_k"] = params.top_k
        else:
            body["temperature"] = 0.0
        if params.seed is not None:
            body["seed"] = params.seed
        if params.repetition_penalty is not None:   # vLLM and TGI / llama-cpp-python spell it differently
            body["repetition_penalty"] = body["repeat_penalty"] = params.repetition_penalty
        if params.details or params.top_n_tokens > 0:
            body["logprobs"] = params.top_n_tokens   # 0: the chosen token's logprob only
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        """The event loop's client: one per loop (an AsyncClient's pool belongs to one loop; the
        backend may be used from several, e.g. tests), kept open so connections are reused —
        a new connection per request was most of the gateway's time over a fast upstream."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = self._clients[loop] = httpx.AsyncClient(headers=self._headers, timeout=self._timeout,
                                                             verify=self._ssl)
        yield client

    def _status_error(self, resp: httpx.Response) -> Exception:
        msg = f"{self.base_url}: HTTP {resp.status_code}: {_error_message(resp)}"
        if resp.status_code in (400, 413, 422):
            return InvalidArgument(msg)
        if resp.status_code == 429:
            return RateLimited(msg)
        return Unavailable(msg)   # 401/403 (key), 404 (model), 5xx: the server cannot serve us

    def _transport_error(self, exc: httpx.TransportError) -> Unavailable:
        return Unavailable(f"the model server at {self.base_url} is unreachable or timed out: "
                           f"{type(exc).__name__}: {exc}")

    async def generate(self, prompt: str, params: GenerationParams) -> Generation:
        if params.stop:  # matched on the stream (see the module docstring)
            result = None
            async for item in self._stream(prompt, params):
                result = item
            assert isinstance(result, Generation)
            return result
        try:
            async with self._client() as client:
                resp = await client.post(f"{self.base_url}/completions", json=self._body(prompt, params, False))
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if resp.status_code != 200:
            raise self._status_error(resp)
        body = resp.json()
        choice = body["choices"][0]
        lp = choice.get("logprobs") or {}
        tokens = [TokenOut(id=-1, text=t, logprob=float(l or 0.0), top=_top(top, params.top_n_tokens))
                  for t, l, top in zip(lp.get("tokens") or [], lp.get("token_logprobs") or [],
                                       lp.get("top_logprobs") or [None] * len(lp.get("tokens") or []))]
        usage = body.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        if prompt_tokens is None:
            prompt_tokens = await asyncio.to_thread(self.count_tokens, prompt)
        return Generation(text=choice.get("text") or "", finish_reason=_finish_reason(choice.get("finish_reason")),
                          prompt_tokens=int(prompt_tokens),
                          completion_tokens=int(usage.get("completion_tokens", len(tokens))), tokens=tokens)

    async def generate_stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[TokenOut | Generation]:
        async for item in self._stream(prompt, params):
            yield item

    async def _stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[TokenOut | Generation]:
        text, tokens, received = "", [], 0
        finish: str | None = None
        usage: dict[str, Any] = {}
        try:
            async with self._client() as client:
                async with client.stream("POST", f"{self.base_url}/completions",
                                         json=self._body(prompt, params, True)) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        raise self._status_error(resp)
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if "error" in chunk:
                            raise Unavailable(f"{self.base_url} failed mid-stream: {chunk['error']}")
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices") or []:
                            piece = choice.get("text") or ""
                            lp = choice.get("logprobs") or {}
                            n = len(lp.get("tokens") or []) or (1 if piece else 0)
                            received += n
                            if piece:
                                start = len(text)
                                text += piece
                                hits = [(i, s) for s in params.stop if (i := text.find(s)) >= 0]
                                if hits:   # TGI keeps the stop sequence and stops at the earliest
                                    i, s = min(hits)
                                    text = text[: i + len(s)]
                                    piece = text[start:]
                                    finish = "stop_sequence"
                                out = TokenOut(id=-1, text=piece,
                                               logprob=float(sum(x or 0.0 for x in lp.get("token_logprobs") or [])),
                                               top=_top((lp.get("top_logprobs") or [None])[0], params.top_n_tokens))
                                tokens.append(out)
                                yield out
                            if finish is None and choice.get("finish_reason"):
                                finish = _finish_reason(choice["finish_reason"])
                        if finish == "stop_sequence":
                            break   # leaving the block closes the response: the server stops
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        if finish is None:
            # llama-cpp-python fails an over-long prompt after the stream began: an empty 200 stream
            n = await asyncio.to_thread(self.count_tokens, prompt)
            limit = self.limits().max_total_tokens
            if n + params.max_new_tokens > limit:
                raise InvalidArgument(f"`inputs` tokens + `max_new_tokens` must be <= {limit}. Given: {n} `inputs` "
                                      f"tokens and {params.max_new_tokens} `max_new_tokens`")
            raise Unavailable(f"{self.base_url} ended the stream without a finish reason")
        prompt_tokens = usage.get("prompt_tokens")
        if prompt_tokens is None:
            prompt_tokens = await asyncio.to_thread(self.count_tokens, prompt)
        completion = usage.get("completion_tokens") if finish != "stop_sequence" else None
        want = params.details or params.top_n_tokens > 0
        yield Generation(text=text, finish_reason=finish, prompt_tokens=int(prompt_tokens),
                         completion_tokens=int(completion if completion is not None else received),
                         tokens=tokens if want else [])

    def close(self) -> None:
        self._http.close()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, client in list(self._clients.items()):   # a closed loop's client has no socket left to close
            if loop is running:
                loop.create_task(client.aclose())
            elif not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(client.aclose(), loop)
        self._clients.clear()
