"""Rollback detection: how many judged requests the rollout monitor's sequential test needs to
roll a bad canary back, and how often it rolls back a canary that is not worse.

The statistics are the drift service's own (:class:`llmops.drift.rollout.Rollout`, default
policy: cheap faithfulness, min_samples 30, max_samples 500, max_drop 0.05, alpha 0.01), fed one
request at a time, 20% of them on the canary, each with its judged score: only Kafka and the
trace-id join are left out, and they do not change what the test sees.

The scores are real: the cheap faithfulness evaluator (MiniLM, the judging service's code) on
the 48 hand-labelled items of tests/data/judge_labelled.jsonl, each item's grounded answer and
its off-topic one (the issue's bad canary: a prompt version that answers off-topic). A request
draws an item at random; the primary answers it grounded; a canary with a drop of ``d`` answers
off-topic with probability ``d / (mean grounded - mean off-topic)``, so its expected mean is ``d``
lower. Synthetic Beta scores (mean 0.75, concentration 10, the canary's mean ``d`` lower) are run
beside them for comparison.

Reported: judged canary requests (and judged requests on both arms) until the rollback, p50 and
p90 over the runs, and the share of runs rolled back before max_samples (with auto_promote on,
so a bad canary that escapes the test shows whether it would have been promoted); false rollbacks over
10,000 stationary requests per run (the whole stream watched: the policy's max_samples is
raised so no promotion ends a run early), and at the boundary the policy tolerates (a drop of
exactly max_drop), where alpha is the bound.
"""
from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

from llmops.drift.rollout import ROLLBACK, Policy, Rollout
from llmops.v1 import events_pb2

from bench.common import percentile, report

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "judge_labelled.jsonl"
CANARY_SHARE = 0.2
DROPS = (0.1, 0.2, 0.4)
DETECTION_RUNS = 200
STATIONARY = 10_000
STATIONARY_RUNS = 50
BOUNDARY_RUNS = 300
MAX_REQUESTS = 20_000      # a detection run gives up here (it never does with these drops)


def labelled_scores() -> tuple[list[float], list[float]]:
    """The cheap faithfulness of each labelled item's grounded and off-topic answer."""
    from llmops.common.settings import packaged_embedder
    from llmops.embedding import SentenceTransformerEmbedder
    from llmops.judging.agreement import load_labelled
    from llmops.judging.embedding_tier import EmbeddingCache, Faithfulness
    from llmops.judging.evaluator import Sample

    items = load_labelled(DATA)
    faithfulness = Faithfulness(EmbeddingCache(SentenceTransformerEmbedder(packaged_embedder())))

    async def score(kind: str) -> list[float]:
        samples = [Sample(it.question, getattr(it, kind), it.contexts, trace_id=f"{i:032x}") for i, it in enumerate(items)]
        judged = await faithfulness.evaluate(samples)
        assert all(j.ok for j in judged), [j.error for j in judged if not j.ok]
        return [j.value for j in judged]

    async def both():
        return await score("grounded_answer"), await score("offtopic_answer")

    return asyncio.run(both())


class RealScores:
    """Draws from the labelled set's real scores."""
    name = "cheap faithfulness of the labelled set"

    def __init__(self, grounded: list[float], offtopic: list[float]) -> None:
        self.grounded, self.offtopic = grounded, offtopic
        self.gap = statistics.fmean(grounded) - statistics.fmean(offtopic)

    def draw(self, rng: random.Random, arm: str, drop: float) -> float:
        i = rng.randrange(len(self.grounded))
        if arm == "canary" and drop and rng.random() < drop / self.gap:
            return self.offtopic[i]
        return self.grounded[i]


class BetaScores:
    name = "synthetic Beta (mean 0.75, concentration 10)"
    mean, concentration = 0.75, 10.0

    def draw(self, rng: random.Random, arm: str, drop: float) -> float:
        m = self.mean - (drop if arm == "canary" else 0.0)
        return rng.betavariate(m * self.concentration, (1 - m) * self.concentration)


def run_once(scores, policy: Policy, drop: float, seed: int, max_requests: int) -> tuple[Rollout, int]:
    """Requests until the decision (or ``max_requests``): the rollout and the requests sent."""
    rng = random.Random(seed)
    r = Rollout(policy)
    for i in range(max_requests):
        arm = "canary" if rng.random() < CANARY_SHARE else "primary"
        tid = f"{seed:08x}{i:024x}"
        r.completion(tid, arm, latency_ms=100.0)
        r.score(tid, scores.draw(rng, arm, drop))
        if r.verdict is not None:
            return r, i + 1
    return r, max_requests


