"""The rollout monitor in the real drift service (as `llmops serve drift` runs it) on the embedded
broker: a route's canary arrives as a ConfigRecord on the compacted config topic; completions
and judge scores of a bad canary produce a ROLLBACK DeploymentEvent on llmops.deployments with
its evidence, long before the policy's sample limit, while failed requests are counted as canary
errors and never reach the drift store; GetRollout shows it, before and after a restart; a
canary as good as its primary decides nothing before max_samples, and is promoted there."""
from __future__ import annotations

import random

import grpc
import pytest
from llmops.cli.client import Client
from llmops.common.config_feed import config_key
from llmops.common.envelope import encode
from llmops.common.spans import new_trace_id
from llmops.drift.main import build as build_drift
from llmops.drift.store import DriftStore
from llmops.v1 import common_pb2, drift_pb2, events_pb2, inference_pb2

from tests.support import ServiceThread, consume_until, make_settings, produce, wait_until

PRIMARY = inference_pb2.DeploymentRef(name="smollm2", version=1)
CANARY = inference_pb2.DeploymentRef(name="smollm2", version=2)


@pytest.fixture(scope="module")
def drift(kafka, tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("rollouts"), kafka, drift_join_wait_s=1.0)
    box = {"thread": ServiceThread("drift", s, build_drift).start()}

    def restart():
        box["thread"].stop()
        box["thread"] = ServiceThread("drift", s, build_drift).start()

    try:
        yield s, Client(s), restart
    finally:
        box["thread"].stop()


def set_route(s, name: str, revision: int, *, canary: bool = True, **policy) -> None:
    r = inference_pb2.Route(name=name, revision=revision, primary=PRIMARY, changed_by="test")
    if canary:
        r.canary.CopyFrom(inference_pb2.Canary(deployment=CANARY, percent=20,
                                               policy=inference_pb2.RolloutPolicy(**policy)))
    rec = events_pb2.ConfigRecord(route=r)
    produce(s.bootstrap_servers, s.topic("config"), [(config_key(rec).encode(), *encode(rec))])


def rollout(client, route: str) -> drift_pb2.RolloutStatus:
    [st] = client.drift.GetRollout(drift_pb2.GetRolloutRequest(route=route), timeout=10).rollouts
    return st


