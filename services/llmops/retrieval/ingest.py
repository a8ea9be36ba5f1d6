"""Consumer of ``llmops.documents``: any Kafka producer (an ETL job) can feed the index."""
from __future__ import annotations

import logging
from collections import defaultdict

from llmops.common.envelope import Record, UndecodableMessage, decode
from llmops.common.errors import LlmopsError
from llmops.common.retry import is_transient
from llmops.common.stream import Rejected
from llmops.retrieval.retriever import DocumentIn, Retriever, check_collection
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)


class DocumentIngestor:
    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever

    def _validate(self, record: Record) -> events_pb2.DocumentEvent:
        ev = decode(record, events_pb2.DocumentEvent)
        if not ev.id.strip():
            raise UndecodableMessage("DocumentEvent has no id")
        if not ev.deleted and not ev.text.strip():
            raise UndecodableMessage(f"DocumentEvent {ev.id!r} has no text (set deleted=true to remove it)")
        try:
            check_collection(ev.collection or self.retriever.default_collection)
        except LlmopsError as exc:
            raise UndecodableMessage(str(exc)) from None
        return ev

    async def handle(self, records: list[Record]) -> list[Rejected]:
        await self.retriever.wait_open()   # the first batch may come while the service starts
        rejected: list[Rejected] = []
        # in offset order, the last event for a document id wins
        latest: dict[tuple[str, str], tuple[Record, events_pb2.DocumentEvent]] = {}
        for r in records:
            try:
                ev = self._validate(r)
            except UndecodableMessage as exc:
                rejected.append(Rejected(r, str(exc)))
                continue
            latest[(ev.collection or self.retriever.default_collection, ev.id)] = (r, ev)
        upserts: dict[str, list[tuple[Record, events_pb2.DocumentEvent]]] = defaultdict(list)
        deletes: dict[str, list[tuple[Record, events_pb2.DocumentEvent]]] = defaultdict(list)
        for (collection, _), item in latest.items():
            (deletes if item[1].deleted else upserts)[collection].append(item)
        for collection, items in upserts.items():
            docs = [DocumentIn(ev.id, ev.text, dict(ev.metadata)) for _, ev in items]
            try:
                await self.retriever.upsert(collection, docs, source="kafka")
            except Exception as exc:
                if is_transient(exc):   # the vector store away: hold the batch (retried), never dead-letter it
                    raise
                log.exception("indexing %d documents into %s failed", len(docs), collection)
                rejected += [Rejected(r, f"indexing failed: {exc}", type(exc).__name__) for r, _ in items]
        for collection, items in deletes.items():
            if not self.retriever.store.has_collection(collection):
                continue  # nothing to delete: a tombstone for an unknown collection is a no-op
            try:
                await self.retriever.delete(collection, [ev.id for _, ev in items])
            except Exception as exc:
                if is_transient(exc):
                    raise
                rejected += [Rejected(r, f"delete failed: {exc}", type(exc).__name__) for r, _ in items]
        return rejected
