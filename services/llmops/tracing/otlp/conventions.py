"""Which OTLP spans are LLM calls or retrievals, read by the conventions apps emit (pure).

LLM calls:

* **GenAI, current** — ``gen_ai.operation.name`` ``chat`` / ``text_completion`` /
  ``generate_content``; text in ``gen_ai.input.messages``, ``gen_ai.output.messages`` and
  ``gen_ai.system_instructions`` (JSON strings or structured values, on the span or on its
  ``gen_ai.client.inference.operation.details`` event).
* **GenAI, older** (OpenLLMetry, earlier instrumentations) — ``gen_ai.prompt.N.role/content`` and
  ``gen_ai.completion.N.content/finish_reason`` attributes, ``llm.request.type``; span events
  ``gen_ai.content.prompt`` / ``gen_ai.content.completion`` and ``gen_ai.{system,user,assistant}.message`` /
  ``gen_ai.choice``.
* **OpenInference** — ``openinference.span.kind`` ``LLM``; ``llm.input_messages.N.message.*``,
  ``llm.output_messages.N.message.*``, ``llm.model_name``, ``llm.token_count.*``, and
  ``input.value`` / ``output.value`` when the message lists are absent.

Retrievals: GenAI ``gen_ai.operation.name`` ``retrieval`` (``gen_ai.retrieval.documents``) and
OpenInference ``RETRIEVER`` spans (``retrieval.documents.N.document.*``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llmops.tracing.otlp.spans import MappedSpan
from llmops.v1 import common_pb2

LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
RETRIEVAL_OPERATIONS = frozenset({"retrieval", "retrieve"})
MAX_CONTEXTS = 50
_INDEXED = re.compile(r"^(\d+)\.(.+)$")


@dataclass
class LlmCall:
    """An LLM call read off one span: what a ``CompletionEvent`` carries."""
    convention: str                      # gen_ai | gen_ai.legacy | openinference
    prompt: str = ""                     # the last user message
    rendered: str = ""                   # the whole input, "role: text" per message
    answer: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    session_id: str = ""
    user_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


# -- small readers -----------------------------------------------------------------------------
def _json(raw: str) -> object:
    if not raw or raw[0] not in "[{\"":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _int(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        return max(0, int(float(raw)))
    except ValueError:
        return 0


def _indexed(attrs: dict[str, str], prefix: str) -> list[dict[str, str]]:
    """``prefix.N.rest`` keys grouped by N, in order: [{rest: value}]."""
    groups: dict[int, dict[str, str]] = {}
    for k, v in attrs.items():
        if k.startswith(prefix):
            m = _INDEXED.match(k[len(prefix):])
            if m:
                groups.setdefault(int(m.group(1)), {})[m.group(2)] = v
    return [groups[i] for i in sorted(groups)]


def _parts_text(parts: object) -> str:
    """Text of a GenAI ``parts`` list (text parts only), or of a plain string / OpenAI content list."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        return ""
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, dict) and p.get("type", "text") == "text":
            text = p.get("content", p.get("text", ""))
            if isinstance(text, str):
                out.append(text)
    return "\n".join(t for t in out if t)


def _message_text(m: dict) -> str:
    if "parts" in m:
        return _parts_text(m["parts"])
    content = m.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return _parts_text(content)
    message = m.get("message")   # gen_ai.choice: {"message": {"content": ...}}
    if isinstance(message, dict):
        return _message_text(message)
    return ""


def _messages(raw: object) -> list[tuple[str, str]]:
    """[(role, text)] from a JSON list of messages in GenAI or OpenAI shape."""
    if isinstance(raw, str):
        raw = _json(raw)
    if isinstance(raw, dict):
        raw = raw.get("messages", [raw])
    if not isinstance(raw, list):
        return []
    out = []
    for m in raw:
        if isinstance(m, dict):
            out.append((str(m.get("role", "") or "user"), _message_text(m)))
    return out


def _finish(raw: object) -> str:
    if isinstance(raw, str):
        parsed = _json(raw)
        raw = parsed if parsed is not None else raw
    if isinstance(raw, list):
        return str(raw[0]) if raw else ""
    return str(raw or "")


def _fill_text(call: LlmCall, inputs: list[tuple[str, str]], system: str = "") -> None:
    turns = ([("system", system)] if system else []) + inputs
    call.rendered = "\n".join(f"{r}: {t}" for r, t in turns if t)
    users = [t for r, t in inputs if r == "user" and t]
    call.prompt = users[-1] if users else (inputs[-1][1] if inputs else "")


