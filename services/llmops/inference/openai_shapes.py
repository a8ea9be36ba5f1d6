"""The OpenAI API's request and response shapes, mapped onto the engine's ``GenerateInput`` and
``GenerateResult``. Pure functions over parsed JSON: no HTTP here (that is ``gateway.py``).

What maps where (the README's "OpenAI-compatible gateway" section is the user-facing copy):

* ``messages`` (string content, or an array of ``text`` parts; ``developer`` is a system turn) →
  ``messages``; ``prompt`` (one string) → ``prompt``; both are rendered through the versioned
  prompt template exactly as ``Generate`` renders them.
* ``max_completion_tokens`` / ``max_tokens`` → ``max_new_tokens``; ``temperature`` (0 = greedy,
  omitted = the platform's greedy default), ``top_p`` (1 = off), ``stop``, ``seed``; vLLM's extra
  ``top_k`` and ``repetition_penalty``; ``logprobs`` / ``top_logprobs`` → token log-probabilities.
* ``user`` (or ``safety_identifier``) → ``user_id``; ``metadata`` (a string map) → ``metadata``.
* The platform's own options under ``llmops``: ``retrieval``, ``prompt_template``,
  ``prompt_version``, ``session_id``, ``user_id``, ``metadata``.
* ``n`` > 1, ``best_of`` > 1, non-zero ``presence_penalty`` / ``frequency_penalty``, tools,
  ``response_format`` other than text, ``logit_bias``, audio and images are refused with a 400
  that says so; an argument OpenAI does not know is refused as OpenAI refuses it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict

from llmops.backends.protocol import ChatTurn, GenerationParams, TokenOut
from llmops.common.errors import InvalidArgument
from llmops.inference.engine import GenerateInput, GenerateResult, RetrievalRequest
from llmops.inference.limits import (DEFAULT_LIMITS, InputLimits, check_id, check_metadata, check_text,
                                     utf8_len)

# --- limits (the README lists them; those the events carry are llmops.inference.limits', as on gRPC) --
MAX_MESSAGES = DEFAULT_LIMITS.max_messages
MAX_STOP_SEQUENCES = 4          # OpenAI's and TGI's limit
MAX_TOP_LOGPROBS = 20           # chat `top_logprobs`
MAX_COMPLETION_LOGPROBS = 5     # completions `logprobs`
MAX_METADATA_ENTRIES = DEFAULT_LIMITS.max_metadata_entries
MAX_METADATA_KEY_CHARS = DEFAULT_LIMITS.max_metadata_key_chars
MAX_METADATA_VALUE_CHARS = DEFAULT_LIMITS.max_metadata_value_chars
MAX_ID_CHARS = DEFAULT_LIMITS.max_id_chars   # session_id, user_id, prompt_template, model
DEFAULT_RAG_TOP_K = 3
DEFAULT_ALPHA = 0.5

#: TGI finish reasons (what the backends report) → OpenAI's
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

# Arguments OpenAI accepts that change nothing here (no stored completions, no reasoning, no
# tiers): accepted and ignored, so that clients that always send them keep working.
_IGNORED = {"store", "service_tier", "prompt_cache_key", "reasoning_effort", "verbosity", "parallel_tool_calls"}
_COMMON = {"model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "stop", "seed", "n",
           "presence_penalty", "frequency_penalty", "logit_bias", "top_k", "repetition_penalty",
           "llmops", "user", "safety_identifier", "metadata"}
CHAT_FIELDS = _COMMON | _IGNORED | {
    "messages", "max_completion_tokens", "logprobs", "top_logprobs", "tools", "tool_choice", "functions",
    "function_call", "response_format", "audio", "modalities", "prediction", "web_search_options"}
COMPLETION_FIELDS = _COMMON | _IGNORED | {"prompt", "logprobs", "echo", "suffix", "best_of"}
LLMOPS_FIELDS = ("retrieval", "prompt_template", "prompt_version", "session_id", "user_id", "metadata")
RETRIEVAL_FIELDS = ("enabled", "top_k", "alpha", "collection", "filters")


class OpenAIRequestError(InvalidArgument):
    """A request the OpenAI API would refuse with 400: names the offending ``param``."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code_name = code


