"""OTLP ingest with peers' instrumentation, unmodified: an app using the official OpenTelemetry SDK
and OTLP exporters, with the official openai-v2 or the OpenInference instrumentation of the
official ``openai`` client, calls llama-cpp-python's real OpenAI-compatible server and exports
to llmops. Its trace is then in GetTrace, cheap-tier scores are on it, and its completion counts in
the drift service's open window — the same pipeline as the platform's own requests.

Also: the OTLP/HTTP door's statuses and partial-success replies, driven over real HTTP."""
from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from llmops.cli.client import Client
from llmops.drift.main import build as build_drift
from llmops.judging.main import build as build_judging
from llmops.tracing.main import build as build_tracing
from llmops.v1 import drift_pb2
from tests.support import llama_openai_server, make_settings, running_services, wait_until
from tests.unit.test_otlp_mapping import GENAI, request, span

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / ".peers" / "otel" / "bin" / "python"
APP = ROOT / "tests" / "peers" / "otel_app.py"

QUESTION = "What does the assert statement raise when its expression is false?"
CONTEXT = ("The assert statement inserts debugging assertions into a program. If the expression is false, "
           "assert raises AssertionError.")


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory):
    if not PEER_PYTHON.exists():
        pytest.fail(f"{PEER_PYTHON} is missing: `make .peers/otel/.ok` prepares the peer venv (make test does)")
    data = tmp_path_factory.mktemp("otlp")
    s = make_settings(data, kafka, judge_backend="none", drift_join_wait_s=1.0, otlp_context_wait_s=5.0)
    with llama_openai_server(data) as base_url, \
            running_services(s, (("tracing", build_tracing), ("judging", build_judging), ("drift", build_drift))):
        client = Client(s)
        yield s, client, base_url
        client.close()


def open_window_count(client: Client) -> int:
    status = client.drift.GetStatus(drift_pb2.GetStatusRequest(), timeout=10)
    return sum(m.current_window_count for m in status.monitors)


def run_app(s, base_url: str, instrumentation: str, transport: str, **flags) -> dict:
    endpoint = (f"127.0.0.1:{s.otlp_grpc_port}" if transport == "grpc"
                else f"http://127.0.0.1:{s.otlp_http_port}/v1/traces")
    cmd = [str(PEER_PYTHON), str(APP), "--instrumentation", instrumentation, "--transport", transport,
           "--endpoint", endpoint, "--base-url", base_url, "--question", QUESTION, "--context", CONTEXT,
           "--session", f"sess-{instrumentation}"]
    cmd += [f"--{k}" for k, v in flags.items() if v]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "OTEL_SDK_DISABLED": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, f"the instrumented app failed:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("instrumentation, transport, flags", [
    ("openai-v2", "grpc", {}),
    ("openinference", "http", {"gzip": True}),
    ("openai-v2", "http", {"stream": True}),
], ids=["openai-v2-grpc", "openinference-http-gzip", "openai-v2-http-stream"])
def test_instrumented_app_is_traced_judged_and_watched(stack, instrumentation, transport, flags):
    s, client, base_url = stack
    before = open_window_count(client)
    app = run_app(s, base_url, instrumentation, transport, **flags)
    trace_id = app["trace_id"]

    def complete():
        tr = client.get_trace(trace_id)
        app_spans = [sp for sp in tr.spans if sp.service == "peer-rag-app"]
        names = {sp.name for sp in app_spans}
        return tr if {"rag", "retrieve kb"} <= names and len(app_spans) == 3 and tr.HasField("completion") else None

    tr = wait_until(complete, timeout_s=60, what=f"the app's trace {trace_id} with its spans and completion")
    app_spans = [sp for sp in tr.spans if sp.service == "peer-rag-app"]   # beside them: the judges' spans
    llm = [sp for sp in app_spans if sp.name not in ("rag", "retrieve kb")]
    assert len(llm) == 1 and {sp.service for sp in tr.spans} <= {"peer-rag-app", "judging"}
    c = tr.completion
    assert c.answer == app["answer"] and c.answer.strip()
    assert QUESTION in c.prompt and c.metadata["source"] == "otlp"
    assert [ctx.text for ctx in c.contexts] == [CONTEXT]            # from the retrieval span of the same trace
    assert c.model and c.latency_ms > 0
    # token usage as the instrumentation recorded it (a stream carries it only when the server sends a usage chunk)
    a = dict(llm[-1].attributes)
    prompt_tokens = int(a.get("gen_ai.usage.input_tokens", a.get("llm.token_count.prompt", 0)))
    assert c.usage.prompt_tokens == prompt_tokens and (prompt_tokens > 0 or flags.get("stream"))
    assert c.session_id == "" or c.session_id == f"sess-{instrumentation}"

    scored = wait_until(lambda: (t := client.get_trace(trace_id)) and
                        {sc.evaluator for sc in t.scores} >= {"rag.faithfulness.cheap", "rag.answer_relevancy.cheap"} and t,
                        timeout_s=90, what="cheap-tier scores on the app's trace")
    faith = next(sc for sc in scored.scores if sc.evaluator == "rag.faithfulness.cheap")
    assert 0.0 <= faith.value <= 1.0
    wait_until(lambda: open_window_count(client) > before, timeout_s=60,
               what="the app's completion in the drift service's open window")


