"""The request path in its production shape, wired by the services' own composition roots from
settings alone: retrieval on Weaviate, inference on TGI, traces in PostgreSQL, a price table.
Weaviate and TGI are the wire-level fakes (tests/fakes), or the real servers when
LLMOPS_WEAVIATE_URL / LLMOPS_TGI_URL are set."""
import os
import uuid

import grpc
import pytest

from llmops.cli.client import Client
from llmops.inference.main import build as build_inference
from llmops.retrieval.main import build as build_retrieval
from llmops.tracing.main import build as build_tracing
from llmops.v1 import inference_pb2
from tests.conftest import postgres_schema
from tests.fakes.tgi_server import FakeTgiServer
from tests.fakes.weaviate_server import FakeWeaviate
from tests.integration.test_request_path import DOCS
from tests.support import make_settings, running_services, wait_until

pytestmark = pytest.mark.postgres
PRICE_IN, PRICE_OUT = 0.20, 0.80


@pytest.fixture(scope="module")
def weaviate():
    if os.environ.get("LLMOPS_WEAVIATE_URL"):
        yield os.environ["LLMOPS_WEAVIATE_URL"], int(os.environ.get("LLMOPS_WEAVIATE_GRPC_PORT", "50051")), None
        return
    with FakeWeaviate() as fake:
        yield fake.url, fake.grpc_port, fake


@pytest.fixture(scope="module")
def tgi():
    if os.environ.get("LLMOPS_TGI_URL"):
        yield os.environ["LLMOPS_TGI_URL"], None
        return
    server = FakeTgiServer().start()
    yield server.url, server
    if server._thread.is_alive():   # the outage test stops it already
        server.stop()


@pytest.fixture(scope="module")
def pg_url():
    with postgres_schema() as url:   # one schema for the module (the conftest fixture is per test)
        yield url


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory, weaviate, tgi, pg_url):
    (w_url, w_grpc, _), (t_url, _) = weaviate, tgi
    s = make_settings(tmp_path_factory.mktemp("prod"), kafka, vector_store="weaviate", weaviate_url=w_url,
                      weaviate_grpc_port=w_grpc, model_backend="tgi", tgi_url=t_url, model_name="tgi-model",
                      trace_db=pg_url, model_prices=f"tgi-model={PRICE_IN}/{PRICE_OUT}")
    with running_services(s, (("retrieval", build_retrieval), ("tracing", build_tracing),
                              ("inference", build_inference))):
        client = Client(s)
        client.upsert(DOCS, f"kb{uuid.uuid4().hex[:6]}")   # a collection of its own on a real Weaviate
        yield s, client


def collection_of(client) -> str:
    from llmops.v1 import retrieval_pb2

    names = [c.name for c in client.retrieval.ListCollections(retrieval_pb2.ListCollectionsRequest()).collections
             if c.name.startswith("kb")]
    assert len(names) == 1, names
    return names[0]


def test_rag_on_weaviate_and_tgi_is_traced_in_postgres_with_its_cost(stack, weaviate, tgi):
    s, client = stack
    coll = collection_of(client)
    r = client.generate("What is kimchi made of?", rag=True, collection=coll, top_k=2, max_new_tokens=12)
    assert r.model == "tgi-model" and r.text and r.usage.completion_tokens > 0
    assert r.contexts and r.contexts[0].document_id == "kb:kimchi", [c.document_id for c in r.contexts]
    expected = (r.usage.prompt_tokens * PRICE_IN + r.usage.completion_tokens * PRICE_OUT) / 1e6
    assert r.usage.cost_usd == pytest.approx(expected)
    trace = wait_until(lambda: (t := client.get_trace(r.trace_id)) and len(t.spans) == 4 and t.summary.model and t,
                       timeout_s=20, what="the trace in PostgreSQL")
    assert {sp.name for sp in trace.spans} == {"generate", "retrieval", "prompt", "generation"}
    gen = next(sp for sp in trace.spans if sp.name == "generation")
    assert gen.attributes["backend"] == "tgi"
    assert trace.summary.usage.cost_usd == pytest.approx(expected)
    fake_w, fake_t = weaviate[2], tgi[1]
    if fake_w is not None:   # the chunks live in Weaviate, under the collection's class
        assert any(name.lower().startswith("llmops_kb") for name in fake_w.store.classes)
    if fake_t is not None:   # and the prompt TGI generated from holds the retrieved context
        assert "kimchi" in fake_t.tgi.requests[-1]["inputs"].lower()


def test_streaming_through_tgi(stack):
    _, client = stack
    req = inference_pb2.GenerateRequest(prompt="Say something.")
    req.parameters.max_new_tokens = 6
    msgs = list(client.inference.GenerateStream(req, timeout=60))
    tokens, final = [m.token for m in msgs if not m.final], msgs[-1]
    assert tokens and final.final and final.summary.text == "".join(tokens)
    assert final.summary.usage.completion_tokens == len(tokens) and final.summary.model == "tgi-model"


def test_tgi_refusals_and_outages_get_their_grpc_codes(stack, tgi):
    _, client = stack
    req = inference_pb2.GenerateRequest(prompt="word " * 10)
    req.parameters.max_new_tokens = 100_000   # over the model's max_total_tokens (/info)
    with pytest.raises(grpc.RpcError) as info:
        client.inference.Generate(req, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    server = tgi[1]
    if server is None:
        pytest.skip("a real TGI is not stopped by the tests")
    server.stop()   # the last test of the module: the TGI goes away
    with pytest.raises(grpc.RpcError) as info:
        client.generate("Anyone there?", max_new_tokens=4, timeout=60)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
