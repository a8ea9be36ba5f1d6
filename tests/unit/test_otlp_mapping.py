"""OTLP spans into SpanEvents and CompletionEvents: attribute flattening, the LLM-call conventions
(GenAI current and older, OpenInference), retrieval contexts, and the bounded wait for them."""
from __future__ import annotations

import gzip
import json

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2 as otlp_common
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace

from llmops.tracing.otlp.assembler import CompletionAssembler
from llmops.tracing.otlp.conventions import llm_call, retrieved
from llmops.tracing.otlp.doors import BodyError, gunzip, parse_json_request
from llmops.tracing.otlp.receiver import map_request
from llmops.tracing.otlp.spans import MAX_VALUE_CHARS, RejectedSpan, map_span, resource_of
from llmops.v1 import common_pb2, events_pb2

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
T0 = 1_700_000_000_000_000_000


def kv(key: str, value) -> otlp_common.KeyValue:
    return otlp_common.KeyValue(key=key, value=av(value))


def av(value) -> otlp_common.AnyValue:
    if isinstance(value, bool):
        return otlp_common.AnyValue(bool_value=value)
    if isinstance(value, int):
        return otlp_common.AnyValue(int_value=value)
    if isinstance(value, float):
        return otlp_common.AnyValue(double_value=value)
    if isinstance(value, bytes):
        return otlp_common.AnyValue(bytes_value=value)
    if isinstance(value, list):
        return otlp_common.AnyValue(array_value=otlp_common.ArrayValue(values=[av(v) for v in value]))
    if isinstance(value, dict):
        return otlp_common.AnyValue(kvlist_value=otlp_common.KeyValueList(values=[kv(k, v) for k, v in value.items()]))
    return otlp_common.AnyValue(string_value=value)


def span(span_id: int, name: str = "op", parent: int = 0, attrs: dict | None = None, events=(), start_ms: int = 0,
         dur_ms: int = 10, trace: bytes = TRACE) -> otlp_trace.Span:
    s = otlp_trace.Span(
        trace_id=trace, span_id=span_id.to_bytes(8, "big"), name=name,
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        start_time_unix_nano=T0 + start_ms * 1_000_000, end_time_unix_nano=T0 + (start_ms + dur_ms) * 1_000_000,
        attributes=[kv(k, v) for k, v in (attrs or {}).items()], kind=otlp_trace.Span.SPAN_KIND_CLIENT,
    )
    for ev_name, ev_attrs in events:
        s.events.add(name=ev_name, time_unix_nano=T0, attributes=[kv(k, v) for k, v in ev_attrs.items()])
    return s


def request(*spans: otlp_trace.Span, service: str = "shop-bot", resource: dict | None = None):
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", service), *[kv(k, v) for k, v in (resource or {}).items()]])
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "opentelemetry.instrumentation.openai_v2", "2.1b0"
    ss.spans.extend(spans)
    return req


def mapped(*spans, **kw):
    out, rejected, reasons = map_request(request(*spans, **kw))
    assert rejected == 0, reasons
    return out


# -- spans ----------------------------------------------------------------------------------------
def test_span_keeps_ids_times_service_and_flattens_attributes():
    (m,) = mapped(span(0xA1, "chat gpt-4o", parent=0xB2, attrs={
        "s": "x", "i": 7, "f": 0.5, "b": True, "arr": ["stop", "length"], "raw": b"\x00\x01",
        "nested": {"a": 1, "deep": {"b": "c"}}, "objs": [{"role": "user"}],
    }), resource={"deployment.environment": "prod"})
    ev = m.event
    assert ev.trace_id == TRACE.hex() and ev.span_id == f"{0xA1:016x}" and ev.parent_span_id == f"{0xB2:016x}"
    assert ev.service == "shop-bot" and ev.name == "chat gpt-4o"
    assert ev.start_time.ToNanoseconds() == T0 and ev.end_time.ToNanoseconds() == T0 + 10_000_000
    a = dict(ev.attributes)
    assert a["s"] == "x" and a["i"] == "7" and a["f"] == "0.5" and a["b"] == "true"
    assert json.loads(a["arr"]) == ["stop", "length"] and a["raw"] == "AAE="
    assert a["nested.a"] == "1" and a["nested.deep.b"] == "c"
    assert json.loads(a["objs"]) == [{"role": "user"}]
    assert a["resource.deployment.environment"] == "prod" and "resource.service.name" not in a
    assert a["otel.span_kind"] == "client" and a["otel.scope.name"] == "opentelemetry.instrumentation.openai_v2"


