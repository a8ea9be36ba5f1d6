"""Weaviate vector store (weaviate-client v4): one Weaviate collection per llmops collection, with
vectors we provide (cosine distance), BM25 over ``text``, and server-side hybrid search with
``relativeScoreFusion`` — the same semantics :mod:`llmops.retrieval.lance` gets by fusing locally.

Schema: ``document_id``, ``chunk_id`` (field tokenization: exact-match filters), ``chunk`` (int),
``text`` (word tokenization, the only BM25-searchable property), ``metadata_json`` (stored only) and
``meta_kv`` (``"key=value"`` strings, field tokenization), so a metadata equality filter is
``meta_kv contains_any ["key=value"]`` without schema changes when documents bring new keys.

Objects get uuid5 ids derived from the chunk id, so replaying an ingest overwrites rather than
duplicates. With a tenant configured, collections are multi-tenant and every call is scoped to it.
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from typing import Any, Sequence
from urllib.parse import urlsplit

import grpc
import numpy as np
import weaviate
from grpc_health.v1 import health_pb2, health_pb2_grpc
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery
from weaviate.classes.tenants import Tenant
from weaviate.collections import Collection
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateStartUpError,
)

from llmops.common.errors import FailedPrecondition, LlmopsError, NotFound, Unavailable
from llmops.retrieval.store import COLLECTION_NAME, ChunkRecord, Hit, relative_score_fusion

CLASS_PREFIX = "Llmops_"
VECTOR_NAME = "default"
CHUNK_NAMESPACE = uuid.UUID("4d1f6a52-2f4b-5c8e-9a57-6c6c6d6f7073")  # fixed: object ids must be stable
INSERT_BATCH = 500      # objects per gRPC batch request (keeps messages far below the size limit)
DELETE_PAGE = 10_000    # Weaviate's default QUERY_MAXIMUM_RESULTS, the most one batch delete removes
TEXT_PROPERTIES = ["text"]
RETURN_PROPERTIES = ["document_id", "chunk_id", "text", "metadata_json"]
# Weaviate explains a relativeScoreFusion hit per result set:
# "Hybrid (Result Set keyword) Document <uuid>: original score 1.23, normalized score: 0.4"
_EXPLAIN = re.compile(r"Result Set (keyword|vector)\) Document [^:]*: original score ([-+0-9.eE]+)")


class WeaviateUnavailable(Unavailable, ConnectionError):
    """Weaviate cannot be reached (maps to UNAVAILABLE)."""


class CollectionNotFound(NotFound, ValueError):
    """A collection (or this tenant's part of it) does not exist: a ValueError, as LanceDB raises."""


class WeaviateStoreError(LlmopsError):
    """Weaviate answered, but refused or failed the operation (maps to INTERNAL, with Weaviate's message)."""


def class_name(collection: str) -> str:
    """Our collection name -> a Weaviate class name: capitalised prefix, and a reversible escape of
    ``-`` (not allowed in Weaviate names) as ``_0`` and of ``_`` as ``__``."""
    if not COLLECTION_NAME.match(collection):
        raise ValueError(f"collection {collection!r} is not a valid name: start with a letter, then letters, "
                         "digits, '_' or '-', at most 63 characters")
    return CLASS_PREFIX + collection.replace("_", "__").replace("-", "_0")


def collection_name(weaviate_class: str) -> str | None:
    """The inverse of :func:`class_name`; None for classes that are not ours."""
    if not weaviate_class.startswith(CLASS_PREFIX):
        return None
    encoded, out, i = weaviate_class[len(CLASS_PREFIX):], [], 0
    while i < len(encoded):
        ch = encoded[i]
        if ch == "_":
            nxt = encoded[i + 1:i + 2]
            if nxt not in ("_", "0"):
                return None
            out.append("_" if nxt == "_" else "-")
            i += 2
        else:
            out.append(ch)
            i += 1
    name = "".join(out)
    return name if COLLECTION_NAME.match(name) else None


def chunk_uuid(chunk_id: str) -> str:
    return str(uuid.uuid5(CHUNK_NAMESPACE, chunk_id))


def _filters(filters: dict[str, str]) -> Any:
    conditions = [Filter.by_property("meta_kv").contains_any([f"{k}={v}"]) for k, v in sorted(filters.items())]
    if not conditions:
        return None
    combined = conditions[0]
    for c in conditions[1:]:
        combined = combined & c
    return combined


def _documents_filter(document_ids: Sequence[str]) -> Any:
    return Filter.by_property("document_id").contains_any(sorted(set(document_ids)))


class WeaviateVectorStore:
    """A :class:`~llmops.retrieval.store.VectorStore` on a Weaviate server (HTTP + gRPC)."""

    def __init__(self, url: str, *, grpc_port: int = 50051, api_key: str = "", tenant: str = "",
                 candidates: int = 50, timeout_s: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Weaviate URL {url!r} is not valid: give e.g. http://weaviate:8080")
        if tenant and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tenant):
            raise ValueError(f"Weaviate tenant {tenant!r} is not valid: letters, digits, '_', '-' (1-64 chars)")
        secure = parts.scheme == "https"
        self.url = url
        self.tenant = tenant
        self.candidates = candidates
        self._lock = threading.RLock()
        host, http_port = parts.hostname, parts.port or (443 if secure else 80)
        try:
            # skip_init_checks: the client's init checks include a call to PyPI for its latest version on every
            # connect; we check REST (meta) and gRPC (health) ourselves below instead.
            self.client = weaviate.connect_to_custom(
                http_host=host, http_port=http_port, http_secure=secure,
                grpc_host=host, grpc_port=grpc_port, grpc_secure=secure,
                auth_credentials=Auth.api_key(api_key) if api_key else None,
                additional_config=AdditionalConfig(timeout=Timeout(init=10, query=timeout_s, insert=timeout_s)),
                skip_init_checks=True,
            )
        except (WeaviateStartUpError, WeaviateConnectionError) as exc:
            raise WeaviateUnavailable(f"Weaviate at {url} is not reachable: {exc}") from exc
        except UnexpectedStatusCodeError as exc:
            if exc.status_code in (401, 403):
                raise WeaviateUnavailable(f"Weaviate at {url} refused our credentials (LLMOPS_WEAVIATE_API_KEY): "
                                          f"{exc}") from exc
            raise WeaviateUnavailable(f"Weaviate at {url} answered {exc.status_code} to its meta endpoint: {exc}") from exc
        try:
            self._check_grpc(host, grpc_port, secure)
        except BaseException:
            self.client.close()
            raise

    def _check_grpc(self, host: str, port: int, secure: bool) -> None:
        """Fail at start, not at the first search, when the gRPC port is wrong (all data calls use gRPC)."""
        target = f"{host}:{port}"
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials()) if secure else grpc.insecure_channel(target)
        try:
            res = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as exc:
            raise WeaviateUnavailable(f"Weaviate gRPC at {target} is not reachable (LLMOPS_WEAVIATE_GRPC_PORT?): "
                                      f"{exc.code().name} {exc.details()}") from exc
        finally:
            channel.close()
        if res.status != health_pb2.HealthCheckResponse.SERVING:
            raise WeaviateUnavailable(f"Weaviate gRPC at {target} is not serving")

    def close(self) -> None:
        self.client.close()

    # --- collections -----------------------------------------------------------------------
    def _collection(self, name: str) -> Collection:
        coll = self.client.collections.use(class_name(name))
        return coll.with_tenant(self.tenant) if self.tenant else coll

    def has_collection(self, name: str) -> bool:
        cls = class_name(name)
        with _translated_errors("checking", name):
            if not self.client.collections.exists(cls):
                return False
            if not self.tenant:
                return True
            coll = self.client.collections.use(cls)
            return self._is_multi_tenant(coll) and coll.tenants.exists(self.tenant)

    @staticmethod
    def _is_multi_tenant(coll: Collection) -> bool:
        return bool(coll.config.get().multi_tenancy_config.enabled)

    def ensure_collection(self, name: str, dim: int) -> None:
        cls = class_name(name)
        with self._lock, _translated_errors("creating", name):
            if not self.client.collections.exists(cls):
                try:
                    self.client.collections.create(
                        cls,
                        description=f"llmops collection {name!r} ({dim}-dim vectors provided by llmops)",
                        vector_config=Configure.Vectors.self_provided(
                            name=VECTOR_NAME,
                            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
                        ),
                        inverted_index_config=Configure.inverted_index(bm25_k1=1.2, bm25_b=0.75),
                        multi_tenancy_config=Configure.multi_tenancy(enabled=True) if self.tenant else None,
                        properties=[
                            Property(name="document_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                                     index_searchable=False),
                            Property(name="chunk_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                                     index_searchable=False),
                            Property(name="chunk", data_type=DataType.INT),
                            Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
                            Property(name="metadata_json", data_type=DataType.TEXT, index_filterable=False,
                                     index_searchable=False),
                            Property(name="meta_kv", data_type=DataType.TEXT_ARRAY, tokenization=Tokenization.FIELD,
                                     index_searchable=False),
                        ],
                    )
                except UnexpectedStatusCodeError:
                    if not self.client.collections.exists(cls):  # not a lost race with another replica
                        raise
            coll = self.client.collections.use(cls)
            multi_tenant = self._is_multi_tenant(coll)
            if multi_tenant != bool(self.tenant):
                raise FailedPrecondition(
                    f"Weaviate collection {cls} is {'multi' if multi_tenant else 'single'}-tenant but "
                    f"LLMOPS_WEAVIATE_TENANT is {self.tenant or 'empty'}: use another collection or tenant setting"
                )
            if self.tenant and not coll.tenants.exists(self.tenant):
                try:
                    coll.tenants.create([Tenant(name=self.tenant)])
                except UnexpectedStatusCodeError:
                    if not coll.tenants.exists(self.tenant):
                        raise

    def collections(self) -> list[tuple[str, int, int]]:
        out = []
        with _translated_errors("listing collections"):
            for cls in sorted(self.client.collections.list_all(simple=True)):
                name = collection_name(cls)
                if name is None or not self.has_collection(name):
                    continue
                documents: set[str] = set()
                chunks = 0
                for obj in self._collection(name).iterator(return_properties=["document_id"], cache_size=1000):
                    chunks += 1
                    documents.add(str(obj.properties["document_id"]))
                out.append((name, chunks, len(documents)))
        return out

    # --- writes ----------------------------------------------------------------------------
    def replace_documents(self, collection: str, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]) -> None:
        """Delete the documents' old chunks, then insert the new ones. Not atomic: a search in between
        can miss a document, as with Lance."""
        coll = self._collection(collection)
        with self._lock, _translated_errors("writing", collection):
            if document_ids:
                self._delete_all(coll, document_ids)
            if not chunks:
                return
            objects = [
                DataObject(
                    uuid=chunk_uuid(c.id),
                    vector={VECTOR_NAME: [float(x) for x in np.asarray(c.vector, np.float32)]},
                    properties={
                        "document_id": c.document_id, "chunk_id": c.id, "chunk": int(c.chunk), "text": c.text,
                        "metadata_json": json.dumps(c.metadata, ensure_ascii=False),
                        "meta_kv": [f"{k}={v}" for k, v in sorted(c.metadata.items())],
                    },
                )
                for c in chunks
            ]
            for start in range(0, len(objects), INSERT_BATCH):
                result = coll.data.insert_many(objects[start:start + INSERT_BATCH])
                if result.has_errors:
                    first = next(iter(result.errors.values()))
                    raise WeaviateStoreError(
                        f"Weaviate rejected {len(result.errors)} chunks of {len(objects)} in {collection!r}: "
                        f"{first.message}"
                    )

    def delete_documents(self, collection: str, document_ids: Sequence[str]) -> int:
        """Returns the number of chunks deleted (as :class:`LanceVectorStore` does)."""
        if not document_ids:
            return 0
        coll = self._collection(collection)
        with self._lock, _translated_errors("deleting", collection):
            return self._delete_all(coll, document_ids)

    @staticmethod
    def _delete_all(coll: Collection, document_ids: Sequence[str]) -> int:
        """One batch delete removes at most QUERY_MAXIMUM_RESULTS objects: repeat while a page was full."""
        deleted = 0
        while True:
            res = coll.data.delete_many(where=_documents_filter(document_ids))
            if res.failed:
                raise WeaviateStoreError(f"Weaviate failed to delete {res.failed} of {res.matches} chunks")
            deleted += int(res.successful)
            if res.matches < DELETE_PAGE:
                return deleted

    # --- search ----------------------------------------------------------------------------
    def search(self, collection: str, query: str, vector: np.ndarray | None, alpha: float, k: int,
               filters: dict[str, str]) -> list[Hit]:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if k <= 0:
            return []
        coll = self._collection(collection)
        where = _filters(filters)
        use_vector = alpha > 0 and vector is not None
        use_keyword = alpha < 1 and bool(query.strip())
        vec = [float(x) for x in np.asarray(vector, np.float32)] if vector is not None else None
        with _translated_errors("searching", collection):
            if use_vector and use_keyword:
                res = coll.query.hybrid(
                    query, alpha=alpha, vector=vec, query_properties=TEXT_PROPERTIES,
                    fusion_type=HybridFusion.RELATIVE_SCORE, limit=k, filters=where, target_vector=VECTOR_NAME,
                    return_metadata=MetadataQuery(score=True, explain_score=True),
                    return_properties=RETURN_PROPERTIES,
                )
                hits = [self._hybrid_hit(o) for o in res.objects]
                return sorted(hits, key=lambda h: (-h.score, -h.vector_similarity, h.id))[:k]
            # Like Lance: score over `candidates` hits, so a hit's score does not depend on k.
            n = max(k, self.candidates)
            if use_vector:
                res = coll.query.near_vector(
                    vec, limit=n, filters=where, target_vector=VECTOR_NAME,
                    return_metadata=MetadataQuery(distance=True), return_properties=RETURN_PROPERTIES,
                )
                vector_hits = [self._hit(o, vector_similarity=1.0 - float(o.metadata.distance or 0.0))
                               for o in res.objects]
                return relative_score_fusion(vector_hits, [], alpha, k)
            if use_keyword:
                res = coll.query.bm25(
                    query, query_properties=TEXT_PROPERTIES, limit=n, filters=where,
                    return_metadata=MetadataQuery(score=True), return_properties=RETURN_PROPERTIES,
                )
                keyword_hits = [self._hit(o, keyword_score=float(o.metadata.score or 0.0)) for o in res.objects]
                return relative_score_fusion([], keyword_hits, alpha, k)
        return []

    @staticmethod
    def _hit(obj: Any, vector_similarity: float = 0.0, keyword_score: float = 0.0) -> Hit:
        p = obj.properties
        return Hit(id=str(p["chunk_id"]), document_id=str(p["document_id"]), text=str(p["text"]),
                   metadata=json.loads(p.get("metadata_json") or "{}"),
                   vector_similarity=vector_similarity, keyword_score=keyword_score)

    @classmethod
    def _hybrid_hit(cls, obj: Any) -> Hit:
        """The fused score comes from Weaviate; the per-list scores only from its explanation text."""
        original = {kind: float(value) for kind, value in _EXPLAIN.findall(obj.metadata.explain_score or "")}
        # floored at 0 as relative_score_fusion reports them (a negative cosine shows as 0)
        hit = cls._hit(obj, vector_similarity=max(0.0, original.get("vector", 0.0)),
                       keyword_score=max(0.0, original.get("keyword", 0.0)))
        hit.score = min(1.0, max(0.0, float(obj.metadata.score or 0.0)))
        return hit


class _translated_errors:
    """Turns the client's errors into ours, with context: unreachable -> :class:`WeaviateUnavailable`,
    missing class or tenant -> :class:`CollectionNotFound`, anything else -> :class:`WeaviateStoreError`."""

    def __init__(self, doing: str, collection: str = "") -> None:
        self.doing = doing
        self.collection = collection

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, WeaviateBaseError):
            return False
        message = str(exc)
        if isinstance(exc, (WeaviateConnectionError, WeaviateGRPCUnavailableError)) or _UNREACHABLE.search(message):
            raise WeaviateUnavailable(f"Weaviate is not reachable while {self.doing}: {message}") from exc
        if _MISSING.search(message):
            raise CollectionNotFound(f"collection {self.collection!r} was not found in Weaviate "
                                     f"while {self.doing}: {message}") from exc
        raise WeaviateStoreError(f"Weaviate failed while {self.doing}: {message}") from exc


# Weaviate reports a missing class as "could not find class X in schema" and a missing tenant as
# 'tenant not found: "t"'; gRPC transport failures reach us only as text inside WeaviateQueryError.
_MISSING = re.compile(r"could not find class|tenant not found", re.I)
_UNREACHABLE = re.compile(r"StatusCode\.(UNAVAILABLE|DEADLINE_EXCEEDED)|failed to connect|Connection refused", re.I)
