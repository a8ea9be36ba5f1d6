"""The embedded backend: llama-cpp-python on a local GGUF (SmolLM2-135M-Instruct by default).

The model is loaded once. llama.cpp contexts are not thread-safe, so generations run one at a
time on a dedicated thread; concurrent requests queue (FIFO) instead of corrupting the KV cache.
Generation is driven token by token so that counts, TGI finish reasons (``length``,
``eos_token``, ``stop_sequence``), stop sequences and streaming are exact.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Iterator, Sequence

import numpy as np

from llmops.common.errors import InvalidArgument
from llmops.backends.protocol import (ChatTurn, Generation, GenerationParams, ModelLimits,
                                                TokenOut)

log = logging.getLogger(__name__)


def _valid_utf8_prefix(data: bytes) -> str:
    """Decode the longest prefix of ``data`` that does not end inside a multi-byte character."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def _set_priority(priority: str) -> None:
    """Scheduling of the model's thread: ``idle`` runs it only when no other thread wants the CPU
    (Linux SCHED_IDLE), ``low`` is nice 10, ``normal`` leaves it alone."""
    tid = threading.get_native_id()
    try:
        if priority == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        elif priority == "low":
            os.setpriority(os.PRIO_PROCESS, tid, 10)
    except (OSError, AttributeError) as exc:  # not Linux, or not permitted: normal priority
        log.warning("could not set %s priority on the model thread: %s", priority, exc)


class LlamaCppBackend:
    kind = "llama_cpp"

    def __init__(self, model_path: str, name: str, n_ctx: int = 2048, n_threads: int = 2,
                 priority: str = "normal") -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = name
        self.model_path = model_path
        self.llm = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                         verbose=False, logits_all=False)
        self.n_ctx = self.llm.n_ctx()
        template = self.llm.metadata.get("tokenizer.chat_template")
        eos_id, bos_id = self.llm.token_eos(), self.llm.token_bos()
        self._eos_text = self.llm.detokenize([eos_id], special=True).decode(errors="ignore") if eos_id >= 0 else ""
        bos_text = self.llm.detokenize([bos_id], special=True).decode(errors="ignore") if bos_id >= 0 else ""
        self._formatter = Jinja2ChatFormatter(template, eos_token=self._eos_text, bos_token=bos_text) if template else None
        self._lock = threading.Lock()
        # a judge model runs beside the request path's model on the same cores: at "idle" it only
        # gets the CPU the request path leaves over (with one thread, ggml computes on this thread)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}",
                                            initializer=_set_priority, initargs=(priority,))

    # -- protocol ---------------------------------------------------------------------------------
    def limits(self) -> ModelLimits:
        return ModelLimits(max_input_tokens=self.n_ctx - 1, max_total_tokens=self.n_ctx)

    def renders_locally(self) -> bool:
        return True   # in-process: rendering and counting are quick CPU work

    def render_chat(self, messages: Sequence[ChatTurn]) -> str:
        msgs = [{"role": m.role, "content": m.content} for m in messages]
        if self._formatter is None:  # a GGUF without a chat template: plain transcript
            return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
        return self._formatter(messages=msgs).prompt

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text))

    def _tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    async def generate(self, prompt: str, params: GenerationParams) -> Generation:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._generate_all, prompt, params)

    async def generate_stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[TokenOut | Generation]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def run() -> None:
            try:
                for item in self._run(prompt, params, cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:  # surfaced to the caller below
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        fut = loop.run_in_executor(self._executor, run)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Generation):
                    break
        finally:
            cancelled.set()  # a client that went away stops the generation at the next token
            await asyncio.shield(fut)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if hasattr(self.llm, "close"):
            self.llm.close()

    # -- the token loop -----------------------------------------------------------------------
    def _generate_all(self, prompt: str, params: GenerationParams) -> Generation:
        result = None
        for item in self._run(prompt, params, threading.Event()):
            if isinstance(item, Generation):
                result = item
        assert result is not None
        return result

    def _run(self, prompt: str, params: GenerationParams, cancelled: threading.Event) -> Iterator[TokenOut | Generation]:
        with self._lock:
            prompt_ids = self.llm.tokenize(prompt.encode(), add_bos=True, special=True)
            if len(prompt_ids) + params.max_new_tokens > self.n_ctx:
                # callers check first; this guards the KV cache, with TGI's wording
                raise InvalidArgument(f"`inputs` tokens + `max_new_tokens` must be <= {self.n_ctx}. Given: "
                                      f"{len(prompt_ids)} `inputs` tokens and {params.max_new_tokens} `max_new_tokens`")
            if params.sampling:
                temp = params.temperature if params.temperature is not None else 1.0
                top_k = params.top_k or 0
                top_p = params.top_p if params.top_p is not None else 1.0
            else:
                temp, top_k, top_p = 0.0, 1, 1.0
            if params.seed is not None:
                self.llm.set_seed(int(params.seed) & 0xFFFFFFFF)
            generated: list[int] = []
            tokens: list[TokenOut] = []
            last_logits: list[np.ndarray] = []

            def capture(_ids, logits):  # sees the raw logits each token is sampled from
                last_logits[:] = [logits]
                return logits

            from llama_cpp import LogitsProcessorList

            want_logits = params.details or params.top_n_tokens > 0
            processors = LogitsProcessorList([capture]) if want_logits else None
            emitted = ""
            finish = "length"
            for token in self.llm.generate(
                prompt_ids, top_k=top_k, top_p=top_p, min_p=0.0, typical_p=1.0, temp=temp,
                repeat_penalty=params.repetition_penalty or 1.0, reset=True, logits_processor=processors,
            ):
                if self._is_end_of_generation(token):
                    finish = "eos_token"
                    break
                logprob, top = 0.0, []
                if want_logits and last_logits:
                    lp = _log_softmax(last_logits[0])
                    logprob = float(lp[token])
                    if params.top_n_tokens > 0:
                        n = min(params.top_n_tokens, lp.size - 1)
                        ids = np.argpartition(-lp, n)[:n]
                        ids = ids[np.argsort(-lp[ids])]
                        top = [(self.llm.detokenize([int(i)]).decode("utf-8", errors="replace"), float(lp[i]))
                               for i in ids]
                generated.append(token)
                text = _valid_utf8_prefix(self.llm.detokenize(generated, prev_tokens=prompt_ids))
                piece, emitted = text[len(emitted):], text
                out = TokenOut(id=int(token), text=piece, logprob=logprob, top=top)
                tokens.append(out)
                hit = next((s for s in params.stop if s in emitted), None)
                if hit is not None:
                    finish = "stop_sequence"
                    emitted = emitted[: emitted.index(hit) + len(hit)]  # TGI keeps the stop sequence
                    yield out
                    break
                yield out
                if len(generated) >= params.max_new_tokens or cancelled.is_set():
                    finish = "length"
                    break
            yield Generation(text=emitted, finish_reason=finish, prompt_tokens=len(prompt_ids),
                             completion_tokens=len(generated), tokens=tokens if want_logits else [])

    def _is_end_of_generation(self, token: int) -> bool:
        import llama_cpp

        vocab = getattr(self.llm._model, "vocab", None)
        if vocab is not None and hasattr(llama_cpp, "llama_vocab_is_eog"):
            return bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        return token == self.llm.token_eos()