# -- LLM calls -----------------------------------------------------------------------------------
def _common(call: LlmCall, a: dict[str, str], span: MappedSpan) -> LlmCall:
    res = span.resource.attributes
    call.model = call.model or a.get("gen_ai.response.model") or a.get("gen_ai.request.model") or a.get("llm.model_name", "")
    call.prompt_tokens = call.prompt_tokens or _int(a.get("gen_ai.usage.input_tokens") or a.get("gen_ai.usage.prompt_tokens"))
    call.completion_tokens = call.completion_tokens or _int(
        a.get("gen_ai.usage.output_tokens") or a.get("gen_ai.usage.completion_tokens"))
    call.finish_reason = call.finish_reason or _finish(a.get("gen_ai.response.finish_reasons", ""))
    call.session_id = (call.session_id or a.get("session.id") or a.get("gen_ai.conversation.id")
                       or res.get("resource.session.id", ""))
    call.user_id = call.user_id or a.get("user.id") or a.get("enduser.id") or res.get("resource.user.id", "")
    meta = _json(a.get("metadata", ""))
    if isinstance(meta, dict):
        call.metadata.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    call.metadata.update({"source": "otlp", "convention": call.convention, "service": span.resource.service,
                          "span_id": span.span_id})
    for key in ("gen_ai.provider.name", "gen_ai.system", "gen_ai.response.id"):
        if a.get(key):
            call.metadata[key] = a[key]
    return call


def _genai_current(a: dict[str, str], events: list[tuple[str, dict[str, str]]]) -> LlmCall | None:
    details = next((ea for n, ea in events if n == "gen_ai.client.inference.operation.details"), {})
    src = a if "gen_ai.input.messages" in a or "gen_ai.output.messages" in a else details
    if "gen_ai.input.messages" not in src and "gen_ai.output.messages" not in src:
        return None
    call = LlmCall("gen_ai")
    system = _parts_text(_json(src.get("gen_ai.system_instructions", "")) or "")
    _fill_text(call, _messages(src.get("gen_ai.input.messages", "")), system)
    outputs = _json(src.get("gen_ai.output.messages", "")) or []
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        call.answer = _message_text(outputs[0])
        call.finish_reason = str(outputs[0].get("finish_reason", "") or "")
    return call


def _genai_legacy(a: dict[str, str], events: list[tuple[str, dict[str, str]]]) -> LlmCall:
    call = LlmCall("gen_ai.legacy")
    prompts = _indexed(a, "gen_ai.prompt.")
    inputs = [(p.get("role", "user"), p.get("content", "")) for p in prompts]
    completions = _indexed(a, "gen_ai.completion.")
    if completions:
        call.answer = completions[0].get("content", "")
        call.finish_reason = completions[0].get("finish_reason", "")
    for name, ea in events:
        if name == "gen_ai.content.prompt" and not inputs:
            inputs = _messages(ea.get("gen_ai.prompt", ""))
        elif name == "gen_ai.content.completion" and not call.answer:
            outs = _messages(ea.get("gen_ai.completion", ""))
            call.answer = outs[0][1] if outs else ea.get("gen_ai.completion", "")
        elif name in ("gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message"):
            inputs.append((ea.get("role") or name.split(".")[1], _message_text(ea) or ea.get("content", "")))
        elif name == "gen_ai.choice" and not call.answer:
            msg = _json(ea.get("message", "")) if "message" in ea else None
            call.answer = _message_text(msg) if isinstance(msg, dict) else ea.get("message.content", ea.get("content", ""))
            call.finish_reason = call.finish_reason or ea.get("finish_reason", "")
    system = next((t for r, t in inputs if r == "system"), "")
    _fill_text(call, [(r, t) for r, t in inputs if r != "system"], system)
    return call


def _value_messages(raw: str) -> list[tuple[str, str]]:
    """Messages of an OpenInference ``input.value``: a JSON request (chat or completions) or text."""
    parsed = _json(raw)
    if parsed is None:
        return [("user", raw)]
    if isinstance(parsed, dict) and "messages" not in parsed and "prompt" in parsed:
        return [("user", _parts_text(parsed["prompt"]))]
    return _messages(parsed)