def test_span_events_status_and_limits():
    s = span(0xA1, attrs={"big": "x" * (MAX_VALUE_CHARS + 10)}, events=[("exception", {"exception.type": "ValueError"})])
    s.status.code, s.status.message = otlp_trace.Status.STATUS_CODE_ERROR, "boom"
    (m,) = mapped(s)
    a = dict(m.event.attributes)
    assert len(a["big"]) == MAX_VALUE_CHARS and a["otel.truncated_values"] == "1"
    assert json.loads(a["otel.events"])[0] == {"name": "exception", "time_unix_nano": T0,
                                                "attributes": {"exception.type": "ValueError"}}
    assert m.event.status == common_pb2.SPAN_STATUS_ERROR and m.event.status_message == "boom"


@pytest.mark.parametrize("bad, reason", [
    (dict(trace_id=b"\x01" * 8), "trace_id must be 16 bytes"),
    (dict(trace_id=bytes(16)), "trace_id must be 16 bytes and not all zero"),
    (dict(span_id=b""), "span_id must be 8 bytes"),
    (dict(name=""), "name is empty"),
    (dict(start_time_unix_nano=0), "start_time_unix_nano is 0"),
])
def test_invalid_spans_are_rejected_with_the_reason(bad, reason):
    s = span(0xA1)
    for k, v in bad.items():
        setattr(s, k, v)
    with pytest.raises(RejectedSpan, match=reason):
        map_span(s, resource_of(request(s).resource_spans[0]), "", "")
    out, rejected, reasons = map_request(request(s, span(0xA2)))
    assert len(out) == 1 and rejected == 1 and reason in reasons[0]


def test_invalid_parent_id_means_no_parent():
    s = span(0xA1)
    s.parent_span_id = b"\x01\x02"
    (m,) = mapped(s)
    assert m.event.parent_span_id == "" and m.is_root


# -- conventions ----------------------------------------------------------------------------------
GENAI = {
    "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024",
    "gen_ai.usage.input_tokens": 42, "gen_ai.usage.output_tokens": 7, "gen_ai.response.finish_reasons": ["stop"],
    "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
    "gen_ai.input.messages": json.dumps([
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello!"}]},
        {"role": "user", "parts": [{"type": "text", "content": "What is Kafka?"}]},
    ]),
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "finish_reason": "stop",
                                           "parts": [{"type": "text", "content": "A log."}]}]),
    "session.id": "s-1", "user.id": "u-9",
}


def test_genai_current_conventions():
    (m,) = mapped(span(0xA1, "chat gpt-4o-mini", attrs=GENAI, dur_ms=250))
    c = llm_call(m)
    assert c.convention == "gen_ai" and c.prompt == "What is Kafka?" and c.answer == "A log."
    assert c.rendered.startswith("system: Be brief.\nuser: Hi\nassistant: Hello!")
    assert (c.model, c.prompt_tokens, c.completion_tokens, c.finish_reason) == ("gpt-4o-mini-2024", 42, 7, "stop")
    assert (c.session_id, c.user_id) == ("s-1", "u-9")
    assert c.metadata["source"] == "otlp" and c.metadata["service"] == "shop-bot"


def test_genai_current_structured_messages_and_details_event():
    structured = {"gen_ai.operation.name": "chat",
                  "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "Q?"}]}]}
    (m,) = mapped(span(0xA1, attrs=structured))
    assert llm_call(m).prompt == "Q?"
    details = {"gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Q2"}]}]),
               "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "A2"}]}])}
    (m,) = mapped(span(0xA2, attrs={"gen_ai.operation.name": "text_completion"},
                       events=[("gen_ai.client.inference.operation.details", details)]))
    c = llm_call(m)
    assert (c.prompt, c.answer) == ("Q2", "A2")


