"""What a model backend must do. llama.cpp (embedded) implements it here; TGI and
OpenAI-compatible servers implement the same protocol."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol, Sequence


@dataclass(frozen=True)
class GenerationParams:
    """TGI ``/generate`` parameters (the inference service validates a request's before it builds them)."""
    max_new_tokens: int = 128
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    do_sample: bool = False
    details: bool = False
    top_n_tokens: int = 0     # TGI's top_n_tokens: the n likeliest tokens at each step, with logprobs

    @property
    def sampling(self) -> bool:
        """TGI samples when ``do_sample`` or any sampling knob is set; otherwise it is greedy."""
        return self.do_sample or any(v is not None for v in (self.temperature, self.top_p, self.top_k))


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


@dataclass
class TokenOut:
    id: int
    text: str
    logprob: float = 0.0
    top: list[tuple[str, float]] = field(default_factory=list)   # (text, logprob), likeliest first


@dataclass
class Generation:
    text: str
    finish_reason: str            # "length" | "eos_token" | "stop_sequence"
    prompt_tokens: int
    completion_tokens: int
    tokens: list[TokenOut] = field(default_factory=list)


@dataclass(frozen=True)
class ModelLimits:
    max_input_tokens: int
    max_total_tokens: int


class ModelBackend(Protocol):
    name: str
    kind: str  # "llama_cpp" | "tgi" | "openai"

    def limits(self) -> ModelLimits: ...
    def render_chat(self, messages: Sequence[ChatTurn]) -> str: ...
    def count_tokens(self, text: str) -> int: ...
    # optional: ``renders_locally() -> bool``, True when render_chat/count_tokens/limits make no
    # server call (the engine then runs them on the event loop instead of a thread)
    async def generate(self, prompt: str, params: GenerationParams) -> Generation: ...
    def generate_stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[TokenOut | Generation]: ...
    def close(self) -> None: ...
