"""The registry's use cases: register deployments, set and roll back routes, move prompt labels,
apply rollout decisions. Each change is checked, stored (with who and why), applied on this
replica at once, and published on the compacted config topic, which every other replica follows
(:class:`~llmops.common.config_feed.ConfigFeed`), so it is live everywhere within about a second.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import Protocol

from google.protobuf.message import Message

from llmops.common.config_feed import config_key
from llmops.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from llmops.inference.config_store import DeploymentStore, RevisionConflict
from llmops.inference.params import validate_parameters
from llmops.inference.prompts import PromptRegistry, PromptTemplate
from llmops.inference.router import Router
from llmops.inference.routing import check_deployment, check_route, ref_text
from llmops.v1 import events_pb2, inference_pb2

log = logging.getLogger(__name__)

ROLLOUT_MONITOR = "rollout-monitor"
MAX_BY = 200


class Sender(Protocol):
    async def send(self, topic: str, key: str, message: Message, traceparent: str = "") -> None: ...


def prompt_record(t: PromptTemplate) -> events_pb2.ConfigRecord:
    return events_pb2.ConfigRecord(prompt=inference_pb2.PromptTemplate(
        name=t.name, version=t.version, system=t.system, user=t.user, labels=list(t.labels), created_at=t.created_at))


class DeploymentAdmin:
    def __init__(self, store: DeploymentStore, router: Router, prompts: PromptRegistry, sender: Sender,
                 config_topic: str) -> None:
        self.store = store
        self.router = router
        self.prompts = prompts
        self.sender = sender
        self.config_topic = config_topic
        self._lock = asyncio.Lock()   # one change at a time on this replica (the store referees across replicas)
        # what this replica published and has applied already: when the feed brings it back it is skipped,
        # else an older echo (a label moved twice in a row) would undo the newer change for a moment
        self._echoes: collections.Counter[bytes] = collections.Counter()

    # -- start-up -------------------------------------------------------------------------------
    async def load(self) -> None:
        """Apply what the store holds (before the config topic's records, which may be newer)."""
        deployments = await asyncio.to_thread(self.store.deployments, "", True)
        routes = await asyncio.to_thread(self.store.current_routes)
        self.router.apply([events_pb2.ConfigRecord(deployment=d) for d in deployments]
                          + [events_pb2.ConfigRecord(route=r) for r in routes])

    async def bootstrap(self, deployment: inference_pb2.Deployment, route_name: str) -> None:
        """With no route of that name yet, register ``deployment`` (the settings' model) and a route
        to it, so a fresh install serves its default model; an existing route is left as it is."""
        current = self.router.table.routes.get(route_name)
        if current is not None:
            held = self.router.table.deployment(current.primary)
            if current.changed_by != "settings" or (held is not None and _same_endpoint(held, deployment)):
                return   # set by a person (or unchanged): the settings do not override it
        stored = await asyncio.to_thread(self.store.deployments, deployment.name)
        d = next((x for x in stored if _same_endpoint(x, deployment)), None)
        if d is None:
            d = await self.register_deployment(deployment, "settings")
        route = inference_pb2.Route(name=route_name, primary=inference_pb2.DeploymentRef(name=d.name, version=d.version))
        await self.set_route(route, "settings", "the model LLMOPS_MODEL_* configure" + (
            " (changed since the last start)" if current is not None else ", on first start"))

    # -- deployments ----------------------------------------------------------------------------
    async def register_deployment(self, d: inference_pb2.Deployment, by: str = "") -> inference_pb2.Deployment:
        check_deployment(d)
        if d.HasField("default_parameters"):
            validate_parameters(d.default_parameters, 1)   # INVALID_ARGUMENT with TGI's message
        if d.prompt_template:
            self.prompts.resolve(d.prompt_template, d.prompt_version if d.HasField("prompt_version") else None)
        d = _copy(d)
        d.created_by = _by(by or d.created_by)
        d.ClearField("created_at")
        async with self._lock:
            stored = await asyncio.to_thread(self.store.add_deployment, d)
            await self._publish([events_pb2.ConfigRecord(deployment=stored)])
        log.info("deployment %s@%d registered by %s (%s %s)", stored.name, stored.version, stored.created_by,
                 stored.backend, stored.url or stored.model_path or "embedded model")
        return stored

    async def get_deployment(self, ref: inference_pb2.DeploymentRef) -> inference_pb2.Deployment:
        return await self._deployment(ref, "deployment")

    async def list_deployments(self, name: str = "", all_versions: bool = False) -> list[inference_pb2.Deployment]:
        return await asyncio.to_thread(self.store.deployments, name, all_versions)

    async def _deployment(self, ref: inference_pb2.DeploymentRef, where: str) -> inference_pb2.Deployment:
        d = await asyncio.to_thread(self.store.deployment, ref.name, ref.version)
        if d is None:
            known = await asyncio.to_thread(self.store.deployments, ref.name, True) if ref.name else []
            if known:
                raise NotFound(f"{where}: deployment {ref.name!r} has no version {ref.version}; versions: "
                               f"{', '.join(str(x.version) for x in known)}")
            names = sorted({x.name for x in await asyncio.to_thread(self.store.deployments)})
            raise NotFound(f"{where}: no deployment {ref.name!r}; registered: {', '.join(names) or '(none)'}")
        return d

    # -- routes ---------------------------------------------------------------------------------
    async def set_route(self, route: inference_pb2.Route, by: str = "", reason: str = "",
                        expected_revision: int | None = None) -> inference_pb2.Route:
        resolved: dict[str, inference_pb2.Deployment] = {}

        def resolve(ref: inference_pb2.DeploymentRef, where: str) -> inference_pb2.Deployment:
            return resolved[where]

        # resolve every reference first (the store is not touched from the checking code)
        for where, ref in _refs(route):
            if ref.name:
                resolved[where] = await self._deployment(ref, where)
        if len(reason) > 1000:
            raise InvalidArgument(f"reason is {len(reason)} chars; the limit is 1000")
        checked = check_route(route, resolve)
        checked.changed_by = _by(by or route.changed_by)
        checked.reason = reason or route.reason
        checked.ClearField("restored_from")
        if expected_revision is not None and expected_revision < 0:
            raise InvalidArgument(f"expected_revision must be >= 0, got {expected_revision}")
        return await self._store_route(checked, expected_revision)

    async def _store_route(self, route: inference_pb2.Route, expected_revision: int | None = None) -> inference_pb2.Route:
        async with self._lock:
            stored = await asyncio.to_thread(self.store.add_route, route, expected_revision)
            await self._publish([events_pb2.ConfigRecord(route=stored)])
        log.info("route %s revision %d by %s: %s", stored.name, stored.revision, stored.changed_by,
                 stored.reason or "(no reason given)")
        return stored

    async def get_route(self, name: str, revision: int = 0) -> inference_pb2.Route:
        r = await asyncio.to_thread(self.store.route, name, revision)
        if r is None:
            if revision and await asyncio.to_thread(self.store.route, name):
                raise NotFound(f"route {name!r} has no revision {revision}")
            raise NotFound(f"no route {name!r}; routes: {', '.join(self.router.route_names()) or '(none)'}")
        return r

    async def list_routes(self, name: str = "") -> list[inference_pb2.Route]:
        if name:
            history = await asyncio.to_thread(self.store.route_history, name)
            if not history:
                raise NotFound(f"no route {name!r}; routes: {', '.join(self.router.route_names()) or '(none)'}")
            return history
        return await asyncio.to_thread(self.store.current_routes)

    async def rollback(self, name: str, to_revision: int = 0, by: str = "", reason: str = "") -> inference_pb2.Route:
        """A new revision that copies ``to_revision`` (default: the one before the current, or before
        the one the current restored)."""
        current = await self.get_route(name)
        target = to_revision or ((current.restored_from or current.revision) - 1)
        if target < 1:
            raise FailedPrecondition(f"route {name!r} is at revision {current.revision}; there is no earlier one")
        if target >= current.revision:
            raise InvalidArgument(f"to_revision must be below the current revision {current.revision}, got {target}")
        old = await self.get_route(name, target)
        new = _copy(old)
        new.changed_by = _by(by)
        new.reason = reason or f"rollback to revision {target}"
        new.restored_from = target
        if len(new.reason) > 1000:
            raise InvalidArgument(f"reason is {len(new.reason)} chars; the limit is 1000")
        return await self._store_route(new, current.revision)

    async def apply_decision(self, ev: events_pb2.DeploymentEvent) -> inference_pb2.Route | None:
        """A rollout decision as a new route revision: rollback drops the canary, promote makes it the
        primary. Applied only while the route is still at the revision the decision judged."""
        current = await asyncio.to_thread(self.store.route, ev.route)
        if current is None or current.revision != ev.route_revision or not current.HasField("canary"):
            log.info("rollout decision %s on %s revision %d not applied: the route is now at revision %s",
                     ev.id, ev.route, ev.route_revision, current.revision if current else "(none)")
            return None
        if ev.decision == events_pb2.ROLLOUT_DECISION_PASSED:
            log.info("rollout decision %s: canary of %s passed (%s); auto_promote is off", ev.id, ev.route, ev.reason)
            return None
        new = _copy(current)
        canary = inference_pb2.DeploymentRef()
        canary.CopyFrom(current.canary.deployment)
        new.ClearField("canary")
        new.ClearField("restored_from")
        new.changed_by = ROLLOUT_MONITOR
        if ev.decision == events_pb2.ROLLOUT_DECISION_ROLLBACK:
            new.reason = f"rollback of canary {ref_text(canary)} ({ev.id}): {ev.reason}"[:1000]
        elif ev.decision == events_pb2.ROLLOUT_DECISION_PROMOTE:
            new.primary.CopyFrom(canary)
            keep = [f for f in current.fallbacks if f.name != canary.name]
            del new.fallbacks[:]
            new.fallbacks.extend(keep)
            new.reason = f"promotion of canary {ref_text(canary)} ({ev.id}): {ev.reason}"[:1000]
        else:
            raise InvalidArgument(f"rollout decision {ev.decision} is not rollback, promote or passed")
        try:
            return await self._store_route(new, current.revision)
        except RevisionConflict:   # a person changed the route meanwhile: their change stands
            log.info("rollout decision %s on %s not applied: the route changed meanwhile", ev.id, ev.route)
            return None

    # -- prompts --------------------------------------------------------------------------------
    async def register_prompt(self, name: str, system: str, user: str, labels: list[str]) -> PromptTemplate:
        t = await asyncio.to_thread(self.prompts.register, name, system, user, labels)
        await self._publish([prompt_record(t)] + [_label_record(name, lb, t.version) for lb in t.labels])
        return t

    async def set_prompt_label(self, name: str, version: int, label: str) -> PromptTemplate:
        t = await asyncio.to_thread(self.prompts.set_label, name, version, label)
        await self._publish([_label_record(name, label, version)])
        log.info("prompt %s: label %s now on version %d", name, label, version)
        return t

    # -- the config topic ----------------------------------------------------------------------
    async def _publish(self, records: list[events_pb2.ConfigRecord]) -> None:
        self.router.apply(records)   # live here at once; the feed brings it to the others
        try:
            for r in records:
                raw = r.SerializeToString()
                self._echoes[raw] += 1
                try:
                    await self.sender.send(self.config_topic, config_key(r), r)
                except Exception:
                    self._echoes[raw] -= 1   # never published: no echo will come back
                    raise
        except Exception as exc:
            raise Unavailable(f"the change is stored and live on this replica, but could not be published to "
                              f"{self.config_topic} for the other replicas: {exc}; repeat it when Kafka is back") from exc

    async def apply_records(self, records: list[events_pb2.ConfigRecord]) -> None:
        """What the config feed brings: applied to the router, mirrored into this replica's stores
        (idempotent, so a shared store is unaffected). This replica's own changes are skipped."""
        fresh = []
        for r in records:
            raw = r.SerializeToString()
            if self._echoes[raw] > 0:
                self._echoes[raw] -= 1
                if not self._echoes[raw]:
                    del self._echoes[raw]
                continue
            fresh.append(r)
        records = fresh
        changed = self.router.apply(records)
        for r in records:
            kind = r.WhichOneof("item")
            if kind == "prompt":
                p = r.prompt
                await asyncio.to_thread(self.prompts.put, PromptTemplate(p.name, p.version, p.system, p.user, (),
                                                                         p.created_at))
            elif kind == "label":
                try:
                    await asyncio.to_thread(self.prompts.set_label, r.label.name, r.label.version, r.label.label)
                except NotFound as exc:
                    log.error("config feed: label %s of prompt %s: %s", r.label.label, r.label.name, exc)
        for r in changed:
            kind = r.WhichOneof("item")
            if kind == "deployment":
                await asyncio.to_thread(self.store.put_deployment, r.deployment)
            elif kind == "route":
                await asyncio.to_thread(self.store.put_route, r.route)


def _label_record(name: str, label: str, version: int) -> events_pb2.ConfigRecord:
    rec = events_pb2.ConfigRecord(label=events_pb2.PromptLabel(name=name, label=label, version=version))
    rec.label.set_at.GetCurrentTime()
    return rec


def _refs(route: inference_pb2.Route):
    yield "primary", route.primary
    for n, f in enumerate(route.fallbacks):
        yield f"fallbacks[{n}]", f
    if route.HasField("canary"):
        yield "canary", route.canary.deployment
    if route.HasField("shadow"):
        yield "shadow", route.shadow.deployment


def _same_endpoint(a: inference_pb2.Deployment, b: inference_pb2.Deployment) -> bool:
    return (a.backend, a.url, a.model_path, a.remote_model) == (b.backend, b.url, b.model_path, b.remote_model)


def _copy(m):
    out = type(m)()
    out.CopyFrom(m)
    return out


def _by(by: str) -> str:
    by = (by or "api").strip()
    if len(by) > MAX_BY:
        raise InvalidArgument(f"changed_by is {len(by)} chars; the limit is {MAX_BY}")
    return by
