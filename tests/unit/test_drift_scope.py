"""Drift monitors scoped to a deployment: an observation carries how its request was served
(route, deployment and version, arm) from its completion, or from its first score when it is an
orphan; a scope names a deployment and a version; the JSON config file reads them; join entries
and reference rows written before these fields still read; the drift store keeps them."""
from __future__ import annotations

import json

import pytest
from llmops.drift.features import Observation
from llmops.drift.join import JoinEntry, merge, new_entry, observation
from llmops.drift.monitor_config import Scope, load_specs
from llmops.drift.store import DriftStore
from llmops.v1 import common_pb2, events_pb2

from tests.support import make_settings

TID = "d" * 32


def completion(version: int = 2, arm: str = "canary") -> events_pb2.CompletionEvent:
    ev = events_pb2.CompletionEvent(trace_id=TID, model="m1", prompt="q", answer="a", route="chat", route_revision=4,
                                    deployment="small", deployment_version=version, arm=arm)
    ev.timestamp.FromMicroseconds(5_000_000)
    return ev


def test_an_observation_carries_how_its_request_was_served():
    o = Observation.of_completion(completion())
    assert (o.route, o.deployment, o.deployment_version, o.arm) == ("chat", "small", 2, "canary")
    assert Observation.from_json(json.loads(json.dumps(o.to_json()))) == o


def test_a_join_entry_written_before_the_served_by_fields_still_reads():
    old = {"first": 1, "due": 2, "s": {}, "fb": {}, "c": {
        "trace_id": TID, "ts_us": 5, "model": "m1", "prompt_template": "rag", "prompt_version": 1, "metadata": {},
        "prompt": "q", "answer": "a", "features": {"latency_ms": 3.0}}}
    o = observation(TID.encode(), JoinEntry.from_dict(old))
    assert o.has_completion and (o.deployment, o.deployment_version, o.arm, o.route) == ("", 0, "", "")


def test_an_orphan_score_carries_its_deployment_and_an_unrouted_one_keeps_the_old_meta():
    routed = events_pb2.ScoreEvent(trace_id=TID, model="m1", tier="cheap", route="chat", route_revision=4,
                                   deployment="small", deployment_version=2, arm="canary",
                                   score=common_pb2.Score(name="faithfulness", value=0.5))
    entry = merge(new_entry(1, 10), routed, 1, 10)
    o = observation(TID.encode(), entry)
    assert not o.has_completion and (o.deployment, o.deployment_version, o.arm, o.route) == ("small", 2, "canary", "chat")
    assert Scope(deployment="small", deployment_version=2).matches(o)
    plain = merge(new_entry(1, 10), events_pb2.ScoreEvent(trace_id=TID, model="m1", score=routed.score), 1, 10)
    assert set(plain.meta) == {"model", "prompt_template", "prompt_version"}


def test_a_scope_names_a_deployment_and_optionally_its_version():
    v2, v1 = Observation.of_completion(completion(2)), Observation.of_completion(completion(1, "primary"))
    assert Scope(deployment="small").matches(v2) and Scope(deployment="small").matches(v1)
    assert Scope(deployment="small", deployment_version=2).matches(v2)
    assert not Scope(deployment="small", deployment_version=2).matches(v1)
    assert not Scope(deployment="large").matches(v2)
    assert Scope(model="m1", deployment="small", deployment_version=2).describe() == \
        "model=m1 deployment=small deployment_version=2"


def test_the_config_file_reads_deployment_scopes_and_refuses_bad_ones(tmp_path):
    cfg = tmp_path / "drift.json"
    s = make_settings(tmp_path, "127.0.0.1:1", drift_config=str(cfg))
    cfg.write_text(json.dumps({"monitors": [{"name": "small-v2", "scope": {"deployment": "small",
                                                                           "deployment_version": 2}}]}))
    [spec] = load_specs(s)
    assert spec.scope == Scope(deployment="small", deployment_version=2)
    for scope, msg in (({"deployment_version": 2}, "needs a deployment"),
                       ({"deployment": "small", "deployment_version": "two"}, "must be integers"),
                       ({"deploymnet": "small"}, r"unknown scope keys \['deploymnet'\]")):
        cfg.write_text(json.dumps({"monitors": [{"name": "x", "scope": scope}]}))
        with pytest.raises(ValueError, match=msg):
            load_specs(s)


def test_the_drift_store_keeps_the_served_by_fields(tmp_path):
    store = DriftStore(f"sqlite:///{tmp_path / 'drift.db'}")
    o = Observation.of_completion(completion())
    store.upsert([o])
    [back] = list(store.observations_after(0))
    assert (back.route, back.deployment, back.deployment_version, back.arm) == ("chat", "small", 2, "canary")
    store.close()
