"""Which retrain events the listener can write (plain names under --out) and which failures it
holds and retries rather than dead-letters."""
from __future__ import annotations

import errno

import pytest

from llmops.cli.retrain_listener import InvalidRetrainEvent, event_paths, is_transient_failure
from llmops.common.envelope import UndecodableMessage
from llmops.v1 import events_pb2


@pytest.mark.parametrize("id, monitor", [
    ("a/b", "m"), ("..", "m"), (".", "m"), ("/abs", "m"), ("x\x00", "m"), ("z" * 201, "m"), ("", "m"),
    ("ok", "../m"), ("ok", "a/b"), ("ok", "m\\n"), ("ok", "é"),
])
def test_unsafe_ids_and_monitors_are_refused(tmp_path, id, monitor):
    with pytest.raises(InvalidRetrainEvent):
        event_paths(tmp_path, events_pb2.RetrainEvent(id=id, monitor=monitor))


def test_safe_names_stay_under_out(tmp_path):
    data, meta = event_paths(tmp_path, events_pb2.RetrainEvent(id="retrain-default-20250101T000000-1a2b", monitor="rag.v2_x-1"))
    assert data == tmp_path.resolve() / "rag.v2_x-1" / "retrain-default-20250101T000000-1a2b.jsonl"
    assert meta.name.endswith(".json") and meta.parent == data.parent
    assert event_paths(tmp_path, events_pb2.RetrainEvent(id="e"))[0].parent.name == "unknown"


def test_transient_versus_deterministic_failures():
    assert is_transient_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert is_transient_failure(ConnectionRefusedError())
    assert not is_transient_failure(IsADirectoryError(errno.EISDIR, "Is a directory"))
    assert not is_transient_failure(OSError(errno.ENAMETOOLONG, "File name too long"))
    assert not is_transient_failure(InvalidRetrainEvent("bad"))
    assert not is_transient_failure(UndecodableMessage("bad bytes"))
    assert not is_transient_failure(ValueError("a bug"))
