"""Rollouts decided by the judge, pure (no I/O): the statistics of one route revision's canary
against its primary, and the decision they lead to. :mod:`llmops.drift.rollout_monitor` feeds
it from the stream; the unit tests and ``bench/rollback_detection.py`` drive the same code.

What is compared. Per arm (``primary``, ``canary``) of one (route, route revision): the judge
scores of the policy's name and tier (default the cheap ``faithfulness``) of the completions that
the arm's own deployment answered. A request that failed (``error`` set) or that a fallback
deployment answered (``fallback``) is counted as an error of its arm, and its score, if one came,
is left out of both arms. Latencies are of the arm's own, successful answers.

The score test is a mixture sequential probability ratio test (mSPRT; Johari, Pekelis, Walsh,
"Always valid inference", 2017/2022) on the difference of means, which may be looked at after
every judged request without inflating the error. With ``D = mean_canary - mean_primary`` and
``v = s_c²/n_c + s_p²/n_p`` (each sample variance floored at :data:`VARIANCE_FLOOR`, so that
identical scores do not make ``v`` zero), the null hypothesis is "the canary is at most
``max_drop`` worse": ``θ ≥ θ0 = -max_drop``. The normal mixture over the alternative, ``θ - θ0 ~
N(0, τ²)`` with ``τ = max_drop`` (effects of the size the policy cares about), gives the two-sided

    Λ = sqrt(v / (v + τ²)) · exp(τ² (D - θ0)² / (2 v (v + τ²)))

Here the mixture is taken over the rollback side only (``θ < θ0``, a half-normal), which is a
likelihood-ratio mixture too, so Ville's inequality holds for the whole composite null:

    Λ₋ = 2 Λ Φ(-(D - θ0) τ / sqrt(v (v + τ²)))

``Λ₋ ≈ 2Λ`` when the canary looks worse than ``θ0`` and ``Λ₋ → 0`` when it looks better, so it
only grows for a worse canary (the dashboards plot it against ``1/alpha``) and a canary whose true
drop is at most ``max_drop`` is rolled back with probability at most ``alpha`` over the whole
rollout, however often it is checked (the variances are plugged in, as in the paper's practice,
so this holds asymptotically). The canary is rolled back once both arms have ``min_samples``
judged requests, ``D < θ0`` and ``Λ₋ ≥ 1/alpha``.

The optional limits are sequential too, one-sided tests of a rate against a bound with an exact
Bernoulli likelihood and a uniform mixture over the rates above the bound (a supermartingale for
every rate at or below it, so again at most ``alpha``):

* ``max_error_rate``: the canary's failed requests (errors and fallbacks) among its requests,
  checked once it has ``min_samples`` requests. A canary that fails most of its requests is rolled
  back at ``min_samples``; one just above the limit takes longer to be sure of.
* ``max_latency_ratio``: the share of the canary's answers slower than ``ratio × the primary's
  p95`` against 5% (the share above its own p95 when ``canary p95 = ratio × primary p95``), once
  both arms have ``min_samples`` latencies. The primary's p95 is estimated as it goes.

Promotion. When the canary reaches ``max_samples`` judged requests without a rollback, it is
promoted (``auto_promote``) or ``passed`` (a person decides). It is never promoted early: the
mirror test (the same statistic over ``θ > θ0``) would stop an equal canary after about a third of
``max_samples`` with the same error bound, but a promotion sends all traffic to the canary for
good, the judge's scores drift with the time of day and the mix of questions, and the error and
latency limits get their full sample only at the horizon; so the horizon is the policy's
``max_samples``, as its name says. A canary that reaches it with a mean drop beyond
``max_drop`` that the test could not confirm is ``passed``, not auto-promoted; so is one whose
primary has fewer than ``min_samples`` judged requests. A decision is made once per rollout: after
it the rollout takes no more data.
"""
from __future__ import annotations

import math
from bisect import bisect_right, insort
from dataclasses import dataclass, field

from scipy.special import betainc, betaln

from llmops.v1 import events_pb2, inference_pb2

SCORE = "faithfulness"
TIER = "cheap"
MIN_SAMPLES = 30
MAX_SAMPLES = 500
MAX_DROP = 0.05
ALPHA = 0.01
VARIANCE_FLOOR = 1e-4          # per arm: scores that are all equal still have some uncertainty
LATENCY_QUANTILE = 0.95
MAX_TRACES = 200_000           # trace ids a rollout remembers (for deduplication and late scores)
MAX_EARLY_SCORES = 50_000      # scores held until their completion comes
ARMS = ("primary", "canary")
TEST = "msprt"