@dataclass
class OpenAICall:
    """One parsed ``/v1/chat/completions`` or ``/v1/completions`` request."""
    kind: str                        # "chat" | "completion"
    input: GenerateInput
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False           # return token log-probabilities
    top_logprobs: int = 0
    echo: bool = False               # completions: the prompt precedes the text
    stop: tuple[str, ...] = field(default_factory=tuple)


# --- field readers ------------------------------------------------------------------------------
def _missing(v: Any) -> bool:
    return v is None


def _bool(body: dict, name: str, default: bool = False, where: str = "") -> bool:
    v = body.get(name)
    if _missing(v):
        return default
    if not isinstance(v, bool):
        raise OpenAIRequestError(f"`{where}{name}` must be a boolean, got {_kind(v)}", where + name)
    return v


def _int(body: dict, name: str, lo: int | None = None, hi: int | None = None, where: str = "") -> int | None:
    v = body.get(name)
    if _missing(v):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise OpenAIRequestError(f"`{where}{name}` must be an integer, got {_kind(v)}", where + name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise OpenAIRequestError(f"`{where}{name}` must be {_range(lo, hi)}, got {v}", where + name)
    return v


def _number(body: dict, name: str, lo: float, hi: float, where: str = "") -> float | None:
    v = body.get(name)
    if _missing(v):
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise OpenAIRequestError(f"`{where}{name}` must be a number, got {_kind(v)}", where + name)
    if not lo <= v <= hi:
        raise OpenAIRequestError(f"`{where}{name}` must be between {lo:g} and {hi:g}, got {v:g}", where + name)
    return float(v)


def _str(body: dict, name: str, max_chars: int = MAX_ID_CHARS, where: str = "") -> str:
    v = body.get(name)
    if _missing(v):
        return ""
    if not isinstance(v, str):
        raise OpenAIRequestError(f"`{where}{name}` must be a string, got {_kind(v)}", where + name)
    if len(v) > max_chars:
        raise OpenAIRequestError(f"`{where}{name}` is longer than {max_chars} characters", where + name)
    return v


def _string_map(v: Any, name: str) -> dict[str, str]:
    if _missing(v):
        return {}
    if not isinstance(v, dict):
        raise OpenAIRequestError(f"`{name}` must be an object of string values, got {_kind(v)}", name)
    if len(v) > MAX_METADATA_ENTRIES:
        raise OpenAIRequestError(f"`{name}` has {len(v)} entries; at most {MAX_METADATA_ENTRIES}", name)
    for k, val in v.items():
        if not isinstance(val, str):
            raise OpenAIRequestError(f"`{name}.{k}` must be a string, got {_kind(val)}", f"{name}.{k}")
        if not k or len(k) > MAX_METADATA_KEY_CHARS:
            raise OpenAIRequestError(f"`{name}` keys must be 1 to {MAX_METADATA_KEY_CHARS} characters", name)
        if len(val) > MAX_METADATA_VALUE_CHARS:
            raise OpenAIRequestError(f"`{name}.{k}` is longer than {MAX_METADATA_VALUE_CHARS} characters",
                                     f"{name}.{k}")
    return dict(v)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f">= {lo}" if lo is not None else f"<= {hi}"


def _check_known(body: dict, known: set[str]) -> None:
    for name in body:
        if name not in known:
            raise OpenAIRequestError(f"Unrecognized request argument supplied: {name}", name)


def _refuse_if_set(body: dict, name: str, why: str, allowed=(None,)) -> None:
    if body.get(name) in allowed:
        return
    raise OpenAIRequestError(f"`{name}` is not supported by this server: {why}", name)


# --- requests -----------------------------------------------------------------------------------
def _stop(body: dict) -> tuple[str, ...]:
    v = body.get("stop")
    if _missing(v):
        return ()
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise OpenAIRequestError("`stop` must be a string or an array of strings", "stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise OpenAIRequestError(f"`stop` supports up to {MAX_STOP_SEQUENCES} sequences, given {len(stops)}", "stop")
    if any(s == "" for s in stops):
        raise OpenAIRequestError("`stop` sequences must not be empty strings", "stop")
    return tuple(stops)


def _params(body: dict, max_tokens: int | None, default_max_new_tokens: int, stop: tuple[str, ...],
            top_logprobs: int, logprobs: bool) -> GenerationParams:
    for name in ("presence_penalty", "frequency_penalty"):
        v = _number(body, name, -2.0, 2.0)
        if v:
            raise OpenAIRequestError(
                f"`{name}` is not supported by this server (its backends apply TGI's multiplicative "
                "penalty); send `repetition_penalty` (> 0, 1.0 = none) instead", name)
    n = _int(body, "n", 1)
    if n not in (None, 1):
        raise OpenAIRequestError(f"`n` must be 1 here (one choice per request), got {n}", "n")
    if body.get("logit_bias"):
        raise OpenAIRequestError("`logit_bias` is not supported by this server", "logit_bias")
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p == 0.0:
        raise OpenAIRequestError("`top_p` must be > 0 (1 = no nucleus sampling)", "top_p")
    top_k = _int(body, "top_k", -1)
    if top_k == 0:
        raise OpenAIRequestError("`top_k` must be > 0 (or -1: off)", "top_k")
    repetition = _number(body, "repetition_penalty", 0.0, 100.0)
    if repetition == 0.0:
        raise OpenAIRequestError("`repetition_penalty` must be > 0 (1.0 = none)", "repetition_penalty")
    seed = _int(body, "seed")
    if temperature == 0.0:   # OpenAI's greedy: no sampling knob may switch sampling back on
        temperature, top_p, top_k = None, None, None
    return GenerationParams(
        max_new_tokens=max_tokens or default_max_new_tokens, temperature=temperature,
        top_p=None if top_p == 1.0 else top_p, top_k=None if top_k in (None, -1) else top_k,
        repetition_penalty=None if repetition in (None, 1.0) else repetition, stop=stop, seed=seed,
        details=logprobs, top_n_tokens=top_logprobs,
    )


def _stream_flags(body: dict) -> tuple[bool, bool]:
    stream = _bool(body, "stream")
    opts = body.get("stream_options")
    if _missing(opts):
        return stream, False
    if not stream:
        raise OpenAIRequestError("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                 "stream_options")
    if not isinstance(opts, dict):
        raise OpenAIRequestError("`stream_options` must be an object", "stream_options")
    return stream, _bool(opts, "include_usage", where="stream_options.")


def _platform_options(body: dict, inp: GenerateInput, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """The ``llmops`` object, OpenAI's ``user`` / ``safety_identifier`` and ``metadata``."""
    opts = body.get("llmops")
    if _missing(opts):
        opts = {}
    if not isinstance(opts, dict):
        raise OpenAIRequestError("`llmops` must be an object", "llmops")
    for k in opts:
        if k not in LLMOPS_FIELDS:
            raise OpenAIRequestError(f"`llmops.{k}` is not an llmops option; known: {', '.join(LLMOPS_FIELDS)}",
                                     f"llmops.{k}")
    user = _str(body, "user") or _str(body, "safety_identifier")
    own_user = _str(opts, "user_id", where="llmops.")
    if user and own_user and user != own_user:
        raise OpenAIRequestError("`user` and `llmops.user_id` name different users; send one of them", "user")
    inp.user_id = own_user or user
    inp.session_id = _str(opts, "session_id", where="llmops.")
    metadata = _string_map(body.get("metadata"), "metadata")
    metadata.update(_string_map(opts.get("metadata"), "llmops.metadata"))
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise OpenAIRequestError(f"`metadata` and `llmops.metadata` hold {len(metadata)} entries together; "
                                 f"at most {MAX_METADATA_ENTRIES}", "llmops.metadata")
    check_metadata(metadata, limits, "llmops.metadata" if opts.get("metadata") else "metadata", dotted=True)
    inp.metadata = metadata
    inp.template_name = _str(opts, "prompt_template", where="llmops.")
    inp.template_version = _int(opts, "prompt_version", 1, where="llmops.")
    inp.retrieval = _retrieval(opts.get("retrieval"))


def _retrieval(v: Any) -> RetrievalRequest | None:
    """``true``, or an object (given = enabled unless ``enabled: false``)."""
    if _missing(v) or v is False:
        return None
    if v is True:
        return RetrievalRequest(top_k=DEFAULT_RAG_TOP_K, alpha=DEFAULT_ALPHA)
    if not isinstance(v, dict):
        raise OpenAIRequestError("`llmops.retrieval` must be true or an object {enabled, top_k, alpha, "
                                 "collection, filters}", "llmops.retrieval")
    for k in v:
        if k not in RETRIEVAL_FIELDS:
            raise OpenAIRequestError(f"`llmops.retrieval.{k}` is not a retrieval option; known: "
                                     f"{', '.join(RETRIEVAL_FIELDS)}", f"llmops.retrieval.{k}")
    if not _bool(v, "enabled", True, "llmops.retrieval."):
        return None
    where = "llmops.retrieval."
    top_k = _int(v, "top_k", where=where)
    alpha = _number(v, "alpha", -math.inf, math.inf, where)   # the engine checks the ranges, as for gRPC
    return RetrievalRequest(top_k=DEFAULT_RAG_TOP_K if top_k is None else top_k,
                            alpha=DEFAULT_ALPHA if alpha is None else alpha,
                            collection=_str(v, "collection", where=where),
                            filters=_string_map(v.get("filters"), "llmops.retrieval.filters"))


def _content(v: Any, n: int) -> str:
    where = f"messages[{n}].content"
    if isinstance(v, str):
        return v
    if _missing(v):
        return ""
    if not isinstance(v, list):
        raise OpenAIRequestError(f"`{where}` must be a string or an array of content parts", where)
    texts = []
    for i, part in enumerate(v):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            raise OpenAIRequestError(f"`{where}[{i}]` is an image: the models of this server take text only",
                                     f"{where}[{i}]", "image_not_supported")
        elif kind in ("input_audio", "audio", "file"):
            raise OpenAIRequestError(f"`{where}[{i}]` is of type {kind!r}: the models of this server take text only",
                                     f"{where}[{i}]")
        else:
            raise OpenAIRequestError(f"`{where}[{i}]` must be a text part {{\"type\": \"text\", \"text\": ...}}",
                                     f"{where}[{i}]")
    return "\n".join(texts)


def _messages(body: dict) -> list[ChatTurn]:
    msgs = body.get("messages")
    if _missing(msgs):
        raise OpenAIRequestError("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(msgs, list) or not msgs:
        raise OpenAIRequestError("`messages` must be a non-empty array", "messages")
    if len(msgs) > MAX_MESSAGES:
        raise OpenAIRequestError(f"`messages` holds {len(msgs)} messages; at most {MAX_MESSAGES}", "messages")
    out = []
    for n, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise OpenAIRequestError(f"`messages[{n}]` must be an object", f"messages[{n}]")
        role = m.get("role")
        if role in ("tool", "function") or m.get("tool_calls") or m.get("function_call"):
            raise OpenAIRequestError(f"`messages[{n}]`: tool and function calls are not supported by this server",
                                     f"messages[{n}]")
        if role not in _ROLES:
            raise OpenAIRequestError(f"`messages[{n}].role` is {role!r}; use system, developer, user or assistant",
                                     f"messages[{n}].role")
        out.append(ChatTurn(_ROLES[role], _content(m.get("content"), n)))
    return out


def parse_chat(body: dict, default_max_new_tokens: int, limits: InputLimits = DEFAULT_LIMITS) -> OpenAICall:
    _check_known(body, CHAT_FIELDS)
    for name in ("tools", "functions"):
        _refuse_if_set(body, name, "tool and function calling are not available", (None, []))
    _refuse_if_set(body, "tool_choice", "tool calling is not available", (None, "none"))
    _refuse_if_set(body, "function_call", "function calling is not available", (None, "none"))
    _refuse_if_set(body, "audio", "the models of this server take and make text only")
    _refuse_if_set(body, "prediction", "predicted outputs are not available")
    _refuse_if_set(body, "web_search_options", "web search is not available")
    fmt = body.get("response_format")
    if not (fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text")):
        raise OpenAIRequestError("`response_format` other than {\"type\": \"text\"} is not supported by this server",
                                 "response_format")
    mods = body.get("modalities")
    if mods is not None and mods != ["text"]:
        raise OpenAIRequestError("`modalities` must be [\"text\"]: the models of this server make text only",
                                 "modalities")
    stream, include_usage = _stream_flags(body)
    logprobs = _bool(body, "logprobs")
    top = _int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top and not logprobs:
        raise OpenAIRequestError("`top_logprobs` needs `logprobs: true`", "top_logprobs")
    max_tokens = _int(body, "max_tokens", 1)
    max_completion = _int(body, "max_completion_tokens", 1)
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise OpenAIRequestError("`max_tokens` and `max_completion_tokens` differ; send one of them",
                                 "max_completion_tokens")
    stop = _stop(body)
    messages = _messages(body)
    check_text("messages", sum(utf8_len(m.content) for m in messages), limits)
    inp = GenerateInput(messages=messages, model=_model(body),
                        params=_params(body, max_completion or max_tokens, default_max_new_tokens, stop,
                                       top or 0, logprobs))
    _platform_options(body, inp, limits)
    return OpenAICall("chat", inp, stream, include_usage, logprobs, top or 0, stop=stop)


def parse_completion(body: dict, default_max_new_tokens: int, limits: InputLimits = DEFAULT_LIMITS) -> OpenAICall:
    _check_known(body, COMPLETION_FIELDS)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if prompt and not all(isinstance(p, str) for p in prompt):
            raise OpenAIRequestError("`prompt` as token ids is not supported by this server: send text", "prompt")
        if len(prompt) != 1:
            raise OpenAIRequestError(f"`prompt` must be one string here (one prompt per request), got {len(prompt)}",
                                     "prompt")
        prompt = prompt[0]
    if _missing(prompt):
        raise OpenAIRequestError("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if not isinstance(prompt, str):
        raise OpenAIRequestError(f"`prompt` must be a string, got {_kind(prompt)}", "prompt")
    check_text("prompt", utf8_len(prompt), limits)
    if body.get("suffix"):
        raise OpenAIRequestError("`suffix` (insertion) is not supported by this server", "suffix")
    best_of = _int(body, "best_of", 1)
    if best_of not in (None, 1):
        raise OpenAIRequestError(f"`best_of` must be 1 here, got {best_of}", "best_of")
    stream, include_usage = _stream_flags(body)
    echo = _bool(body, "echo")
    logprobs = _int(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS)
    if echo and logprobs is not None:
        raise OpenAIRequestError("`echo` with `logprobs` is not supported by this server (no prompt logprobs)",
                                 "echo")
    stop = _stop(body)
    inp = GenerateInput(prompt=prompt, model=_model(body),
                        params=_params(body, _int(body, "max_tokens", 1), default_max_new_tokens, stop,
                                       logprobs or 0, logprobs is not None))
    _platform_options(body, inp, limits)
    return OpenAICall("completion", inp, stream, include_usage, logprobs is not None, logprobs or 0, echo, stop)


def _model(body: dict) -> str:
    v = body.get("model")
    if _missing(v):
        return ""       # the default model, as vLLM does
    if not isinstance(v, str):
        raise OpenAIRequestError(f"`model` must be a string, got {_kind(v)}", "model")
    check_id("model", v, DEFAULT_LIMITS)
    return v


# --- responses ----------------------------------------------------------------------------------
def finish_reason(tgi: str) -> str:
    return FINISH_REASONS.get(tgi, tgi or "stop")


def visible_text(text: str, tgi_finish: str, stop: tuple[str, ...]) -> str:
    """OpenAI leaves the stop sequence out of the text; TGI (and so the backends) keep it."""
    if tgi_finish == "stop_sequence":
        for s in sorted(stop, key=len, reverse=True):
            if text.endswith(s):
                return text[: -len(s)]
    return text


def usage(res: GenerateResult) -> dict:
    return {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
            "total_tokens": res.prompt_tokens + res.completion_tokens}


def llmops_extension(res: GenerateResult) -> dict:
    """What the platform adds to a response, under ``llmops`` (the SDK keeps unknown fields)."""
    out = {"trace_id": res.trace_id, "prompt_template": res.template.name, "prompt_version": res.template.version,
           "latency_ms": round(res.latency_ms, 3),
           "contexts": [MessageToDict(c, preserving_proto_field_name=True) for c in res.contexts]}
    if res.cost_usd is not None:
        out["cost_usd"] = res.cost_usd
    return out


def response_id(call: OpenAICall, trace_id: str) -> str:
    return ("chatcmpl-" if call.kind == "chat" else "cmpl-") + trace_id


def chat_logprobs(tokens: list[TokenOut]) -> dict:
    return {"content": [
        {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode()),
         "top_logprobs": [{"token": s, "logprob": lp, "bytes": list(s.encode())} for s, lp in t.top]}
        for t in tokens], "refusal": None}


def completion_logprobs(tokens: list[TokenOut], offset: int = 0) -> dict:
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {"tokens": [t.text for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [dict(t.top) for t in tokens] if any(t.top for t in tokens) else None,
            "text_offset": offsets}


def full_response(call: OpenAICall, res: GenerateResult, created: int) -> dict:
    text = visible_text(res.text, res.finish_reason, call.stop)
    reason = finish_reason(res.finish_reason)
    if call.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                  "logprobs": chat_logprobs(res.tokens) if call.logprobs else None, "finish_reason": reason}
        obj = "chat.completion"
    else:
        prefix = call.input.prompt if call.echo else ""
        choice = {"index": 0, "text": prefix + text,
                  "logprobs": completion_logprobs(res.tokens) if call.logprobs else None, "finish_reason": reason}
        obj = "text_completion"
    return {"id": response_id(call, res.trace_id), "object": obj, "created": created, "model": res.model,
            "system_fingerprint": None, "choices": [choice], "usage": usage(res), "llmops": llmops_extension(res)}


def chunk(call: OpenAICall, trace_id: str, created: int, model: str, text: str | None,
          finish: str | None = None, tokens: list[TokenOut] | None = None, first: bool = False) -> dict:
    """One streamed chunk of choice 0 (``text`` None: no content in this chunk)."""
    if call.kind == "chat":
        delta: dict = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta,
                  "logprobs": chat_logprobs(tokens) if call.logprobs and tokens else None, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "",
                  "logprobs": completion_logprobs(tokens) if call.logprobs and tokens else None,
                  "finish_reason": finish}
        obj = "text_completion"
    out = {"id": response_id(call, trace_id), "object": obj, "created": created, "model": model,
           "system_fingerprint": None, "choices": [choice]}
    if call.include_usage:
        out["usage"] = None   # OpenAI: null on every chunk but the last
    return out


def usage_chunk(call: OpenAICall, res: GenerateResult, created: int) -> dict:
    """The last chunk when ``stream_options.include_usage``: no choices, the usage."""
    return {"id": response_id(call, res.trace_id), "object": "chat.completion.chunk" if call.kind == "chat"
            else "text_completion", "created": created, "model": res.model, "system_fingerprint": None,
            "choices": [], "usage": usage(res)}


class StopHoldback:
    """Streams text without ever sending a stop sequence: holds back the last ``len(longest
    stop) - 1`` characters until more text shows they do not begin one. Every prefix it releases
    is a prefix of :func:`visible_text` of the final text."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self.stop = stop
        self.keep = max((len(s) for s in stop), default=1) - 1
        self.text = ""
        self.sent = 0

    def push(self, piece: str) -> str:
        self.text += piece
        upto = len(self.text) - self.keep
        for s in self.stop:   # a stop sequence that has appeared whole: up to its start only
            at = self.text.find(s, self.sent)
            if at >= 0:
                upto = min(upto, at)
        upto = max(self.sent, upto)
        out, self.sent = self.text[self.sent:upto], upto
        return out

    def rest(self, final_visible: str) -> str:
        out = final_visible[self.sent:]
        self.sent = len(final_visible)
        return out


def model_card(name: str, kind: str, limits, created: int, default: bool) -> dict:
    """``limits`` None: the model's server cannot say now (down); its limits are left out."""
    card = {"id": name, "object": "model", "created": created, "owned_by": "llmops", "backend": kind,
            "default": default}
    if limits is not None:
        card.update(max_model_len=limits.max_total_tokens, max_input_tokens=limits.max_input_tokens)
    return card
