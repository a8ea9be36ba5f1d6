"""The OpenAI-compatible gateway of the inference service, driven by the official ``openai`` SDK
(unmodified, in its own venv .peers/otel, run as a subprocess) and by Debian's ``curl``, against
inference, retrieval and tracing running in-process on the real broker, LanceDB, SQLite and
llama.cpp. Each call must leave what ``Generate`` leaves: a stored trace and a CompletionEvent."""
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from llmops.cli.client import Client
from llmops.inference.main import build as build_inference
from llmops.retrieval.main import build as build_retrieval
from llmops.tracing.main import build as build_tracing
from llmops.v1 import events_pb2, retrieval_pb2
from tests.support import consume_until, make_settings, running_services, wait_until

REPO = Path(__file__).resolve().parents[2]
PEER_PYTHON = REPO / ".peers" / "otel" / "bin" / "python"
MODEL = "smollm2-135m-instruct"
MAX_BODY = 64 * 1024
NO_PROXY = {"NO_PROXY": "*", "no_proxy": "*"}

DOCS = [
    retrieval_pb2.Document(id="kb:assert", text=(
        "The assert statement inserts debugging assertions into a program. If the expression is false, "
        "assert raises AssertionError. Assertions are skipped when Python runs with -O."),
        metadata={"topic": "assert"}),
    retrieval_pb2.Document(id="kb:kimchi", text=(
        "Kimchi is a traditional Korean side dish of salted and fermented vegetables such as napa "
        "cabbage and Korean radish."), metadata={"topic": "food"}),
]

PRELUDE = """
import json, os, openai
client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="sk-anything", max_retries=0, timeout=300)
MODEL = os.environ["MODEL"]
out = {}
def refused(fn, **kw):
    try:
        fn(**kw)
    except openai.APIStatusError as exc:
        return {"class": type(exc).__name__, "status": exc.status_code, "body": exc.body}
    return {"class": None}
"""


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("gateway"), kafka, inference_http_max_body_bytes=MAX_BODY)
    with running_services(s, (("retrieval", build_retrieval), ("tracing", build_tracing),
                              ("inference", build_inference))):
        client = Client(s)
        client.upsert(DOCS, "kb")
        yield s, client, f"http://127.0.0.1:{s.inference_http_port}"


