"""The DriftService servicer over a :class:`DriftEngine` with an in-memory store: each RPC is one
engine call, and the engine checks the input (unknown monitor, page size, empty monitor name)
with the messages the clients see."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmops.common.errors import InvalidArgument
from llmops.drift.api import DriftServicer
from llmops.drift.engine import BadReference, DriftEngine, UnknownMonitor
from llmops.drift.monitor_config import MonitorSpec, Scope
from llmops.v1 import drift_pb2, events_pb2


class RetrainLog:
    """The drift store's ``list_retrain`` in memory; it records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    def list_retrain(self, monitor: str, page_size: int, page_token: str):
        self.calls.append((monitor, page_size, page_token))
        return [events_pb2.RetrainEvent(id="e1", monitor=monitor or "a")], "next"


def servicer(store: RetrainLog | None = None) -> DriftServicer:
    specs = [MonitorSpec("b", window_size=50), MonitorSpec("a", scope=Scope(model="m1"))]
    engine = DriftEngine(specs, store or RetrainLog(), None, None, {}, reports_dir=Path("unused-reports"))
    return DriftServicer(engine)


async def test_get_status_of_one_monitor_or_all_and_not_found_for_an_unknown_one():
    api = servicer()
    every = await api.GetStatus(drift_pb2.GetStatusRequest(), None)
    assert [m.monitor for m in every.monitors] == ["b", "a"]
    one = await api.GetStatus(drift_pb2.GetStatusRequest(monitor="a"), None)
    assert [(m.monitor, m.scope, m.window_size) for m in one.monitors] == [("a", "model=m1", 200)]
    with pytest.raises(UnknownMonitor, match=r"no drift monitor 'nope'; monitors: a, b"):
        await api.GetStatus(drift_pb2.GetStatusRequest(monitor="nope"), None)


async def test_list_retrain_events_checks_the_page_size_and_the_monitor_then_asks_the_store():
    store = RetrainLog()
    api = servicer(store)
    got = await api.ListRetrainEvents(drift_pb2.ListRetrainEventsRequest(monitor="a", page_token="t"), None)
    assert [e.id for e in got.events] == ["e1"] and got.next_page_token == "next"
    await api.ListRetrainEvents(drift_pb2.ListRetrainEventsRequest(page_size=500), None)
    assert store.calls == [("a", 50, "t"), ("", 500, "")]                # 0 means 50; 500 is the most
    for size in (501, -1):
        with pytest.raises(InvalidArgument, match=rf"page_size must be between 1 and 500, got {size}"):
            await api.ListRetrainEvents(drift_pb2.ListRetrainEventsRequest(page_size=size), None)
    with pytest.raises(UnknownMonitor):
        await api.ListRetrainEvents(drift_pb2.ListRetrainEventsRequest(monitor="nope"), None)
    assert len(store.calls) == 2                                         # refused before the store was asked


async def test_set_reference_refuses_an_empty_monitor_name_and_an_unknown_monitor():
    api = servicer()
    with pytest.raises(BadReference, match=r"^monitor is empty; monitors: a, b$"):
        await api.SetReference(drift_pb2.SetReferenceRequest(first_n=10), None)
    with pytest.raises(UnknownMonitor):
        await api.SetReference(drift_pb2.SetReferenceRequest(monitor="nope", first_n=10), None)
    with pytest.raises(BadReference, match="not both or neither"):
        await api.SetReference(drift_pb2.SetReferenceRequest(monitor="a"), None)
