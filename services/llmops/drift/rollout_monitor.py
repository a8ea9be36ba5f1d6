"""The rollout monitor: the drift service's streaming consumer of canary rollouts. It watches the
routes on the config topic, gathers each canary's requests and judge scores from the stream the
drift join already reads, decides with :mod:`llmops.drift.rollout`, and publishes the decision.

* **Routes.** :meth:`RolloutMonitor.apply_config` takes the ``ConfigRecord`` s of the compacted
  config topic (``route/<name>``: the route's current revision) from a
  :class:`~llmops.common.config_feed.ConfigFeed`, which reads it from the start and follows it. A revision with a canary (a deployment
  and a percentage above 0) starts a rollout; a newer revision of the route ends the rollouts of
  the older ones (their data is of another configuration). A revision decided before (the drift
  store keeps the decisions) does not start again.
* **Data.** :meth:`RolloutMonitor.observe` is called by :meth:`DriftEngine.handle` for every
  completion and score, before the join: it does not wait for the join's close. A completion
  counts in the rollout of its (route, route revision), by its arm; its trace id joins the score of
  the policy's name and tier that comes before or after it. Errored completions reach only this
  monitor (the engine keeps them out of the join). Completions of a revision whose config record
  has not been seen yet are not counted.
* **Decisions.** Each is a ``DeploymentEvent`` on ``{prefix}deployments`` keyed by route (sent
  and acknowledged, then stored), counted in ``llmops_rollout_decisions_total`` and logged. The
  inference service applies a rollback or a promotion as a new route revision, which ends this
  rollout here. A decision that could not be published is retried by :meth:`flush` (each handled
  batch and the engine's sweeper call it).

State is in memory: a restart gathers each running rollout again from the requests that come
after it (decided revisions are not decided again). One drift worker must see all partitions of
the completions and scores topics: several drift workers would each decide on their share.
"""
from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Protocol

from llmops.common import metrics
from llmops.common.bus import EventPublisher
from llmops.common.errors import NotFound
from llmops.common.times import now_us, us_to_ts
from llmops.drift.rollout import ARMS, PASSED, PROMOTE, ROLLBACK, Policy, Rollout
from llmops.v1 import common_pb2, drift_pb2, events_pb2, inference_pb2

log = logging.getLogger(__name__)

MAX_UNROUTED_SCORES = 20_000   # scores without route fields whose completion has not come yet

STATES = {ROLLBACK: "rolled_back", PROMOTE: "promoted", PASSED: "passed"}
DECISION_LABELS = {ROLLBACK: "rollback", PROMOTE: "promote", PASSED: "passed"}


class UnknownRollout(NotFound):
    pass


class DecisionStore(Protocol):
    """Where decisions are kept (:class:`llmops.drift.store.DriftStore`)."""

    def save_deployment_event(self, ev: events_pb2.DeploymentEvent) -> bool: ...

    def deployment_events(self, route: str = "") -> list[events_pb2.DeploymentEvent]: ...


@dataclass
class LiveRollout:
    route: inference_pb2.Route           # the revision it is about
    policy: Policy
    stats: Rollout
    started_us: int
    announced: bool = False              # its decision was queued for publishing

    @property
    def key(self) -> tuple[str, int]:
        return self.route.name, self.route.revision


@dataclass
class _Unrouted:
    scores: dict[str, tuple[str, str, float]] = field(default_factory=dict)   # trace id -> (name, tier, value)


def has_canary(route: inference_pb2.Route) -> bool:
    return route.HasField("canary") and bool(route.canary.deployment.name) and route.canary.percent > 0


