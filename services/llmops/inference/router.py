"""What one inference replica serves routes with: the :class:`RouteTable` it applies from the
store and the config topic, one model backend per distinct endpoint (opened on first use and
shared by every deployment version that points at the same endpoint), and its circuit breakers."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Awaitable, Callable

from llmops.backends.protocol import ModelBackend, ModelLimits
from llmops.common import metrics
from llmops.common.errors import NotFound, Unavailable
from llmops.inference.routing import ARM_PRIMARY, CircuitBreakers, Plan, RouteTable, circuit_of, key_of
from llmops.v1 import events_pb2, inference_pb2

log = logging.getLogger(__name__)

#: opens the model backend of a deployment version (the composition root builds it from settings)
OpenBackend = Callable[[inference_pb2.Deployment], Awaitable[ModelBackend]]


def endpoint_key(d: inference_pb2.Deployment) -> tuple:
    """Deployment versions with the same endpoint share one backend (one llama.cpp model in memory)."""
    return d.backend, d.model_path, d.url, d.remote_model, d.api_key_env, d.timeout_s


class Router:
    def __init__(self, table: RouteTable, open_backend: OpenBackend, default_route: str,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.table = table
        self._open = open_backend
        self.default_route = default_route
        self.rng = rng or random.Random()
        self.circuits = CircuitBreakers(clock, self._circuit_changed)
        self._backends: dict[tuple, ModelBackend] = {}
        self._opening: dict[tuple, asyncio.Lock] = {}

    @classmethod
    def of_backends(cls, backends: dict[str, ModelBackend], default_route: str, **kw) -> "Router":
        """A router over ready backends, one deployment (version 1) and one route per name: how a
        replica without a deployment store (tests, embedding the engine) serves fixed models."""
        table = RouteTable()
        by_key: dict[tuple, ModelBackend] = {}
        for name, b in backends.items():
            d = inference_pb2.Deployment(name=name, version=1, backend=b.kind, description="fixed backend",
                                         remote_model=name)
            table.put_deployment(d)
            table.put_route(inference_pb2.Route(name=name, revision=1,
                                                primary=inference_pb2.DeploymentRef(name=name, version=1)))
            by_key[endpoint_key(d)] = b

        async def fixed(d: inference_pb2.Deployment) -> ModelBackend:
            return by_key[endpoint_key(d)]

        router = cls(table, fixed, default_route, **kw)
        router._backends.update(by_key)
        return router

    # -- the request path -----------------------------------------------------------------------
    def plan(self, name: str, session_id: str = "", user_id: str = "", with_shadow: bool = True) -> Plan:
        return self.table.plan(name or self.default_route, session_id, user_id, self.rng, with_shadow)

    async def backend(self, d: inference_pb2.Deployment) -> ModelBackend:
        key = endpoint_key(d)
        b = self._backends.get(key)
        if b is not None:
            return b
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            b = self._backends.get(key)
            if b is None:
                b = self._backends[key] = await self._open(d)
                log.info("opened the %s backend of deployment %s@%d", d.backend, d.name, d.version)
        return b

    async def limits(self, d: inference_pb2.Deployment) -> ModelLimits | None:
        """The deployment's token limits, or None while its server cannot say (it may be down).
        Asked off the event loop: a remote backend's first answer is a blocking HTTP call."""
        try:
            backend = await self.backend(d)
            return await asyncio.to_thread(backend.limits)
        except Unavailable:
            return None

    def allow(self, d: inference_pb2.Deployment) -> bool:
        return self.circuits.allow(key_of(d))

    def record(self, route: inference_pb2.Route, d: inference_pb2.Deployment, ok: bool) -> None:
        threshold, cooldown = circuit_of(route)
        self.circuits.record(key_of(d), ok, threshold, cooldown)

    def abandon(self, route: inference_pb2.Route, d: inference_pb2.Deployment) -> None:
        """An attempt that ended without an outcome for the circuit (see :meth:`CircuitBreakers.abandon`)."""
        self.circuits.abandon(key_of(d), circuit_of(route)[1])

    @staticmethod
    def _circuit_changed(key: tuple[str, int], is_open: bool) -> None:
        metrics.CIRCUIT_OPEN.labels(key[0], str(key[1])).set(1 if is_open else 0)
        log.warning("circuit of deployment %s@%d %s", key[0], key[1], "opened" if is_open else "closed again")

    # -- what it serves -------------------------------------------------------------------------
    def primary_of(self, name: str) -> inference_pb2.Deployment:
        """The primary deployment of route ``name`` (the default route for ""); NOT_FOUND otherwise."""
        plan = self.table.plan(name or self.default_route, "", "", self.rng, with_shadow=False)
        return next((d for d in plan.candidates if key_of(d) == key_of(plan.route.primary)), plan.candidates[0])

    def route_names(self) -> list[str]:
        return self.table.names()

    def has_route(self, name: str) -> bool:
        return (name or self.default_route) in self.table.routes

    def check_model(self, name: str) -> None:
        if not self.has_route(name):
            raise NotFound(f"model {name or self.default_route!r} not found; routes: "
                           f"{', '.join(self.route_names()) or '(none)'}")

    def apply(self, records: list[events_pb2.ConfigRecord]) -> list[events_pb2.ConfigRecord]:
        """Apply config records (deployments first, so a route never points at one not yet held);
        returns those that changed something."""
        changed = []
        for r in sorted(records, key=lambda r: r.WhichOneof("item") != "deployment"):
            kind = r.WhichOneof("item")
            if kind == "deployment" and self.table.put_deployment(r.deployment):
                changed.append(r)
            elif kind == "route" and self.table.put_route(r.route):
                changed.append(r)
                log.info("route %s now at revision %d (primary %s@%d%s)", r.route.name, r.route.revision,
                         r.route.primary.name, r.route.primary.version,
                         f", canary {r.route.canary.deployment.name}@{r.route.canary.deployment.version} "
                         f"{r.route.canary.percent:g}%" if r.route.HasField("canary") else "")
        return changed

    def close(self) -> None:
        for b in self._backends.values():
            try:
                b.close()
            except Exception:   # closing is best effort at shutdown
                log.exception("closing a model backend failed")
        self._backends.clear()


__all__ = ["Router", "ARM_PRIMARY", "endpoint_key"]
