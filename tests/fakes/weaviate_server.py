"""A wire-level fake Weaviate: a real gRPC server for the ``weaviate.v1.Weaviate`` service (built from
the protobuf modules weaviate-client itself ships) and a real HTTP server for the REST endpoints the
client calls, with an in-memory store behind both.

What it implements (the subset llmops and weaviate-client v4 use, with Weaviate's semantics):

* REST: ``/v1/meta``, ``/v1/.well-known/{ready,live,openid-configuration}``, ``/v1/schema`` (GET, POST),
  ``/v1/schema/{class}`` (GET, DELETE), ``/v1/schema/{class}/tenants`` (GET, POST, DELETE),
  ``/v1/schema/{class}/tenants/{tenant}`` (GET, HEAD). Created classes are completed with the defaults a
  real server adds, so the client can parse them back.
* gRPC: ``Search`` (fetch with ``after`` cursor, ``near_vector`` with cosine distance, ``bm25`` with
  k1/b from the class and word tokenisation, ``hybrid`` with relativeScoreFusion or rankedFusion),
  ``BatchObjects``, ``BatchDelete``, ``TenantsGet``; filters ``Equal``, ``NotEqual``, ``ContainsAny``,
  ``ContainsAll``, ``ContainsNone``, ``And``, ``Or``, ``Not`` on field-tokenised text, ints and booleans;
  ``grpc.health.v1.Health``.
* Multi-tenancy: per-tenant shards, with Weaviate's errors for a missing, unknown or unexpected tenant.
* An optional API key, checked on both protocols.

Anything else fails loudly — gRPC ``UNIMPLEMENTED`` or HTTP 501 with a message naming what is missing —
so a test can never pass against behaviour the fake does not have. Approximations: BM25 is scored per
property and summed (Weaviate uses BM25F across properties), no stopword removal, exact (not HNSW)
vector search, no auto-schema.
"""
from __future__ import annotations

import copy
import json
import math
import re
import struct
import threading
import uuid as uuid_lib
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urlsplit

import grpc
import numpy as np
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from weaviate.proto.v1 import (
    base_pb2,
    base_search_pb2,
    batch_delete_pb2,
    batch_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)

