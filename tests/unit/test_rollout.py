"""Rollouts decided by the judge, without I/O: the sequential test (a bad canary is rolled back
before the policy's sample limit, stationary traffic never is, an equal canary is promoted or
passed at the limit), the error-rate and latency limits, how failed and fallen-back requests are
counted, and the rollout monitor's life cycle over route revisions with an in-memory store."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from llmops.common import metrics
from llmops.common.envelope import Record, encode
from llmops.drift.engine import DriftEngine
from llmops.drift.rollout import PASSED, PROMOTE, ROLLBACK, Policy, Rollout, msprt, msprt_below, rate_above
from llmops.drift.rollout_monitor import RolloutMonitor, UnknownRollout
from llmops.v1 import common_pb2, events_pb2, inference_pb2

PRIMARY_MEAN = 0.75


def beta(rng: random.Random, mean: float, concentration: float = 10.0) -> float:
    return rng.betavariate(mean * concentration, (1 - mean) * concentration)


def drive(rollout: Rollout, n: int, seed: int, canary_mean: float, *, share: float = 0.2,
          canary_error: float = 0.0, canary_latency: float = 100.0, stop: bool = True) -> int:
    """``n`` requests, ``share`` of them canary, each with its judged score (Beta); returns the
    requests sent until the decision (or ``n``)."""
    rng = random.Random(seed)
    for i in range(n):
        arm = "canary" if rng.random() < share else "primary"
        tid = f"{seed:04x}{i:028x}"
        failed = arm == "canary" and rng.random() < canary_error
        latency = rng.gauss(canary_latency if arm == "canary" else 100.0, 10.0)
        rollout.completion(tid, arm, error=failed, latency_ms=max(1.0, latency))
        if not failed:
            rollout.score(tid, beta(rng, canary_mean if arm == "canary" else PRIMARY_MEAN))
        if stop and rollout.verdict is not None:
            return i + 1
    return n


# -- the test statistic ----------------------------------------------------------------------------
def test_the_statistic_is_the_papers_mixture_taken_over_the_rollback_side():
    d, v, theta0, tau2 = -0.1, 1.4e-4, -0.05, 0.05 ** 2
    two_sided = math.sqrt(v / (v + tau2)) * math.exp(tau2 * (d - theta0) ** 2 / (2 * v * (v + tau2)))
    assert msprt(d, v, theta0, tau2) == pytest.approx(two_sided)
    assert msprt_below(d, v, theta0, tau2) == pytest.approx(2 * two_sided, rel=1e-3)   # worse: about 2Λ
    assert msprt_below(0.0, v, theta0, tau2) < 0.1 < msprt(0.0, v, theta0, tau2)       # better: it does not grow
    assert msprt_below(-5.0, 1e-6, theta0, tau2) == pytest.approx(math.exp(700))         # no overflow


def test_the_rate_test_is_an_exact_bernoulli_mixture():
    # a uniform mixture over (p0, 1]: the integral of p^k (1-p)^(n-k) over it, over the null's likelihood
    k, n, p0 = 3, 20, 0.05
    steps = 20000
    integral = sum(((p0 + (i + 0.5) * (1 - p0) / steps) ** k * (1 - (p0 + (i + 0.5) * (1 - p0) / steps)) ** (n - k))
                   for i in range(steps)) * (1 - p0) / steps
    assert rate_above(k, n, p0) == pytest.approx(integral / (1 - p0) / (p0 ** k * (1 - p0) ** (n - k)), rel=1e-4)
    assert rate_above(0, 50, 0.05) < 1 < rate_above(9, 30, 0.05)
    assert rate_above(1, 30, 0.0) == math.inf and rate_above(0, 0, 0.1) == 1.0


def test_policy_defaults_and_bad_policies():
    p = Policy.of(inference_pb2.RolloutPolicy())
    assert (p.score, p.tier, p.min_samples, p.max_samples, p.max_drop, p.alpha) == ("faithfulness", "cheap", 30, 500,
                                                                                    0.05, 0.01)
    assert p.max_error_rate is None and p.max_latency_ratio is None and not p.auto_promote
    assert Policy.of(inference_pb2.RolloutPolicy(max_error_rate=0.0)).max_error_rate == 0.0   # set, even at 0
    assert Policy.of(p.to_proto()) == p
    with pytest.raises(ValueError, match=r"max_samples \(10\) is below min_samples \(30\)"):
        Policy(max_samples=10)
    with pytest.raises(ValueError, match="alpha must be in"):
        Policy(alpha=1.5)


# -- (a) a bad canary is rolled back before max_samples ---------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_bad_canary_is_rolled_back_before_the_sample_limit(seed):
    r = Rollout(Policy())
    drive(r, 10_000, seed, canary_mean=0.3)
    assert r.verdict is not None and r.verdict.decision == ROLLBACK, r.verdict
    ev = r.evidence()
    assert 30 <= ev.canary_n < 500 and ev.primary_n >= 30
    assert ev.canary_mean == pytest.approx(0.3, abs=0.1) and ev.primary_mean == pytest.approx(0.75, abs=0.05)
    assert ev.difference == pytest.approx(ev.canary_mean - ev.primary_mean)
    assert ev.statistic >= ev.threshold == 100 and ev.test == "msprt" and ev.max_drop == 0.05
    assert "drop of" in r.verdict.reason and "mSPRT" in r.verdict.reason
    n_c = ev.canary_n
    r.completion("late", "canary")
    r.score("late", 0.0)
    assert r.evidence().canary_n == n_c and r.arms["canary"].requests == ev.canary_requests   # decided: frozen


def test_a_drop_of_a_tenth_is_caught_too():
    for seed in range(5):
        r = Rollout(Policy())
        drive(r, 10_000, seed, canary_mean=PRIMARY_MEAN - 0.1)
        assert r.verdict.decision == ROLLBACK and r.evidence().canary_n < 500, (seed, r.verdict)


# -- (b) stationary traffic never rolls back --------------------------------------------------------
@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_ten_thousand_stationary_requests_roll_nothing_back(seed):
    r = Rollout(Policy(max_samples=5000))            # the whole stream is watched: 2,000 canary requests
    drive(r, 10_000, seed, canary_mean=PRIMARY_MEAN)
    assert r.verdict is None, r.verdict
    ev = r.evidence()
    assert 1800 < ev.canary_n < 2200 and ev.statistic < 1.0


def test_a_canary_worse_by_exactly_the_tolerated_drop_is_kept():
    rollbacks = 0
    for seed in range(20):
        r = Rollout(Policy(max_samples=5000))
        drive(r, 5000, seed, canary_mean=PRIMARY_MEAN - 0.05)
        rollbacks += r.verdict is not None
    assert rollbacks == 0                            # alpha 1% is a bound: at the boundary it is rarer still


# -- (c) an equal canary is promoted at max_samples, or passed --------------------------------------
def test_an_equal_canary_is_promoted_at_the_sample_limit_with_auto_promote():
    r = Rollout(Policy(auto_promote=True))
    drive(r, 10_000, 21, canary_mean=PRIMARY_MEAN)
    assert r.verdict.decision == PROMOTE and r.evidence().canary_n == 500, r.verdict
    assert r.verdict.reason.startswith("held: faithfulness (cheap) canary mean")


def test_an_equal_canary_is_passed_at_the_sample_limit_without_auto_promote():
    r = Rollout(Policy(max_samples=200))
    drive(r, 10_000, 22, canary_mean=PRIMARY_MEAN)
    assert r.verdict.decision == PASSED and r.evidence().canary_n == 200
    assert "auto_promote is off, a person decides" in r.verdict.reason


def test_a_canary_that_reaches_the_limit_looking_worse_than_tolerated_is_not_auto_promoted():
    r = Rollout(Policy(max_samples=40, auto_promote=True))
    drive(r, 10_000, 23, canary_mean=PRIMARY_MEAN - 0.09)     # too few samples to confirm the drop
    ev = r.evidence()
    assert r.verdict.decision == PASSED and ev.canary_n == 40 and ev.difference < -0.05, (r.verdict, ev)
    assert "not promoted automatically" in r.verdict.reason


# -- (d) error-rate and latency limits --------------------------------------------------------------
def test_a_canary_that_fails_too_often_is_rolled_back_at_min_samples():
    r = Rollout(Policy(max_error_rate=0.05))
    drive(r, 10_000, 31, canary_mean=PRIMARY_MEAN, canary_error=0.3)
    ev = r.evidence()
    assert r.verdict.decision == ROLLBACK and "error rate" in r.verdict.reason
    assert ev.canary_requests < 60 and ev.canary_errors >= 5
    assert ev.canary_error_rate == pytest.approx(ev.canary_errors / ev.canary_requests)


def test_a_canary_within_its_error_limit_is_not_rolled_back():
    for seed in range(5):
        r = Rollout(Policy(max_error_rate=0.05, max_samples=5000))
        drive(r, 10_000, 40 + seed, canary_mean=PRIMARY_MEAN, canary_error=0.03)
        assert r.verdict is None and r.evidence().canary_errors > 20, r.verdict


def test_without_an_error_limit_errors_are_counted_but_decide_nothing():
    r = Rollout(Policy(max_samples=5000))
    drive(r, 2000, 32, canary_mean=PRIMARY_MEAN, canary_error=0.5)
    assert r.verdict is None and r.evidence().canary_error_rate == pytest.approx(0.5, abs=0.1)


def test_a_slow_canary_is_rolled_back_on_its_latency_limit():
    r = Rollout(Policy(max_latency_ratio=1.5))
    drive(r, 10_000, 33, canary_mean=PRIMARY_MEAN, canary_latency=300.0)
    ev = r.evidence()
    assert r.verdict.decision == ROLLBACK and "p95 latency" in r.verdict.reason, r.verdict
    assert ev.canary_p95_latency_ms > 2 * ev.primary_p95_latency_ms > 0
    assert ev.canary_requests < 60


def test_a_canary_as_fast_as_the_primary_stays_within_its_latency_limit():
    for seed in range(5):
        r = Rollout(Policy(max_latency_ratio=1.2, max_samples=5000))
        drive(r, 10_000, 50 + seed, canary_mean=PRIMARY_MEAN, canary_latency=100.0)
        assert r.verdict is None, r.verdict


# -- (e) what counts ---------------------------------------------------------------------------------
def test_failed_and_fallen_back_requests_are_errors_of_their_arm_and_their_scores_count_nowhere():
    r = Rollout(Policy())
    assert r.completion("c-ok", "canary", latency_ms=100)
    assert r.completion("c-fallback", "canary", fallback=True, latency_ms=900)   # answered by the primary
    assert r.completion("c-error", "canary", error=True)
    assert r.completion("p-fallback", "primary", fallback=True, latency_ms=800)
    assert r.completion("p-ok", "primary", latency_ms=90)
    assert not r.completion("s", "shadow")                                      # shadows are not compared
    assert not r.completion("c-ok", "canary")                                   # redelivered: counted once
    for tid in ("c-ok", "c-fallback", "c-error", "p-fallback", "p-ok"):
        r.score(tid, 0.5)
    assert not r.score("c-ok", 0.9)                                             # scored once
    c, p = r.arms["canary"], r.arms["primary"]
    assert (c.requests, c.errors, c.scores.n) == (3, 2, 1) and (p.requests, p.errors, p.scores.n) == (2, 1, 1)
    assert c.latencies == [100.0] and p.latencies == [90.0]                     # the arm's own answers only
    ev = r.evidence()
    assert (ev.canary_requests, ev.canary_errors) == (3, 2) and ev.canary_error_rate == pytest.approx(2 / 3)


def test_a_score_that_comes_before_its_completion_is_joined_when_it_comes():
    r = Rollout(Policy())
    assert not r.score("early", 0.4)
    assert r.arms["canary"].scores.n == 0
    r.completion("early", "canary")
    assert r.arms["canary"].scores.n == 1 and r.arms["canary"].scores.mean == pytest.approx(0.4)
    r.score("early-failed", 0.9)
    r.completion("early-failed", "canary", fallback=True)
    assert r.arms["canary"].scores.n == 1                                       # a fallback's score stays out
    assert not r.score("nan", float("nan"))


def test_identical_scores_do_not_make_the_variance_zero():
    r = Rollout(Policy())
    for i in range(40):
        r.completion(f"p{i}", "primary")
        r.score(f"p{i}", 0.8)
        r.completion(f"c{i}", "canary")
        r.score(f"c{i}", 0.8)
    assert r.verdict is None and math.isfinite(r.statistic()) and r.statistic() < 1


# -- the rollout monitor (in-memory decisions, a recording publisher) -------------------------------
class Decisions:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], events_pb2.DeploymentEvent] = {}

    def save_deployment_event(self, ev):
        if (ev.route, ev.route_revision) in self.rows:
            return False
        self.rows[(ev.route, ev.route_revision)] = ev
        return True

    def deployment_events(self, route=""):
        rows = [e for e in self.rows.values() if not route or e.route == route]
        return sorted(rows, key=lambda e: (e.timestamp.ToMicroseconds(), e.route_revision), reverse=True)


class Sent:
    def __init__(self, fail: int = 0) -> None:
        self.messages, self.fail = [], fail

    async def send_many(self, messages):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("broker away")
        self.messages.extend(messages)


def route(revision: int, *, canary: bool = True, **policy) -> events_pb2.ConfigRecord:
    r = inference_pb2.Route(name="chat", revision=revision, primary=inference_pb2.DeploymentRef(name="small", version=1))
    if canary:
        r.canary.CopyFrom(inference_pb2.Canary(deployment=inference_pb2.DeploymentRef(name="small", version=2),
                                               percent=20, policy=inference_pb2.RolloutPolicy(**policy)))
    return events_pb2.ConfigRecord(route=r)


def completion(tid: str, arm: str, revision: int = 1, **kw) -> events_pb2.CompletionEvent:
    ev = events_pb2.CompletionEvent(trace_id=tid, route="chat", route_revision=revision, arm=arm,
                                    deployment="small", deployment_version=2 if arm == "canary" else 1,
                                    latency_ms=100, prompt="q", answer="a", **kw)
    ev.timestamp.FromMicroseconds(1_000_000)
    return ev


def score(tid: str, value: float, *, name="faithfulness", tier="cheap", revision=1, routed=True) -> events_pb2.ScoreEvent:
    s = events_pb2.ScoreEvent(trace_id=tid, tier=tier, score=common_pb2.Score(
        name=name, evaluator=f"rag.{name}.{tier}", value=value, status=common_pb2.SCORE_STATUS_OK))
    if routed:
        s.route, s.route_revision = "chat", revision
    return s


def feed(m: RolloutMonitor, n: int, canary_mean: float, seed: int = 0, revision: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(n):
        arm = "canary" if i % 5 == 0 else "primary"
        tid = f"r{revision}-{seed}-{i}"
        m.observe(completion(tid, arm, revision))
        m.observe(score(tid, beta(rng, canary_mean if arm == "canary" else PRIMARY_MEAN), revision=revision))


async def test_the_monitor_rolls_a_bad_canary_back_once_and_the_next_revision_ends_it():
    store, sent = Decisions(), Sent()
    m = RolloutMonitor(store, sent, topic_prefix="t.")
    with pytest.raises(UnknownRollout, match=r"no canary seen for route 'chat'; routes with a canary: none yet"):
        m.status("chat")
    await m.apply_config([route(1)])
    assert m.status("chat")[0].state == "gathering"
    before = metrics.ROLLOUT_DECISIONS.labels("chat", "rollback")._value.get()
    feed(m, 2000, canary_mean=0.3)
    assert await m.flush() == 1 and await m.flush() == 0
    [(topic, key, ev, _)] = sent.messages
    assert (topic, key, ev.route_revision, ev.decision) == ("t.deployments", "chat", 1, ROLLBACK)
    assert (ev.canary.name, ev.canary.version, ev.primary.version) == ("small", 2, 1) and ev.id == "rollout:chat:1"
    assert 30 <= ev.evidence.canary_n < 500 and ev.evidence.statistic >= 100
    assert store.rows[("chat", 1)] == ev
    assert metrics.ROLLOUT_DECISIONS.labels("chat", "rollback")._value.get() == before + 1
    assert metrics.ROLLOUT_SAMPLES.labels("chat", "canary")._value.get() == ev.evidence.canary_n
    st = m.status("chat")[0]
    assert st.state == "rolled_back" and list(st.decisions) == [ev] and st.policy.min_samples == 30
    # inference applies it as revision 2, without the canary: the route keeps its history here
    await m.apply_config([route(2, canary=False)])
    assert not m.live
    st = m.status()[0]
    assert (st.route, st.route_revision, st.state, st.evidence) == ("chat", 1, "rolled_back", ev.evidence)
    # a restart: the decision is loaded, the revision is not gathered again
    m2 = RolloutMonitor(store, Sent())
    await m2.load()
    await m2.apply_config([route(1)])
    assert not m2.live and m2.status("chat")[0].state == "rolled_back"
    with pytest.raises(UnknownRollout, match=r"routes with a canary: chat"):
        m2.status("other")


async def test_a_decision_that_cannot_be_published_is_retried():
    store, sent = Decisions(), Sent(fail=1)
    m = RolloutMonitor(store, sent)
    await m.apply_config([route(1, max_samples=50, auto_promote=True)])
    feed(m, 400, canary_mean=PRIMARY_MEAN)
    assert await m.flush() == 0 and len(m.pending) == 1 and not store.rows   # the broker was away
    assert m.status("chat")[0].state == "promoted"                            # decided, being published
    assert await m.flush() == 1 and not m.pending
    assert sent.messages[0][2].decision == PROMOTE and store.rows[("chat", 1)].evidence.canary_n == 50


async def test_only_the_policys_score_of_the_revisions_own_completions_counts():
    m = RolloutMonitor(Decisions(), Sent())
    await m.apply_config([route(3, score="answer_relevancy", tier="llm")])
    m.observe(completion("a", "canary", 3))
    m.observe(score("a", 0.1, name="faithfulness", revision=3))               # another score
    m.observe(score("a", 0.1, name="answer_relevancy", tier="cheap", revision=3))   # another tier
    m.observe(completion("b", "canary", 2))                                   # an older revision
    m.observe(score("b", 0.1, name="answer_relevancy", tier="llm", revision=2))
    m.observe(score("c", 0.2, name="answer_relevancy", tier="llm", routed=False))   # its completion comes after
    m.observe(completion("c", "canary", 3))
    m.observe(score("a", 0.3, name="answer_relevancy", tier="llm", revision=3))
    ev = m.status("chat")[0].evidence
    assert (ev.canary_requests, ev.canary_n, ev.score) == (2, 2, "answer_relevancy")
    assert ev.canary_mean == pytest.approx(0.25)


async def test_a_route_without_a_canary_or_with_a_bad_policy_is_not_watched():
    m = RolloutMonitor(Decisions(), Sent())
    await m.apply_config([route(1, canary=False), events_pb2.ConfigRecord(
        deployment=inference_pb2.Deployment(name="small", version=1))])
    assert not m.live and not m.known
    await m.apply_config([route(2, max_drop=2.0)])
    assert not m.live
    await m.apply_config([route(3), route(2)])                                # an older revision after a newer one
    assert list(m.live) == [("chat", 3)]


async def test_the_engine_feeds_the_monitor_and_keeps_failed_requests_out_of_the_join():
    table: dict = {}
    m = RolloutMonitor(Decisions(), Sent())
    await m.apply_config([route(1)])
    engine = DriftEngine([], Decisions(), None, Sent(), table, reports_dir=Path("unused"), topic_prefix="t.",
                         rollouts=m)

    def rec(topic, ev):
        value, headers = encode(ev)
        return Record(topic=f"t.{topic}", partition=0, offset=0, key=ev.trace_id.encode(), value=value,
                      headers=headers, timestamp_ms=0)

    ok, failed = "a" * 32, "b" * 32
    rejected = await engine.handle([
        rec("completions", completion(ok, "canary")), rec("scores", score(ok, 0.8)),
        rec("completions", completion(failed, "canary", error="UNAVAILABLE: upstream 503")),
    ])
    assert rejected == []
    assert set(table) == {ok.encode()}                                        # the failed request joins nothing
    ev = m.status("chat")[0].evidence
    assert (ev.canary_requests, ev.canary_errors, ev.canary_n) == (2, 1, 1)   # but the rollout counts it