def test_genai_legacy_attributes_and_events():
    legacy = {"llm.request.type": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-3.5",
              "gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "sys",
              "gen_ai.prompt.1.role": "user", "gen_ai.prompt.1.content": "legacy question",
              "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "legacy answer",
              "gen_ai.completion.0.finish_reason": "length",
              "gen_ai.usage.prompt_tokens": 5, "gen_ai.usage.completion_tokens": 3}
    (m,) = mapped(span(0xA1, attrs=legacy))
    c = llm_call(m)
    assert (c.convention, c.prompt, c.answer, c.finish_reason) == ("gen_ai.legacy", "legacy question", "legacy answer", "length")
    assert (c.prompt_tokens, c.completion_tokens) == (5, 3) and c.rendered.startswith("system: sys")

    events = [("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps([{"role": "user", "content": "ev q"}])}),
              ("gen_ai.content.completion", {"gen_ai.completion": json.dumps([{"role": "assistant", "content": "ev a"}])})]
    (m,) = mapped(span(0xA2, attrs={"gen_ai.operation.name": "chat"}, events=events))
    c = llm_call(m)
    assert (c.prompt, c.answer) == ("ev q", "ev a")

    events = [("gen_ai.user.message", {"content": "msg q"}),
              ("gen_ai.choice", {"message": json.dumps({"role": "assistant", "content": "msg a"}), "finish_reason": "stop"})]
    (m,) = mapped(span(0xA3, attrs={"gen_ai.operation.name": "chat"}, events=events))
    c = llm_call(m)
    assert (c.prompt, c.answer, c.finish_reason) == ("msg q", "msg a", "stop")


def test_openinference_conventions():
    oi = {"openinference.span.kind": "LLM", "llm.model_name": "llama",
          "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "sys",
          "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "oi question",
          "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "oi answer",
          "llm.token_count.prompt": 11, "llm.token_count.completion": 4, "session.id": "sess",
          "metadata": json.dumps({"tenant": "acme"})}
    (m,) = mapped(span(0xA1, "ChatCompletion", attrs=oi))
    c = llm_call(m)
    assert (c.convention, c.prompt, c.answer, c.model) == ("openinference", "oi question", "oi answer", "llama")
    assert (c.prompt_tokens, c.completion_tokens, c.session_id, c.metadata["tenant"]) == (11, 4, "sess", "acme")

    values = {"openinference.span.kind": "LLM",
              "input.value": json.dumps({"messages": [{"role": "user", "content": "from input.value"}]}),
              "output.value": json.dumps({"choices": [{"message": {"role": "assistant", "content": "from output"},
                                                       "finish_reason": "stop"}]})}
    (m,) = mapped(span(0xA2, attrs=values))
    c = llm_call(m)
    assert (c.prompt, c.answer, c.finish_reason) == ("from input.value", "from output", "stop")
    (m,) = mapped(span(0xA3, attrs={"openinference.span.kind": "LLM", "input.value": "plain", "output.value": "text"}))
    assert (llm_call(m).prompt, llm_call(m).answer) == ("plain", "text")


def test_spans_without_llm_shape_are_spans_only():
    (m,) = mapped(span(0xA1, "GET /", attrs={"http.method": "GET", "gen_ai.operation.name": "embeddings"}))
    assert llm_call(m) is None and retrieved(m) is None


def test_retrieval_contexts_from_both_conventions():
    oi = {"openinference.span.kind": "RETRIEVER",
          "retrieval.documents.0.document.id": "d1", "retrieval.documents.0.document.content": "Kafka is a log.",
          "retrieval.documents.0.document.score": 0.9,
          "retrieval.documents.1.document.content": "Second.", "retrieval.documents.1.document.metadata": '{"src": "wiki"}'}
    (m,) = mapped(span(0xA1, attrs=oi))
    docs = retrieved(m)
    assert [(d.document_id, d.text, d.score) for d in docs][0] == ("d1", "Kafka is a log.", 0.9)
    assert docs[1].text == "Second." and docs[1].metadata["src"] == "wiki" and docs[1].id.endswith("#1")
    genai = {"gen_ai.operation.name": "retrieval", "gen_ai.retrieval.query.text": "kafka",
             "gen_ai.retrieval.documents": json.dumps([{"id": "g1", "score": 0.7, "content": "G text"}])}
    (m,) = mapped(span(0xA2, attrs=genai))
    assert [(d.id, d.text, d.score) for d in retrieved(m)] == [("g1", "G text", 0.7)]


# -- assembling completions -----------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


RETRIEVER = {"openinference.span.kind": "RETRIEVER", "retrieval.documents.0.document.id": "d1",
             "retrieval.documents.0.document.content": "Kafka is a log.", "retrieval.documents.0.document.score": 0.8}


def test_completion_waits_for_retrievals_in_other_exports_until_the_root_arrives():
    clock = Clock()
    a = CompletionAssembler(wait_s=5.0, clock=clock)
    assert a.add(mapped(span(0x2, "retrieve", parent=0x1, attrs=RETRIEVER, start_ms=0))) == []
    assert a.add(mapped(span(0x3, "chat", parent=0x1, attrs=GENAI, start_ms=20, dur_ms=300))) == []
    (ev,) = a.add(mapped(span(0x1, "rag", start_ms=0, dur_ms=400)))
    assert ev.trace_id == TRACE.hex() and ev.prompt == "What is Kafka?" and ev.answer == "A log."
    assert [c.text for c in ev.contexts] == ["Kafka is a log."] and ev.retrieval_top_score == 0.8
    assert ev.root_span_id == f"{0x3:016x}" and ev.latency_ms == 300.0
    assert ev.timestamp.ToNanoseconds() == T0 + 320_000_000
    assert ev.usage.total_tokens == 49 and ev.metadata["convention"] == "gen_ai"
    # the exporter retries the same spans: nothing is emitted twice
    assert a.add(mapped(span(0x3, "chat", parent=0x1, attrs=GENAI), span(0x1, "rag"))) == [] and len(a) == 0


def test_root_llm_span_is_emitted_at_once_and_a_child_without_root_after_the_wait():
    clock = Clock()
    a = CompletionAssembler(wait_s=5.0, clock=clock)
    (ev,) = a.add(mapped(span(0x9, "chat", attrs=GENAI)))
    assert ev.answer == "A log."
    other = bytes.fromhex("1" * 32)
    assert a.add(mapped(span(0x3, "chat", parent=0x1, attrs=GENAI, trace=other))) == []
    clock.now += 4.9
    assert a.due() == [] and a.waiting == 1
    clock.now += 0.2
    (late,) = a.due()
    assert late.trace_id == other.hex() and late.contexts == [] and a.waiting == 0


def test_the_last_llm_call_of_a_trace_is_its_completion():
    a = CompletionAssembler(wait_s=5.0, clock=Clock())
    first = dict(GENAI, **{"gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "tool call"}]}])})
    (ev,) = a.add(mapped(span(0x2, "chat", parent=0x1, attrs=first, start_ms=0, dur_ms=10),
                         span(0x3, "chat", parent=0x1, attrs=GENAI, start_ms=20, dur_ms=10),
                         span(0x1, "agent", start_ms=0, dur_ms=40)))
    assert ev.answer == "A log."


def test_held_traces_are_bounded():
    clock = Clock()
    a = CompletionAssembler(wait_s=5.0, max_traces=100, clock=clock)
    out = []
    for n in range(150):
        out += a.add(mapped(span(0x3, "chat", parent=0x1, attrs=GENAI, trace=(n + 1).to_bytes(16, "big"))))
    assert len(a) == 100 and len(out) == 50 and a.evicted_early == 50     # emitted early, not dropped
    assert len(a.drain()) == 100 and len(a) == 0


def test_contexts_only_traces_are_forgotten_after_keep_s():
    clock = Clock()
    a = CompletionAssembler(wait_s=1.0, keep_s=30.0, clock=clock)
    a.add(mapped(span(0x2, "retrieve", parent=0x1, attrs=RETRIEVER)))
    clock.now += 29
    assert a.due() == [] and len(a) == 1
    clock.now += 2
    assert a.due() == [] and len(a) == 0


# -- OTLP/HTTP bodies -----------------------------------------------------------------------------
def test_json_body_with_hex_ids_parses_to_bytes():
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js-app"}}]},
                               "scopeSpans": [{"scope": {"name": "x"}, "spans": [
                                   {"traceId": TRACE.hex(), "spanId": "00000000000000a1", "parentSpanId": "",
                                    "name": "chat", "kind": 3, "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 5),
                                    "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}],
                                    "futureField": 1},
                                   {"traceId": "not-hex", "spanId": "00000000000000a2", "name": "bad",
                                    "startTimeUnixNano": str(T0)}]}]}]}
    req = parse_json_request(json.dumps(body).encode())
    out, rejected, reasons = map_request(req)
    assert [m.event.span_id for m in out] == ["00000000000000a1"] and out[0].event.service == "js-app"
    assert out[0].event.trace_id == TRACE.hex() and rejected == 1 and "trace_id" in reasons[0]


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be an object"),
    (b'{"resourceSpans": 5}', "not an OTLP ExportTraceServiceRequest"),
    (b"\xff\xfe", "not valid"),
])
def test_malformed_json_bodies_say_what_is_wrong(raw, message):
    with pytest.raises(BodyError, match=message) as info:
        parse_json_request(raw)
    assert info.value.status == 400