ROLLBACK = events_pb2.ROLLOUT_DECISION_ROLLBACK
PROMOTE = events_pb2.ROLLOUT_DECISION_PROMOTE
PASSED = events_pb2.ROLLOUT_DECISION_PASSED


@dataclass(frozen=True)
class Policy:
    """A :class:`inference_pb2.RolloutPolicy` with its defaults filled in."""
    score: str = SCORE
    tier: str = TIER
    min_samples: int = MIN_SAMPLES
    max_samples: int = MAX_SAMPLES
    max_drop: float = MAX_DROP
    alpha: float = ALPHA
    max_error_rate: float | None = None
    max_latency_ratio: float | None = None
    auto_promote: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.score:
            problems.append("score is empty")
        if self.min_samples < 2:
            problems.append(f"min_samples must be at least 2, got {self.min_samples}")
        if self.max_samples < self.min_samples:
            problems.append(f"max_samples ({self.max_samples}) is below min_samples ({self.min_samples})")
        if not 0 < self.max_drop < 1:
            problems.append(f"max_drop must be in (0, 1), got {self.max_drop:g}")
        if not 0 < self.alpha < 1:
            problems.append(f"alpha must be in (0, 1), got {self.alpha:g}")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate < 1:
            problems.append(f"max_error_rate must be in [0, 1), got {self.max_error_rate:g}")
        if self.max_latency_ratio is not None and not self.max_latency_ratio > 0:
            problems.append(f"max_latency_ratio must be positive, got {self.max_latency_ratio:g}")
        if problems:
            raise ValueError("rollout policy: " + "; ".join(problems))

    @classmethod
    def of(cls, p: inference_pb2.RolloutPolicy | None) -> Policy:
        """The policy a route's canary names (zeros and empty strings take the defaults)."""
        if p is None:
            return cls()
        return cls(score=p.score or SCORE, tier=p.tier or TIER, min_samples=p.min_samples or MIN_SAMPLES,
                   max_samples=p.max_samples or MAX_SAMPLES, max_drop=p.max_drop or MAX_DROP, alpha=p.alpha or ALPHA,
                   max_error_rate=p.max_error_rate if p.HasField("max_error_rate") else None,
                   max_latency_ratio=p.max_latency_ratio if p.HasField("max_latency_ratio") else None,
                   auto_promote=p.auto_promote)

    def to_proto(self) -> inference_pb2.RolloutPolicy:
        out = inference_pb2.RolloutPolicy(score=self.score, tier=self.tier, min_samples=self.min_samples,
                                          max_samples=self.max_samples, max_drop=self.max_drop, alpha=self.alpha,
                                          auto_promote=self.auto_promote)
        if self.max_error_rate is not None:
            out.max_error_rate = self.max_error_rate
        if self.max_latency_ratio is not None:
            out.max_latency_ratio = self.max_latency_ratio
        return out

    @property
    def threshold(self) -> float:
        return 1.0 / self.alpha

    @property
    def theta0(self) -> float:
        return -self.max_drop

    @property
    def tau2(self) -> float:
        return self.max_drop ** 2


# -- the tests -----------------------------------------------------------------------------------
def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _exp(log_value: float) -> float:
    return math.exp(min(log_value, 700.0))


def msprt(d: float, v: float, theta0: float, tau2: float) -> float:
    """The two-sided normal-mixture likelihood ratio Λ of ``θ = theta0`` for an estimate ``d`` of
    variance ``v`` (the formula of the module docstring)."""
    return _exp(0.5 * math.log(v / (v + tau2)) + tau2 * (d - theta0) ** 2 / (2.0 * v * (v + tau2)))


def msprt_below(d: float, v: float, theta0: float, tau2: float) -> float:
    """Λ₋: the mixture over ``θ < theta0`` only (half-normal), the rollback statistic."""
    below = _norm_cdf(-(d - theta0) * math.sqrt(tau2) / math.sqrt(v * (v + tau2)))
    if below <= 0.0:
        return 0.0
    log_two_sided = 0.5 * math.log(v / (v + tau2)) + tau2 * (d - theta0) ** 2 / (2.0 * v * (v + tau2))
    return _exp(math.log(2.0) + log_two_sided + math.log(below))


