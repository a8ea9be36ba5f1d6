"""Model backends behind one protocol (:mod:`.protocol`), and the one place that opens them by
kind. The inference service and the judging service (its judge model) both open backends here, so
a backend added here can serve requests and judge them."""
from __future__ import annotations

from dataclasses import dataclass

from llmops.inference.backends.protocol import ModelBackend

KINDS = ("llama_cpp",)


@dataclass(frozen=True)
class BackendSpec:
    kind: str                 # one of KINDS
    name: str                 # the model name clients (and judge spans) see
    model_path: str = ""      # llama_cpp: the GGUF file
    n_ctx: int = 2048
    n_threads: int = 2
    priority: str = "normal"  # llama_cpp: "normal" | "low" | "idle" (see llama_cpp._set_priority)


def open_backend(spec: BackendSpec) -> ModelBackend:
    if spec.kind == "llama_cpp":
        from llmops.inference.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(spec.model_path, spec.name, n_ctx=spec.n_ctx, n_threads=spec.n_threads,
                               priority=spec.priority)
    raise ValueError(f"unknown model backend {spec.kind!r}; known: {', '.join(KINDS)}")