def test_gzip_bodies_are_bounded_after_decompression():
    payload = b"\x00" * 10_000
    assert gunzip(gzip.compress(payload), 10_000) == payload
    with pytest.raises(BodyError, match="over 9999 bytes") as info:
        gunzip(gzip.compress(payload), 9_999)
    assert info.value.status == 413
    with pytest.raises(BodyError, match="not gzip data"):
        gunzip(b"plain text", 100)
    with pytest.raises(BodyError, match="truncated"):
        gunzip(gzip.compress(payload)[:-12], 100_000)


def test_openinference_completions_api_prompts_and_choices():
    attrs = {"openinference.span.kind": "LLM", "llm.prompts.0.prompt.text": "Tell me a story",
             "llm.choices.0.completion.text": " Once upon a time.", "llm.finish_reason": "length",
             "llm.model_name": "gpt-3.5-turbo-instruct"}
    (m,) = mapped(span(0xA1, "Completion", attrs=attrs))
    c = llm_call(m)
    assert (c.prompt, c.answer, c.finish_reason, c.model) == ("Tell me a story", " Once upon a time.", "length",
                                                              "gpt-3.5-turbo-instruct")


# -- export: the platform's spans in GenAI terms ---------------------------------------------------
def platform_span(name: str, service: str = "inference", **attrs):
    from llmops.common.spans import SpanRecorder

    rec = SpanRecorder(TRACE.hex(), service)
    s = rec.start(name, "", **attrs)
    rec.end(s)
    return s


