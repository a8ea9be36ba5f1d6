"""Inference, retrieval and tracing run in-process (as `llmops serve` runs them) on the real
embedded broker, LanceDB, SQLite and llama.cpp; driven over gRPC like a client would."""
import grpc
import pytest

from llmops.cli.client import Client
from llmops.common.envelope import encode
from llmops.inference.main import build as build_inference
from llmops.retrieval.main import build as build_retrieval
from llmops.tracing.main import build as build_tracing
from llmops.v1 import events_pb2, inference_pb2, retrieval_pb2, tracing_pb2
from tests.support import consume, consume_until, make_settings, produce, running_services, wait_until

DOCS = [
    retrieval_pb2.Document(id="kb:assert", text=(
        "The assert statement inserts debugging assertions into a program. If the expression is false, "
        "assert raises AssertionError. Assertions are skipped when Python runs with -O."),
        metadata={"topic": "assert", "lang": "en"}),
    retrieval_pb2.Document(id="kb:lambda", text=(
        "A lambda expression creates an anonymous function. lambda parameters: expression yields a "
        "function object that behaves like a function defined with def."),
        metadata={"topic": "lambda", "lang": "en"}),
    retrieval_pb2.Document(id="kb:kimchi", text=(
        "Kimchi is a traditional Korean side dish of salted and fermented vegetables such as napa "
        "cabbage and Korean radish."), metadata={"topic": "food", "lang": "en"}),
]


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("stack"), kafka)
    with running_services(s, (("retrieval", build_retrieval), ("tracing", build_tracing),
                              ("inference", build_inference))):
        client = Client(s)
        client.upsert(DOCS, "kb")
        yield s, client


