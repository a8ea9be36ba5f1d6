"""Routes, pure: what a `model` name is served by, checked and resolved; which arm a request takes;
the retry schedule; the circuit breakers. No I/O here: the engine runs the attempts, the admin use
case stores and publishes, :class:`RouteTable` is what every replica holds in memory.

A route (``llmops.v1.Route``) names a primary deployment version, ordered fallbacks, a retry
policy, a per-attempt timeout and a deadline, a circuit breaker, and optionally a canary (a
deployment and a percentage, sticky per session or user) and a shadow (a deployment that gets a
copy of a sample of the requests).

Limits (each violation is INVALID_ARGUMENT, an unknown deployment NOT_FOUND): names 1-100 of
``[A-Za-z0-9_.-]`` (routes may also use ``:`` and ``/``, as model ids do); at most
:data:`MAX_FALLBACKS` fallbacks, none repeated nor equal to the primary (a cycle); attempts 1-10;
backoff 0-60 s; timeouts and deadline 0-3600 s; percentages 0-100; failure threshold 0-1000;
cooldown 0-3600 s; reason <= 1000 chars.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from llmops.common.errors import InvalidArgument, NotFound
from llmops.v1 import inference_pb2

DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
ROUTE_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,100}$")
BACKENDS = ("llama_cpp", "tgi", "openai")
MAX_FALLBACKS = 5
MAX_TEXT = 1000

ARM_PRIMARY, ARM_CANARY, ARM_SHADOW = "primary", "canary", "shadow"
UNAVAILABLE, TIMEOUT, RATE_LIMITED = "unavailable", "timeout", "rate_limited"
RETRY_KINDS = {inference_pb2.RETRY_ON_UNAVAILABLE: UNAVAILABLE, inference_pb2.RETRY_ON_TIMEOUT: TIMEOUT,
               inference_pb2.RETRY_ON_RATE_LIMITED: RATE_LIMITED}

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_COOLDOWN_S = 30.0


def ref_text(ref: inference_pb2.DeploymentRef | inference_pb2.Deployment) -> str:
    return f"{ref.name}@{ref.version}" if ref.version else ref.name


def key_of(d: inference_pb2.Deployment | inference_pb2.DeploymentRef) -> tuple[str, int]:
    return d.name, d.version


# -- checking ------------------------------------------------------------------------------------
def _in(value: float, lo: float, hi: float, what: str) -> None:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise InvalidArgument(f"{what} must be between {lo:g} and {hi:g}, got {value:g}")


def check_deployment(d: inference_pb2.Deployment) -> None:
    """INVALID_ARGUMENT naming the first field that is wrong."""
    if not DEPLOYMENT_NAME.match(d.name):
        raise InvalidArgument(f"deployment name {d.name!r} must be 1-100 of letters, digits, '_', '-', '.'")
    if d.backend not in BACKENDS:
        raise InvalidArgument(f"deployment backend {d.backend!r} is not one of {', '.join(BACKENDS)}")
    if d.backend in ("tgi", "openai"):
        if not d.url.startswith(("http://", "https://")):
            raise InvalidArgument(f"a {d.backend} deployment needs `url`, the server's http(s):// base URL; got {d.url!r}")
    elif d.url:
        raise InvalidArgument("a llama_cpp deployment runs in-process: set `model_path`, not `url`")
    if len(d.url) > 2048 or len(d.model_path) > 4096 or len(d.remote_model) > 200:
        raise InvalidArgument("url (2048), model_path (4096) or remote_model (200 chars) is too long")
    if len(d.description) > MAX_TEXT:
        raise InvalidArgument(f"description is {len(d.description)} chars; the limit is {MAX_TEXT}")
    _in(d.timeout_s, 0, 3600, "timeout_s")
    for price in ("prompt_price_per_m", "completion_price_per_m"):
        if d.HasField(price):
            _in(getattr(d, price), 0, 1e6, price)
    if d.HasField("prompt_version") and d.prompt_version < 1:
        raise InvalidArgument(f"prompt_version must be >= 1 when set, got {d.prompt_version}")
    if d.api_key_env and not re.match(r"^[A-Z_][A-Z0-9_]{0,100}$", d.api_key_env):
        raise InvalidArgument(f"api_key_env {d.api_key_env!r} is not an environment variable name")


def check_route(route: inference_pb2.Route,
                resolve: Callable[[inference_pb2.DeploymentRef, str], inference_pb2.Deployment]) -> inference_pb2.Route:
    """``route`` checked, with every deployment reference resolved to a stored version (version 0
    = the newest). ``resolve(ref, where)`` raises NOT_FOUND for an unknown deployment."""
    if not ROUTE_NAME.match(route.name):
        raise InvalidArgument(f"route name {route.name!r} must be 1-100 of letters, digits, '_', '-', '.', ':', '/'")
    if not route.HasField("primary") or not route.primary.name:
        raise InvalidArgument(f"route {route.name!r} has no primary deployment: set `primary`")
    out = inference_pb2.Route()
    out.CopyFrom(route)
    out.primary.CopyFrom(_resolved(resolve, route.primary, "primary"))
    if len(route.fallbacks) > MAX_FALLBACKS:
        raise InvalidArgument(f"route {route.name!r} has {len(route.fallbacks)} fallbacks; the limit is {MAX_FALLBACKS}")
    seen = {out.primary.name: "primary"}
    del out.fallbacks[:]
    for n, ref in enumerate(route.fallbacks):
        r = _resolved(resolve, ref, f"fallbacks[{n}]")
        if r.name in seen:
            raise InvalidArgument(f"fallbacks[{n}] names deployment {r.name!r}, which is already the route's "
                                  f"{seen[r.name]}: a cycle; each deployment may appear once")
        seen[r.name] = f"fallbacks[{n}]"
        out.fallbacks.add().CopyFrom(r)
    rp = route.retry
    if rp.attempts and not 1 <= rp.attempts <= 10:
        raise InvalidArgument(f"retry.attempts must be between 1 and 10, got {rp.attempts}")
    _in(rp.initial_backoff_s, 0, 60, "retry.initial_backoff_s")
    _in(rp.max_backoff_s, 0, 60, "retry.max_backoff_s")
    if rp.multiplier and not (math.isfinite(rp.multiplier) and 1 <= rp.multiplier <= 10):
        raise InvalidArgument(f"retry.multiplier must be between 1 and 10, got {rp.multiplier:g}")
    for kind in rp.retry_on:
        if kind not in RETRY_KINDS:
            raise InvalidArgument(f"retry.retry_on has {kind}; use RETRY_ON_UNAVAILABLE, _TIMEOUT or _RATE_LIMITED")
    _in(route.attempt_timeout_s, 0, 3600, "attempt_timeout_s")
    _in(route.deadline_s, 0, 3600, "deadline_s")
    if route.HasField("circuit"):
        if not 0 <= route.circuit.failure_threshold <= 1000:
            raise InvalidArgument(f"circuit.failure_threshold must be between 0 and 1000, got {route.circuit.failure_threshold}")
        _in(route.circuit.cooldown_s, 0, 3600, "circuit.cooldown_s")
    if route.HasField("canary"):
        c = route.canary
        _in(c.percent, 0, 100, "canary.percent")
        if c.sticky not in ("", "session", "user"):
            raise InvalidArgument(f"canary.sticky is {c.sticky!r}; use \"\", \"session\" or \"user\"")
        d = _resolved(resolve, c.deployment, "canary")
        if d.name == out.primary.name and d.version == out.primary.version:
            raise InvalidArgument(f"the canary {ref_text(d)} is the primary itself; a canary is another version")
        out.canary.deployment.CopyFrom(d)
        p = c.policy
        if p.min_samples < 0 or p.max_samples < 0 or (p.max_samples and p.min_samples > p.max_samples):
            raise InvalidArgument(f"canary.policy: need 0 <= min_samples <= max_samples, got {p.min_samples} and {p.max_samples}")
        _in(p.max_drop, 0, 1e6, "canary.policy.max_drop")
        if p.alpha and not 0 < p.alpha < 1:
            raise InvalidArgument(f"canary.policy.alpha must be in (0, 1), got {p.alpha:g}")
        if p.HasField("max_error_rate"):
            _in(p.max_error_rate, 0, 1, "canary.policy.max_error_rate")
        if p.HasField("max_latency_ratio"):
            _in(p.max_latency_ratio, 1, 1000, "canary.policy.max_latency_ratio")
    if route.HasField("shadow"):
        _in(route.shadow.percent, 0, 100, "shadow.percent")
        out.shadow.deployment.CopyFrom(_resolved(resolve, route.shadow.deployment, "shadow"))
    if len(route.reason) > MAX_TEXT:
        raise InvalidArgument(f"reason is {len(route.reason)} chars; the limit is {MAX_TEXT}")
    return out


def _resolved(resolve, ref: inference_pb2.DeploymentRef, where: str) -> inference_pb2.DeploymentRef:
    if not ref.name:
        raise InvalidArgument(f"{where} names no deployment")
    if ref.version < 0:
        raise InvalidArgument(f"{where}: version must be >= 0 (0 = newest), got {ref.version}")
    d = resolve(ref, where)
    return inference_pb2.DeploymentRef(name=d.name, version=d.version)


# -- retries and circuit breakers ----------------------------------------------------------------
@dataclass(frozen=True)
class RetrySpec:
    attempts: int = 1
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    retry_on: frozenset[str] = frozenset({UNAVAILABLE, TIMEOUT, RATE_LIMITED})

    @classmethod
    def of(cls, p: inference_pb2.RetryPolicy) -> RetrySpec:
        return cls(attempts=p.attempts or 1, initial_backoff_s=p.initial_backoff_s or 0.1,
                   max_backoff_s=p.max_backoff_s or 2.0, multiplier=p.multiplier or 2.0,
                   retry_on=frozenset(RETRY_KINDS[k] for k in p.retry_on) or cls.retry_on)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (1 = the second attempt): exponential, capped, with
        full jitter (uniform in [0, cap]) so that replicas retrying together spread out."""
        cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return rng.uniform(0.0, cap)


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    trial: bool = False      # half-open: one request is trying