def rate_above(k: int, n: int, p0: float) -> float:
    """Likelihood ratio of "the rate is above ``p0``" (a uniform mixture over ``(p0, 1]``) against
    the rate ``p0``, after ``k`` events in ``n`` trials. Exact Bernoulli likelihood; ``p0 = 0``
    makes any event decisive."""
    if n == 0:
        return 1.0
    if p0 <= 0.0:
        return math.inf if k else 1.0 / (n + 1)
    upper = betainc(n - k + 1, k + 1, 1.0 - p0)          # P(p > p0) under Beta(k+1, n-k+1)
    if upper <= 0.0:
        return 0.0
    log_mix = betaln(k + 1, n - k + 1) + math.log(upper) - math.log(1.0 - p0)
    log_null = k * math.log(p0) + (n - k) * math.log1p(-p0)
    return _exp(log_mix - log_null)


# -- what a rollout gathers ----------------------------------------------------------------------
@dataclass
class Moments:
    """Count, mean and sum of squared deviations (Welford), O(1) per value."""
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def variance(self) -> float:
        return max(self.m2 / (self.n - 1) if self.n > 1 else 0.0, VARIANCE_FLOOR)


@dataclass
class Arm:
    scores: Moments = field(default_factory=Moments)
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)   # sorted

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile of the latencies (0 when there are none)."""
        if not self.latencies:
            return 0.0
        return self.latencies[max(0, math.ceil(q * len(self.latencies)) - 1)]


@dataclass
class _Trace:
    arm: str
    comparable: bool       # answered by the arm's own deployment, without error
    scored: bool = False


@dataclass(frozen=True)
class Verdict:
    decision: int          # events_pb2.RolloutDecision
    reason: str


class Rollout:
    """One route revision's canary against its primary: the requests and judged scores of each
    arm, joined by trace id, and the decision once there is one.

    :meth:`completion` and :meth:`score` may come in either order and more than once (the stream
    is at-least-once): a trace counts once, its score once. Each call that adds data checks the
    policy; the first verdict is kept in :attr:`verdict` and the rollout takes nothing more."""

    def __init__(self, policy: Policy, *, max_traces: int = MAX_TRACES, max_early: int = MAX_EARLY_SCORES) -> None:
        self.policy = policy
        self.arms = {a: Arm() for a in ARMS}
        self.verdict: Verdict | None = None
        self.decided_evidence: events_pb2.RolloutEvidence | None = None
        self._traces: dict[str, _Trace] = {}
        self._early: dict[str, float] = {}
        self._max_traces = max_traces
        self._max_early = max_early

    def knows(self, trace_id: str) -> bool:
        return trace_id in self._traces

    def completion(self, trace_id: str, arm: str, *, error: bool = False, fallback: bool = False,
                   latency_ms: float = 0.0) -> bool:
        """A request of ``arm`` (its completion). False when it does not count: decided, another
        arm (shadow), or seen before."""
        if self.verdict is not None or arm not in self.arms or trace_id in self._traces:
            return False
        a = self.arms[arm]
        a.requests += 1
        comparable = not error and not fallback
        if not comparable:
            a.errors += 1
        elif latency_ms > 0 and math.isfinite(latency_ms):
            insort(a.latencies, float(latency_ms))
        self._traces[trace_id] = t = _Trace(arm, comparable)
        if len(self._traces) > self._max_traces:
            del self._traces[next(iter(self._traces))]
        early = self._early.pop(trace_id, None)
        if early is not None and comparable:
            t.scored = True
            a.scores.add(early)
        self.check()
        return True

    def score(self, trace_id: str, value: float) -> bool:
        """The compared score of a trace. One whose completion has not come yet is held until it
        does; False when it does not count (decided, not comparable, already scored)."""
        if self.verdict is not None or not math.isfinite(value):
            return False
        t = self._traces.get(trace_id)
        if t is None:
            self._early[trace_id] = float(value)
            if len(self._early) > self._max_early:
                del self._early[next(iter(self._early))]
            return False
        if not t.comparable or t.scored:
            return False
        t.scored = True
        self.arms[t.arm].scores.add(float(value))
        self.check()
        return True

    # -- the statistics ---------------------------------------------------------------------------
    def statistic(self) -> float:
        """Λ₋ of the score test (1 before both arms have two judged requests)."""
        c, p = self.arms["canary"].scores, self.arms["primary"].scores
        if c.n < 2 or p.n < 2:
            return 1.0
        v = c.variance / c.n + p.variance / p.n
        return msprt_below(c.mean - p.mean, v, self.policy.theta0, self.policy.tau2)

    def evidence(self) -> events_pb2.RolloutEvidence:
        if self.decided_evidence is not None:
            return self.decided_evidence
        c, p = self.arms["canary"], self.arms["primary"]
        return events_pb2.RolloutEvidence(
            score=self.policy.score, canary_n=c.scores.n, primary_n=p.scores.n, canary_mean=c.scores.mean,
            primary_mean=p.scores.mean, difference=c.scores.mean - p.scores.mean if c.scores.n and p.scores.n else 0.0,
            max_drop=self.policy.max_drop, test=TEST, statistic=self.statistic(), threshold=self.policy.threshold,
            canary_error_rate=c.errors / c.requests if c.requests else 0.0,
            canary_p95_latency_ms=c.quantile(LATENCY_QUANTILE), primary_p95_latency_ms=p.quantile(LATENCY_QUANTILE),
            canary_requests=c.requests, canary_errors=c.errors,
        )

    def check(self) -> Verdict | None:
        """Decide if the policy says so; the verdict (also kept in :attr:`verdict`) or None."""
        if self.verdict is None:
            v = self._decide()
            if v is not None:
                self.decided_evidence = self.evidence()
                self.verdict = v
                self._traces.clear()   # it takes nothing more
                self._early.clear()
        return self.verdict

    def _decide(self) -> Verdict | None:
        pol = self.policy
        c, p = self.arms["canary"], self.arms["primary"]
        if pol.max_error_rate is not None and c.requests >= pol.min_samples:
            lr = rate_above(c.errors, c.requests, pol.max_error_rate)
            if c.errors / c.requests > pol.max_error_rate and lr >= pol.threshold:
                return Verdict(ROLLBACK, f"canary error rate {c.errors / c.requests:.1%} ({c.errors} of {c.requests} "
                                         f"requests failed or fell back) is above the limit {pol.max_error_rate:.1%} "
                                         f"(sequential test {_g(lr)} >= {_g(pol.threshold)})")
        if (pol.max_latency_ratio is not None and len(c.latencies) >= pol.min_samples
                and len(p.latencies) >= pol.min_samples):
            limit = pol.max_latency_ratio * p.quantile(LATENCY_QUANTILE)
            slow = len(c.latencies) - bisect_right(c.latencies, limit)
            share = 1.0 - LATENCY_QUANTILE
            lr = rate_above(slow, len(c.latencies), share)
            if slow / len(c.latencies) > share and lr >= pol.threshold:
                return Verdict(ROLLBACK, f"canary p95 latency {c.quantile(LATENCY_QUANTILE):.0f} ms is above "
                                         f"{pol.max_latency_ratio:g} x the primary's {p.quantile(LATENCY_QUANTILE):.0f} ms "
                                         f"({slow} of {len(c.latencies)} answers slower than {limit:.0f} ms; "
                                         f"sequential test {_g(lr)} >= {_g(pol.threshold)})")
        nc, np_ = c.scores.n, p.scores.n
        d = c.scores.mean - p.scores.mean
        if nc >= pol.min_samples and np_ >= pol.min_samples:
            lam = self.statistic()
            if d < pol.theta0 and lam >= pol.threshold:
                return Verdict(ROLLBACK, f"{pol.score} ({pol.tier}) canary mean {c.scores.mean:.3f} vs primary "
                                         f"{p.scores.mean:.3f}: a drop of {-d:.3f} > max_drop {pol.max_drop:g} "
                                         f"(mSPRT {_g(lam)} >= {_g(pol.threshold)}, {nc} canary / {np_} primary judged)")
        if nc >= pol.max_samples:
            if np_ < pol.min_samples:
                return Verdict(PASSED, f"{nc} canary requests judged without a rollback, but only {np_} of the "
                                       f"primary's (min_samples {pol.min_samples}): not promoted automatically")
            if d < pol.theta0:
                return Verdict(PASSED, f"{nc} canary requests judged without a rollback, but its {pol.score} mean "
                                       f"{c.scores.mean:.3f} is {-d:.3f} below the primary's (max_drop {pol.max_drop:g}): "
                                       f"not promoted automatically")
            held = (f"{pol.score} ({pol.tier}) canary mean {c.scores.mean:.3f} vs primary {p.scores.mean:.3f} "
                    f"over {nc} / {np_} judged requests: no drop beyond {pol.max_drop:g}")
            if pol.auto_promote:
                return Verdict(PROMOTE, f"held: {held}; promoted")
            return Verdict(PASSED, f"held: {held}; auto_promote is off, a person decides")
        return None


def _g(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"