def code_of(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


# -- the traced request path -----------------------------------------------------------------
def test_rag_generate_returns_contexts_from_the_right_document_and_is_traced(stack):
    s, client = stack
    r = client.generate("What does assert raise when the expression is false?", rag=True, collection="kb",
                        top_k=2, max_new_tokens=24, session_id="sess-1", user_id="alice",
                        metadata={"app": "tests"})
    assert len(r.trace_id) == 32 and r.text.strip()
    assert r.contexts[0].document_id == "kb:assert"
    assert r.contexts[0].metadata["topic"] == "assert" and r.contexts[0].collection == "kb"
    assert r.usage.prompt_tokens > 30 and 0 < r.usage.completion_tokens <= 24
    assert r.finish_reason in ("length", "eos_token") and (r.prompt_template, r.prompt_version) == ("rag", 1)

    t = wait_until(lambda: (tr := client.get_trace(r.trace_id)) and len(tr.spans) == 4 and tr.summary.model and tr,
                   timeout_s=15, what="the trace with 4 spans and its completion")
    by_name = {sp.name: sp for sp in t.spans}
    assert set(by_name) == {"generate", "retrieval", "prompt", "generation"}
    root = by_name["generate"]
    assert all(sp.parent_span_id == root.span_id for n, sp in by_name.items() if n != "generate")
    assert by_name["retrieval"].attributes["document_ids"].startswith("kb:assert")
    assert by_name["prompt"].attributes["template"] == "rag" and by_name["prompt"].attributes["version"] == "1"
    assert by_name["generation"].attributes["completion_tokens"] == str(r.usage.completion_tokens)
    assert t.summary.session_id == "sess-1" and t.summary.user_id == "alice" and t.summary.metadata["app"] == "tests"
    assert t.summary.prompt_template == "rag" and t.summary.answer == r.text


def test_stream_yields_tokens_then_a_summary_that_matches_them(stack):
    s, client = stack
    req = inference_pb2.GenerateRequest(prompt="Name three colors.")
    req.parameters.max_new_tokens = 12
    msgs = list(client.inference.GenerateStream(req, timeout=120))
    tokens = [m.token for m in msgs if not m.final]
    final = msgs[-1]
    assert final.final and final.summary.text == "".join(tokens)
    assert final.summary.usage.completion_tokens == len(tokens)
    assert final.trace_id == final.summary.trace_id


def test_caller_traceparent_is_adopted(stack):
    s, client = stack
    caller_trace, caller_span = "ab" * 16, "cd" * 8
    req = inference_pb2.GenerateRequest(prompt="Say hi.")
    req.parameters.max_new_tokens = 4
    r = client.inference.Generate(req, timeout=120, metadata=(("traceparent", f"00-{caller_trace}-{caller_span}-01"),))
    assert r.trace_id == caller_trace
    # spans, the completion and scores reach tracing on separate topics, in any order: the trace
    # can be stored before its root span is
    root = wait_until(lambda: next((sp for sp in client.get_trace(caller_trace).spans if sp.name == "generate"), None),
                      what="the root span 'generate' of the adopted trace")
    assert root.parent_span_id == caller_span


def test_prompt_versions_are_recorded(stack):
    s, client = stack
    v = client.inference.RegisterPromptTemplate(inference_pb2.RegisterPromptTemplateRequest(
        name="terse", system="Answer in one word.", user="{question}"), timeout=10)
    req = inference_pb2.GenerateRequest(prompt="Color of the sky?", prompt_template="terse", prompt_version=v.version)
    req.parameters.max_new_tokens = 4
    r = client.inference.Generate(req, timeout=120)
    assert (r.prompt_template, r.prompt_version) == ("terse", v.version)
    listed = client.inference.ListPromptTemplates(inference_pb2.ListPromptTemplatesRequest(name="terse"), timeout=10)
    assert [t.version for t in listed.templates] == [v.version]


def test_list_traces_filters_by_session_and_feedback_is_attached(stack):
    s, client = stack
    ids = []
    for i in range(3):
        r = client.generate(f"Say {i}.", max_new_tokens=3, session_id="sess-list", user_id="bob")
        ids.append(r.trace_id)
    wait_until(lambda: len(client.tracing.ListTraces(tracing_pb2.ListTracesRequest(
        session_id="sess-list", page_size=10), timeout=10).traces) == 3, what="all three traces listed")
    got = client.tracing.ListTraces(tracing_pb2.ListTracesRequest(session_id="sess-list", page_size=2), timeout=10)
    assert len(got.traces) == 2 and got.next_page_token
    rest = client.tracing.ListTraces(tracing_pb2.ListTracesRequest(session_id="sess-list", page_size=2,
                                                                   page_token=got.next_page_token), timeout=10)
    assert {t.trace_id for t in list(got.traces) + list(rest.traces)} == set(ids)
    fb = client.tracing.SubmitFeedback(tracing_pb2.SubmitFeedbackRequest(trace_id=ids[0], score=0.0, comment="wrong",
                                                                         user_id="bob"), timeout=10).feedback
    t = client.get_trace(ids[0])
    assert [(f.id, f.comment) for f in t.feedback] == [(fb.id, "wrong")]
    (m,) = [m for m in consume(s.kafka_bootstrap, s.topic("feedback"), want=1) if m.key == ids[0].encode()]
    assert events_pb2.FeedbackEvent.FromString(m.value).feedback.id == fb.id


# -- retrieval ------------------------------------------------------------------------------------
def test_search_hybrid_filters_and_delete(stack):
    s, client = stack
    kw = client.retrieval.Search(retrieval_pb2.SearchRequest(query="kimchi cabbage", collection="kb", alpha=0.0,
                                                             top_k=1), timeout=30)
    assert kw.results[0].document_id == "kb:kimchi" and kw.results[0].keyword_score > 0
    vec = client.retrieval.Search(retrieval_pb2.SearchRequest(query="fermented Korean food", collection="kb",
                                                              alpha=1.0, top_k=1), timeout=30)
    assert vec.results[0].document_id == "kb:kimchi" and vec.results[0].keyword_score == 0
    only = client.retrieval.Search(retrieval_pb2.SearchRequest(query="function", collection="kb", top_k=5,
                                                               filters={"topic": "lambda"}), timeout=30)
    assert {r.document_id for r in only.results} == {"kb:lambda"}
    client.upsert([retrieval_pb2.Document(id="tmp:1", text="temporary zebra document")], "kb")
    assert client.retrieval.Delete(retrieval_pb2.DeleteRequest(collection="kb", ids=["tmp:1"]), timeout=30).deleted_chunks == 1
    after = client.retrieval.Search(retrieval_pb2.SearchRequest(query="zebra", collection="kb", alpha=0.0), timeout=30)
    assert "tmp:1" not in {r.document_id for r in after.results}


def test_reingesting_a_document_replaces_its_chunks(stack):
    s, client = stack
    long_text = "\n\n".join(f"Section {i}: the quick brown fox jumps over the lazy dog {i} times." * 4 for i in range(30))
    first = client.upsert([retrieval_pb2.Document(id="re:1", text=long_text)], "re")
    assert first.chunks > 3
    second = client.upsert([retrieval_pb2.Document(id="re:1", text="Now a short text about otters.")], "re")
    assert second.chunks == 1
    cols = {c.name: c for c in client.retrieval.ListCollections(retrieval_pb2.ListCollectionsRequest(), timeout=10).collections}
    assert cols["re"].chunks == 1 and cols["re"].documents == 1


def test_documents_topic_is_ingested_and_garbage_goes_to_the_dlq(stack):
    s, client = stack
    good = events_pb2.DocumentEvent(id="etl:otter", text="Sea otters hold hands while sleeping.",
                                    collection="etl", metadata={"source": "etl"})
    value, headers = encode(good)
    produce(s.kafka_bootstrap, s.topic("documents"), [
        (b"etl:bad", b"\xffthis is not protobuf", []),
        (b"etl:empty", encode(events_pb2.DocumentEvent(id="etl:empty", collection="etl"))[0], []),
        (b"etl:otter", value, headers),
    ])

    def indexed():
        r = client.retrieval.Search(retrieval_pb2.SearchRequest(query="otters sleeping", collection="etl"), timeout=10)
        return [c.document_id for c in r.results]

    assert wait_until(indexed, timeout_s=30, what="the ETL document to be searchable") == ["etl:otter"]

    def from_documents(msgs):
        return [m for m in msgs if dict(m.headers)["dlq-source-topic"] == s.topic("documents").encode()]

    dlq = from_documents(consume_until(s.kafka_bootstrap, s.topic("dlq"),
                                       lambda msgs: {b"etl:bad", b"etl:empty"} <= {m.key for m in from_documents(msgs)},
                                       timeout_s=20, what="the two rejected documents"))
    reasons = {m.key: dict(m.headers)["dlq-reason"].decode() for m in dlq}
    assert "not a valid llmops.v1.DocumentEvent" in reasons[b"etl:bad"]
    assert "has no text" in reasons[b"etl:empty"]
    assert next(m for m in dlq if m.key == b"etl:bad").value == b"\xffthis is not protobuf"


def test_span_redelivery_is_stored_once_and_garbage_spans_go_to_the_dlq(stack):
    s, client = stack
    from google.protobuf.timestamp_pb2 import Timestamp

    tid = "e" * 32
    now = Timestamp()
    now.GetCurrentTime()
    spans = [events_pb2.SpanEvent(trace_id=tid, span_id=f"{i:016x}", name=f"step{i}", start_time=now, end_time=now)
             for i in range(3)]
    items = [(tid.encode(), *encode(sp)) for sp in spans]
    bad_id = events_pb2.SpanEvent(trace_id="not-hex", span_id="1" * 16, name="x", start_time=now)
    # a span of another trace after the redelivered copies: one partition, consumed in order, so
    # once it is stored the copies before it have been handled
    sentinel_tid = "f" * 32
    sentinel = events_pb2.SpanEvent(trace_id=sentinel_tid, span_id="9" * 16, name="sentinel", start_time=now,
                                    end_time=now)
    produce(s.kafka_bootstrap, s.topic("spans"),
            items + [(b"junk", b"\x0a\xff\xff", []), (b"bad", encode(bad_id)[0], [])] + items
            + [(sentinel_tid.encode(), *encode(sentinel))])
    wait_until(lambda: [sp.name for sp in client.get_trace(sentinel_tid).spans] == ["sentinel"],
               what="the sentinel span sent after the redelivered copies")
    t = client.get_trace(tid)
    assert len(t.spans) == 3 and t.summary.span_count == 3

    def from_spans(msgs):
        return {m.key: dict(m.headers) for m in msgs if dict(m.headers).get("dlq-source-topic") == s.topic("spans").encode()}

    dlq = from_spans(consume_until(s.kafka_bootstrap, s.topic("dlq"), lambda msgs: {b"junk", b"bad"} <= set(from_spans(msgs)),
                                   what="the junk and the bad span"))
    assert b"not a valid llmops.v1.SpanEvent" in dlq[b"junk"]["dlq-reason"]
    assert b"trace_id 'not-hex'" in dlq[b"bad"]["dlq-reason"]
    assert dlq[b"junk"]["dlq-consumer-group"] == f"{s.topic_prefix}tracing".encode()


# -- bad input -------------------------------------------------------------------------------------
def test_bad_generate_requests_get_invalid_argument_or_not_found(stack):
    s, client = stack
    inf = client.inference

    def gen(**kw):
        params = kw.pop("parameters", {})
        req = inference_pb2.GenerateRequest(**kw)
        for k, v in params.items():
            setattr(req.parameters, k, v)
        return lambda: inf.Generate(req, timeout=60)

    assert code_of(gen(prompt="")) == (grpc.StatusCode.INVALID_ARGUMENT,
                                       "prompt is empty: set `prompt` (or `messages`) to the text to answer")
    code, msg = code_of(gen(prompt="hi", parameters={"max_new_tokens": 0}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_new_tokens" in msg
    code, msg = code_of(gen(prompt="hi", parameters={"max_new_tokens": -5}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_new_tokens" in msg
    code, msg = code_of(gen(prompt="hi", model="gpt-17"))
    assert code == grpc.StatusCode.NOT_FOUND and "gpt-17" in msg and "smollm2-135m-instruct" in msg
    code, msg = code_of(gen(prompt="word " * 3000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "must be <= 2048" in msg
    code, msg = code_of(gen(prompt="hi", prompt_template="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in msg
    # streaming maps errors the same way
    req = inference_pb2.GenerateRequest(prompt="")
    code, msg = code_of(lambda: list(inf.GenerateStream(req, timeout=60)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "prompt is empty" in msg


def test_bad_search_and_trace_requests(stack):
    s, client = stack
    code, msg = code_of(lambda: client.retrieval.Search(retrieval_pb2.SearchRequest(query="  "), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "query is empty" in msg
    code, msg = code_of(lambda: client.retrieval.Search(retrieval_pb2.SearchRequest(query="x", alpha=1.5), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "alpha" in msg
    code, msg = code_of(lambda: client.retrieval.Search(retrieval_pb2.SearchRequest(query="x", collection="nope"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in msg
    code, msg = code_of(lambda: client.get_trace("0" * 31 + "1"))
    assert code == grpc.StatusCode.NOT_FOUND and "not found" in msg
    code, msg = code_of(lambda: client.get_trace("xyz"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a trace id" in msg
    code, _ = code_of(lambda: client.tracing.SubmitFeedback(tracing_pb2.SubmitFeedbackRequest(trace_id="1" * 32, score=1), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = code_of(lambda: client.tracing.ListTraces(tracing_pb2.ListTracesRequest(page_token="bogus"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_concurrent_requests_are_safe_and_match_serial_results(stack):
    """llama.cpp contexts are not thread-safe; the backend serialises generations. Concurrent
    greedy requests must give exactly what the same requests give one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    s, client = stack
    prompts = [f"Write one sentence about the number {i}." for i in range(6)]
    serial = [client.generate(p, max_new_tokens=12).text for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda p: client.generate(p, max_new_tokens=12), prompts))
    assert [r.text for r in concurrent] == serial
    assert len({r.trace_id for r in concurrent}) == 6


def test_a_cancelled_stream_is_traced_as_cancelled(stack):
    s, client = stack
    req = inference_pb2.GenerateRequest(prompt="Count from one to one hundred in words.")
    req.parameters.max_new_tokens = 200
    call = client.inference.GenerateStream(req, timeout=120)
    first = next(call)
    assert not first.final and first.token
    call.cancel()
    t = wait_until(lambda: (tr := client.tracing.ListTraces(tracing_pb2.ListTracesRequest(page_size=50), timeout=10))
                   and [x for x in tr.traces if x.status == 2 and x.span_count >= 3], what="the cancelled trace")
    trace = client.get_trace(t[0].trace_id)
    gen = next(sp for sp in trace.spans if sp.name == "generation")
    assert gen.status == 2 and "RequestCancelled" in gen.status_message
    assert "completion_tokens" not in gen.attributes  # it never finished
