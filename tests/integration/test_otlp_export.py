"""OTLP export into a real Arize Phoenix: a request through the real inference service (llama.cpp)
and its cheap-tier judge run reach Phoenix with the GenAI conventions' names and attributes, the
judge scores as ``gen_ai.evaluation.result`` events; read back through Phoenix's own REST API."""
from __future__ import annotations

import httpx
import pytest

from llmops.cli.client import Client
from llmops.inference.main import build as build_inference
from llmops.judging.main import build as build_judging
from llmops.tracing.main import build as build_tracing
from tests.support import make_settings, phoenix_server, running_services, wait_until

PROJECT = "llmops-export-test"


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory):
    work = tmp_path_factory.mktemp("phoenix")
    with phoenix_server(work) as (phoenix_url, _grpc_port):
        data = tmp_path_factory.mktemp("export")
        s = make_settings(data, kafka, judge_backend="none", otlp_export_endpoint=phoenix_url,
                          otlp_export_resource=f"openinference.project.name={PROJECT}")
        with running_services(s, (("tracing", build_tracing), ("judging", build_judging),
                                  ("inference", build_inference))):
            client = Client(s)
            yield s, client, phoenix_url
            client.close()


def phoenix_spans(url: str, trace_id: str) -> list[dict]:
    r = httpx.get(f"{url}/v1/projects/{PROJECT}/spans", params={"trace_id": trace_id, "limit": 1000}, timeout=10)
    if r.status_code == 404:     # the project appears with its first span
        return []
    r.raise_for_status()
    return r.json()["data"]


def test_platform_spans_and_judge_scores_are_readable_in_phoenix(stack):
    s, client, url = stack
    resp = client.generate("Name one use of a message queue.", parameters={"max_new_tokens": 16})
    tid = resp.trace_id

    def exported():
        spans = phoenix_spans(url, tid)
        names = {sp["name"] for sp in spans}
        evals = [sp for sp in spans if sp["name"].startswith("evaluation ")]
        return spans if "generate" in names and any(n.startswith("chat ") for n in names) and evals else None

    spans = wait_until(exported, timeout_s=180, interval_s=1.0, what=f"trace {tid} with its evaluations in Phoenix")
    by_name = {sp["name"]: sp for sp in spans}
    root = by_name["generate"]
    chat = next(sp for sp in spans if sp["name"].startswith("chat "))
    assert chat["parent_id"] == root["context"]["span_id"] and root["parent_id"] is None
    a = chat["attributes"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == resp.model
    assert a["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert a["gen_ai.response.finish_reasons"] == [resp.finish_reason]

    # every judge score of the trace, as the conventions' evaluation event
    trace = wait_until(lambda: (t := client.get_trace(tid)) and len(t.scores) >= 3 and t, timeout_s=60,
                       what="the cheap-tier scores in the trace store")
    stored = {sc.name: sc.value for sc in trace.scores}

    def all_evaluations():
        spans, evs = phoenix_spans(url, tid), {}
        for sp in spans:
            for e in sp.get("events", []):
                if e["name"] == "gen_ai.evaluation.result":
                    evs[e["attributes"]["gen_ai.evaluation.name"]] = (e["attributes"], sp)
        ids = {sp["context"]["span_id"] for sp in spans}
        parents_in = all(sp["parent_id"] in ids for _, sp in evs.values())
        return (evs, ids) if set(stored) <= set(evs) and parents_in else None

    # under the judge span that produced them, which is exported too
    evaluations, _ = wait_until(all_evaluations, timeout_s=120, interval_s=1.0,
                                what="every score as an evaluation event under its judge span")
    for name, value in stored.items():
        attrs, span = evaluations[name]
        assert attrs["gen_ai.evaluation.score.value"] == pytest.approx(value)
        assert span["parent_id"]