def test_export_names_and_attributes_follow_genai_conventions():
    from opentelemetry.trace import SpanKind

    from llmops.tracing.otlp.export import genai_view

    name, kind, a = genai_view(platform_span("generation", model="smollm2", backend="llama_cpp", max_new_tokens=64,
                                             prompt_tokens=40, completion_tokens=12, finish_reason="eos_token"))
    assert (name, kind) == ("chat smollm2", SpanKind.CLIENT)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "smollm2"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"], a["gen_ai.request.max_tokens"]) == (40, 12, 64)
    assert a["gen_ai.response.finish_reasons"] == ["eos_token"] and a["model"] == "smollm2"   # ours kept beside
    name, kind, a = genai_view(platform_span("retrieval", top_k=3, collection="docs", query="kafka?"))
    assert (name, a["gen_ai.operation.name"], a["gen_ai.data_source.id"], a["gen_ai.request.top_k"]) == (
        "retrieval docs", "retrieval", "docs", 3)
    name, kind, a = genai_view(platform_span("generate", model="smollm2", session_id="s1", user_id=""))
    assert (name, kind, a["session.id"]) == ("generate", SpanKind.SERVER, "s1") and "user.id" not in a


def test_a_score_is_an_evaluation_event_with_a_stable_span_id():
    from opentelemetry.sdk.resources import Resource

    from llmops.tracing.otlp.export import score_span

    ev = events_pb2.ScoreEvent(trace_id=TRACE.hex(), span_id="00000000000000a1", tier="cheap", model="m",
                               score=common_pb2.Score(name="faithfulness", value=0.75, evaluator="rag.faithfulness.cheap",
                                                      version="1", explanation="2 of 3 claims supported"))
    ev.score.created_at.FromNanoseconds(T0)
    a, b = score_span(ev, Resource.create({}), 0), score_span(ev, Resource.create({}), 0)
    assert a.context.span_id == b.context.span_id and a.parent.span_id == 0xA1
    (event,) = a.events
    assert event.name == "gen_ai.evaluation.result" and event.timestamp == T0
    assert dict(event.attributes) == {"gen_ai.evaluation.name": "faithfulness", "gen_ai.evaluation.score.value": 0.75,
                                      "gen_ai.evaluation.explanation": "2 of 3 claims supported"}