class RolloutMonitor:
    def __init__(self, store: DecisionStore, sender: EventPublisher, *, topic_prefix: str = "llmops.") -> None:
        self.store = store
        self.sender = sender
        self.topic = f"{topic_prefix}deployments"
        self.routes: dict[str, inference_pb2.Route] = {}            # current revision of each route seen
        self.live: dict[tuple[str, int], LiveRollout] = {}
        self.ended: dict[str, LiveRollout] = {}                       # the last rollout of a route, once it ended
        self.decisions: dict[str, list[events_pb2.DeploymentEvent]] = {}   # stored, newest first
        self.pending: list[events_pb2.DeploymentEvent] = []           # decided, not yet published
        self.known: set[str] = set()                                  # routes with a canary ever seen
        self._unrouted = _Unrouted()
        self._touched: set[tuple[str, int]] = set()
        self._flush_lock = asyncio.Lock()
        # set once the config topic has been read up to its end (at once without a feed); the engine waits for it
        self.config_ready = asyncio.Event()
        self.config_ready.set()
        self._feed = None

    # -- start ----------------------------------------------------------------------------------
    def follow(self, feed) -> None:
        """Take the routes from ``feed`` (a :class:`llmops.common.config_feed.ConfigFeed` calling
        :meth:`apply_config`): until its ``start()`` has caught up, the engine waits."""
        self._feed = feed
        self.config_ready.clear()

    async def start(self) -> None:
        if self._feed is not None:
            await self._feed.start()
        self.config_ready.set()

    async def stop(self) -> None:
        if self._feed is not None:
            await self._feed.stop()

    async def load(self) -> None:
        """The decisions stored before (a restart does not decide those revisions again)."""
        events = await asyncio.to_thread(self.store.deployment_events)
        for ev in events:   # newest first
            self.decisions.setdefault(ev.route, []).append(ev)
            self.known.add(ev.route)
        if events:
            log.info("rollouts: %d decisions restored (%s)", len(events), ", ".join(sorted(self.decisions)))

    def _decided(self, route: str, revision: int) -> events_pb2.DeploymentEvent | None:
        return next((d for d in self.decisions.get(route, []) if d.route_revision == revision), None)

    # -- config ---------------------------------------------------------------------------------
    async def apply_config(self, records: list[events_pb2.ConfigRecord]) -> None:
        """Routes from the config topic: start the rollout of a revision with a canary, end those
        of revisions a newer one replaced."""
        for rec in records:
            if rec.WhichOneof("item") != "route":
                continue
            self._apply_route(rec.route)

    def _apply_route(self, r: inference_pb2.Route) -> None:
        prev = self.routes.get(r.name)
        if prev is not None and prev.revision > r.revision:
            return   # an older revision than the one applied (a replay): nothing changes
        self.routes[r.name] = r
        for key in [k for k in self.live if k[0] == r.name and k[1] != r.revision]:
            self._end(self.live.pop(key), f"revision {r.revision} replaced it")
        if not has_canary(r) or (r.name, r.revision) in self.live:
            return
        self.known.add(r.name)
        if self._decided(r.name, r.revision):
            return
        try:
            policy = Policy.of(r.canary.policy if r.canary.HasField("policy") else None)
        except ValueError as exc:
            log.error("route %s revision %d: canary not judged: %s", r.name, r.revision, exc)
            return
        lr = LiveRollout(r, policy, Rollout(policy), now_us())
        self.live[lr.key] = lr
        self.ended.pop(r.name, None)
        self._export(lr)
        c, p = r.canary.deployment, r.primary
        log.info("rollout of route %s revision %d: canary %s v%d (%g%%) against primary %s v%d on %s (%s), "
                 "min %d, max %d judged, max_drop %g, alpha %g%s", r.name, r.revision, c.name, c.version,
                 r.canary.percent, p.name, p.version, policy.score, policy.tier, policy.min_samples,
                 policy.max_samples, policy.max_drop, policy.alpha, ", auto-promote" if policy.auto_promote else "")

    def _end(self, lr: LiveRollout, why: str) -> None:
        self.ended[lr.route.name] = lr
        if lr.stats.verdict is None:
            ev = lr.stats.evidence()
            log.info("rollout of route %s revision %d ended undecided (%s): canary %d judged, mean %.3f vs %.3f",
                     lr.route.name, lr.route.revision, why, ev.canary_n, ev.canary_mean, ev.primary_mean)

    # -- data -----------------------------------------------------------------------------------
    def observe(self, event: events_pb2.CompletionEvent | events_pb2.ScoreEvent | events_pb2.FeedbackEvent) -> None:
        """One event of the drift service's input topics, as it arrives."""
        if isinstance(event, events_pb2.CompletionEvent):
            self._completion(event)
        elif isinstance(event, events_pb2.ScoreEvent):
            self._score(event)

    def _completion(self, c: events_pb2.CompletionEvent) -> None:
        if c.arm not in ARMS or not self.live:
            return
        lr = self.live.get((c.route, c.route_revision))
        if lr is None:
            return
        if lr.stats.completion(c.trace_id, c.arm, error=bool(c.error), fallback=c.fallback, latency_ms=c.latency_ms):
            held = self._unrouted.scores.pop(c.trace_id, None)
            if held is not None and held[:2] == (lr.policy.score, lr.policy.tier):
                lr.stats.score(c.trace_id, held[2])
            self._after(lr)

    def _score(self, s: events_pb2.ScoreEvent) -> None:
        if not self.live or s.score.status == common_pb2.SCORE_STATUS_ERROR or not math.isfinite(s.score.value):
            return
        tid, name, tier = s.trace_id, s.score.name, s.tier
        for lr in self.live.values():   # the completion's arm decides, as the join does: by trace id
            if lr.stats.knows(tid):
                if (name, tier) == (lr.policy.score, lr.policy.tier):
                    lr.stats.score(tid, s.score.value)
                    self._after(lr)
                return
        # its completion has not come yet: hold it where it will be looked for
        lr = self.live.get((s.route, s.route_revision)) if s.route else None
        if lr is not None:
            if (name, tier) == (lr.policy.score, lr.policy.tier):
                lr.stats.score(tid, s.score.value)
        elif not s.route and any((name, tier) == (x.policy.score, x.policy.tier) and x.stats.verdict is None
                                 for x in self.live.values()):
            held = self._unrouted.scores
            held[tid] = (name, tier, float(s.score.value))
            if len(held) > MAX_UNROUTED_SCORES:
                del held[next(iter(held))]

    def _after(self, lr: LiveRollout) -> None:
        self._touched.add(lr.key)
        v = lr.stats.verdict
        if v is None or lr.announced:
            return
        lr.announced = True
        r = lr.route
        self.pending.append(events_pb2.DeploymentEvent(
            id=f"rollout:{r.name}:{r.revision}", route=r.name, route_revision=r.revision, decision=v.decision,
            canary=r.canary.deployment, primary=r.primary, reason=v.reason, timestamp=us_to_ts(now_us()),
            evidence=lr.stats.evidence()))

    # -- decisions out --------------------------------------------------------------------------
    async def flush(self) -> int:
        """Export the touched rollouts' gauges; publish (acknowledged) and store the decisions
        made. Returns how many went out; one that fails stays pending for the next call."""
        for key in self._touched:
            lr = self.live.get(key)
            if lr is not None:
                self._export(lr)
        self._touched.clear()
        sent = 0
        async with self._flush_lock:
            while self.pending:
                ev = self.pending[0]
                try:
                    await self.sender.send_many([(self.topic, ev.route, ev, "")])
                    await asyncio.to_thread(self.store.save_deployment_event, ev)
                except Exception:
                    log.exception("rollout decision for route %s revision %d not published yet; retrying later",
                                  ev.route, ev.route_revision)
                    break
                self.pending.pop(0)
                self.decisions.setdefault(ev.route, []).insert(0, ev)
                metrics.ROLLOUT_DECISIONS.labels(ev.route, DECISION_LABELS[ev.decision]).inc()
                e = ev.evidence
                log.log(logging.WARNING if ev.decision == ROLLBACK else logging.INFO,
                        "rollout of route %s revision %d: %s canary %s v%d: %s [%s n=%d/%d mean %.3f/%.3f "
                        "statistic %.3g threshold %g]", ev.route, ev.route_revision,
                        DECISION_LABELS[ev.decision].upper(), ev.canary.name, ev.canary.version, ev.reason,
                        e.score, e.canary_n, e.primary_n, e.canary_mean, e.primary_mean, e.statistic, e.threshold)
                sent += 1
        return sent

    def _export(self, lr: LiveRollout) -> None:
        name = lr.route.name
        ev = lr.stats.evidence()
        for arm, n, m in (("canary", ev.canary_n, ev.canary_mean), ("primary", ev.primary_n, ev.primary_mean)):
            metrics.ROLLOUT_SAMPLES.labels(name, arm).set(n)
            metrics.ROLLOUT_SCORE_MEAN.labels(name, arm).set(m)
        metrics.ROLLOUT_STATISTIC.labels(name).set(ev.statistic)
        metrics.ROLLOUT_THRESHOLD.labels(name).set(ev.threshold)
        for label in DECISION_LABELS.values():   # a zero before the first decision: increase() sees the first one
            metrics.ROLLOUT_DECISIONS.labels(name, label)

    # -- the API --------------------------------------------------------------------------------
    def status(self, route: str = "") -> list[drift_pb2.RolloutStatus]:
        """Each route's rollout: the running one with its evidence so far, or the last one and its
        decision, with every stored decision of the route (newest first). NOT_FOUND for a route
        with no canary seen."""
        if route and route not in self.known:
            known = ", ".join(sorted(self.known)) or "none yet"
            raise UnknownRollout(f"no canary seen for route {route!r}; routes with a canary: {known}")
        return [self._status(name) for name in ([route] if route else sorted(self.known))]

    def _status(self, name: str) -> drift_pb2.RolloutStatus:
        decisions = self.decisions.get(name, [])
        st = drift_pb2.RolloutStatus(route=name, decisions=decisions)
        cur = self.routes.get(name)
        lr = self.live.get((name, cur.revision)) if cur is not None else None
        if lr is None:
            lr = self.ended.get(name)
        decided = self._decided(name, lr.route.revision) if lr is not None else None
        newest = decisions[0] if decisions else None
        if lr is not None and (newest is None or lr.route.revision >= newest.route_revision):
            st.route_revision = lr.route.revision
            st.canary.CopyFrom(lr.route.canary.deployment)
            st.primary.CopyFrom(lr.route.primary)
            st.policy.CopyFrom(lr.policy.to_proto())
            st.evidence.CopyFrom(decided.evidence if decided is not None else lr.stats.evidence())
            if decided is not None:
                st.state = STATES[decided.decision]
            elif lr.stats.verdict is not None:
                st.state = STATES[lr.stats.verdict.decision]   # decided, being published
            else:
                st.state = "gathering" if lr.key in self.live else "none"
        elif newest is not None:
            st.route_revision = newest.route_revision
            st.canary.CopyFrom(newest.canary)
            st.primary.CopyFrom(newest.primary)
            st.evidence.CopyFrom(newest.evidence)
            st.state = STATES[newest.decision]
            if cur is not None and cur.revision == newest.route_revision and cur.HasField("canary"):
                st.policy.CopyFrom(Policy.of(cur.canary.policy if cur.canary.HasField("policy") else None).to_proto())
        else:
            st.state = "none"
        return st