def _value_answer(raw: str) -> tuple[str, str]:
    """(answer, finish reason) of an OpenInference ``output.value``: a JSON response or text."""
    parsed = _json(raw)
    if parsed is None:
        return raw, ""
    if isinstance(parsed, dict) and isinstance(parsed.get("choices"), list) and parsed["choices"]:
        c = parsed["choices"][0]
        if isinstance(c, dict):
            msg = c.get("message")
            text = _message_text(msg) if isinstance(msg, dict) else str(c.get("text", ""))
            return text, str(c.get("finish_reason", "") or "")
    return "", ""


def _openinference(a: dict[str, str]) -> LlmCall:
    call = LlmCall("openinference")
    inputs = []
    for m in _indexed(a, "llm.input_messages."):
        text = m.get("message.content", "")
        if not text:   # multi-part content: message.contents.N.message_content.text
            text = "\n".join(v for k, v in sorted(m.items()) if k.endswith("message_content.text"))
        inputs.append((m.get("message.role", "user"), text))
    if not inputs:      # the completions API: llm.prompts.N.prompt.text
        inputs = [("user", p.get("prompt.text", "")) for p in _indexed(a, "llm.prompts.")]
    if not inputs and a.get("input.value"):
        inputs = _value_messages(a["input.value"])
    outputs = _indexed(a, "llm.output_messages.") or _indexed(a, "llm.choices.")
    if outputs:
        call.answer = outputs[0].get("message.content", outputs[0].get("completion.text", ""))
    elif a.get("output.value"):
        call.answer, call.finish_reason = _value_answer(a["output.value"])
    call.finish_reason = a.get("llm.finish_reason", "") or call.finish_reason
    call.prompt_tokens = _int(a.get("llm.token_count.prompt"))
    call.completion_tokens = _int(a.get("llm.token_count.completion"))
    system = next((t for r, t in inputs if r == "system"), "")
    _fill_text(call, [(r, t) for r, t in inputs if r != "system"], system)
    return call


def llm_call(span: MappedSpan) -> LlmCall | None:
    """The LLM call ``span`` records, or None when it has no LLM shape."""
    a = span.attributes
    if a.get("openinference.span.kind", "").upper() == "LLM":
        return _common(_openinference(a), a, span)
    op = a.get("gen_ai.operation.name", "")
    legacy_shape = (a.get("llm.request.type") in ("chat", "completion")
                    or "gen_ai.prompt.0.content" in a or "gen_ai.completion.0.content" in a)
    if op in LLM_OPERATIONS or legacy_shape:
        call = _genai_current(a, span.events)
        if call is None:
            call = _genai_legacy(a, span.events)
        return _common(call, a, span)
    return None


# -- retrievals ----------------------------------------------------------------------------------
def _context(span: MappedSpan, n: int, doc_id: str, text: str, score: object, metadata: object) -> common_pb2.Context:
    try:
        s = float(score) if score not in (None, "") else 0.0
    except (TypeError, ValueError):
        s = 0.0
    ctx = common_pb2.Context(id=doc_id or f"{span.span_id}#{n}", document_id=doc_id or f"{span.span_id}#{n}",
                             text=text, score=s)
    meta = _json(metadata) if isinstance(metadata, str) else metadata
    if isinstance(meta, dict):
        ctx.metadata.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    return ctx


def retrieved(span: MappedSpan) -> list[common_pb2.Context] | None:
    """The documents a retrieval span returned, or None when ``span`` is not a retrieval."""
    a = span.attributes
    if a.get("openinference.span.kind", "").upper() == "RETRIEVER":
        docs = _indexed(a, "retrieval.documents.")
        return [_context(span, n, d.get("document.id", ""), d.get("document.content", ""), d.get("document.score"),
                         d.get("document.metadata")) for n, d in enumerate(docs[:MAX_CONTEXTS])]
    if a.get("gen_ai.operation.name", "") in RETRIEVAL_OPERATIONS:
        raw = _json(a.get("gen_ai.retrieval.documents", "")) or []
        docs = raw if isinstance(raw, list) else []
        out = []
        for n, d in enumerate(docs[:MAX_CONTEXTS]):
            if isinstance(d, dict):
                text = d.get("content", d.get("text", ""))
                out.append(_context(span, n, str(d.get("id", "")), text if isinstance(text, str) else json.dumps(text),
                                    d.get("score"), d.get("metadata")))
        return out
    return None