# -- the doors' protocol behaviour -----------------------------------------------------------------
def http_export(s, body: bytes, content_type="application/x-protobuf", **headers) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{s.otlp_http_port}/v1/traces", content=body,
                      headers={"Content-Type": content_type, **headers}, timeout=30)


def test_http_protobuf_json_and_gzip_bodies_are_stored(stack):
    s, client, _ = stack
    t1, t2, t3 = (bytes([n]) * 16 for n in (0x11, 0x12, 0x13))
    r = http_export(s, request(span(0xA1, "proto span", trace=t1)).SerializeToString())
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-protobuf")
    assert trace_service_pb2.ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans == 0
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "js"}}]},
                               "scopeSpans": [{"spans": [{"traceId": t2.hex(), "spanId": "00000000000000b1",
                                                          "name": "json span", "startTimeUnixNano": "1700000000000000000",
                                                          "endTimeUnixNano": "1700000000100000000", "kind": 2}]}]}]}
    r = http_export(s, json.dumps(body).encode(), "application/json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json") and r.json() == {}
    r = http_export(s, gzip.compress(request(span(0xC1, "gzip span", trace=t3)).SerializeToString()),
                    **{"Content-Encoding": "gzip"})
    assert r.status_code == 200
    for tid, name, service in ((t1, "proto span", "shop-bot"), (t2, "json span", "js"), (t3, "gzip span", "shop-bot")):
        tr = wait_until(lambda tid=tid: client.get_trace(tid.hex()), timeout_s=30, what=f"trace {tid.hex()}")
        assert [(sp.name, sp.service) for sp in tr.spans] == [(name, service)]


def test_http_partial_success_and_errors(stack):
    s, client, _ = stack
    good = span(0xD1, "kept", trace=bytes([0x21]) * 16)
    bad = span(0xD2, "bad id", trace=b"\x01\x02")
    r = http_export(s, request(good, bad).SerializeToString())
    assert r.status_code == 200
    partial = trace_service_pb2.ExportTraceServiceResponse.FromString(r.content).partial_success
    assert partial.rejected_spans == 1 and "trace_id must be 16 bytes" in partial.error_message
    wait_until(lambda: client.get_trace((bytes([0x21]) * 16).hex()), timeout_s=30, what="the valid span's trace")

    r = http_export(s, b"\x0a\xff\xff", "application/x-protobuf")
    assert r.status_code == 400
    assert "not a protobuf ExportTraceServiceRequest" in status_pb2.Status.FromString(r.content).message
    r = http_export(s, b"{oops", "application/json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = http_export(s, b"hello", "text/plain")
    assert r.status_code == 415 and "Content-Type 'text/plain' is not supported" in status_pb2.Status.FromString(r.content).message
    r = http_export(s, b"abc", **{"Content-Encoding": "br"})
    assert r.status_code == 415
    r = http_export(s, b"x" * (s.otlp_max_body_bytes + 1))
    assert r.status_code == 413
    assert httpx.get(f"http://127.0.0.1:{s.otlp_http_port}/v1/traces", timeout=10).status_code == 405


def test_grpc_export_partial_success_and_a_completion_without_contexts(stack):
    s, client, _ = stack
    tid = bytes([0x31]) * 16
    with grpc.insecure_channel(f"127.0.0.1:{s.otlp_grpc_port}") as ch:
        stub = trace_service_pb2_grpc.TraceServiceStub(ch)
        resp = stub.Export(request(span(0xE1, "chat", attrs=GENAI, trace=tid), span(0xE2, "", trace=tid)), timeout=30)
    assert resp.partial_success.rejected_spans == 1 and "name is empty" in resp.partial_success.error_message
    # a root LLM span: the whole trace is the call, so its completion goes out at once
    tr = wait_until(lambda: (t := client.get_trace(tid.hex())) and t.HasField("completion") and t, timeout_s=30,
                    what="the completion of a root LLM span")
    assert tr.completion.answer == "A log." and tr.completion.prompt == "What is Kafka?"
    assert tr.completion.session_id == "s-1" and tr.completion.model == "gpt-4o-mini-2024"