class CircuitBreakers:
    """Per deployment version, on this replica: ``threshold`` failures in a row open the circuit;
    while open the deployment is skipped; after the cooldown one trial request goes through
    (half-open) and its outcome closes or re-opens the circuit."""

    def __init__(self, clock: Callable[[], float], on_change: Callable[[tuple[str, int], bool], None] | None = None) -> None:
        self.clock = clock
        self.on_change = on_change or (lambda key, is_open: None)
        self._state: dict[tuple[str, int], _Breaker] = {}

    def allow(self, key: tuple[str, int]) -> bool:
        b = self._state.get(key)
        if b is None or b.open_until == 0.0:
            return True
        if self.clock() < b.open_until or b.trial:
            return False
        b.trial = True           # half-open: this request is the trial
        return True

    def is_open(self, key: tuple[str, int]) -> bool:
        b = self._state.get(key)
        return b is not None and b.open_until != 0.0

    def abandon(self, key: tuple[str, int], cooldown_s: float) -> None:
        """The half-open trial ended with neither an answer nor a failure of the deployment's (the
        client's deadline passed or it went away, or the request was refused): open for another
        cooldown, so the deployment gets a later trial, and one that hangs is not tried by every
        request meanwhile. Nothing changes for a request that was not the trial."""
        b = self._state.get(key)
        if b is not None and b.trial:
            b.trial = False
            b.open_until = self.clock() + cooldown_s

    def record(self, key: tuple[str, int], ok: bool, threshold: int, cooldown_s: float) -> None:
        b = self._state.setdefault(key, _Breaker())
        was_open = b.open_until != 0.0
        b.trial = False
        if ok:
            b.failures, b.open_until = 0, 0.0
            if was_open:
                self.on_change(key, False)
            return
        b.failures += 1
        if threshold and (b.failures >= threshold or was_open):
            b.open_until = self.clock() + cooldown_s
            if not was_open:
                self.on_change(key, True)


