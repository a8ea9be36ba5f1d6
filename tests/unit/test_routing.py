"""Routes, pure: checking and resolving, the arm a request takes, retry backoff, circuit breakers,
the table's monotonic apply, and deployment defaults under request parameters."""
from __future__ import annotations

import random

import pytest

from llmops.backends.protocol import GenerationParams
from llmops.common.errors import InvalidArgument, NotFound
from llmops.inference.params import with_defaults
from llmops.inference.routing import (ARM_CANARY, ARM_PRIMARY, CircuitBreakers, RetrySpec, RouteTable, bucket,
                                      check_deployment, check_route, takes_canary)
from llmops.v1 import events_pb2, inference_pb2

Ref = inference_pb2.DeploymentRef
STORED = {"a": 3, "b": 1, "c": 2}   # name -> newest version


def resolve(ref: inference_pb2.DeploymentRef, where: str) -> inference_pb2.Deployment:
    if ref.name not in STORED or ref.version > STORED[ref.name]:
        raise NotFound(f"{where}: no deployment {ref.name!r}")
    return inference_pb2.Deployment(name=ref.name, version=ref.version or STORED[ref.name], backend="tgi")


def route(**kw) -> inference_pb2.Route:
    r = inference_pb2.Route(name="chat", primary=Ref(name="a"))
    for k, v in kw.items():
        if isinstance(v, list):
            getattr(r, k).extend(v)
        elif hasattr(v, "DESCRIPTOR"):
            getattr(r, k).CopyFrom(v)
        else:
            setattr(r, k, v)
    return r


def test_a_route_resolves_version_zero_to_the_newest_and_keeps_pinned_versions():
    out = check_route(route(fallbacks=[Ref(name="b", version=1), Ref(name="c")]), resolve)
    assert (out.primary.name, out.primary.version) == ("a", 3)
    assert [(f.name, f.version) for f in out.fallbacks] == [("b", 1), ("c", 2)]


@pytest.mark.parametrize("bad, message", [
    (route(primary=Ref()), "no primary"),
    (inference_pb2.Route(name="chat"), "no primary"),
    (route(name="bad name!"), "route name"),
    (route(fallbacks=[Ref(name="a")]), "cycle"),
    (route(fallbacks=[Ref(name="b"), Ref(name="b", version=1)]), "cycle"),
    (route(fallbacks=[Ref(name="b")] * 6), "limit is 5"),
    (route(canary=inference_pb2.Canary(deployment=Ref(name="b"), percent=150)), "canary.percent"),
    (route(canary=inference_pb2.Canary(deployment=Ref(name="b"), percent=-1)), "canary.percent"),
    (route(canary=inference_pb2.Canary(deployment=Ref(name="a"), percent=10)), "the primary itself"),
    (route(canary=inference_pb2.Canary(deployment=Ref(name="b"), percent=10, sticky="tenant")), "sticky"),
    (route(shadow=inference_pb2.Shadow(deployment=Ref(name="b"), percent=101)), "shadow.percent"),
    (route(retry=inference_pb2.RetryPolicy(attempts=11)), "attempts"),
    (route(retry=inference_pb2.RetryPolicy(multiplier=0.5)), "multiplier"),
    (route(attempt_timeout_s=-1), "attempt_timeout_s"),
    (route(deadline_s=float("nan")), "deadline_s"),
    (route(canary=inference_pb2.Canary(deployment=Ref(name="b"), percent=5,
                                       policy=inference_pb2.RolloutPolicy(min_samples=50, max_samples=10))),
     "min_samples"),
    (route(canary=inference_pb2.Canary(deployment=Ref(name="b"), percent=5,
                                       policy=inference_pb2.RolloutPolicy(alpha=1.5))), "alpha"),
])
def test_bad_routes_are_invalid_argument_naming_the_problem(bad, message):
    with pytest.raises(InvalidArgument, match=message):
        check_route(bad, resolve)


def test_an_unknown_deployment_is_not_found():
    with pytest.raises(NotFound, match="fallbacks\\[0\\]"):
        check_route(route(fallbacks=[Ref(name="zzz")]), resolve)


@pytest.mark.parametrize("d, message", [
    (inference_pb2.Deployment(name="x", backend="vllm"), "backend"),
    (inference_pb2.Deployment(name="x", backend="tgi"), "needs `url`"),
    (inference_pb2.Deployment(name="x", backend="llama_cpp", url="http://h"), "model_path"),
    (inference_pb2.Deployment(name="", backend="llama_cpp"), "name"),
    (inference_pb2.Deployment(name="x", backend="openai", url="http://h/v1", prompt_price_per_m=-1), "prompt_price"),
    (inference_pb2.Deployment(name="x", backend="openai", url="http://h/v1", api_key_env="lower"), "api_key_env"),
])
def test_bad_deployments_are_invalid_argument(d, message):
    with pytest.raises(InvalidArgument, match=message):
        check_deployment(d)


def test_backoff_is_exponential_capped_and_jittered():
    spec = RetrySpec.of(inference_pb2.RetryPolicy(attempts=5, initial_backoff_s=0.1, max_backoff_s=0.5, multiplier=2))
    rng = random.Random(1)
    for retry, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)):
        waits = [spec.backoff(retry, rng) for _ in range(2000)]
        assert 0 <= min(waits) and max(waits) <= cap
        assert max(waits) > 0.9 * cap and min(waits) < 0.1 * cap   # full jitter spreads over [0, cap]
    assert RetrySpec.of(inference_pb2.RetryPolicy()).attempts == 1
    assert RetrySpec.of(inference_pb2.RetryPolicy(retry_on=[inference_pb2.RETRY_ON_TIMEOUT])).retry_on == {"timeout"}