VERSION = "1.33.0"
CLASS_NAME = re.compile(r"^[A-Z][_0-9A-Za-z]*$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TEXT_TYPES = {"text", "text[]"}
SUPPORTED_TYPES = {"text", "text[]", "int", "int[]", "number", "number[]", "boolean", "boolean[]"}
HYBRID_SUBSEARCH_LIMIT = 100  # Weaviate's default for each of hybrid's two searches
HNSW_DEFAULTS = {
    "skip": False, "cleanupIntervalSeconds": 300, "maxConnections": 32, "efConstruction": 128, "ef": -1,
    "dynamicEfMin": 100, "dynamicEfMax": 500, "dynamicEfFactor": 8, "vectorCacheMaxObjects": 1000000000000,
    "flatSearchCutoff": 40000, "distance": "cosine", "filterStrategy": "sweeping",
    "pq": {"enabled": False}, "bq": {"enabled": False}, "sq": {"enabled": False},
}
F = base_pb2.Filters


class Fail(Exception):
    """A request the fake refuses: a gRPC status and an HTTP status for the same condition."""

    def __init__(self, code: grpc.StatusCode, http: int, message: str) -> None:
        super().__init__(message)
        self.code, self.http, self.message = code, http, message


def unsupported(what: str) -> Fail:
    return Fail(grpc.StatusCode.UNIMPLEMENTED, 501, f"fake Weaviate does not implement {what}")


def invalid(message: str) -> Fail:
    return Fail(grpc.StatusCode.INVALID_ARGUMENT, 422, message)


def not_found(message: str) -> Fail:
    return Fail(grpc.StatusCode.NOT_FOUND, 404, message)


def tokenize(text: str, tokenization: str | None) -> list[str]:
    """Weaviate's ``word`` (alphanumeric runs, lowercased) and ``field`` (whole value, trimmed)."""
    if tokenization == "field":
        t = text.strip()
        return [t] if t else []
    if tokenization in (None, "word"):
        return re.findall(r"[^\W_]+", text.lower())
    if tokenization == "lowercase":
        return text.lower().split()
    if tokenization == "whitespace":
        return text.split()
    raise unsupported(f"tokenization {tokenization!r}")


@dataclass
class StoredObject:
    uuid: str
    properties: dict[str, Any]
    vectors: dict[str, np.ndarray]


@dataclass
class StoredClass:
    schema: dict[str, Any]
    shards: dict[str, dict[str, StoredObject]] = field(default_factory=dict)  # tenant ("" if none) -> objects

    @property
    def name(self) -> str:
        return self.schema["class"]

    @property
    def multi_tenant(self) -> bool:
        return bool(self.schema["multiTenancyConfig"]["enabled"])

    def prop(self, name: str) -> dict[str, Any]:
        for p in self.schema["properties"]:
            if p["name"] == name:
                return p
        raise invalid(f"no such prop with name '{name}' found in class '{self.name}' in the schema. "
                      "Check your schema files for which properties in this class are available")

    def vector_names(self) -> list[str]:
        return list(self.schema.get("vectorConfig", {})) or [""]

    def shard(self, tenant: str, create: bool = False) -> dict[str, StoredObject]:
        if self.multi_tenant:
            if not tenant:
                raise invalid(f"class {self.name} has multi-tenancy enabled, but request was without tenant")
            if tenant not in self.shards:
                if create and self.schema["multiTenancyConfig"].get("autoTenantCreation"):
                    self.shards[tenant] = {}
                else:
                    raise not_found(f'tenant not found: "{tenant}"')
            return self.shards[tenant]
        if tenant:
            raise invalid(f"class {self.name} has multi-tenancy disabled, but request was with tenant")
        return self.shards.setdefault("", {})


def complete_class(body: dict[str, Any]) -> dict[str, Any]:
    """The class as a real server returns it after creation: every default filled in."""
    cls = copy.deepcopy(body)
    name = cls.get("class", "")
    if not isinstance(name, str) or not CLASS_NAME.match(name):
        raise invalid(f"'{name}' is not a valid class name")
    if cls.get("moduleConfig"):
        raise unsupported("modules (moduleConfig): the fake has no vectorizer, generative or reranker modules")
    inv = cls.setdefault("invertedIndexConfig", {})
    bm25 = inv.setdefault("bm25", {})
    bm25.setdefault("b", 0.75)
    bm25.setdefault("k1", 1.2)
    inv.setdefault("cleanupIntervalSeconds", 60)
    stop = inv.setdefault("stopwords", {})
    stop.setdefault("preset", "en")
    stop.setdefault("additions", None)
    stop.setdefault("removals", None)
    for flag in ("indexNullState", "indexPropertyLength", "indexTimestamps"):
        inv.setdefault(flag, False)
    mt = cls.setdefault("multiTenancyConfig", {})
    mt.setdefault("enabled", False)
    mt.setdefault("autoTenantCreation", False)
    mt.setdefault("autoTenantActivation", False)
    rep = cls.setdefault("replicationConfig", {})
    rep.setdefault("factor", 1)
    rep.setdefault("asyncEnabled", False)
    rep.setdefault("deletionStrategy", "NoAutomatedResolution")
    if not mt["enabled"]:
        shard = cls.setdefault("shardingConfig", {})
        for key, value in {"virtualPerPhysical": 128, "desiredCount": 1, "actualCount": 1,
                           "desiredVirtualCount": 128, "actualVirtualCount": 128, "key": "_id",
                           "strategy": "hash", "function": "murmur3"}.items():
            shard.setdefault(key, value)
    if "vectorConfig" in cls:
        if cls.get("vectorizer", "none") != "none" or "vectorIndexConfig" in cls:
            raise invalid("class-level vectorizer/vectorIndexConfig cannot be combined with vectorConfig")
        for vname, vc in cls["vectorConfig"].items():
            vectorizer = vc.setdefault("vectorizer", {"none": {}})
            if list(vectorizer) != ["none"]:
                raise unsupported(f"vectorizer {list(vectorizer)} for vector {vname!r} (only self-provided vectors)")
            _complete_vector_index(vc, f"vector {vname!r}")
    else:
        if cls.setdefault("vectorizer", "none") != "none":
            raise unsupported(f"vectorizer {cls['vectorizer']!r} (only self-provided vectors)")
        _complete_vector_index(cls, "the class vector")
    props = cls.setdefault("properties", [])
    seen = set()
    for p in props:
        dtype = (p.get("dataType") or [""])[0]
        if dtype not in SUPPORTED_TYPES:
            raise unsupported(f"property data type {dtype!r} (property {p.get('name')!r})")
        if p.get("name") in seen:
            raise invalid(f"property {p.get('name')!r} defined twice")
        seen.add(p.get("name"))
        if dtype in TEXT_TYPES:
            p.setdefault("tokenization", "word")
            tokenize("", p["tokenization"])  # rejects tokenizations the fake lacks
        p.setdefault("indexFilterable", True)
        p.setdefault("indexSearchable", dtype in TEXT_TYPES)
        p.setdefault("indexRangeFilters", False)
    return cls


def _complete_vector_index(holder: dict[str, Any], what: str) -> None:
    index_type = holder.setdefault("vectorIndexType", "hnsw")
    if index_type not in ("hnsw", "flat"):
        raise unsupported(f"vector index type {index_type!r} for {what}")
    config = holder.setdefault("vectorIndexConfig", {})
    for key, value in HNSW_DEFAULTS.items():
        config.setdefault(key, copy.deepcopy(value))
    if config["distance"] != "cosine":
        raise unsupported(f"distance {config['distance']!r} for {what} (only cosine)")
    for quantizer in ("pq", "bq", "sq", "rq"):
        if config.get(quantizer, {}).get("enabled"):
            raise unsupported(f"{quantizer} quantization for {what}")


class FakeWeaviateStore:
    """The in-memory database behind both servers; one lock, since both serve from thread pools."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.classes: dict[str, StoredClass] = {}

    def get_class(self, name: str) -> StoredClass:
        cls = self.classes.get(name[:1].upper() + name[1:])
        if cls is None:
            raise not_found(f"could not find class {name} in schema")
        return cls

    # --- schema and tenants (REST) ---------------------------------------------------------------
    def create_class(self, body: dict[str, Any]) -> dict[str, Any]:
        schema = complete_class(body)
        if schema["class"] in self.classes:
            raise invalid(f"class name {schema['class']!r} already exists")
        self.classes[schema["class"]] = StoredClass(schema)
        return schema

    def tenants_of(self, name: str) -> StoredClass:
        cls = self.get_class(name)
        if not cls.multi_tenant:
            raise invalid(f"multi-tenancy is not enabled for class {cls.name!r}")
        return cls

    def add_tenants(self, name: str, body: Any) -> list[dict[str, Any]]:
        cls = self.tenants_of(name)
        if not isinstance(body, list):
            raise invalid("tenants must be a list")
        for t in body:
            tname = t.get("name", "") if isinstance(t, dict) else ""
            if not TENANT_NAME.match(tname):
                raise invalid(f"tenant name {tname!r} is not valid")
            status = t.get("activityStatus", "HOT")
            if status not in ("HOT", "ACTIVE"):
                raise unsupported(f"tenant activity status {status!r}")
        for t in body:
            cls.shards.setdefault(t["name"], {})
        return [{"name": t["name"], "activityStatus": "HOT"} for t in body]

    # --- objects (gRPC) --------------------------------------------------------------------------
    def batch_objects(self, request: batch_pb2.BatchObjectsRequest) -> batch_pb2.BatchObjectsReply:
        errors = []
        for index, obj in enumerate(request.objects):
            try:
                self._put_object(obj)
            except Fail as exc:
                if exc.code == grpc.StatusCode.UNIMPLEMENTED:
                    raise
                errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=exc.message))
        return batch_pb2.BatchObjectsReply(took=0.0, errors=errors)

    def _put_object(self, obj: batch_pb2.BatchObject) -> None:
        cls = self.get_class(obj.collection)
        shard = cls.shard(obj.tenant, create=True)
        p = obj.properties
        for unsupported_field in ("single_target_ref_props", "multi_target_ref_props", "object_properties",
                                  "object_array_properties"):
            if len(getattr(p, unsupported_field)):
                raise unsupported(f"batch objects with {unsupported_field}")
        raw: dict[str, Any] = json_format.MessageToDict(p.non_ref_properties) if p.HasField("non_ref_properties") else {}
        for arr in p.text_array_properties:
            raw[arr.prop_name] = list(arr.values)
        for arr in p.int_array_properties:
            raw[arr.prop_name] = list(arr.values)
        for arr in p.boolean_array_properties:
            raw[arr.prop_name] = list(arr.values)
        for arr in p.number_array_properties:
            raw[arr.prop_name] = (list(struct.unpack(f"<{len(arr.values_bytes) // 8}d", arr.values_bytes))
                                  if arr.values_bytes else list(arr.values))
        for name in p.empty_list_props:
            raw[name] = []
        properties = {name: self._coerce(cls, name, value) for name, value in raw.items()}
        vectors = self._vectors_of(cls, obj)
        for vname, vec in vectors.items():
            for other in shard.values():
                if vname in other.vectors and len(other.vectors[vname]) != len(vec):
                    raise invalid(f"new node has a vector with length {len(vec)}. "
                                  f"Existing nodes have vectors with length {len(other.vectors[vname])}")
                break
        try:
            object_id = str(uuid_lib.UUID(obj.uuid))
        except ValueError:
            raise invalid(f"invalid UUID {obj.uuid!r}") from None
        shard[object_id] = StoredObject(object_id, properties, vectors)

    @staticmethod
    def _coerce(cls: StoredClass, name: str, value: Any) -> Any:
        dtype = cls.prop(name)["dataType"][0]
        scalar = dtype.removesuffix("[]")
        values = value if dtype.endswith("[]") else [value]
        if dtype.endswith("[]") and not isinstance(value, list):
            raise invalid(f"invalid {dtype} property '{name}' on class '{cls.name}': not a list")
        out = []
        for v in values:
            if v is None:
                out.append(None)
            elif scalar == "text" and isinstance(v, str):
                out.append(v)
            elif scalar == "int" and isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer():
                out.append(int(v))
            elif scalar == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(float(v))
            elif scalar == "boolean" and isinstance(v, bool):
                out.append(v)
            else:
                raise invalid(f"invalid {dtype} property '{name}' on class '{cls.name}': got {v!r}")
        return out if dtype.endswith("[]") else out[0]

    @staticmethod
    def _vectors_of(cls: StoredClass, obj: batch_pb2.BatchObject) -> dict[str, np.ndarray]:
        names = cls.vector_names()
        vectors: dict[str, np.ndarray] = {}
        if obj.vector_bytes or len(obj.vector):
            if names != [""]:
                raise invalid(f"collection {cls.name} has named vectors {names}: an unnamed vector was given")
            vectors[""] = (np.frombuffer(obj.vector_bytes, "<f4").copy() if obj.vector_bytes
                           else np.asarray(obj.vector, np.float32))
        for v in obj.vectors:
            if v.type == base_pb2.Vectors.VECTOR_TYPE_MULTI_FP32:
                raise unsupported("multi-vectors")
            name = v.name or ("" if names == [""] else names[0] if len(names) == 1 else "")
            if name not in names:
                raise invalid(f"collection {cls.name} has no vector named {v.name!r} (has {names})")
            vectors[name] = np.frombuffer(v.vector_bytes, "<f4").copy()
        return vectors

    def batch_delete(self, request: batch_delete_pb2.BatchDeleteRequest) -> batch_delete_pb2.BatchDeleteReply:
        cls = self.get_class(request.collection)
        shard = cls.shard(request.tenant)
        if not request.HasField("filters"):
            raise invalid("batch delete needs a filter")
        matched = [o for o in shard.values() if self.matches(cls, request.filters, o)]
        if not request.dry_run:
            for o in matched:
                del shard[o.uuid]
        objects = ([batch_delete_pb2.BatchDeleteObject(uuid=uuid_lib.UUID(o.uuid).bytes, successful=True)
                    for o in matched] if request.verbose else [])
        return batch_delete_pb2.BatchDeleteReply(took=0.0, failed=0, matches=len(matched),
                                                 successful=len(matched), objects=objects)

    def tenants_get(self, request: tenants_pb2.TenantsGetRequest) -> tenants_pb2.TenantsGetReply:
        cls = self.tenants_of(request.collection)
        names = list(request.names.values) if request.HasField("names") else sorted(cls.shards)
        return tenants_pb2.TenantsGetReply(took=0.0, tenants=[
            tenants_pb2.Tenant(name=n, activity_status=tenants_pb2.TENANT_ACTIVITY_STATUS_HOT)
            for n in names if n in cls.shards
        ])

    # --- filters ---------------------------------------------------------------------------------
    def matches(self, cls: StoredClass, f: base_pb2.Filters, obj: StoredObject) -> bool:
        op = f.operator
        if op == F.OPERATOR_AND:
            return all(self.matches(cls, sub, obj) for sub in f.filters)
        if op == F.OPERATOR_OR:
            return any(self.matches(cls, sub, obj) for sub in f.filters)
        if op == F.OPERATOR_NOT:
            if len(f.filters) != 1:
                raise invalid("a Not filter takes exactly one operand")
            return not self.matches(cls, f.filters[0], obj)
        if f.HasField("target"):
            if f.target.WhichOneof("target") != "property":
                raise unsupported(f"filters on {f.target.WhichOneof('target')} (only on properties)")
            prop = f.target.property
        elif len(f.on) == 1:
            prop = f.on[0]
        else:
            raise unsupported(f"filter path {list(f.on)} (only one property)")
        if prop.startswith("_"):
            raise unsupported(f"filters on the meta property {prop!r}")
        schema_prop = cls.prop(prop)
        dtype = schema_prop["dataType"][0]
        if dtype in TEXT_TYPES and schema_prop.get("tokenization") != "field":
            raise unsupported(f"filters on {schema_prop.get('tokenization')}-tokenized property {prop!r} "
                              "(only field tokenization)")
        if not schema_prop.get("indexFilterable", True):
            raise invalid(f"Filtering: filtering by property '{prop}' requires inverted index. "
                          "Is `indexFilterable` option of property enabled?")
        targets = self._filter_values(f)
        stored = obj.properties.get(prop)
        have = stored if isinstance(stored, list) else ([] if stored is None else [stored])
        if dtype in TEXT_TYPES:
            have = [v.strip() for v in have]
            targets = [t.strip() if isinstance(t, str) else t for t in targets]
        if op == F.OPERATOR_EQUAL:
            return len(targets) == 1 and targets[0] in have
        if op == F.OPERATOR_NOT_EQUAL:
            return not (len(targets) == 1 and targets[0] in have)
        if op == F.OPERATOR_CONTAINS_ANY:
            return any(t in have for t in targets)
        if op == F.OPERATOR_CONTAINS_ALL:
            return all(t in have for t in targets)
        if op == F.OPERATOR_CONTAINS_NONE:
            return not any(t in have for t in targets)
        raise unsupported(f"filter operator {F.Operator.Name(op)}")

    @staticmethod
    def _filter_values(f: base_pb2.Filters) -> list[Any]:
        kind = f.WhichOneof("test_value")
        if kind == "value_text":
            return [f.value_text]
        if kind == "value_int":
            return [f.value_int]
        if kind == "value_boolean":
            return [f.value_boolean]
        if kind == "value_text_array":
            return list(f.value_text_array.values)
        if kind == "value_int_array":
            return list(f.value_int_array.values)
        if kind == "value_boolean_array":
            return list(f.value_boolean_array.values)
        raise unsupported(f"filter values of kind {kind!r}")

    # --- search ----------------------------------------------------------------------------------
    def search(self, request: search_get_pb2.SearchRequest) -> search_get_pb2.SearchReply:
        for name in ("group_by", "generative", "rerank", "boost", "near_object", "near_text", "near_image",
                     "near_audio", "near_video", "near_depth", "near_thermal", "near_imu"):
            if request.HasField(name):
                raise unsupported(f"search with {name}")
        if len(request.sort_by):
            raise unsupported("search with sort_by")
        if request.autocut > 0:
            raise unsupported("search with autocut")
        if request.properties.ref_properties or request.properties.object_properties:
            raise unsupported("returning reference or object properties")
        if request.metadata.query_profile or request.metadata.is_consistent:
            raise unsupported("query_profile / is_consistent metadata")
        cls = self.get_class(request.collection)
        shard = cls.shard(request.tenant)
        candidates = [o for o in shard.values()
                      if not request.HasField("filters") or self.matches(cls, request.filters, o)]
        limit = request.limit or 10  # QUERY_DEFAULTS_LIMIT
        offset = request.offset
        scored: list[tuple[StoredObject, dict[str, Any]]]
        if request.HasField("near_vector"):
            nv = request.near_vector
            if nv.HasField("selection"):
                raise unsupported("near_vector diversity selection")
            name, query = self._query_vector(cls, nv, nv.targets, list(nv.target_vectors))
            scored = [(o, {"distance": d}) for o, d in self._by_distance(candidates, name, query)]
            if nv.HasField("distance"):
                scored = [s for s in scored if s[1]["distance"] <= nv.distance]
            if nv.HasField("certainty"):
                scored = [s for s in scored if 1 - s[1]["distance"] / 2 >= nv.certainty]
        elif request.HasField("bm25_search"):
            bm = request.bm25_search
            hits = self._bm25(cls, shard, candidates, bm.query, list(bm.properties),
                              bm.search_operator if bm.HasField("search_operator") else None)
            scored = [(o, {"score": s, "explain": f", BM25F_{bm.query}_frequency:..."}) for o, s in hits]
        elif request.HasField("hybrid_search"):
            scored = self._hybrid(cls, shard, candidates, request.hybrid_search, max(limit + offset, HYBRID_SUBSEARCH_LIMIT))
        else:
            scored = [(o, {}) for o in sorted(candidates, key=lambda o: o.uuid)]
            if request.after:
                scored = [s for s in scored if s[0].uuid > str(uuid_lib.UUID(request.after))]
        page = scored[offset:offset + limit]
        return search_get_pb2.SearchReply(took=0.0, results=[self._result(cls, request, o, m) for o, m in page])

    def _query_vector(self, cls: StoredClass, holder: Any, targets: base_search_pb2.Targets,
                      target_vectors: list[str]) -> tuple[str, np.ndarray]:
        names = list(targets.target_vectors) if targets.target_vectors else target_vectors
        if len(names) > 1:
            raise unsupported("multi-target vector search")
        available = cls.vector_names()
        name = names[0] if names else ("" if available == [""] else available[0] if len(available) == 1 else None)
        if name is None:
            raise invalid(f"multiple vectors exist for class {cls.name}: a target vector is required")
        if name not in available:
            raise invalid(f"class {cls.name} has no vector named {name!r}")
        if len(holder.vectors):
            v = holder.vectors[0]
            if v.type == base_pb2.Vectors.VECTOR_TYPE_MULTI_FP32:
                raise unsupported("multi-vector queries")
            return name, np.frombuffer(v.vector_bytes, "<f4")
        if holder.vector_bytes:
            return name, np.frombuffer(holder.vector_bytes, "<f4")
        if len(holder.vector):
            return name, np.asarray(holder.vector, np.float32)
        if getattr(holder, "vector_for_targets", None):
            if len(holder.vector_for_targets) != 1:
                raise unsupported("several vector_for_targets")
            vft = holder.vector_for_targets[0]
            if vft.name != name:
                raise invalid(f"vector given for {vft.name!r}, target is {name!r}")
            if vft.vectors:
                return name, np.frombuffer(vft.vectors[0].vector_bytes, "<f4")
            return name, np.frombuffer(vft.vector_bytes, "<f4")
        raise invalid("no vector given for the vector search")

    @staticmethod
    def _by_distance(objects: Iterable[StoredObject], name: str, query: np.ndarray) -> list[tuple[StoredObject, float]]:
        q = np.asarray(query, np.float64)
        qn = float(np.linalg.norm(q))
        out = []
        for o in objects:
            v = o.vectors.get(name)
            if v is None:
                continue
            if len(v) != len(q):
                raise invalid(f"vector lengths don't match: {len(q)} vs {len(v)}")
            denom = qn * float(np.linalg.norm(v))
            cos = float(np.dot(q, v.astype(np.float64)) / denom) if denom else 0.0
            out.append((o, 1.0 - cos))
        return sorted(out, key=lambda t: (t[1], t[0].uuid))

    def _bm25(self, cls: StoredClass, shard: dict[str, StoredObject], candidates: list[StoredObject], query: str,
              properties: list[str], operator: base_search_pb2.SearchOperatorOptions | None,
              ) -> list[tuple[StoredObject, float]]:
        """Okapi BM25 (k1, b from the class) per searchable text property, summed over properties;
        statistics (N, df, average length) over the whole shard, as Weaviate computes them."""
        bm = cls.schema["invertedIndexConfig"]["bm25"]
        k1, b = float(bm["k1"]), float(bm["b"])
        if not properties:
            properties = [p["name"] for p in cls.schema["properties"]
                          if p["dataType"][0] in TEXT_TYPES and p.get("indexSearchable")]
        props = []
        for name in properties:
            if "^" in name:
                raise unsupported("property boosts in bm25 (prop^weight)")
            p = cls.prop(name)
            if p["dataType"][0] not in TEXT_TYPES or not p.get("indexSearchable"):
                raise invalid(f"property {name!r} is not searchable: bm25 needs indexSearchable text")
            props.append(p)
        all_terms: list[str] = []
        scores: dict[str, float] = {}
        matched_terms: dict[str, set[str]] = {}
        for p in props:
            terms = sorted(set(tokenize(query, p["tokenization"])))
            all_terms.extend(t for t in terms if t not in all_terms)

            def tokens_of(o: StoredObject) -> list[str]:
                value = o.properties.get(p["name"])
                values = value if isinstance(value, list) else ([] if value is None else [value])
                return [t for v in values for t in tokenize(v, p["tokenization"])]

            docs = {o.uuid: tokens_of(o) for o in shard.values()}
            n = len(docs)
            avgdl = (sum(len(t) for t in docs.values()) / n) if n else 0.0
            for term in terms:
                df = sum(1 for toks in docs.values() if term in toks)
                if not df:
                    continue
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                for o in candidates:
                    toks = docs[o.uuid]
                    tf = toks.count(term)
                    if not tf:
                        continue
                    norm = 1 - b + b * (len(toks) / avgdl if avgdl else 0.0)
                    scores[o.uuid] = scores.get(o.uuid, 0.0) + idf * tf * (k1 + 1) / (tf + k1 * norm)
                    matched_terms.setdefault(o.uuid, set()).add(term)
        if operator is not None and operator.operator == base_search_pb2.SearchOperatorOptions.OPERATOR_AND:
            scores = {u: s for u, s in scores.items() if matched_terms[u] >= set(all_terms)}
        elif operator is not None and operator.operator == base_search_pb2.SearchOperatorOptions.OPERATOR_OR \
                and operator.minimum_or_tokens_match > 1:
            scores = {u: s for u, s in scores.items() if len(matched_terms[u]) >= operator.minimum_or_tokens_match}
        elif operator is not None and operator.operator not in (base_search_pb2.SearchOperatorOptions.OPERATOR_OR,
                                                                base_search_pb2.SearchOperatorOptions.OPERATOR_UNSPECIFIED):
            raise unsupported(f"bm25 operator {operator.operator}")
        by_id = {o.uuid: o for o in candidates}
        return sorted(((by_id[u], s) for u, s in scores.items()), key=lambda t: (-t[1], t[0].uuid))

    def _hybrid(self, cls: StoredClass, shard: dict[str, StoredObject], candidates: list[StoredObject],
                h: base_search_pb2.Hybrid, sub_limit: int) -> list[tuple[StoredObject, dict[str, Any]]]:
        for name in ("near_text", "selection", "vector_distance"):
            if h.HasField(name):
                raise unsupported(f"hybrid with {name}")
        alpha = h.alpha_param if h.use_alpha_param else h.alpha
        sets: list[tuple[str, float, list[tuple[StoredObject, float]]]] = []
        if alpha < 1 and h.query:
            hits = self._bm25(cls, shard, candidates, h.query, list(h.properties),
                              h.bm25_search_operator if h.HasField("bm25_search_operator") else None)
            sets.append(("keyword", 1 - alpha, hits[:sub_limit]))
        if alpha > 0:
            holder = h.near_vector if h.HasField("near_vector") else h
            if not (len(holder.vectors) or holder.vector_bytes or len(holder.vector)
                    or getattr(holder, "vector_for_targets", None)):
                raise invalid("no vector or modules provided for hybrid search")
            name, query = self._query_vector(cls, holder, h.targets, list(h.target_vectors))
            dense = self._by_distance(candidates, name, query)[:sub_limit]
            sets.append(("vector", alpha, [(o, 1.0 - d) for o, d in dense]))
        if h.fusion_type == base_search_pb2.Hybrid.FUSION_TYPE_RANKED:
            return self._fuse_ranked(sets)
        return self._fuse_relative(sets)

    @staticmethod
    def _fuse_relative(sets: list[tuple[str, float, list[tuple[StoredObject, float]]]]) -> list[tuple[StoredObject, dict[str, Any]]]:
        """relativeScoreFusion: min-max normalise each list, weight, sum; explain like Weaviate does."""
        fused: dict[str, dict[str, Any]] = {}
        for set_name, weight, hits in sets:
            if not hits:
                continue
            lo, hi = min(s for _, s in hits), max(s for _, s in hits)
            for o, s in hits:
                score = weight if hi == lo else weight * (s - lo) / (hi - lo)
                entry = fused.setdefault(o.uuid, {"obj": o, "score": 0.0, "explain": "", "secondary": s})
                # Go's %v of a float32, as Weaviate formats it
                explain = (f"Hybrid (Result Set {set_name}) Document {o.uuid}: original score {np.float32(s)}, "
                           f"normalized score: {np.float32(score)}")
                entry["explain"] = "\n" + explain + (" - " + entry["explain"] if entry["explain"] else "")
                entry["score"] += score
                entry["secondary"] = s
        ranked = sorted(fused.values(), key=lambda e: (-e["score"], -e["secondary"], e["obj"].uuid))
        return [(e["obj"], {"score": e["score"], "explain": e["explain"]}) for e in ranked]

    @staticmethod
    def _fuse_ranked(sets: list[tuple[str, float, list[tuple[StoredObject, float]]]]) -> list[tuple[StoredObject, dict[str, Any]]]:
        fused: dict[str, dict[str, Any]] = {}
        for set_name, weight, hits in sets:
            for rank, (o, _) in enumerate(hits):
                score = weight / (rank + 60)
                entry = fused.setdefault(o.uuid, {"obj": o, "score": 0.0, "explain": ""})
                entry["explain"] += f"\nHybrid (Result Set {set_name}) Document {o.uuid} contributed {np.float32(score)} to the score"
                entry["score"] += score
        ranked = sorted(fused.values(), key=lambda e: (-e["score"], e["obj"].uuid))
        return [(e["obj"], {"score": e["score"], "explain": e["explain"]}) for e in ranked]

    def _result(self, cls: StoredClass, request: search_get_pb2.SearchRequest, o: StoredObject,
                m: dict[str, Any]) -> search_get_pb2.SearchResult:
        md = request.metadata
        meta = search_get_pb2.MetadataResult(id=o.uuid, id_as_bytes=uuid_lib.UUID(o.uuid).bytes)
        if (md.distance or md.certainty) and "distance" in m:
            meta.distance, meta.distance_present = m["distance"], True
            meta.certainty, meta.certainty_present = 1 - m["distance"] / 2, True
        if md.score and "score" in m:
            meta.score, meta.score_present = m["score"], True
        if md.explain_score and "explain" in m:
            meta.explain_score, meta.explain_score_present = m["explain"], True
        if md.vector and "" in o.vectors:
            meta.vector_bytes = o.vectors[""].astype("<f4").tobytes()
        for name in md.vectors:
            if name not in o.vectors:
                raise invalid(f"class {cls.name} has no vector named {name!r}")
            meta.vectors.append(base_pb2.Vectors(name=name, vector_bytes=o.vectors[name].astype("<f4").tobytes(),
                                                 type=base_pb2.Vectors.VECTOR_TYPE_SINGLE_FP32))
        props = request.properties
        wanted = ([p["name"] for p in cls.schema["properties"]] if props.return_all_nonref_properties
                  else list(props.non_ref_properties))
        fields = {}
        for name in wanted:
            dtype = cls.prop(name)["dataType"][0]
            if name in o.properties:
                fields[name] = self._value(dtype, o.properties[name])
        return search_get_pb2.SearchResult(
            metadata=meta,
            properties=search_get_pb2.PropertiesResult(
                non_ref_props=properties_pb2.Properties(fields=fields), target_collection=cls.name,
                ref_props_requested=False,
            ),
        )

    @staticmethod
    def _value(dtype: str, value: Any) -> properties_pb2.Value:
        if value is None:
            return properties_pb2.Value(null_value=0)
        if dtype == "text":
            return properties_pb2.Value(text_value=value)
        if dtype == "int":
            return properties_pb2.Value(int_value=value)
        if dtype == "number":
            return properties_pb2.Value(number_value=value)
        if dtype == "boolean":
            return properties_pb2.Value(bool_value=value)
        if dtype == "text[]":
            return properties_pb2.Value(list_value=properties_pb2.ListValue(
                text_values=properties_pb2.TextValues(values=value)))
        if dtype == "int[]":
            return properties_pb2.Value(list_value=properties_pb2.ListValue(
                int_values=properties_pb2.IntValues(values=struct.pack(f"<{len(value)}q", *value))))
        if dtype == "number[]":
            return properties_pb2.Value(list_value=properties_pb2.ListValue(
                number_values=properties_pb2.NumberValues(values=struct.pack(f"<{len(value)}d", *value))))
        if dtype == "boolean[]":
            return properties_pb2.Value(list_value=properties_pb2.ListValue(
                bool_values=properties_pb2.BoolValues(values=value)))
        raise unsupported(f"returning {dtype} properties")


class _WeaviateServicer(weaviate_pb2_grpc.WeaviateServicer):
    """The gRPC face: auth, the store lock, and Fail -> status code."""

    def __init__(self, fake: "FakeWeaviate") -> None:
        self.fake = fake

    def _call(self, name: str, context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
        self.fake.log.append(("grpc", name))
        if self.fake.api_key:
            md = dict(context.invocation_metadata())
            if md.get("authorization") != f"Bearer {self.fake.api_key}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "anonymous access not enabled: provide an api key")
        try:
            with self.fake.store.lock:
                return fn()
        except Fail as exc:
            context.abort(exc.code if exc.code != grpc.StatusCode.INVALID_ARGUMENT else grpc.StatusCode.UNKNOWN,
                          exc.message)

    def Search(self, request, context):
        return self._call("Search", context, lambda: self.fake.store.search(request))

    def BatchObjects(self, request, context):
        return self._call("BatchObjects", context, lambda: self.fake.store.batch_objects(request))

    def BatchDelete(self, request, context):
        return self._call("BatchDelete", context, lambda: self.fake.store.batch_delete(request))

    def TenantsGet(self, request, context):
        return self._call("TenantsGet", context, lambda: self.fake.store.tenants_get(request))

    def BatchReferences(self, request, context):
        return self._refuse("BatchReferences", context)

    def Aggregate(self, request, context):
        return self._refuse("Aggregate", context)

    def BatchStream(self, request_iterator, context):
        return self._refuse("BatchStream", context)

    def _refuse(self, name: str, context: grpc.ServicerContext) -> None:
        self.fake.log.append(("grpc", name))
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"fake Weaviate does not implement the {name} RPC")


class _RestHandler(BaseHTTPRequestHandler):
    fake: "FakeWeaviate"  # set on the per-server subclass
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the fake keeps its own log
        return None

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _handle(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        self.fake.log.append(("http", f"{method} {path}"))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            if path.startswith("/v1/.well-known/"):
                status, body = self._well_known(method, path)
            else:
                if self.fake.api_key and self.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
                    raise Fail(grpc.StatusCode.UNAUTHENTICATED, 401, "anonymous access not enabled: provide an api key")
                payload = json.loads(raw) if raw else None
                with self.fake.store.lock:
                    status, body = self._route(method, path, payload)
        except Fail as exc:
            status, body = exc.http, {"error": [{"message": exc.message}]}
        except json.JSONDecodeError as exc:
            status, body = 400, {"error": [{"message": f"invalid JSON body: {exc}"}]}
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _well_known(self, method: str, path: str) -> tuple[int, Any]:
        if method == "GET" and path in ("/v1/.well-known/ready", "/v1/.well-known/live"):
            return 200, None
        if method == "GET" and path == "/v1/.well-known/openid-configuration":
            return 404, None  # no OIDC configured, as a server with anonymous or API-key auth
        raise unsupported(f"{method} {path}")

    def _route(self, method: str, path: str, payload: Any) -> tuple[int, Any]:
        store = self.fake.store
        parts = [unquote(p) for p in path.split("/")[2:]] if path.startswith("/v1/") else []
        if parts == ["meta"] and method == "GET":
            return 200, {"hostname": self.fake.url, "version": VERSION, "modules": {},
                         "grpcMaxMessageSize": 104858000}
        if parts == ["schema"] and method == "GET":
            return 200, {"classes": [copy.deepcopy(c.schema) for c in store.classes.values()]}
        if parts == ["schema"] and method == "POST":
            if not isinstance(payload, dict):
                raise invalid("the class must be a JSON object")
            return 200, store.create_class(payload)
        if len(parts) == 2 and parts[0] == "schema":
            if method == "GET":
                return 200, copy.deepcopy(store.get_class(parts[1]).schema)
            if method == "DELETE":
                store.classes.pop(parts[1][:1].upper() + parts[1][1:], None)
                return 200, None
        if len(parts) == 3 and parts[0] == "schema" and parts[2] == "tenants":
            if method == "GET":
                return 200, [{"name": n, "activityStatus": "HOT"} for n in sorted(store.tenants_of(parts[1]).shards)]
            if method == "POST":
                return 200, store.add_tenants(parts[1], payload)
            if method == "DELETE":
                cls = store.tenants_of(parts[1])
                for name in payload or []:
                    cls.shards.pop(name, None)
                return 200, None
        if len(parts) == 4 and parts[0] == "schema" and parts[2] == "tenants" and method in ("GET", "HEAD"):
            cls = store.tenants_of(parts[1])
            if parts[3] not in cls.shards:
                raise not_found(f"tenant {parts[3]!r} not found")
            return 200, {"name": parts[3], "activityStatus": "HOT"}
        raise unsupported(f"{method} {path}")


class FakeWeaviate:
    """Start with :meth:`start` (or ``with FakeWeaviate() as fake``); ``url`` and ``grpc_port`` tell a
    client where it listens (127.0.0.1, ephemeral ports). ``log`` records every request received."""

    def __init__(self, api_key: str = "") -> None:
        self.api_key = api_key
        self.store = FakeWeaviateStore()
        self.log: list[tuple[str, str]] = []
        self.url = ""
        self.grpc_port = 0
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    def start(self) -> "FakeWeaviate":
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(_WeaviateServicer(self), self._grpc)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        handler = type("FakeWeaviateRestHandler", (_RestHandler,), {"fake": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="fake-weaviate-http", daemon=True)
        self._http_thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
            self._grpc = None

    def __enter__(self) -> "FakeWeaviate":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