def circuit_of(route: inference_pb2.Route) -> tuple[int, float]:
    """(failure threshold, cooldown) of a route: 5 and 30 s unless set; threshold 0 = off."""
    if not route.HasField("circuit"):
        return DEFAULT_FAILURE_THRESHOLD, DEFAULT_COOLDOWN_S
    return route.circuit.failure_threshold, route.circuit.cooldown_s or DEFAULT_COOLDOWN_S


# -- choosing the arm ----------------------------------------------------------------------------
def bucket(route: str, key: str) -> float:
    """A stable point in [0, 100) for ``key`` on ``route``: the same session (or user) always lands
    on the same side of any split of that route."""
    h = hashlib.blake2b(f"{route}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2 ** 64 * 100.0


def takes_canary(route: inference_pb2.Route, session_id: str, user_id: str, rng: random.Random) -> bool:
    if not route.HasField("canary") or route.canary.percent <= 0:
        return False
    sticky = {"session": session_id, "user": user_id}.get(route.canary.sticky, "")
    point = bucket(route.name, sticky) if sticky else rng.random() * 100.0
    return point < route.canary.percent


def takes_shadow(route: inference_pb2.Route, rng: random.Random) -> bool:
    return route.HasField("shadow") and route.shadow.percent > 0 and rng.random() * 100.0 < route.shadow.percent


@dataclass
class Plan:
    """How one request is served: the arm, the deployments to try in order, the shadow's copy."""
    route: inference_pb2.Route
    arm: str
    candidates: list[inference_pb2.Deployment]
    shadow: inference_pb2.Deployment | None = None
    retry: RetrySpec = field(default_factory=RetrySpec)


# -- what a replica holds ------------------------------------------------------------------------
class RouteTable:
    """The current routes and every deployment version, as applied from the store and the config
    topic. Applying is monotonic: an older route revision than the one held is ignored, so records
    replayed or arriving twice (the feed after a local write) change nothing."""

    def __init__(self) -> None:
        self.deployments: dict[tuple[str, int], inference_pb2.Deployment] = {}
        self.routes: dict[str, inference_pb2.Route] = {}

    def put_deployment(self, d: inference_pb2.Deployment) -> bool:
        if key_of(d) in self.deployments:
            return False
        self.deployments[key_of(d)] = d
        return True

    def put_route(self, r: inference_pb2.Route) -> bool:
        held = self.routes.get(r.name)
        if held is not None and held.revision >= r.revision:
            return False
        self.routes[r.name] = r
        return True

    def deployment(self, ref: inference_pb2.DeploymentRef) -> inference_pb2.Deployment | None:
        if ref.version:
            return self.deployments.get((ref.name, ref.version))
        versions = [d for (n, _), d in self.deployments.items() if n == ref.name]
        return max(versions, key=lambda d: d.version) if versions else None

    def names(self) -> list[str]:
        return sorted(self.routes)

    def plan(self, name: str, session_id: str, user_id: str, rng: random.Random, with_shadow: bool = True) -> Plan:
        route = self.routes.get(name)
        if route is None:
            raise NotFound(f"model {name!r} not found; routes: {', '.join(self.names()) or '(none)'}")
        canary = takes_canary(route, session_id, user_id, rng)
        refs: Iterable[inference_pb2.DeploymentRef] = (
            [route.canary.deployment, route.primary, *route.fallbacks] if canary else [route.primary, *route.fallbacks])
        candidates = []
        for ref in refs:
            d = self.deployments.get(key_of(ref))
            if d is None:   # a route is only set over stored deployments; a replica may lag a moment
                continue
            candidates.append(d)
        if not candidates:
            raise NotFound(f"route {name!r} revision {route.revision}: none of its deployments is known to this replica yet")
        shadow = None
        if with_shadow and takes_shadow(route, rng):
            shadow = self.deployments.get(key_of(route.shadow.deployment))
        return Plan(route, ARM_CANARY if canary else ARM_PRIMARY, candidates, shadow, RetrySpec.of(route.retry))
