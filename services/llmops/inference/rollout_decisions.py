"""Applies the rollout monitor's decisions (``DeploymentEvent`` on ``<prefix>deployments``): a
consumer group of the inference replicas, so one replica applies each decision; applying twice is
harmless (a decision only applies while the route is at the revision it judged)."""
from __future__ import annotations

import asyncio
import logging

from llmops.common.envelope import Record, UndecodableMessage
from llmops.common.events import read_event
from llmops.common.stream import Rejected
from llmops.inference.deployment_admin import DeploymentAdmin
from llmops.v1 import events_pb2

log = logging.getLogger(__name__)

GROUP = "inference-rollouts"
RETRIES = 5


class RolloutDecisions:
    def __init__(self, admin: DeploymentAdmin, retry_s: float = 1.0) -> None:
        self.admin = admin
        self.retry_s = retry_s
        self.applied = 0

    async def handle(self, records: list[Record]) -> list[Rejected]:
        rejected = []
        for r in records:
            try:
                ev = read_event(r, events_pb2.DeploymentEvent)
            except UndecodableMessage as exc:
                rejected.append(Rejected(r, str(exc)))
                continue
            for attempt in range(1, RETRIES + 1):
                try:
                    route = await self.admin.apply_decision(ev)
                    break
                except Exception as exc:   # the store or Kafka away: retried, then parked with the reason
                    if attempt == RETRIES:
                        rejected.append(Rejected(r, f"rollout decision could not be applied: {exc!r}",
                                                 type(exc).__name__))
                        route = None
                        break
                    log.warning("rollout decision %s: applying failed (%s); retrying", ev.id, exc)
                    await asyncio.sleep(self.retry_s * attempt)
            if route is not None:
                self.applied += 1
                log.warning("route %s: rollout decision %s applied as revision %d: %s", ev.route, ev.id,
                            route.revision, route.reason)
        return rejected
