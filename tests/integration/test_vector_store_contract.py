"""The vector store contract, run against every implementation: LanceDB on disk, and Weaviate — the
wire-level fake in tests/fakes, or a real server when LLMOPS_WEAVIATE_URL is set (then with
LLMOPS_WEAVIATE_GRPC_PORT and LLMOPS_WEAVIATE_API_KEY, and collection names unique to each test).

Vectors are hand-built 4-dim vectors, so the expected cosine rankings are exact."""
from __future__ import annotations

import math
import os
import urllib.error
import urllib.request
import uuid
from typing import Iterator, Sequence

import numpy as np
import pytest

from llmops.retrieval.lance import LanceVectorStore
from llmops.retrieval.store import ChunkRecord, Hit
from tests.fakes.weaviate_server import FakeWeaviate
from tests.support import free_port

pytestmark = pytest.mark.integration

REAL_WEAVIATE_URL = os.environ.get("LLMOPS_WEAVIATE_URL", "")
REAL_WEAVIATE_GRPC_PORT = int(os.environ.get("LLMOPS_WEAVIATE_GRPC_PORT", "50051"))
REAL_WEAVIATE_API_KEY = os.environ.get("LLMOPS_WEAVIATE_API_KEY", "")
fake_only = pytest.mark.skipif(bool(REAL_WEAVIATE_URL), reason="checks the fake itself")

Q = np.array([1.0, 0.0, 0.0, 0.0], np.float32)


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


def chunk(doc: str, i: int, text: str, vector: np.ndarray, **metadata: str) -> ChunkRecord:
    return ChunkRecord(id=f"{doc}#{i}", document_id=doc, chunk=i, text=text, vector=vector, metadata=metadata)


def ids(hits: Sequence[Hit]) -> list[str]:
    return [h.id for h in hits]


# --- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weaviate_endpoint() -> Iterator[tuple[str, int, str]]:
    """(url, gRPC port, api key) of the Weaviate the tests use."""
    if REAL_WEAVIATE_URL:
        yield REAL_WEAVIATE_URL, REAL_WEAVIATE_GRPC_PORT, REAL_WEAVIATE_API_KEY
        return
    with FakeWeaviate() as fake:
        yield fake.url, fake.grpc_port, ""


def new_weaviate_store(endpoint: tuple[str, int, str], tenant: str = ""):
    from llmops.retrieval.weaviate_store import WeaviateVectorStore

    url, port, key = endpoint
    return WeaviateVectorStore(url, grpc_port=port, api_key=key, tenant=tenant)