def test_a_circuit_opens_after_the_threshold_lets_one_trial_through_after_the_cooldown_and_closes():
    now = [100.0]
    changes = []
    cb = CircuitBreakers(lambda: now[0], lambda key, is_open: changes.append(is_open))
    key = ("a", 1)
    for _ in range(2):
        cb.record(key, ok=False, threshold=3, cooldown_s=10)
    assert cb.allow(key)                      # 2 failures < 3
    cb.record(key, ok=False, threshold=3, cooldown_s=10)
    assert not cb.allow(key) and changes == [True]
    now[0] += 9.9
    assert not cb.allow(key)
    now[0] += 0.2
    assert cb.allow(key)                      # the trial
    assert not cb.allow(key)                  # only one trial at a time
    cb.record(key, ok=False, threshold=3, cooldown_s=10)   # the trial failed: open again at once
    assert not cb.allow(key)
    now[0] += 10.1
    assert cb.allow(key)
    cb.record(key, ok=True, threshold=3, cooldown_s=10)
    assert cb.allow(key) and cb.allow(key) and changes == [True, False]
    cb.record(("b", 1), ok=False, threshold=0, cooldown_s=10)   # threshold 0: no breaker
    assert cb.allow(("b", 1))


def test_a_success_resets_the_failure_count():
    cb = CircuitBreakers(lambda: 0.0)
    for ok in (False, False, True, False, False):
        cb.record(("a", 1), ok, threshold=3, cooldown_s=1)
    assert cb.allow(("a", 1))


def test_the_canary_takes_its_percentage_and_sticky_keys_stay_on_one_side():
    r = route(canary=inference_pb2.Canary(deployment=Ref(name="b", version=1), percent=20))
    rng = random.Random(7)
    n = 20_000
    share = sum(takes_canary(r, "", "", rng) for _ in range(n)) / n
    assert abs(share - 0.2) < 4 * (0.2 * 0.8 / n) ** 0.5
    sticky = route(canary=inference_pb2.Canary(deployment=Ref(name="b", version=1), percent=20, sticky="session"))
    sides = {s: takes_canary(sticky, s, "", rng) for s in (f"s{i}" for i in range(2000))}
    assert all(takes_canary(sticky, s, "", rng) == side for s, side in sides.items())
    assert abs(sum(sides.values()) / len(sides) - 0.2) < 0.05
    assert bucket("chat", "s1") == bucket("chat", "s1") != bucket("other", "s1")
    # a request without the sticky key draws at random rather than all landing on one side
    assert 0 < sum(takes_canary(sticky, "", "", rng) for _ in range(1000)) < 1000


def _table() -> RouteTable:
    t = RouteTable()
    for name, v in (("a", 1), ("a", 2), ("b", 1)):
        t.put_deployment(inference_pb2.Deployment(name=name, version=v, backend="tgi", url="http://h"))
    return t


def test_the_table_applies_routes_monotonically_and_plans_the_canary_arm_with_the_primary_behind_it():
    t = _table()
    assert t.put_route(inference_pb2.Route(name="chat", revision=2, primary=Ref(name="a", version=1)))
    assert not t.put_route(inference_pb2.Route(name="chat", revision=1, primary=Ref(name="b", version=1)))
    assert t.routes["chat"].primary.name == "a"
    t.put_route(inference_pb2.Route(name="chat", revision=3, primary=Ref(name="a", version=1),
                                    fallbacks=[Ref(name="b", version=1)],
                                    canary=inference_pb2.Canary(deployment=Ref(name="a", version=2), percent=100)))
    plan = t.plan("chat", "", "", random.Random(0))
    assert plan.arm == ARM_CANARY
    assert [(d.name, d.version) for d in plan.candidates] == [("a", 2), ("a", 1), ("b", 1)]
    t.put_route(inference_pb2.Route(name="chat", revision=4, primary=Ref(name="a", version=1)))
    assert t.plan("chat", "", "", random.Random(0)).arm == ARM_PRIMARY
    with pytest.raises(NotFound, match="routes: chat"):
        t.plan("nope", "", "", random.Random(0))


def test_config_records_apply_deployments_before_routes_in_one_batch():
    from llmops.inference.router import Router

    async def never(d):
        raise AssertionError("no backend is opened by applying config")

    router = Router(RouteTable(), never, "chat")
    changed = router.apply([
        events_pb2.ConfigRecord(route=inference_pb2.Route(name="chat", revision=1, primary=Ref(name="a", version=1))),
        events_pb2.ConfigRecord(deployment=inference_pb2.Deployment(name="a", version=1, backend="tgi", url="http://h")),
    ])
    assert len(changed) == 2 and router.primary_of("").name == "a"
    assert router.apply(changed) == []   # a replay changes nothing


def test_deployment_defaults_fill_only_what_the_request_left_unset():
    defaults = inference_pb2.GenerationParameters(max_new_tokens=32, temperature=0.7, stop=["\n"], seed=3)
    p = with_defaults(GenerationParams(max_new_tokens=128), defaults, explicit=frozenset())
    assert (p.max_new_tokens, p.temperature, p.stop, p.seed) == (32, pytest.approx(0.7), ("\n",), 3)
    mine = with_defaults(GenerationParams(max_new_tokens=10, temperature=0.1, stop=("END",)), defaults,
                         explicit=frozenset({"max_new_tokens", "temperature", "stop"}))
    assert (mine.max_new_tokens, mine.temperature, mine.stop, mine.seed) == (10, 0.1, ("END",), 3)
    # a caller that does not say what it set (the OpenAI door) keeps its max_new_tokens
    assert with_defaults(GenerationParams(max_new_tokens=99), defaults, explicit=None).max_new_tokens == 99