def peer(base_url: str, script: str) -> dict:
    """Run ``script`` with the peer venv's python and the official openai SDK; it fills ``out``."""
    if not PEER_PYTHON.exists():
        pytest.fail(f"{PEER_PYTHON} is missing: `make .peers/otel/.ok` builds the openai SDK's venv")
    code = PRELUDE + textwrap.dedent(script) + "\nprint(json.dumps(out))\n"
    env = {**os.environ, **NO_PROXY, "BASE_URL": f"{base_url}/v1", "MODEL": MODEL}
    proc = subprocess.run([str(PEER_PYTHON), "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the openai SDK script failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def curl(*args: str, data: str | None = None) -> tuple[int, str]:
    """(HTTP status, body) of one curl call."""
    assert shutil.which("curl"), "Debian's curl is required (apt-get install curl)"
    cmd = ["curl", "-sS", "--noproxy", "*", "-w", "\n%{http_code}", *args]
    if data is not None:
        cmd += ["-H", "content-type: application/json", "--data-binary", "@-"]
    proc = subprocess.run(cmd, input=data, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    body, _, status = proc.stdout.rpartition("\n")
    return int(status), body


def completion_event(s, trace_id: str) -> events_pb2.CompletionEvent:
    msgs = consume_until(s.kafka_bootstrap, s.topic("completions"),
                         lambda ms: any(m.key == trace_id.encode() for m in ms), timeout_s=30,
                         what=f"the CompletionEvent of {trace_id}")
    return events_pb2.CompletionEvent.FromString(next(m.value for m in msgs if m.key == trace_id.encode()))


def stored_trace(client: Client, trace_id: str, spans: int):
    return wait_until(lambda: (t := client.get_trace(trace_id)) and len(t.spans) == spans and t.summary.model and t,
                      timeout_s=20, what=f"trace {trace_id} with {spans} spans and its completion")


# -- the SDK: chat, completions, streaming, the llmops extra body ------------------------------------
def test_chat_completion_with_llmops_options_is_traced_like_generate(stack):
    s, client, url = stack
    out = peer(url, """
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=24, user="alice",
            messages=[{"role": "user", "content": "What does assert raise when the expression is false?"}],
            extra_body={"llmops": {"session_id": "gw-sess-1", "metadata": {"app": "gw-tests"},
                                   "retrieval": {"collection": "kb", "top_k": 2}}})
        out["trace_header"] = raw.headers.get("x-llmops-trace-id")
        out["resp"] = raw.parse().model_dump()
    """)
    r, tid = out["resp"], out["trace_header"]
    assert len(tid) == 32 and r["id"] == f"chatcmpl-{tid}" and r["object"] == "chat.completion"
    assert r["model"] == MODEL and r["created"] > 1_600_000_000
    (choice,) = r["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    u = r["usage"]
    assert u["prompt_tokens"] > 30 and 0 < u["completion_tokens"] <= 24
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert r["llmops"]["trace_id"] == tid and r["llmops"]["contexts"][0]["document_id"] == "kb:assert"
    assert r["llmops"]["prompt_template"] == "rag"

    t = stored_trace(client, tid, 4)
    by_name = {sp.name: sp for sp in t.spans}
    assert set(by_name) == {"generate", "retrieval", "prompt", "generation"}
    root = by_name["generate"]
    assert root.parent_span_id == "" and root.attributes["llmops.door"] == "openai"
    assert root.attributes["http.route"] == "/v1/chat/completions"
    assert all(sp.parent_span_id == root.span_id for n, sp in by_name.items() if n != "generate")
    assert t.summary.session_id == "gw-sess-1" and t.summary.user_id == "alice"
    assert t.summary.metadata["app"] == "gw-tests" and t.summary.answer == choice["message"]["content"]

    ev = completion_event(s, tid)
    assert (ev.session_id, ev.user_id, dict(ev.metadata)) == ("gw-sess-1", "alice", {"app": "gw-tests"})
    assert ev.contexts[0].document_id == "kb:assert" and ev.answer == choice["message"]["content"]
    assert ev.usage.completion_tokens == u["completion_tokens"] and ev.prompt_template == "rag"
    assert ev.root_span_id == root.span_id and ev.prompt.startswith("What does assert raise")


def test_streamed_chat_is_the_recorded_answer_and_reports_usage(stack):
    s, client, url = stack
    out = peer(url, """
        msgs = [{"role": "system", "content": "You answer in one short sentence."},
                {"role": "user", "content": [{"type": "text", "text": "Name three colors."}]}]
        stream = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=16, stream=True,
                                                stream_options={"include_usage": True},
                                                extra_body={"llmops": {"session_id": "gw-stream"}})
        out["chunks"] = [c.model_dump() for c in stream]
    """)
    chunks = out["chunks"]
    tid = chunks[0]["id"].removeprefix("chatcmpl-")
    assert len(tid) == 32 and {c["id"] for c in chunks} == {f"chatcmpl-{tid}"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    *with_choices, usage_chunk = chunks
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices)
    assert with_choices[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["finish_reason"] is None for c in with_choices[:-1])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert text.strip() and with_choices[-1]["llmops"]["trace_id"] == tid

    t = stored_trace(client, tid, 3)
    assert {sp.name for sp in t.spans} == {"generate_stream", "prompt", "generation"}
    ev = completion_event(s, tid)
    assert ev.answer == text and ev.session_id == "gw-stream"
    u = usage_chunk["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (
        ev.usage.prompt_tokens, ev.usage.completion_tokens, ev.usage.total_tokens)


def test_completions_streamed_and_not(stack):
    s, client, url = stack
    out = peer(url, """
        out["whole"] = client.completions.create(model=MODEL, prompt="Say hello.", max_tokens=8,
                                                 extra_body={"llmops": {"user_id": "carol"}}).model_dump()
        out["echo"] = client.completions.create(model=MODEL, prompt="Say hello.", max_tokens=8, echo=True).model_dump()
        out["chunks"] = [c.model_dump() for c in client.completions.create(model=MODEL, prompt="Say hello.",
                                                                            max_tokens=8, stream=True)]
    """)
    # (each answer is checked against its own recorded completion: llama.cpp reuses the KV cache
    # of the previous prompt, so the same greedy request twice in a row may not give the same text)
    whole = out["whole"]
    assert whole["object"] == "text_completion" and whole["id"].startswith("cmpl-")
    text = whole["choices"][0]["text"]
    assert text.strip() and whole["choices"][0]["finish_reason"] in ("stop", "length")
    tid = whole["id"].removeprefix("cmpl-")
    ev = completion_event(s, tid)
    assert ev.user_id == "carol" and ev.prompt == "Say hello." and ev.answer == text
    root = next(sp for sp in stored_trace(client, tid, 3).spans if sp.name == "generate")
    assert root.attributes["http.route"] == "/v1/completions"
    echo = out["echo"]
    assert echo["choices"][0]["text"] == "Say hello." + completion_event(s, echo["id"][5:]).answer
    chunks = out["chunks"]
    assert {c["object"] for c in chunks} == {"text_completion"}
    streamed = completion_event(s, chunks[0]["id"][5:])
    assert "".join(c["choices"][0]["text"] for c in chunks) == streamed.answer and streamed.answer.strip()
    assert chunks[-1]["choices"][0]["finish_reason"] == {"eos_token": "stop", "length": "length"}[streamed.finish_reason]


def test_stop_sequences_end_the_text_without_being_part_of_it(stack):
    s, client, url = stack
    out = peer(url, """
        # SmolLM2 answers "The alphabet is a sequence of letters that ..."
        kw = dict(model=MODEL, max_tokens=40, stop=["letter", "zzz"],
                  messages=[{"role": "user", "content": "Write the alphabet: a, b, c, d, e, f."}])
        out["stopped"] = client.chat.completions.create(**kw).model_dump()
        out["chunks"] = [c.model_dump() for c in client.chat.completions.create(stream=True, **kw)]
    """)
    stopped = out["stopped"]["choices"][0]
    content = stopped["message"]["content"]
    ev = completion_event(s, out["stopped"]["id"].removeprefix("chatcmpl-"))
    # the recorded answer keeps the stop sequence (TGI's way); OpenAI's text leaves it out
    assert ev.finish_reason == "stop_sequence" and ev.answer == content + "letter", ev.answer
    assert stopped["finish_reason"] == "stop" and "letter" not in content and content.strip()
    chunks = out["chunks"]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    ev = completion_event(s, chunks[0]["id"].removeprefix("chatcmpl-"))
    assert ev.answer == streamed + "letter" and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_logprobs(stack):
    s, client, url = stack
    out = peer(url, """
        r = client.chat.completions.create(model=MODEL, max_tokens=5, logprobs=True, top_logprobs=2,
                                           messages=[{"role": "user", "content": "Say yes."}])
        out["resp"] = r.model_dump()
    """)
    choice = out["resp"]["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == out["resp"]["usage"]["completion_tokens"]
    assert "".join(e["token"] for e in content).startswith(choice["message"]["content"])
    assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in content)
    # greedy: the chosen token is the likeliest
    assert all(e["top_logprobs"][0]["logprob"] >= e["top_logprobs"][1]["logprob"] for e in content)


def test_models_list_and_retrieve(stack):
    s, client, url = stack
    out = peer(url, """
        out["list"] = [m.model_dump() for m in client.models.list()]
        out["one"] = client.models.retrieve(MODEL).model_dump()
        out["missing"] = refused(client.models.retrieve, model="gpt-4o")
    """)
    assert [m["id"] for m in out["list"]] == [MODEL]
    assert out["list"][0]["object"] == "model" and out["list"][0]["owned_by"] == "llmops"
    assert out["one"]["id"] == MODEL and out["one"]["max_model_len"] == 2048
    assert out["missing"]["class"] == "NotFoundError" and out["missing"]["body"]["code"] == "model_not_found"


def test_caller_traceparent_is_adopted(stack):
    s, client, url = stack
    caller_trace, caller_span = "ba" * 16, "dc" * 8
    out = peer(url, f"""
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=4, messages=[{{"role": "user", "content": "Say hi."}}],
            extra_headers={{"traceparent": "00-{caller_trace}-{caller_span}-01"}})
        out["trace_header"] = raw.headers.get("x-llmops-trace-id")
        out["id"] = raw.parse().id
    """)
    assert out["trace_header"] == caller_trace and out["id"] == f"chatcmpl-{caller_trace}"
    root = wait_until(lambda: next((sp for sp in client.get_trace(caller_trace).spans if sp.name == "generate"), None),
                      what="the root span of the adopted trace")
    assert root.parent_span_id == caller_span


# -- errors through the SDK ------------------------------------------------------------------------
def test_errors_have_openais_shape_and_the_sdks_exception_classes(stack):
    s, client, url = stack
    out = peer(url, """
        user = [{"role": "user", "content": "hi"}]
        chat = client.chat.completions.create
        out["n"] = refused(chat, model=MODEL, messages=user, n=2)
        out["image"] = refused(chat, model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
        out["model"] = refused(chat, model="gpt-4o", messages=user)
        out["option"] = refused(chat, model=MODEL, messages=user, extra_body={"llmops": {"sesion_id": "x"}})
        out["template"] = refused(chat, model=MODEL, messages=user, extra_body={"llmops": {"prompt_template": "nope"}})
        out["top_k"] = refused(chat, model=MODEL, messages=user,
                               extra_body={"llmops": {"retrieval": {"collection": "kb", "top_k": 50}}})
        out["too_long"] = refused(chat, model=MODEL, messages=user, max_tokens=5000)
        out["last_role"] = refused(chat, model=MODEL, messages=[{"role": "assistant", "content": "hello"}])
        out["stream"] = refused(chat, model=MODEL, messages=user, stream=True, presence_penalty=1.0)
        out["stream_late"] = refused(chat, model=MODEL, messages=[{"role": "system", "content": "x"}], stream=True)
    """)
    for name in out:
        body = out[name]["body"]
        assert set(body) == {"message", "type", "param", "code"}, (name, body)
    assert out["n"]["class"] == "BadRequestError" and out["n"]["body"]["param"] == "n"
    assert "`n` must be 1" in out["n"]["body"]["message"] and out["n"]["body"]["type"] == "invalid_request_error"
    assert out["image"]["class"] == "BadRequestError" and "is an image" in out["image"]["body"]["message"]
    assert out["image"]["body"]["param"] == "messages[0].content[1]"
    assert out["model"]["class"] == "NotFoundError" and out["model"]["body"]["code"] == "model_not_found"
    assert MODEL in out["model"]["body"]["message"]
    assert out["option"]["class"] == "BadRequestError" and out["option"]["body"]["param"] == "llmops.sesion_id"
    assert out["template"]["class"] == "NotFoundError" and "'nope' not found" in out["template"]["body"]["message"]
    assert out["top_k"]["class"] == "BadRequestError" and "top_k must be between 1 and 20" in out["top_k"]["body"]["message"]
    assert out["too_long"]["class"] == "BadRequestError" and "must be <= 2048" in out["too_long"]["body"]["message"]
    assert out["last_role"]["class"] == "BadRequestError" and "role `user`" in out["last_role"]["body"]["message"]
    assert out["stream"]["class"] == "BadRequestError" and out["stream"]["body"]["param"] == "presence_penalty"
    # an error the engine finds before the first token still gets its status code, not a 200 stream
    assert out["stream_late"]["status"] == 400


# -- curl --------------------------------------------------------------------------------------------
def test_curl_chat_streaming_and_http_errors(stack):
    s, client, url = stack
    body = json.dumps({"model": MODEL, "max_tokens": 6, "messages": [{"role": "user", "content": "Say hi."}]})
    status, text = curl("-i", f"{url}/v1/chat/completions", data=body)
    head, _, payload = text.partition("\n\n")   # text mode reads CRLF as LF
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in head.splitlines()[1:])}
    r = json.loads(payload)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert r["id"] == "chatcmpl-" + headers["x-llmops-trace-id"] and r["choices"][0]["message"]["content"]

    stream_body = json.dumps({**json.loads(body), "stream": True, "stream_options": {"include_usage": True}})
    status, text = curl("-N", f"{url}/v1/chat/completions", data=stream_body)
    events = [line for line in text.splitlines() if line]
    assert status == 200 and events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    ev = completion_event(s, chunks[0]["id"].removeprefix("chatcmpl-"))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == ev.answer
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == ev.usage.completion_tokens

    status, text = curl(f"{url}/v1/chat/completions", data="{not json")
    err = json.loads(text)["error"]
    assert status == 400 and err["type"] == "invalid_request_error" and "could not parse the JSON body" in err["message"]
    status, text = curl(f"{url}/v1/chat/completions", data=json.dumps([1, 2]))
    assert status == 400 and "JSON object" in json.loads(text)["error"]["message"]
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * (MAX_BODY + 10)}]})
    status, text = curl(f"{url}/v1/chat/completions", data=big)
    assert status == 413 and str(MAX_BODY) in json.loads(text)["error"]["message"]
    status, text = curl(f"{url}/v1/embeddings", data="{}")
    assert status == 404 and json.loads(text)["error"]["code"] == "unknown_url"
    status, text = curl(f"{url}/v1/chat/completions")
    assert status == 405 and json.loads(text)["error"]["type"] == "invalid_request_error"
    status, text = curl(f"{url}/v1/models")
    assert status == 200 and json.loads(text)["data"][0]["id"] == MODEL
    status, text = curl(f"{url}/health")
    assert status == 200