# -- the receiver's use case: delivery, retries, a bounded number of exports at once ----------------
class MemoryPublisher:
    """The EventPublisher port in memory: records what it is given, or fails while told to."""

    def __init__(self) -> None:
        self.sent: list = []
        self.failing = False
        self.gate = None

    def publish(self, topic, key, message, traceparent=""):
        raise AssertionError("the receiver must await delivery (send_many), never fire and forget")

    async def send_many(self, messages):
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise ConnectionError("broker away")
        self.sent.extend(messages)


async def test_kafka_failure_is_retryable_and_loses_no_completion():
    from llmops.common.errors import Unavailable
    from llmops.tracing.otlp.receiver import OtlpReceiver

    pub = MemoryPublisher()
    rx = OtlpReceiver(pub, "p.", CompletionAssembler(wait_s=5.0, clock=Clock()))
    pub.failing = True
    with pytest.raises(Unavailable, match="retry"):
        await rx.export(request(span(0x9, "chat", attrs=GENAI)), "http")
    assert pub.sent == []
    # the exporter retries the spans; the completion the assembler let go goes out with the next flush
    pub.failing = False
    result = await rx.export(request(span(0x9, "chat", attrs=GENAI)), "http")
    assert result.accepted == 1 and [t for t, *_ in pub.sent] == ["p.spans"]
    assert await rx.flush([])
    topics = [t for t, *_ in pub.sent]
    assert topics == ["p.spans", "p.completions"]
    (_, key, completion, tp) = pub.sent[-1]
    assert key == TRACE.hex() and completion.answer == "A log." and tp.endswith(f"{0x9:016x}-01")


async def test_exports_beyond_the_limit_are_refused_as_retryable():
    import asyncio

    from llmops.common.errors import ResourceExhausted
    from llmops.tracing.otlp.receiver import OtlpReceiver

    pub = MemoryPublisher()
    pub.gate = asyncio.Event()
    rx = OtlpReceiver(pub, "p.", CompletionAssembler(clock=Clock()), max_in_flight=1)
    first = asyncio.create_task(rx.export(request(span(0x1, "a")), "grpc"))
    while rx.in_flight == 0:
        await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match="LLMOPS_OTLP_MAX_CONCURRENT_EXPORTS"):
        await rx.export(request(span(0x2, "b")), "grpc")
    pub.gate.set()
    assert (await first).accepted == 1 and rx.in_flight == 0


def test_a_score_of_a_routed_completion_names_the_deployment_version_it_judges():
    from opentelemetry.sdk.resources import Resource

    from llmops.tracing.otlp.export import score_span

    ev = events_pb2.ScoreEvent(trace_id=TRACE.hex(), tier="cheap", model="m", route="chat", route_revision=3,
                               deployment="smol", deployment_version=2, arm="canary",
                               score=common_pb2.Score(name="faithfulness", value=0.5, evaluator="rag.faithfulness.cheap",
                                                      version="1"))
    a = score_span(ev, Resource.create({}), T0).attributes
    assert (a["llmops.route"], a["llmops.route_revision"], a["llmops.deployment"], a["llmops.deployment_version"],
            a["llmops.arm"]) == ("chat", 3, "smol", 2, "canary")
    ev.ClearField("deployment")
    assert "llmops.deployment" not in score_span(ev, Resource.create({}), T0).attributes   # not routed: nothing to name
