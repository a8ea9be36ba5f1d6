"""A text-generation-inference server as a model backend, through the official ``text-generation``
client (``AsyncClient``: TGI's ``/generate`` semantics; it posts to TGI's ``/`` route, which serves
``/generate`` and ``/generate_stream``).

TGI and :class:`~llmops.backends.protocol.GenerationParams` share their semantics, so the
mapping is direct: finish reasons, ``top_n_tokens`` and the stop sequence kept in the text are
TGI's own. What the protocol needs beyond generation comes from TGI's other routes:

- limits and the model id from ``GET /info`` (``max_input_tokens``, or ``max_input_length`` before
  TGI 2.0, and ``max_total_tokens``);
- ``count_tokens`` from ``POST /tokenize``; a TGI without a fast tokenizer answers 404, and then a
  conservative estimate (a token per 3 UTF-8 bytes) stands in: TGI still validates every request;
- ``render_chat`` from ``POST /chat_tokenize`` (TGI >= 2.1, the model's own chat template); an older
  TGI or a model without a template gets ChatML.

Errors: TGI's 422 validation errors (input too long, bad parameter) become
:class:`~llmops.common.errors.InvalidArgument`; a server that cannot be reached, times out,
is overloaded or fails mid-generation becomes :class:`~llmops.common.errors.Unavailable`.
``render_chat`` and ``count_tokens`` are synchronous in the protocol, so they make short blocking
HTTP calls; token counts are cached, because the engine counts a prompt and then generates it,
and the judge's ``fit`` counts prefixes of the same text many times.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Any, AsyncIterator, Sequence

import aiohttp
import httpx

from llmops.common.errors import InvalidArgument, RateLimited, Unavailable
from llmops.backends.protocol import (ChatTurn, Generation, GenerationParams, ModelLimits,
                                                TokenOut)

log = logging.getLogger(__name__)

_TOP_N_LIMIT = re.compile(r"`top_n_tokens` must be >= 0 and <= (\d+)")


def chatml(messages: Sequence[ChatTurn]) -> str:
    """ChatML with the assistant's turn opened: the fallback chat template (SmolLM2, Qwen, ...)."""
    return "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate where the server cannot count: about 3 UTF-8 bytes a token."""
    return -(-len(text.encode()) // 3)


class TgiBackend:
    kind = "tgi"

    def __init__(self, url: str, name: str, timeout_s: float = 120.0, api_key: str = "") -> None:
        from text_generation import AsyncClient

        if not url:
            raise ValueError("the tgi backend needs the URL of a TGI server (LLMOPS_TGI_URL)")
        self.name = name
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = AsyncClient(self.url, headers=headers, timeout=timeout_s)  # type: ignore[arg-type]
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=min(timeout_s, 30.0))
        self._info: dict[str, Any] | None = None
        self._top_n_cap: int | None = None        # TGI's --max-top-n-tokens, learnt from its 422
        self._can_tokenize = True
        self._can_chat_tokenize = True
        self._count = functools.lru_cache(maxsize=2048)(self._count_uncached)
        try:
            self._load_info()
        except Unavailable as exc:  # the server may start after us: limits() asks again
            log.warning("%s", exc)

    @property
    def model_id(self) -> str:
        """The model TGI serves (``/info``), which may differ from the name clients use."""
        return str((self._info or {}).get("model_id", ""))

    # -- the sync side: /info, /tokenize, /chat_tokenize -------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            return self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise Unavailable(f"TGI at {self.url} is unreachable: {exc}") from exc

    def _load_info(self) -> dict[str, Any]:
        try:
            resp = self._http.get("/info")
            resp.raise_for_status()
            self._info = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"TGI at {self.url} did not answer GET /info: {exc}") from exc
        return self._info

    def limits(self) -> ModelLimits:
        info = self._info or self._load_info()
        max_total = int(info["max_total_tokens"])
        max_input = info.get("max_input_tokens") or info.get("max_input_length") or max_total - 1
        return ModelLimits(max_input_tokens=int(max_input), max_total_tokens=max_total)

    def render_chat(self, messages: Sequence[ChatTurn]) -> str:
        if self._can_chat_tokenize:
            resp = self._post("/chat_tokenize", {"messages": [{"role": m.role, "content": m.content} for m in messages]})
            if resp.status_code == 200:
                return str(resp.json()["templated_text"])
            # 404/405: TGI < 2.1; 422: the model has no chat template
            log.warning("TGI at %s cannot render chats (POST /chat_tokenize: HTTP %s); using ChatML",
                        self.url, resp.status_code)
            self._can_chat_tokenize = False
        return chatml(messages)

    def count_tokens(self, text: str) -> int:
        return self._count(text) if text else 0

    def _count_uncached(self, text: str) -> int:
        if self._can_tokenize:
            resp = self._post("/tokenize", {"inputs": text})
            if resp.status_code == 200:
                return len(resp.json())
            if resp.status_code in (404, 405):  # no fast tokenizer (or a TGI without /tokenize)
                log.warning("TGI at %s cannot tokenize (HTTP %s); estimating token counts", self.url,
                            resp.status_code)
                self._can_tokenize = False
            else:
                raise Unavailable(f"TGI at {self.url} failed to tokenize: HTTP {resp.status_code} {resp.text[:200]}")
        return estimate_tokens(text)

    # -- generation -------------------------------------------------------------------------------
    def _args(self, params: GenerationParams) -> dict[str, Any]:
        top_n = params.top_n_tokens
        if self._top_n_cap is not None:
            top_n = min(top_n, self._top_n_cap)
        return dict(
            do_sample=params.sampling, max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty, seed=params.seed,
            stop_sequences=list(params.stop), temperature=params.temperature, top_k=params.top_k,
            top_p=params.top_p, top_n_tokens=top_n or None,
        )

    def _learn_top_n_cap(self, exc: Exception, params: GenerationParams) -> bool:
        """TGI rejects ``top_n_tokens`` above its ``--max-top-n-tokens`` (default 5); the judge asks for
        more. Remember the server's cap from its message; True: retry with it."""
        m = _TOP_N_LIMIT.search(str(exc))
        if m is None or params.top_n_tokens <= int(m.group(1)) or self._top_n_cap is not None:
            return False
        self._top_n_cap = int(m.group(1))
        log.info("TGI at %s allows top_n_tokens <= %d; asking for that many", self.url, self._top_n_cap)
        return True

    def _mapped(self, exc: Exception) -> Exception:
        from text_generation import errors

        if isinstance(exc, (errors.ValidationError, errors.BadRequestError)):
            return InvalidArgument(str(exc))
        if isinstance(exc, (errors.RateLimitExceededError, errors.OverloadedError)):   # TGI's 429s
            return RateLimited(f"TGI at {self.url} is rate limiting or overloaded (429): {exc}")
        if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
            return Unavailable(f"TGI at {self.url} is unreachable or timed out: {type(exc).__name__}: {exc}")
        return Unavailable(f"TGI at {self.url} failed: {type(exc).__name__}: {exc}")

    @staticmethod
    def _token(tok: Any, top: Sequence[Any] | None, n: int) -> TokenOut:
        alts = sorted(((t.text, float(t.logprob)) for t in (top or []) if t.logprob is not None),
                      key=lambda a: -a[1])[:n]
        return TokenOut(id=tok.id, text=tok.text, logprob=float(tok.logprob or 0.0), top=alts)

    async def generate(self, prompt: str, params: GenerationParams) -> Generation:
        from text_generation import errors

        for attempt in range(2):
            try:
                resp = await self._client.generate(prompt, **self._args(params))
                break
            except errors.ValidationError as exc:
                if attempt == 0 and self._learn_top_n_cap(exc, params):
                    continue
                raise self._mapped(exc) from exc
            except Exception as exc:
                raise self._mapped(exc) from exc
        d = resp.details
        tops = d.top_tokens or [None] * len(d.tokens)
        tokens = [self._token(t, top, params.top_n_tokens) for t, top in zip(d.tokens, tops) if not t.special]
        want = params.details or params.top_n_tokens > 0
        return Generation(text=resp.generated_text, finish_reason=d.finish_reason.value,
                          prompt_tokens=await asyncio.to_thread(self.count_tokens, prompt),
                          completion_tokens=d.generated_tokens, tokens=tokens if want else [])

    async def generate_stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[TokenOut | Generation]:
        from text_generation import errors

        tokens: list[TokenOut] = []
        for attempt in range(2):
            try:
                async for r in self._client.generate_stream(prompt, **self._args(params)):
                    if not r.token.special:  # EOS is not text (TGI's generated_text leaves it out too)
                        out = self._token(r.token, r.top_tokens, params.top_n_tokens)
                        tokens.append(out)
                        yield out
                    if r.generated_text is not None:
                        d = r.details
                        want = params.details or params.top_n_tokens > 0
                        yield Generation(
                            text=r.generated_text, finish_reason=d.finish_reason.value if d else "length",
                            prompt_tokens=await asyncio.to_thread(self.count_tokens, prompt),
                            completion_tokens=d.generated_tokens if d else len(tokens),
                            tokens=tokens if want else [])
                        return
                raise Unavailable(f"TGI at {self.url} ended the stream before the last token")
            except errors.ValidationError as exc:  # sent before any token: safe to retry
                if attempt == 0 and not tokens and self._learn_top_n_cap(exc, params):
                    continue
                raise self._mapped(exc) from exc
            except (InvalidArgument, Unavailable, RateLimited):
                raise
            except Exception as exc:
                raise self._mapped(exc) from exc

    def close(self) -> None:
        self._http.close()
