"""The judge model: any inference backend (llama.cpp by default) asked for short verdicts.

Verdicts are read from the next-token distribution (TGI's ``top_n_tokens``) rather than from
sampled text where possible: "Yes"/"No", a 1–5 score or "A"/"B"/"C" become probabilities, which
is what G-Eval's probability-weighted score needs. Every call is recorded as a
:class:`JudgeCall` with its token usage, so the cost of judging shows up in the traces.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from llmops.common.busy import BusySignal
from llmops.common.errors import Unavailable
from llmops.common.liveness import still_working
from llmops.backends.protocol import ChatTurn, Generation, GenerationParams, ModelBackend
from llmops.judging.evaluator import JudgeCall

TOP_N = 20


class JudgeError(Unavailable):
    """The judge model could not be called or gave nothing usable (``call`` is the failed call);
    UNAVAILABLE when it reaches an RPC."""

    def __init__(self, message: str, call: JudgeCall | None = None) -> None:
        super().__init__(message)
        self.call = call


@dataclass
class Choice:
    probs: dict[str, float]        # normalised over the choices
    calls: list[JudgeCall]


class JudgeModel:
    def __init__(self, backend: ModelBackend, max_prompt_tokens: int | None = None,
                 yield_to: BusySignal | None = None, max_wait_s: float = 30.0) -> None:
        self.backend = backend
        self.yield_to = yield_to        # wait for local generations to finish before each call
        self.max_wait_s = max_wait_s
        limits = backend.limits()
        self.max_prompt_tokens = max_prompt_tokens or max(256, limits.max_input_tokens - 200)

    @property
    def name(self) -> str:
        return self.backend.name

    def render(self, system: str, user: str, answer_prefix: str = "") -> str:
        prompt = self.backend.render_chat([ChatTurn("system", system), ChatTurn("user", user)])
        return prompt + answer_prefix

    def fit(self, text: str, max_tokens: int) -> str:
        """``text`` cut (at a word boundary) to about ``max_tokens`` tokens, so that long contexts
        cannot overflow the judge's context window."""
        if self.backend.count_tokens(text) <= max_tokens:
            return text
        words = text.split()
        lo, hi = 0, len(words)
        while lo < hi:  # longest prefix that fits
            mid = (lo + hi + 1) // 2
            if self.backend.count_tokens(" ".join(words[:mid])) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        return " ".join(words[:lo]) + " …"

    async def _call(self, prompt: str, params: GenerationParams, purpose: str) -> tuple[Generation, JudgeCall]:
        if self.backend.count_tokens(prompt) + params.max_new_tokens > self.backend.limits().max_total_tokens:
            raise JudgeError(f"judge prompt for {purpose} does not fit the judge model's context")
        if self.yield_to is None or self.max_wait_s <= 0:
            return await self._timed_call(prompt, params, purpose)
        async with self.yield_to.idle(self.max_wait_s):
            return await self._timed_call(prompt, params, purpose)

    async def _timed_call(self, prompt: str, params: GenerationParams, purpose: str) -> tuple[Generation, JudgeCall]:
        start = time.time_ns()
        try:
            gen = await self.backend.generate(prompt, params)
        except Exception as exc:
            call = JudgeCall(purpose, self.name, start, time.time_ns(), 0, 0, f"{type(exc).__name__}: {exc}")
            raise JudgeError(call.error, call) from exc
        finally:
            still_working()   # one call done: a batch of slow judgements is slow, not stuck
        return gen, JudgeCall(purpose, self.name, start, time.time_ns(), gen.prompt_tokens, gen.completion_tokens)

    async def generate(self, prompt: str, max_new_tokens: int, purpose: str,
                       stop: tuple[str, ...] = ()) -> tuple[str, JudgeCall]:
        gen, call = await self._call(prompt, GenerationParams(max_new_tokens=max_new_tokens, stop=stop), purpose)
        return gen.text, call

    async def choose(self, prompt: str, choices: dict[str, tuple[str, ...]], purpose: str) -> Choice:
        """Probability of each choice as the next token. ``choices`` maps a label to the token
        spellings that count for it (compared stripped and case-folded)."""
        params = GenerationParams(max_new_tokens=1, top_n_tokens=TOP_N)
        gen, call = await self._call(prompt, params, purpose)
        if not gen.tokens or not gen.tokens[0].top:
            raise JudgeError(f"{self.backend.kind} backend returned no token log-probabilities", call)
        spellings = {s.casefold(): label for label, ss in choices.items() for s in ss}
        mass = dict.fromkeys(choices, 0.0)
        for text, logprob in gen.tokens[0].top:
            label = spellings.get(text.strip().casefold())
            if label is not None:
                mass[label] += math.exp(logprob)
        total = sum(mass.values())
        if total <= 0:
            raise JudgeError(f"the judge put no probability on any of {sorted(choices)} for {purpose}", call)
        return Choice({k: v / total for k, v in mass.items()}, [call])

    async def yes_probability(self, prompt: str, purpose: str) -> Choice:
        return await self.choose(prompt, {"yes": ("yes", "y"), "no": ("no", "n")}, purpose)