def detection(scores, policy: Policy, drop: float, runs: int, seed0: int) -> dict:
    canary_n, judged, rolled = [], [], 0
    others: dict[str, int] = {}          # the runs not rolled back: what they ended with
    for k in range(runs):
        r, _ = run_once(scores, policy, drop, seed0 + k, MAX_REQUESTS)
        ev = r.evidence()
        if r.verdict is not None and r.verdict.decision == ROLLBACK:
            rolled += 1
            canary_n.append(ev.canary_n)
            judged.append(ev.canary_n + ev.primary_n)
        else:
            name = "undecided" if r.verdict is None else events_pb2.RolloutDecision.Name(r.verdict.decision)
            others[name] = others.get(name, 0) + 1
    return {"drop": drop, "runs": runs, "rolled_back": rolled, "rolled_back_share": rolled / runs, "others": others,
            "canary_judged_p50": percentile(canary_n, 0.5), "canary_judged_p90": percentile(canary_n, 0.9),
            "canary_judged_max": max(canary_n, default=None),
            "judged_p50": percentile(judged, 0.5), "judged_p90": percentile(judged, 0.9)}


def false_rollbacks(scores, policy: Policy, drop: float, runs: int, requests: int, seed0: int) -> dict:
    watched = replace(policy, max_samples=requests)     # no promotion ends a run: the whole stream is watched
    rolled, stats = 0, []
    for k in range(runs):
        r, _ = run_once(scores, watched, drop, seed0 + k, requests)
        rolled += r.verdict is not None and r.verdict.decision == ROLLBACK
        stats.append(r.statistic())
    return {"drop": drop, "runs": runs, "requests_per_run": requests, "false_rollbacks": rolled,
            "statistic_at_end_max": max(stats)}


def run(seed: int = 5) -> dict:
    t0 = time.monotonic()
    policy = Policy()
    grounded, offtopic = labelled_scores()
    real = RealScores(grounded, offtopic)
    rows, results = [], {}
    for scores in (real, BetaScores()):
        promoting = replace(policy, auto_promote=True)   # a run not rolled back shows whether it would be promoted
        det = [detection(scores, promoting, d, DETECTION_RUNS, seed * 1000 + int(d * 100)) for d in DROPS]
        stationary = false_rollbacks(scores, policy, 0.0, STATIONARY_RUNS, STATIONARY, seed * 7919)
        boundary = false_rollbacks(scores, policy, policy.max_drop, BOUNDARY_RUNS, STATIONARY, seed * 104729)
        for d in det:
            rest = ", ".join(f"{v} {k.removeprefix('ROLLOUT_DECISION_').lower()}" for k, v in sorted(d["others"].items()))
            rows.append([scores.name, f"drop {d['drop']:.1f}", d["runs"],
                         f"{d['rolled_back_share']:.0%}" + (f" ({rest})" if rest else ""),
                         d["canary_judged_p50"], d["canary_judged_p90"], d["judged_p50"], d["judged_p90"], "-"])
        for label, fr in (("stationary (no drop)", stationary), (f"drop = max_drop {policy.max_drop:g}", boundary)):
            rows.append([scores.name, label, fr["runs"], f"{fr['false_rollbacks']} of {fr['runs']}", "-", "-", "-",
                         "-", f"{fr['false_rollbacks']} in {fr['runs']} x {fr['requests_per_run']:,} (bound {policy.alpha:.0%})"])
        results[scores.name] = {"detection": det, "stationary": stationary, "boundary": boundary}
    # what it costs: one request with its score through the statistics
    t1 = time.perf_counter()
    run_once(BetaScores(), replace(policy, max_samples=STATIONARY), 0.0, 1, STATIONARY)
    us_per_request = (time.perf_counter() - t1) / STATIONARY * 1e6
    goal = all(v["stationary"]["false_rollbacks"] == 0 for v in results.values())
    report("rollback_detection",
           f"Rollback detection: default policy (min_samples {policy.min_samples}, max_samples {policy.max_samples}, "
           f"max_drop {policy.max_drop:g}, alpha {policy.alpha:g}, one-sided mSPRT), {CANARY_SHARE:.0%} canary",
           ["scores", "canary", "runs", "rolled back", "canary judged p50", "p90", "judged (both arms) p50", "p90",
            "false rollbacks"], rows,
           {"results": results, "policy": policy.__dict__, "canary_share": CANARY_SHARE,
            "labelled_means": {"grounded": statistics.fmean(grounded), "offtopic": statistics.fmean(offtopic),
                               "grounded_sd": statistics.stdev(grounded)},
            "microseconds_per_request": us_per_request,
            "goal": f"0 false rollbacks over {STATIONARY_RUNS} x {STATIONARY:,} stationary requests",
            "goal_met": goal, "seconds": time.monotonic() - t0})
    return {"results": results, "goal_met": goal}


if __name__ == "__main__":
    run()