class Collections:
    """Collection names unique to one test (with '-' and '_', which Weaviate names cannot hold as-is);
    on Weaviate they are dropped afterwards so a real server is left as it was."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def new(self) -> str:
        name = f"t-{uuid.uuid4().hex[:10]}_c"
        self.names.append(name)
        return name


@pytest.fixture
def made() -> Collections:
    return Collections()


@pytest.fixture(params=["lancedb", "weaviate"])
def store(request, tmp_path, made):
    if request.param == "lancedb":
        yield LanceVectorStore(tmp_path / "lancedb")
        return
    from llmops.retrieval.weaviate_store import class_name

    s = new_weaviate_store(request.getfixturevalue("weaviate_endpoint"))
    yield s
    for name in made.names:
        s.client.collections.delete(class_name(name))
    s.close()


@pytest.fixture
def coll(store, made) -> str:
    name = made.new()
    store.ensure_collection(name, 4)
    return name


# --- collections -------------------------------------------------------------------------------
def test_collections_report_chunks_and_documents(store, made):
    name = made.new()
    assert not store.has_collection(name)
    store.ensure_collection(name, 4)
    store.ensure_collection(name, 4)  # idempotent
    assert store.has_collection(name)
    assert dict((n, (c, d)) for n, c, d in store.collections())[name] == (0, 0)

    store.replace_documents(name, ["a", "b"], [
        chunk("a", 0, "first part of a", unit(1, 0, 0, 0)), chunk("a", 1, "second part of a", unit(0, 1, 0, 0)),
        chunk("b", 0, "all of b", unit(0, 0, 1, 0)),
    ])
    assert dict((n, (c, d)) for n, c, d in store.collections())[name] == (3, 2)
    assert not store.has_collection(made.new())


def test_replacing_a_document_leaves_no_stale_chunk(store, coll):
    store.replace_documents(coll, ["a"], [
        chunk("a", i, f"obsolete draft paragraph {i}", unit(1, 0.1 * i, 0, 0)) for i in range(3)
    ])
    store.replace_documents(coll, ["a"], [chunk("a", 0, "final wording", unit(1, 0, 0, 0))])

    assert dict((n, (c, d)) for n, c, d in store.collections())[coll] == (1, 1)
    assert store.search(coll, "obsolete", None, 0.0, 10, {}) == []
    hits = store.search(coll, "", Q, 1.0, 10, {})
    assert [(h.id, h.text) for h in hits] == [("a#0", "final wording")]


def test_reingesting_the_same_chunks_is_idempotent(store, coll):
    chunks = [chunk("a", 0, "alpha", unit(1, 0, 0, 0)), chunk("b", 0, "beta", unit(0, 1, 0, 0))]
    store.replace_documents(coll, ["a", "b"], chunks)
    store.replace_documents(coll, ["a", "b"], chunks)
    assert dict((n, (c, d)) for n, c, d in store.collections())[coll] == (2, 2)


def test_delete_documents_counts_chunks_and_removes_them(store, coll):
    store.replace_documents(coll, ["a", "b", "c"], [
        chunk("a", 0, "apple one", unit(1, 0, 0, 0)), chunk("a", 1, "apple two", unit(1, 1, 0, 0)),
        chunk("b", 0, "banana", unit(0, 1, 0, 0)), chunk("c", 0, "cherry", unit(0, 0, 1, 0)),
    ])
    assert store.delete_documents(coll, ["a", "missing"]) == 2
    assert store.delete_documents(coll, ["a"]) == 0
    assert dict((n, (c, d)) for n, c, d in store.collections())[coll] == (2, 2)
    assert {h.document_id for h in store.search(coll, "", Q, 1.0, 10, {})} == {"b", "c"}
    assert store.search(coll, "apple", None, 0.0, 10, {}) == []


# --- search ------------------------------------------------------------------------------------
def test_vector_search_ranks_by_cosine_similarity(store, coll):
    store.replace_documents(coll, ["same", "near", "orthogonal", "opposite"], [
        chunk("opposite", 0, "w", unit(-1, 0, 0, 0)), chunk("orthogonal", 0, "x", unit(0, 1, 0, 0)),
        chunk("near", 0, "y", unit(1, 1, 0, 0)), chunk("same", 0, "z", unit(2, 0, 0, 0)),
    ])
    hits = store.search(coll, "ignored words", Q, 1.0, 10, {})
    assert ids(hits) == ["same#0", "near#0", "orthogonal#0", "opposite#0"]
    # similarities below 0 are reported as 0 (relative_score_fusion), but still rank and score lowest
    assert [h.vector_similarity for h in hits] == pytest.approx([1.0, math.sqrt(0.5), 0.0, 0.0], abs=1e-5)
    # min-max normalised cosine over [-1, 1]
    assert [h.score for h in hits] == pytest.approx([1.0, (math.sqrt(0.5) + 1) / 2, 0.5, 0.0], abs=1e-5)
    assert hits[1].text == "y" and hits[1].document_id == "near"


def test_keyword_search_ranks_by_bm25(store, coll):
    store.replace_documents(coll, ["twice", "once", "none"], [
        chunk("none", 0, "horse grazing field quietly", unit(1, 0, 0, 0)),
        chunk("once", 0, "zebra grazing field quietly", unit(0, 1, 0, 0)),
        chunk("twice", 0, "zebra zebra grazing field", unit(0, 0, 1, 0)),
    ])
    hits = store.search(coll, "Zebra", None, 0.0, 10, {})
    assert ids(hits) == ["twice#0", "once#0"]
    assert hits[0].keyword_score > hits[1].keyword_score > 0
    assert hits[0].score == pytest.approx(1.0)
    assert all(0.0 <= h.score <= 1.0 for h in hits)


def test_hybrid_mixes_vector_and_keyword_hits(store, coll):
    store.replace_documents(coll, ["by_vector", "by_keyword", "between"], [
        chunk("by_vector", 0, "nothing relevant in here", unit(1, 0, 0, 0)),
        chunk("by_keyword", 0, "zebra zebra zebra", unit(0, 0, 0, 1)),
        chunk("between", 0, "one zebra mention somewhere", unit(0.6, 0.8, 0, 0)),
    ])
    balanced = store.search(coll, "zebra", Q, 0.5, 10, {})
    assert {"by_vector#0", "by_keyword#0"} <= set(ids(balanced))
    assert all(0.0 <= h.score <= 1.0 for h in balanced)
    by_id = {h.id: h for h in balanced}
    assert by_id["by_vector#0"].vector_similarity == pytest.approx(1.0, abs=1e-5)
    assert by_id["by_keyword#0"].keyword_score > by_id["between#0"].keyword_score > 0

    assert ids(store.search(coll, "zebra", Q, 0.9, 10, {}))[0] == "by_vector#0"
    assert ids(store.search(coll, "zebra", Q, 0.1, 10, {}))[0] == "by_keyword#0"
    # relativeScoreFusion: each list min-max normalised, then alpha * vector + (1 - alpha) * keyword
    hits = {h.id: h.score for h in store.search(coll, "zebra", Q, 0.25, 10, {})}
    assert hits["by_vector#0"] == pytest.approx(0.25, abs=1e-4)
    assert hits["by_keyword#0"] == pytest.approx(0.75, abs=1e-4)
    assert hits["between#0"] == pytest.approx(0.25 * 0.6, abs=1e-4)


def test_filters_restrict_results_by_exact_metadata(store, coll):
    store.replace_documents(coll, ["en-gold", "de-gold", "de-silver", "spaced"], [
        chunk("en-gold", 0, "report zebra", unit(1, 0, 0, 0), lang="en", tier="gold"),
        chunk("de-gold", 0, "bericht zebra", unit(1, 1, 0, 0), lang="de", tier="gold"),
        chunk("de-silver", 0, "bericht zebra", unit(0, 1, 0, 0), lang="de", tier="silver"),
        chunk("spaced", 0, "title zebra", unit(0, 0, 1, 0), title="Hello World", lang="xx"),
    ])
    for alpha in (1.0, 0.0, 0.5):
        assert set(ids(store.search(coll, "zebra", Q, alpha, 10, {"lang": "de"}))) == {"de-gold#0", "de-silver#0"}
        assert ids(store.search(coll, "zebra", Q, alpha, 10, {"lang": "de", "tier": "gold"})) == ["de-gold#0"]
        assert store.search(coll, "zebra", Q, alpha, 10, {"lang": "fr"}) == []
    assert ids(store.search(coll, "zebra", Q, 1.0, 10, {"title": "Hello World"})) == ["spaced#0"]
    assert store.search(coll, "zebra", Q, 1.0, 10, {"title": "hello world"}) == []
    assert store.search(coll, "zebra", Q, 1.0, 10, {"title": "Hello"}) == []
    hit = store.search(coll, "", Q, 1.0, 1, {"tier": "silver"})[0]
    assert hit.metadata == {"lang": "de", "tier": "silver"}


def test_k_limits_the_number_of_hits(store, coll):
    store.replace_documents(coll, [f"d{i}" for i in range(6)], [
        chunk(f"d{i}", 0, f"common word number {i}", unit(1, i, 0, 0)) for i in range(6)
    ])
    for alpha in (1.0, 0.0, 0.5):
        hits = store.search(coll, "common", Q, alpha, 3, {})
        assert len(hits) == 3
    top2 = store.search(coll, "", Q, 1.0, 2, {})
    assert ids(top2) == ["d0#0", "d1#0"]
    # scores are normalised over the candidates, not over the k returned: the 2nd of 2 is not 0
    worst = 1 / math.sqrt(26)
    assert top2[1].score == pytest.approx((math.sqrt(0.5) - worst) / (1 - worst), abs=1e-4)


def test_search_on_an_empty_collection_finds_nothing(store, coll):
    assert store.search(coll, "anything", Q, 0.5, 5, {}) == []


def test_search_on_a_missing_collection_raises(store, made):
    missing = made.new()
    with pytest.raises(ValueError, match="not found"):  # LanceDB: "Table 'c_<name>' was not found"
        store.search(missing, "anything", Q, 0.5, 5, {})


# --- Weaviate only -------------------------------------------------------------------------------
def test_weaviate_tenants_see_only_their_own_data(weaviate_endpoint, made):
    from llmops.common.errors import FailedPrecondition

    alice, bob = new_weaviate_store(weaviate_endpoint, "alice"), new_weaviate_store(weaviate_endpoint, "bob")
    name = made.new()
    try:
        alice.ensure_collection(name, 4)
        assert not bob.has_collection(name)  # the class exists, bob's tenant does not yet
        with pytest.raises(ValueError, match="not found"):
            bob.search(name, "zebra", Q, 0.5, 10, {})
        bob.ensure_collection(name, 4)
        alice.replace_documents(name, ["shared", "a"], [
            chunk("shared", 0, "alice zebra notes", unit(1, 0, 0, 0)), chunk("a", 0, "alice only", unit(0, 1, 0, 0)),
        ])
        bob.replace_documents(name, ["shared"], [chunk("shared", 0, "bob zebra notes", unit(1, 0, 0, 0))])

        assert {h.text for h in alice.search(name, "zebra", Q, 0.5, 10, {})} == {"alice zebra notes", "alice only"}
        assert [h.text for h in bob.search(name, "zebra", Q, 0.5, 10, {})] == ["bob zebra notes"]
        assert [h.text for h in bob.search(name, "alice", None, 0.0, 10, {})] == []
        assert dict((n, (c, d)) for n, c, d in alice.collections())[name] == (2, 2)
        assert dict((n, (c, d)) for n, c, d in bob.collections())[name] == (1, 1)

        assert bob.delete_documents(name, ["shared"]) == 1
        assert [h.text for h in alice.search(name, "", Q, 1.0, 10, {})][0] == "alice zebra notes"

        single = new_weaviate_store(weaviate_endpoint)
        try:
            with pytest.raises(FailedPrecondition, match="multi-tenant"):
                single.ensure_collection(name, 4)
        finally:
            single.close()
    finally:
        from llmops.retrieval.weaviate_store import class_name

        alice.client.collections.delete(class_name(name))
        alice.close()
        bob.close()


def test_weaviate_collection_names_round_trip_and_foreign_classes_are_ignored(weaviate_endpoint, made):
    from weaviate.classes.config import Configure

    from llmops.retrieval.weaviate_store import class_name, collection_name

    for name in ("a", "Docs", "my-docs_v2", "x__y--z", "a_0-b"):
        assert collection_name(class_name(name)) == name
    assert class_name("my-docs_v2") != class_name("my_docs-v2")
    with pytest.raises(ValueError):
        class_name("not valid!")

    s = new_weaviate_store(weaviate_endpoint)
    foreign = f"Foreign{uuid.uuid4().hex[:8]}"
    try:
        s.client.collections.create(foreign, vector_config=Configure.Vectors.self_provided())
        ours = made.new()
        s.ensure_collection(ours, 4)
        listed = [n for n, _, _ in s.collections()]
        assert ours in listed
        assert all(not n.startswith("Foreign") for n in listed)
    finally:
        s.client.collections.delete(foreign)
        for name in made.names:
            s.client.collections.delete(class_name(name))
        s.close()


def test_weaviate_unreachable_server_is_reported_as_unavailable(weaviate_endpoint):
    from llmops.retrieval.weaviate_store import WeaviateUnavailable, WeaviateVectorStore

    with pytest.raises(ConnectionError, match="not reachable"):
        WeaviateVectorStore(f"http://127.0.0.1:{free_port()}", grpc_port=free_port())
    url, _, key = weaviate_endpoint
    with pytest.raises(WeaviateUnavailable, match="gRPC"):
        WeaviateVectorStore(url, grpc_port=free_port(), api_key=key)
    with pytest.raises(ValueError, match="URL"):
        WeaviateVectorStore("weaviate:8080")


@fake_only
def test_weaviate_api_key_is_sent_on_both_protocols(made):
    from llmops.retrieval.weaviate_store import WeaviateUnavailable, WeaviateVectorStore

    with FakeWeaviate(api_key="s3cret") as fake:
        s = WeaviateVectorStore(fake.url, grpc_port=fake.grpc_port, api_key="s3cret")
        try:
            name = made.new()
            s.ensure_collection(name, 4)
            s.replace_documents(name, ["a"], [chunk("a", 0, "zebra", unit(1, 0, 0, 0))])
            assert ids(s.search(name, "zebra", Q, 0.5, 5, {})) == ["a#0"]
        finally:
            s.close()
        with pytest.raises(WeaviateUnavailable, match="LLMOPS_WEAVIATE_API_KEY"):
            WeaviateVectorStore(fake.url, grpc_port=fake.grpc_port, api_key="wrong")


@fake_only
def test_fake_weaviate_rejects_what_it_does_not_implement():
    import weaviate
    from weaviate.classes.config import Configure, DataType, Property
    from weaviate.classes.query import Sort
    from weaviate.exceptions import UnexpectedStatusCodeError, WeaviateQueryError

    with FakeWeaviate() as fake:
        client = weaviate.connect_to_custom("127.0.0.1", int(fake.url.rsplit(":", 1)[1]), False,
                                            "127.0.0.1", fake.grpc_port, False, skip_init_checks=True)
        try:
            coll = client.collections.create("Things", vector_config=Configure.Vectors.self_provided(),
                                             properties=[Property(name="n", data_type=DataType.INT)])
            with pytest.raises(WeaviateQueryError, match="does not implement search with sort_by"):
                coll.query.fetch_objects(sort=Sort.by_property("n"))
            with pytest.raises(WeaviateQueryError, match="does not implement the Aggregate RPC") as unimplemented:
                coll.aggregate.over_all(total_count=True)
            assert "UNIMPLEMENTED" in str(unimplemented.value)
            with pytest.raises(UnexpectedStatusCodeError, match="501"):
                client.collections.create("Vectorized", vector_config=Configure.Vectors.text2vec_openai())
        finally:
            client.close()
        with pytest.raises(urllib.error.HTTPError) as http_error:
            urllib.request.urlopen(f"{fake.url}/v1/nodes")
        assert http_error.value.code == 501
        assert b"does not implement GET /v1/nodes" in http_error.value.read()


class BagOfWordsEmbedder:
    """A deterministic 8-dim embedder: a few known words have an axis each, every other word shares the last."""

    dim = 8
    AXES = {"zebras": 0, "striped": 1, "animals": 2, "kafka": 3, "topics": 4, "logs": 5, "replicated": 6}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(".", " ").replace(",", " ").split():
                out[row, self.AXES.get(word, self.dim - 1)] += 1.0
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else out[row]
        return out


async def test_retriever_end_to_end_over_weaviate(weaviate_endpoint, made):
    from llmops.common.errors import NotFound
    from llmops.retrieval.retriever import DocumentIn, Retriever
    from llmops.retrieval.weaviate_store import class_name

    store = new_weaviate_store(weaviate_endpoint)
    default, other = made.new(), made.new()
    try:
        retriever = Retriever(BagOfWordsEmbedder(), store, default_collection=default, chunk_size=64, chunk_overlap=8)
        assert store.has_collection(default)
        docs = [DocumentIn("zebras", "Zebras are striped grazing animals of Africa.", {"kind": "animal"}),
                DocumentIn("kafka", "Kafka topics are partitioned, replicated logs.", {"kind": "infra"})]
        assert await retriever.upsert("", docs) == (2, 2)
        hits = await retriever.search("striped zebras", top_k=1, alpha=0.5)
        assert [h.document_id for h in hits] == ["zebras"]
        assert hits[0].metadata == {"kind": "animal", "chunk": "0"}
        assert [h.document_id for h in await retriever.search("logs", top_k=5, alpha=0.0, filters={"kind": "infra"})] == ["kafka"]
        assert await retriever.delete("", ["kafka"]) == 1
        assert (default, 1, 1) in retriever.collections()
        with pytest.raises(NotFound):
            await retriever.search("zebras", collection=other)
    finally:
        for name in made.names:
            store.client.collections.delete(class_name(name))
        store.close()


def test_settings_select_the_weaviate_store(weaviate_endpoint, tmp_path):
    from llmops.common.settings import Settings
    from llmops.retrieval.main import build_vector_store
    from llmops.retrieval.weaviate_store import WeaviateVectorStore

    url, port, key = weaviate_endpoint
    s = build_vector_store(Settings(vector_store="weaviate", weaviate_url=url, weaviate_grpc_port=port,
                                    weaviate_api_key=key, weaviate_tenant="team-a", data_dir=tmp_path))
    try:
        assert isinstance(s, WeaviateVectorStore) and s.tenant == "team-a"
    finally:
        s.close()
    with pytest.raises(ValueError, match="LLMOPS_WEAVIATE_URL"):
        build_vector_store(Settings(vector_store="weaviate", weaviate_url="", data_dir=tmp_path))
    assert isinstance(build_vector_store(Settings(data_dir=tmp_path)), LanceVectorStore)
