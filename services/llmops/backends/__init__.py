"""Model backends behind one protocol (:mod:`.protocol`), and the one place that opens them by
kind. The inference service and the judging service (its judge model) both open backends here, so
a backend added here can serve requests and judge them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmops.backends.protocol import ModelBackend

if TYPE_CHECKING:
    from llmops.common.settings import Settings

KINDS = ("llama_cpp", "tgi", "openai")


@dataclass(frozen=True)
class BackendSpec:
    kind: str                 # one of KINDS
    name: str                 # the model name clients (and judge spans) see
    model_path: str = ""      # llama_cpp: the GGUF file
    n_ctx: int = 2048
    n_threads: int = 2
    priority: str = "normal"  # llama_cpp: "normal" | "low" | "idle" (see llama_cpp._set_priority)
    url: str = ""             # tgi: the server's base URL; openai: the API's base URL (…/v1)
    api_key: str = ""         # tgi, openai: sent as `Authorization: Bearer <key>` when set
    timeout_s: float = 120.0  # tgi, openai: one call to the server
    remote_model: str = ""    # openai: the model id the server knows (empty: `name`)


_URL_SETTINGS = {"tgi": ("tgi_url", "LLMOPS_TGI_URL"), "openai": ("openai_base_url", "LLMOPS_OPENAI_BASE_URL")}


def spec_from_settings(settings: Settings, kind: str, name: str, url: str = "", url_hint: str = "",
                       **local: Any) -> BackendSpec:
    """The spec of a ``kind`` backend. A remote kind talks to ``url``, else to the URL its setting
    names (LLMOPS_TGI_URL, LLMOPS_OPENAI_BASE_URL); ``local`` are llama_cpp's fields."""
    if kind == "llama_cpp":
        return BackendSpec(kind, name, n_ctx=settings.model_ctx, **local)
    if kind not in _URL_SETTINGS:
        raise ValueError(f"unknown model backend {kind!r}; known: {', '.join(KINDS)}")
    field, env = _URL_SETTINGS[kind]
    url = url or getattr(settings, field)
    if not url:
        raise ValueError(f"the {kind} model backend needs its server's URL: set {env}{url_hint}")
    openai = kind == "openai"
    return BackendSpec(kind, name, n_ctx=settings.model_ctx, url=url, timeout_s=settings.backend_timeout_s,
                       api_key=settings.openai_api_key if openai else settings.tgi_api_key,
                       remote_model=(settings.openai_model or settings.model_name) if openai else "")


def open_backend(spec: BackendSpec) -> ModelBackend:
    if spec.kind == "llama_cpp":
        from llmops.backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(spec.model_path, spec.name, n_ctx=spec.n_ctx, n_threads=spec.n_threads,
                               priority=spec.priority)
    if spec.kind == "tgi":
        from llmops.backends.tgi import TgiBackend

        return TgiBackend(spec.url, spec.name, timeout_s=spec.timeout_s, api_key=spec.api_key)
    if spec.kind == "openai":
        from llmops.backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(spec.url, spec.name, model=spec.remote_model, api_key=spec.api_key,
                                   timeout_s=spec.timeout_s, n_ctx=spec.n_ctx)
    raise ValueError(f"unknown model backend {spec.kind!r}; known: {', '.join(KINDS)}")
