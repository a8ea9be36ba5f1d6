"""LanceDB vector store: one table per collection, vector search (cosine) plus native full-text
search (BM25), fused with :func:`relative_score_fusion`.

Metadata filters: each chunk carries ``meta_kv``, a list of ``"key=value"`` strings, so an
equality filter is ``array_has(meta_kv, 'key=value')`` — no per-collection schema changes when
documents bring new metadata keys.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Sequence

import lancedb
from lancedb.index import FTS
import numpy as np
import pyarrow as pa

from llmops.retrieval.store import ChunkRecord, Hit, relative_score_fusion

log = logging.getLogger(__name__)

TABLE_PREFIX = "c_"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _filter_sql(filters: dict[str, str]) -> str | None:
    if not filters:
        return None
    return " AND ".join(f"array_has(meta_kv, {_sql_str(f'{k}={v}')})" for k, v in sorted(filters.items()))


class LanceVectorStore:
    def __init__(self, path: str | Path, candidates: int = 50) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(str(path))
        self.candidates = candidates
        self._lock = threading.RLock()
        self._fts_dirty: set[str] = set()

    def _schema(self, dim: int) -> pa.Schema:
        return pa.schema([
            pa.field("id", pa.string()), pa.field("document_id", pa.string()), pa.field("chunk", pa.int32()),
            pa.field("text", pa.string()), pa.field("vector", pa.list_(pa.float32(), dim)),
            pa.field("metadata_json", pa.string()), pa.field("meta_kv", pa.list_(pa.string())),
        ])

    def _table_names(self) -> list[str]:
        res = self.db.list_tables()
        names = getattr(res, "tables", res)
        return list(names)

    def has_collection(self, name: str) -> bool:
        return TABLE_PREFIX + name in self._table_names()

    def ensure_collection(self, name: str, dim: int) -> None:
        with self._lock:
            if not self.has_collection(name):
                self.db.create_table(TABLE_PREFIX + name, schema=self._schema(dim), exist_ok=True)

    def _table(self, name: str):
        return self.db.open_table(TABLE_PREFIX + name)

    def collections(self) -> list[tuple[str, int, int]]:
        out = []
        for t in sorted(self._table_names()):
            if not t.startswith(TABLE_PREFIX):
                continue
            tbl = self.db.open_table(t)
            n = tbl.count_rows()
            docs = len(set(tbl.to_arrow().column("document_id").to_pylist())) if n else 0
            out.append((t[len(TABLE_PREFIX):], n, docs))
        return out

    def replace_documents(self, collection: str, document_ids: Sequence[str], chunks: Sequence[ChunkRecord]) -> None:
        with self._lock:
            tbl = self._table(collection)
            if document_ids:
                ids = ", ".join(_sql_str(d) for d in set(document_ids))
                tbl.delete(f"document_id IN ({ids})")
            if chunks:
                dim = len(chunks[0].vector)
                data = pa.table({
                    "id": [c.id for c in chunks], "document_id": [c.document_id for c in chunks],
                    "chunk": pa.array([c.chunk for c in chunks], pa.int32()), "text": [c.text for c in chunks],
                    "vector": pa.FixedSizeListArray.from_arrays(
                        pa.array(np.concatenate([np.asarray(c.vector, np.float32) for c in chunks])), dim),
                    "metadata_json": [json.dumps(c.metadata, ensure_ascii=False) for c in chunks],
                    "meta_kv": [[f"{k}={v}" for k, v in sorted(c.metadata.items())] for c in chunks],
                }, schema=self._schema(dim))
                tbl.add(data)
            self._fts_dirty.add(collection)

    def delete_documents(self, collection: str, document_ids: Sequence[str]) -> int:
        with self._lock:
            tbl = self._table(collection)
            before = tbl.count_rows()
            ids = ", ".join(_sql_str(d) for d in set(document_ids))
            tbl.delete(f"document_id IN ({ids})")
            self._fts_dirty.add(collection)
            return before - tbl.count_rows()

    def _ensure_fts(self, collection: str, tbl) -> None:
        if collection in self._fts_dirty:
            with self._lock:
                if collection in self._fts_dirty:
                    tbl.create_index("text", config=FTS(), replace=True)
                    self._fts_dirty.discard(collection)

    def search(self, collection: str, query: str, vector: np.ndarray | None, alpha: float, k: int,
               filters: dict[str, str]) -> list[Hit]:
        tbl = self._table(collection)
        if tbl.count_rows() == 0:
            return []
        where = _filter_sql(filters)
        n = max(k, self.candidates)
        vector_hits: list[Hit] = []
        keyword_hits: list[Hit] = []
        if alpha > 0 and vector is not None:
            q = tbl.search(np.asarray(vector, np.float32), vector_column_name="vector").distance_type("cosine")
            if where:
                q = q.where(where, prefilter=True)
            for r in q.limit(n).to_list():
                vector_hits.append(self._hit(r, vector_similarity=1.0 - float(r["_distance"])))
        if alpha < 1 and query.strip():
            self._ensure_fts(collection, tbl)
            q = tbl.search(query, query_type="fts")
            if where:
                q = q.where(where, prefilter=True)
            for r in q.limit(n).to_list():
                keyword_hits.append(self._hit(r, keyword_score=float(r["_score"])))
        return relative_score_fusion(vector_hits, keyword_hits, alpha, k)

    @staticmethod
    def _hit(r: dict, vector_similarity: float = 0.0, keyword_score: float = 0.0) -> Hit:
        return Hit(id=r["id"], document_id=r["document_id"], text=r["text"],
                   metadata=json.loads(r["metadata_json"] or "{}"),
                   vector_similarity=vector_similarity, keyword_score=keyword_score)