def traffic(s, route: str, revision: int, n: int, rng: random.Random, *, canary_mean: float,
            primary_mean: float = 0.75, failed_every: int = 0) -> tuple[list[str], list[str]]:
    """``n`` requests, every 5th on the canary, each judged (cheap faithfulness, Beta scores), the
    scores published after their completions; every ``failed_every``-th canary request fails."""
    completions, scores, ok, failed = [], [], [], []
    for i in range(n):
        arm = "canary" if i % 5 == 0 else "primary"
        dep = CANARY if arm == "canary" else PRIMARY
        tid = new_trace_id()
        c = events_pb2.CompletionEvent(trace_id=tid, model="smollm2-135m-instruct", prompt=f"question {i}",
                                       route=route, route_revision=revision, deployment=dep.name,
                                       deployment_version=dep.version, arm=arm, attempts=1,
                                       latency_ms=rng.gauss(120, 15))
        c.timestamp.GetCurrentTime()
        if failed_every and arm == "canary" and (i // 5) % failed_every == 0:
            c.error = "UNAVAILABLE: upstream answered 503"
            completions.append(c)
            failed.append(tid)
            continue
        c.answer = f"answer {i}"
        completions.append(c)
        ok.append(tid)
        mean = canary_mean if arm == "canary" else primary_mean
        scores.append(events_pb2.ScoreEvent(
            trace_id=tid, model=c.model, tier="cheap", route=route, route_revision=revision, deployment=dep.name,
            deployment_version=dep.version, arm=arm,
            score=common_pb2.Score(name="faithfulness", evaluator="rag.faithfulness.cheap", value=rng.betavariate(
                mean * 10, (1 - mean) * 10), status=common_pb2.SCORE_STATUS_OK)))
    produce(s.bootstrap_servers, s.topic("completions"), [(c.trace_id.encode(), *encode(c)) for c in completions])
    produce(s.bootstrap_servers, s.topic("scores"), [(e.trace_id.encode(), *encode(e)) for e in scores])
    return ok, failed


def decisions_for(s, route: str, want: int = 1, timeout_s: float = 60.0) -> list[tuple[bytes, events_pb2.DeploymentEvent]]:
    def mine(msgs):
        return [(m.key, events_pb2.DeploymentEvent.FromString(m.value)) for m in msgs if m.key == route.encode()]

    msgs = consume_until(s.bootstrap_servers, s.topic("deployments"), lambda ms: len(mine(ms)) >= want,
                         timeout_s=timeout_s, what=f"{want} decision(s) for route {route}")
    return mine(msgs)


def test_a_bad_canary_is_rolled_back_with_its_evidence_and_failed_requests_stay_out_of_drift(drift):
    s, client, restart = drift
    rng = random.Random(7)
    set_route(s, "support", 1, max_error_rate=0.5)
    st = wait_until(lambda: rollout(client, "support"), timeout_s=30, what="the route's canary from the config topic")
    assert (st.route_revision, st.state, st.canary, st.primary) == (1, "gathering", CANARY, PRIMARY)
    assert (st.policy.score, st.policy.tier, st.policy.min_samples, st.policy.max_samples) == ("faithfulness", "cheap",
                                                                                              30, 500)

    ok, failed = traffic(s, "support", 1, 1500, rng, canary_mean=0.3, failed_every=10)
    [(key, ev)] = decisions_for(s, "support")
    assert key == b"support" and ev.decision == events_pb2.ROLLOUT_DECISION_ROLLBACK, ev
    assert (ev.route, ev.route_revision, ev.canary, ev.primary, ev.id) == ("support", 1, CANARY, PRIMARY,
                                                                         "rollout:support:1")
    e = ev.evidence
    assert 30 <= e.canary_n < 500 and e.primary_n >= 30 and e.score == "faithfulness" and e.test == "msprt"
    assert e.canary_mean < 0.45 and e.primary_mean > 0.65 and e.difference == pytest.approx(e.canary_mean - e.primary_mean)
    assert e.statistic >= e.threshold == 100 and e.max_drop == 0.05
    assert e.canary_errors >= 1 and e.canary_requests > e.canary_n    # failed requests count, unjudged
    assert "drop of" in ev.reason and ev.timestamp.seconds > 0

    # the decision is on the topic first, then stored and shown: wait for the status to show it
    st = wait_until(lambda: (x := rollout(client, "support")).decisions and x, timeout_s=30,
                    what="the decision in GetRollout")
    assert st.state == "rolled_back" and [d.id for d in st.decisions] == [ev.id] and st.evidence == e

    # failed requests reach the rollout monitor only: never the drift join nor its store
    store = DriftStore(s.drift_db_url)
    stored = wait_until(lambda: (ids := {o.trace_id for o in store.observations_after(0)}) >= set(ok) and ids,
                        timeout_s=60, what="the answered requests in the drift store")
    assert not stored & set(failed)
    store.close()

    # inference applies the rollback as revision 2, without the canary; a restart keeps the decision
    set_route(s, "support", 2, canary=False)
    restart()
    st = wait_until(lambda: (x := rollout(client, "support")).state == "rolled_back" and x, timeout_s=30,
                    what="the stored decision after a restart")
    assert st.route_revision == 1 and list(st.decisions) == [ev]
    with pytest.raises(grpc.RpcError) as err:
        client.drift.GetRollout(drift_pb2.GetRolloutRequest(route="nope"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no canary seen for route 'nope'; routes with a canary: support" in err.value.details()


def test_an_equal_canary_decides_nothing_before_max_samples_and_is_promoted_there(drift):
    s, client, _ = drift
    rng = random.Random(8)
    set_route(s, "even", 1, max_samples=100, auto_promote=True)
    wait_until(lambda: rollout(client, "even").state == "gathering", timeout_s=30, what="the even route's canary")
    traffic(s, "even", 1, 450, rng, canary_mean=0.75)            # 90 canary requests judged
    # the two arms' judgements arrive interleaved: wait for all of them, not just the canary's
    st = wait_until(lambda: ((x := rollout(client, "even")).evidence.canary_n, x.evidence.primary_n) == (90, 360) and x,
                    timeout_s=60, what="90 judged canary and 360 judged primary requests")
    assert st.state == "gathering" and st.evidence.statistic < 1
    assert not [m for m in consume_until(s.bootstrap_servers, s.topic("deployments"), lambda ms: True)
                if m.key == b"even"]
    traffic(s, "even", 1, 100, rng, canary_mean=0.75)            # 20 more: the limit is reached
    [(_, ev)] = decisions_for(s, "even")
    assert ev.decision == events_pb2.ROLLOUT_DECISION_PROMOTE and ev.evidence.canary_n == 100, ev
    assert rollout(client, "even").state == "promoted"
    every = client.drift.GetRollout(drift_pb2.GetRolloutRequest(), timeout=10).rollouts
    assert {r.route: r.state for r in every} == {"support": "rolled_back", "even": "promoted"}
