"""Routes under faults, end to end: the real inference service (and tracing, for GetTrace) running
in-process on the embedded broker and SQLite, with deployments registered and routes set through the
admin RPCs, served by TGI wire fakes that answer 503 / 429 or hang on command
(tests/fakes/tgi_server.py) and by llama-cpp-python's real OpenAI-compatible server, killed and
restarted mid-test. What a user checks: which deployment answered and after how many attempts, one
``generation`` span per attempt in ``GetTrace``, open circuits in the metrics, the client's deadline
kept, canary splits, shadows on their own trace, and every bad admin request refused with a message
that names the problem. Live changes across replicas are in test_routing_replicas.py."""
from __future__ import annotations

import contextlib
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from llmops.cli.client import Client, generate_request
from llmops.common.metrics import REGISTRY
from llmops.inference.main import build as build_inference
from llmops.tracing.main import build as build_tracing
from llmops.v1 import common_pb2, events_pb2, inference_pb2
from tests.fakes.tgi_server import FakeTgiConfig, FakeTgiServer
from tests.support import (consume_until, free_port, llama_openai_process, make_settings, running_services,
                           wait_until)

B_WORDS = "Bravo answers come from the fallback deployment and only from it , every time .".split()
SHADOW_WORDS = "Umbra penumbra eclipse dusk gloaming twilight murk shade nightfall obscura".split()   # none in PASSAGE
DEFAULT_ROUTE = "routing-default"
U, T, R = inference_pb2.RETRY_ON_UNAVAILABLE, inference_pb2.RETRY_ON_TIMEOUT, inference_pb2.RETRY_ON_RATE_LIMITED


@pytest.fixture(scope="module")
def base_tgi():
    with FakeTgiServer() as server:
        yield server


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory, base_tgi):
    """Tracing and inference; the settings' model is a TGI fake, so no model is loaded in-process."""
    s = make_settings(tmp_path_factory.mktemp("routing"), kafka, model_backend="tgi", tgi_url=base_tgi.url,
                      model_name=DEFAULT_ROUTE)
    with running_services(s, (("tracing", build_tracing), ("inference", build_inference))):
        client = Client(s)
        yield s, client
        client.close()


@pytest.fixture
def fakes():
    """``fakes(**FakeTgiConfig fields)``: a TGI fake of this test's, stopped at its end."""
    with contextlib.ExitStack() as stack:
        yield lambda **config: stack.enter_context(FakeTgiServer(FakeTgiConfig(**config)))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def register(client: Client, name: str, url: str, backend: str = "tgi", **fields) -> inference_pb2.Deployment:
    return client.inference.RegisterDeployment(
        inference_pb2.Deployment(name=name, backend=backend, url=url, **fields), timeout=30)


def ref(d: inference_pb2.Deployment) -> inference_pb2.DeploymentRef:
    return inference_pb2.DeploymentRef(name=d.name, version=d.version)


def set_route(client: Client, route: inference_pb2.Route, reason: str = "test") -> inference_pb2.Route:
    return client.inference.SetRoute(inference_pb2.SetRouteRequest(route=route, changed_by="test", reason=reason),
                                     timeout=30)


def retry(attempts: int, backoff: float, *on: int, max_backoff: float = 2.0) -> inference_pb2.RetryPolicy:
    return inference_pb2.RetryPolicy(attempts=attempts, initial_backoff_s=backoff, max_backoff_s=max_backoff,
                                     retry_on=list(on))


def generate(client: Client, model: str, prompt: str = "Where is Paris?", timeout: float = 30, **fields):
    return client.inference.Generate(generate_request(prompt, model=model, max_new_tokens=4, **fields),
                                     timeout=timeout)


def code_of(fn):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code(), info.value.details()


def generation_spans(client: Client, trace_id: str, count: int) -> list:
    """The trace's ``generation`` spans once ``count`` of them are stored, in the order they ran."""
    def spans():
        got = [sp for sp in client.get_trace(trace_id).spans if sp.name == "generation"]
        return got if len(got) >= count else None
    got = wait_until(spans, timeout_s=20, what=f"{count} generation spans of trace {trace_id}")
    assert len(got) == count, [(sp.attributes["deployment"], sp.attributes["outcome"]) for sp in got]
    return sorted(got, key=lambda sp: (sp.start_time.seconds, sp.start_time.nanos))


def attempts_of(spans) -> list[tuple[str, str, str]]:
    return [(sp.attributes["deployment"], sp.attributes.get("attempt", ""), sp.attributes["outcome"]) for sp in spans]


def circuit_open(d: inference_pb2.Deployment) -> float | None:
    return REGISTRY.get_sample_value("llmops_circuit_open", {"deployment": d.name, "version": str(d.version)})


def is_made_of(text: str, words: list[str]) -> bool:
    return bool(text.split()) and all(w in words for w in text.split())


# -- 1. retries, then the fallback; every attempt a span -------------------------------------------
@pytest.mark.parametrize("fault, outcome", [("503", "unavailable"), ("hang", "timeout")])
def test_a_failing_primary_is_retried_then_the_fallback_answers_and_the_trace_shows_each_attempt(
        stack, fakes, fault, outcome):
    s, client = stack
    a, b = fakes(), fakes(passage=B_WORDS)
    a.tgi.set_fault(fault)   # every request, until the end of the test
    da, db = register(client, unique("a"), a.url), register(client, unique("b"), b.url)
    route = set_route(client, inference_pb2.Route(
        name=unique("retry"), primary=ref(da), fallbacks=[ref(db)], retry=retry(3, 0.2, U, T),
        attempt_timeout_s=0.3, circuit=inference_pb2.CircuitBreaker(failure_threshold=0)))

    t0 = time.monotonic()
    r = generate(client, route.name)
    elapsed = time.monotonic() - t0
    assert (r.deployment, r.deployment_version, r.attempts) == (db.name, 1, 4)
    assert (r.model, r.route_revision, r.arm) == (route.name, route.revision, "primary")
    assert is_made_of(r.text, B_WORDS), r.text
    assert [c.outcome for c in a.tgi.calls] == [fault] * 3 and len(b.tgi.calls) == 1
    if fault == "hang":
        assert elapsed >= 3 * 0.3

    spans = generation_spans(client, r.trace_id, 4)
    assert attempts_of(spans) == [(da.name, "1", outcome), (da.name, "2", outcome), (da.name, "3", outcome),
                                  (db.name, "1", "ok")]
    waits = [float(sp.attributes["wait_ms"]) for sp in spans]
    assert waits[0] == 0 and waits[1] > 0 and waits[2] > 0 and waits[3] == 0, waits
    assert waits[1] <= 200 and waits[2] <= 400, waits   # full jitter under the exponential cap
    assert [sp.attributes["fallback"] for sp in spans] == ["False", "False", "False", "True"]
    assert all(sp.status == common_pb2.SPAN_STATUS_ERROR for sp in spans[:3])
    assert spans[3].status == common_pb2.SPAN_STATUS_OK
    assert all(sp.attributes["deployment_version"] == "1" for sp in spans)
    if fault == "hang":   # each timed-out attempt lasted about the attempt timeout
        durations = [(sp.end_time.ToNanoseconds() - sp.start_time.ToNanoseconds()) / 1e9 for sp in spans[:3]]
        assert all(0.25 <= d < 1.5 for d in durations), durations
    root = next(sp for sp in client.get_trace(r.trace_id).spans if sp.name == "generate")
    assert (root.attributes["deployment"], root.attributes["attempts"]) == (db.name, "4")


def test_a_rate_limited_primary_is_retried_when_the_route_retries_rate_limits(stack, fakes):
    """TGI answers 429 (``overloaded``) when its queue is full: a route that retries rate limits retries it."""
    s, client = stack
    a, b = fakes(), fakes(passage=B_WORDS)
    a.tgi.set_fault("429", times=2)
    da, db = register(client, unique("rl-a"), a.url), register(client, unique("rl-b"), b.url)
    route = set_route(client, inference_pb2.Route(name=unique("rl"), primary=ref(da), fallbacks=[ref(db)],
                                                  retry=retry(3, 0.05, R)))
    r = generate(client, route.name)
    assert (r.deployment, r.attempts) == (da.name, 3)
    assert [c.outcome for c in a.tgi.calls] == ["429", "429", "ok"] and not b.tgi.calls
    assert attempts_of(generation_spans(client, r.trace_id, 3)) == [
        (da.name, "1", "rate_limited"), (da.name, "2", "rate_limited"), (da.name, "3", "ok")]


@pytest.mark.parametrize("fault", ["503", "hang"])
def test_a_stream_falls_back_before_its_first_token(stack, fakes, fault):
    s, client = stack
    a, b = fakes(), fakes(passage=B_WORDS)
    a.tgi.set_fault(fault)
    da, db = register(client, unique("st-a"), a.url), register(client, unique("st-b"), b.url)
    route = set_route(client, inference_pb2.Route(name=unique("st"), primary=ref(da), fallbacks=[ref(db)],
                                                  retry=retry(2, 0.05, U, T), attempt_timeout_s=0.3))
    msgs = list(client.inference.GenerateStream(generate_request("Where is Paris?", model=route.name,
                                                                 max_new_tokens=4), timeout=30))
    final = msgs[-1]
    assert final.final and (final.summary.deployment, final.summary.attempts) == (db.name, 3)
    assert "".join(m.token for m in msgs[:-1]) == final.summary.text and is_made_of(final.summary.text, B_WORDS)
    assert [c.path for c in a.tgi.calls] == ["/", "/"] and all(c.outcome == fault for c in a.tgi.calls)
    outcome = "unavailable" if fault == "503" else "timeout"
    assert attempts_of(generation_spans(client, final.trace_id, 3)) == [
        (da.name, "1", outcome), (da.name, "2", outcome), (db.name, "1", "ok")]


def test_failures_the_route_does_not_retry_go_straight_to_the_fallback(stack, fakes):
    s, client = stack
    a, b = fakes(), fakes(passage=B_WORDS)
    a.tgi.set_fault("503")
    da, db = register(client, unique("nr-a"), a.url), register(client, unique("nr-b"), b.url)
    route = set_route(client, inference_pb2.Route(name=unique("nr"), primary=ref(da), fallbacks=[ref(db)],
                                                  retry=retry(3, 0.05, T)))   # timeouts only
    r = generate(client, route.name)
    assert (r.deployment, r.attempts) == (db.name, 2) and len(a.tgi.calls) == 1


def test_when_every_deployment_fails_the_client_gets_unavailable_naming_each_failure(stack, fakes):
    s, client = stack
    a, b = fakes(), fakes()
    a.tgi.set_fault("503")
    b.tgi.set_fault("503")
    da, db = register(client, unique("all-a"), a.url), register(client, unique("all-b"), b.url)
    route = set_route(client, inference_pb2.Route(name=unique("all"), primary=ref(da), fallbacks=[ref(db)],
                                                  retry=retry(2, 0.05, U)))
    code, msg = code_of(lambda: generate(client, route.name))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert f"{da.name}@1 attempt 2: unavailable" in msg and f"{db.name}@1 attempt 2: unavailable" in msg, msg
    assert (len(a.tgi.calls), len(b.tgi.calls)) == (2, 2)


# -- 2. a real OpenAI-compatible server killed mid-test: the circuit opens and closes ------------
def test_a_killed_llama_server_opens_the_circuit_and_it_closes_when_the_server_is_back(stack, fakes, tmp_path):
    s, client = stack
    fallback_fake = fakes(passage=B_WORDS)
    port = free_port()
    with contextlib.ExitStack() as servers:
        proc = servers.enter_context(llama_openai_process(tmp_path / "llama-1.log", port, alias="smollm2"))
        primary = register(client, unique("llama"), f"http://127.0.0.1:{port}/v1", backend="openai",
                           remote_model="smollm2")
        fallback = register(client, unique("llama-fb"), fallback_fake.url)
        route = set_route(client, inference_pb2.Route(
            name=unique("cb"), primary=ref(primary), fallbacks=[ref(fallback)], retry=retry(1, 0.05),
            attempt_timeout_s=30, circuit=inference_pb2.CircuitBreaker(failure_threshold=2, cooldown_s=1.0)))
        n = iter(range(10_000))

        def ask():   # a new question each time: nothing is cached on the way
            return generate(client, route.name, prompt=f"Question number {next(n)}: where is Paris?", timeout=60)

        assert ask().deployment == primary.name
        assert not circuit_open(primary)

        proc.kill()
        proc.wait(10)
        first, second = ask(), ask()
        assert [(r.deployment, r.attempts) for r in (first, second)] == [(fallback.name, 2)] * 2
        assert attempts_of(generation_spans(client, first.trace_id, 2)) == [
            (primary.name, "1", "unavailable"), (fallback.name, "1", "ok")]
        assert circuit_open(primary) == 1   # two failures in a row: open

        skipped = ask()   # the primary is not even tried
        assert (skipped.deployment, skipped.attempts) == (fallback.name, 1)
        assert [(d, o) for d, _, o in attempts_of(generation_spans(client, skipped.trace_id, 2))] == [
            (primary.name, "circuit_open"), (fallback.name, "ok")]

        # after the cooldown one trial goes to the primary; still down, it opens the circuit again
        trial = wait_until(lambda: (r := ask()).attempts == 2 and r, timeout_s=10, interval_s=0.1,
                           what="the half-open trial request on the dead primary")
        assert trial.deployment == fallback.name and circuit_open(primary) == 1
        assert ask().attempts == 1   # open again: skipped

        servers.enter_context(llama_openai_process(tmp_path / "llama-2.log", port, alias="smollm2"))
        back = wait_until(lambda: (r := ask()).deployment == primary.name and r, timeout_s=20, interval_s=0.1,
                          what="an answer from the restarted primary")
        assert back.attempts == 1
        assert attempts_of(generation_spans(client, back.trace_id, 1)) == [(primary.name, "1", "ok")]
        assert circuit_open(primary) == 0   # closed again
        assert [ask().deployment for _ in range(3)] == [primary.name] * 3


def test_a_half_open_trial_the_client_gives_up_on_does_not_keep_the_circuit_open_for_good(stack, fakes):
    """The trial after the cooldown hangs and the client's deadline ends it: neither a success nor a
    failure was recorded, and the deployment must still get another trial once it is back."""
    s, client = stack
    a, b = fakes(), fakes(passage=B_WORDS)
    da, db = register(client, unique("tr-a"), a.url), register(client, unique("tr-b"), b.url)
    route = set_route(client, inference_pb2.Route(
        name=unique("trial"), primary=ref(da), fallbacks=[ref(db)], retry=retry(1, 0.05), attempt_timeout_s=10,
        circuit=inference_pb2.CircuitBreaker(failure_threshold=1, cooldown_s=0.5)))
    a.tgi.set_fault("503", times=1)
    assert generate(client, route.name).deployment == db.name and circuit_open(da) == 1
    a.tgi.set_fault("hang")

    def trial_hung():   # until the cooldown is over, the fallback answers
        try:
            generate(client, route.name, timeout=0.5)
            return False
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(trial_hung, timeout_s=10, interval_s=0.05, what="the trial request on the hanging primary")
    assert [c.outcome for c in a.tgi.calls] == ["503", "hang"]
    a.tgi.clear_fault()
    back = wait_until(lambda: (r := generate(client, route.name)).deployment == da.name and r, timeout_s=10,
                      interval_s=0.05, what="the primary trying again once it is back")
    assert back.attempts == 1 and circuit_open(da) == 0


# -- 3. the client's deadline (and the route's) ----------------------------------------------------------
@pytest.mark.parametrize("fault, config, whose", [("hang", {}, "client"), ("503", {"delay_s": 0.25}, "client"),
                                                  ("hang", {}, "route")])
def test_a_deadline_shorter_than_the_retries_ends_the_request_and_nothing_is_tried_after_it(
        stack, fakes, fault, config, whose):
    s, client = stack
    a = fakes(**config)
    da = register(client, unique("dl"), a.url)
    route = set_route(client, inference_pb2.Route(name=unique("dl"), primary=ref(da), retry=retry(5, 0.5, U, T),
                                                  attempt_timeout_s=0.3, deadline_s=1.0 if whose == "route" else 0))
    generate(client, route.name)   # the backend opened and the prompt counted: the first attempt is quick
    a.tgi.calls.clear()
    a.tgi.set_fault(fault)
    trace_id = uuid.uuid4().hex
    req = generate_request("Where is Paris?", model=route.name, max_new_tokens=4)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        client.inference.Generate(req, timeout=1.0 if whose == "client" else 30,
                                  metadata=(("traceparent", f"00-{trace_id}-{'ab' * 8}-01"),))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.5
    if whose == "route":
        assert "deadline" in info.value.details(), info.value.details()   # the server's answer, not the client's
    deadline = t0 + 1.0 + (0.05 if whose == "route" else 0.0)   # the route's runs from when the server got it

    # the request is over on the server once its spans are published (they are, when it ends)
    def ended(msgs):
        return any(events_pb2.SpanEvent.FromString(m.value).name == "generate" for m in msgs
                   if m.key == trace_id.encode())
    msgs = consume_until(s.kafka_bootstrap, s.topic("spans"), ended, timeout_s=20, what="the request's root span")
    spans = [sp for m in msgs if m.key == trace_id.encode() for sp in [events_pb2.SpanEvent.FromString(m.value)]]
    root = next(sp for sp in spans if sp.name == "generate")
    assert root.status == common_pb2.SPAN_STATUS_ERROR and "deadline" in root.status_message.lower(), root.status_message
    starts = [c.started for c in a.tgi.calls]
    assert len(starts) >= 2, [(sp.name, dict(sp.attributes), sp.status_message) for sp in spans]
    assert all(t < deadline for t in starts), [round(t - t0, 3) for t in starts]
    tried = sum(1 for sp in spans if sp.name == "generation" and sp.attributes.get("attempt"))
    assert tried - 1 <= len(starts) <= tried   # the last attempt may be cut before its request is out


# -- 4. canary splits ----------------------------------------------------------------------------------
def within_binomial(k: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_a_20_percent_canary_serves_20_percent_and_a_sticky_one_keeps_each_session_on_one_side(stack, fakes):
    s, client = stack
    p_fake, c_fake = fakes(), fakes(passage=B_WORDS)
    dp, dc = register(client, unique("cn-p"), p_fake.url), register(client, unique("cn-c"), c_fake.url)
    route = set_route(client, inference_pb2.Route(
        name=unique("canary"), primary=ref(dp),
        canary=inference_pb2.Canary(deployment=ref(dc), percent=20)))

    def one(i: int):
        r = generate(client, route.name, prompt=f"Where is Paris? ({i % 7})")
        assert (r.arm == "canary") == (r.deployment == dc.name), (r.arm, r.deployment)
        return r.arm

    with ThreadPoolExecutor(4) as pool:
        arms = list(pool.map(one, range(500)))
    k = arms.count("canary")
    assert within_binomial(k, 500, 0.2), f"{k} of 500 requests on the canary"
    assert len(c_fake.tgi.calls) == k and len(p_fake.tgi.calls) == 500 - k

    sticky = set_route(client, inference_pb2.Route(
        name=unique("sticky"), primary=ref(dp),
        canary=inference_pb2.Canary(deployment=ref(dc), percent=20, sticky="session")))
    sessions = [f"session-{i}" for i in range(50)]

    def arm_of(job):
        session, i = job
        return session, generate(client, sticky.name, prompt=f"Question {i}", session_id=session).arm

    with ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(arm_of, [(sess, i) for i in range(4) for sess in sessions]))
    sides: dict[str, set[str]] = {}
    for session, arm in seen:
        sides.setdefault(session, set()).add(arm)
    assert all(len(v) == 1 for v in sides.values()), {k: v for k, v in sides.items() if len(v) > 1}
    on_canary = sum(1 for v in sides.values() if v == {"canary"})
    assert 0 < on_canary < 50 and within_binomial(on_canary, 50, 0.2), f"{on_canary} of 50 sessions on the canary"


def test_a_failing_canary_falls_back_to_the_primary_and_its_completion_says_so(stack, fakes):
    """The rollout monitor counts such a request as a failure of the canary arm and leaves its score out."""
    s, client = stack
    p_fake, c_fake = fakes(passage=B_WORDS), fakes()
    c_fake.tgi.set_fault("503")
    dp, dc = register(client, unique("cf-p"), p_fake.url), register(client, unique("cf-c"), c_fake.url)
    route = set_route(client, inference_pb2.Route(name=unique("cf"), primary=ref(dp), retry=retry(1, 0.05),
                                                  canary=inference_pb2.Canary(deployment=ref(dc), percent=100)))
    r = generate(client, route.name)
    assert (r.arm, r.deployment, r.attempts) == ("canary", dp.name, 2) and is_made_of(r.text, B_WORDS)
    msgs = consume_until(s.kafka_bootstrap, s.topic("completions"), lambda ms: any(m.key == r.trace_id.encode()
                                                                                    for m in ms))
    ev = next(events_pb2.CompletionEvent.FromString(m.value) for m in msgs if m.key == r.trace_id.encode())
    assert (ev.arm, ev.deployment, ev.fallback, ev.attempts, ev.error) == ("canary", dp.name, True, 2, "")


# -- 5. shadow ---------------------------------------------------------------------------------------------
def test_a_shadow_copy_is_traced_as_its_own_completion_and_never_returned_or_waited_for(stack, fakes):
    s, client = stack
    p_fake, sh_fake = fakes(), fakes(passage=SHADOW_WORDS, delay_s=1.0)
    dp, dsh = register(client, unique("sh-p"), p_fake.url), register(client, unique("sh-s"), sh_fake.url)
    route = set_route(client, inference_pb2.Route(
        name=unique("shadow"), primary=ref(dp), shadow=inference_pb2.Shadow(deployment=ref(dsh), percent=100)))
    generate(client, route.name, prompt="A warm-up question")   # both backends opened

    t0 = time.monotonic()
    r = generate(client, route.name, prompt="What is the capital of France?")
    elapsed = time.monotonic() - t0
    assert elapsed < 0.5, f"the answer took {elapsed:.2f} s; the shadow takes 1 s"
    assert (r.deployment, r.arm, r.attempts) == (dp.name, "primary", 1)
    assert r.text and not any(w in SHADOW_WORDS for w in r.text.split()), r.text

    def both(msgs):
        evs = [events_pb2.CompletionEvent.FromString(m.value) for m in msgs]
        return any(e.trace_id == r.trace_id for e in evs) and any(e.shadow_of == r.trace_id for e in evs)
    msgs = consume_until(s.kafka_bootstrap, s.topic("completions"), both, timeout_s=20,
                         what="the primary's and the shadow's completions")
    evs = [events_pb2.CompletionEvent.FromString(m.value) for m in msgs]
    live = next(e for e in evs if e.trace_id == r.trace_id)
    shadow = next(e for e in evs if e.shadow_of == r.trace_id)
    assert (live.arm, live.deployment, live.answer) == ("primary", dp.name, r.text)
    assert (shadow.arm, shadow.deployment, shadow.route) == ("shadow", dsh.name, route.name)
    assert shadow.trace_id and shadow.trace_id != r.trace_id
    assert is_made_of(shadow.answer, SHADOW_WORDS) and shadow.latency_ms >= 1000
    assert shadow.prompt == live.prompt == "What is the capital of France?"
    # and traced on its own trace: a `shadow` root span naming the request it copies
    root = wait_until(lambda: next((sp for sp in client.get_trace(shadow.trace_id).spans if sp.name == "shadow"), None),
                      what="the shadow's trace")
    assert root.attributes["shadow_of"] == r.trace_id and root.attributes["arm"] == "shadow"
    assert all(sp.name != "shadow" for sp in client.get_trace(r.trace_id).spans)


def test_a_failing_shadow_never_touches_the_answer(stack, fakes):
    s, client = stack
    p_fake, sh_fake = fakes(), fakes()
    sh_fake.tgi.set_fault("503")
    dp, dsh = register(client, unique("shf-p"), p_fake.url), register(client, unique("shf-s"), sh_fake.url)
    route = set_route(client, inference_pb2.Route(
        name=unique("shf"), primary=ref(dp), shadow=inference_pb2.Shadow(deployment=ref(dsh), percent=100)))
    labels = {"route": route.name, "deployment": dsh.name, "version": "1", "outcome": "error"}
    r = generate(client, route.name)
    assert (r.deployment, r.arm) == (dp.name, "primary")
    wait_until(lambda: REGISTRY.get_sample_value("llmops_shadow_requests_total", labels) == 1,
               what="the shadow's failure counted")
    assert len(sh_fake.tgi.calls) == 1


# -- routes: history and rollbacks ------------------------------------------------------------------------
def test_rollbacks_step_back_through_the_history_and_each_is_a_new_revision(stack, fakes):
    s, client = stack
    fs = [fakes(), fakes(passage=B_WORDS), fakes(passage=SHADOW_WORDS)]
    ds = [register(client, unique(f"hist{i}"), f.url) for i, f in enumerate(fs)]
    name = unique("hist")
    for d in ds:   # revisions 1, 2, 3
        set_route(client, inference_pb2.Route(name=name, primary=ref(d)), reason=f"to {d.name}")

    def rollback(**kw):
        return client.inference.Rollback(inference_pb2.RollbackRequest(route=name, changed_by="ops", **kw), timeout=10)

    r4 = rollback()
    assert (r4.revision, r4.restored_from, r4.primary.name, r4.reason) == (4, 2, ds[1].name, "rollback to revision 2")
    assert generate(client, name).deployment == ds[1].name
    r5 = rollback()   # from a revision that restored 2: back to 1
    assert (r5.revision, r5.restored_from, r5.primary.name) == (5, 1, ds[0].name)
    assert generate(client, name).deployment == ds[0].name
    code, msg = code_of(lambda: rollback())
    assert code == grpc.StatusCode.FAILED_PRECONDITION, msg
    r6 = rollback(to_revision=3, reason="three was fine after all")
    assert (r6.revision, r6.restored_from, r6.primary.name, r6.reason) == (6, 3, ds[2].name, "three was fine after all")
    assert generate(client, name).route_revision == 6
    code, msg = code_of(lambda: rollback(to_revision=6))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "below the current revision 6" in msg, msg
    history = client.inference.ListRoutes(inference_pb2.ListRoutesRequest(name=name), timeout=10).routes
    assert [(h.revision, h.changed_by) for h in history] == [(6, "ops"), (5, "ops"), (4, "ops"), (3, "test"),
                                                             (2, "test"), (1, "test")]
    old = client.inference.GetRoute(inference_pb2.GetRouteRequest(name=name, revision=2), timeout=10)
    assert (old.primary.name, old.reason) == (ds[1].name, f"to {ds[1].name}")
    # two operators read revision 6 and change it: the second one's change is refused, not lost
    stale = inference_pb2.SetRouteRequest(route=inference_pb2.Route(name=name, primary=ref(ds[0])), changed_by="bob",
                                          reason="from 6", expected_revision=6)
    assert client.inference.SetRoute(stale, timeout=10).revision == 7
    code, msg = code_of(lambda: client.inference.SetRoute(stale, timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "at revision 7, not at the expected 6" in msg, msg


def test_a_deployments_default_parameters_apply_where_the_request_sets_none(stack, fakes):
    s, client = stack
    fake = fakes()
    d = register(client, unique("defaults"), fake.url,
                 default_parameters=inference_pb2.GenerationParameters(max_new_tokens=2, stop=["France"]))
    route = set_route(client, inference_pb2.Route(name=unique("defaults"), primary=ref(d)))
    client.inference.Generate(generate_request("Where is Paris?", model=route.name), timeout=30)
    sent = fake.tgi.requests[-1]["parameters"]
    assert (sent["max_new_tokens"], sent["stop"]) == (2, ["France"])
    generate(client, route.name)   # max_new_tokens=4 set by the request
    assert fake.tgi.requests[-1]["parameters"]["max_new_tokens"] == 4


# -- 7. bad admin input ------------------------------------------------------------------------------------
def test_bad_routes_and_deployments_are_refused_with_a_message_that_names_the_problem(stack):
    s, client = stack
    base = register(client, unique("bad"), "http://127.0.0.1:9")
    other = register(client, unique("bad-o"), "http://127.0.0.1:9")
    name = unique("bad-route")

    def route_code(**fields):
        return code_of(lambda: set_route(client, inference_pb2.Route(name=name, **fields)))

    code, msg = route_code(primary=inference_pb2.DeploymentRef(name="no-such-deployment"))
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-deployment" in msg, msg
    code, msg = route_code(primary=ref(base), fallbacks=[inference_pb2.DeploymentRef(name=base.name, version=1)])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cycle" in msg and base.name in msg, msg
    code, msg = route_code(primary=ref(base), fallbacks=[ref(other), ref(other)])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "fallbacks[1]" in msg and other.name in msg, msg
    code, msg = route_code(primary=ref(base), fallbacks=[inference_pb2.DeploymentRef(name="ghost")])
    assert code == grpc.StatusCode.NOT_FOUND and "fallbacks[0]" in msg and "ghost" in msg, msg
    for percent in (150, -1):
        code, msg = route_code(primary=ref(base), canary=inference_pb2.Canary(deployment=ref(other), percent=percent))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "canary.percent" in msg and f"{percent:g}" in msg, msg
        code, msg = route_code(primary=ref(base), shadow=inference_pb2.Shadow(deployment=ref(other), percent=percent))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "shadow.percent" in msg, msg
    code, msg = route_code(fallbacks=[ref(other)])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "primary" in msg, msg
    code, msg = route_code(primary=ref(base), retry=inference_pb2.RetryPolicy(attempts=11))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "retry.attempts" in msg, msg
    code, msg = route_code(primary=inference_pb2.DeploymentRef(name=base.name, version=7))
    assert code == grpc.StatusCode.NOT_FOUND and "version 7" in msg, msg
    assert code_of(lambda: client.inference.GetRoute(inference_pb2.GetRouteRequest(name=name), timeout=10))[0] == \
        grpc.StatusCode.NOT_FOUND   # nothing refused was stored

    code, msg = code_of(lambda: register(client, unique("bad-d"), "http://x", backend="vllm"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "vllm" in msg and "backend" in msg, msg
    code, msg = code_of(lambda: register(client, unique("bad-d"), "", backend="tgi"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "url" in msg, msg
    code, msg = code_of(lambda: register(client, "bad name!", "http://x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "bad name!" in msg, msg

    code, msg = code_of(lambda: client.inference.GetRoute(inference_pb2.GetRouteRequest(name="no-such-route"),
                                                          timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-route" in msg, msg
    code, msg = code_of(lambda: client.inference.GetDeployment(inference_pb2.DeploymentRef(name="no-such-dep"),
                                                               timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-dep" in msg, msg

    one = set_route(client, inference_pb2.Route(name=name, primary=ref(base)))
    assert one.revision == 1
    code, msg = code_of(lambda: client.inference.Rollback(inference_pb2.RollbackRequest(route=name), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "revision 1" in msg, msg
    code, msg = code_of(lambda: client.inference.Rollback(inference_pb2.RollbackRequest(route="no-such-route"),
                                                          timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-route" in msg, msg
    code, msg = code_of(lambda: generate(client, "no-such-route"))
    assert code == grpc.StatusCode.NOT_FOUND and "no-such-route" in msg, msg


def test_a_route_whose_primary_is_down_does_not_break_list_models(stack):
    s, client = stack
    dead = register(client, unique("dead"), f"http://127.0.0.1:{free_port()}")   # nothing listens there
    route = set_route(client, inference_pb2.Route(name=unique("dead"), primary=ref(dead)))
    models = {m.id: m for m in client.inference.ListModels(inference_pb2.ListModelsRequest(), timeout=30).models}
    assert models[DEFAULT_ROUTE].is_default and models[DEFAULT_ROUTE].max_total_tokens > 0
    assert models[route.name].backend == "tgi" and models[route.name].max_total_tokens == 0   # unknown


def test_a_route_whose_primary_is_down_does_not_break_the_gateways_model_list(stack):
    import httpx

    s, client = stack
    dead = register(client, unique("dead-http"), f"http://127.0.0.1:{free_port()}")
    route = set_route(client, inference_pb2.Route(name=unique("dead-http"), primary=ref(dead)))
    resp = httpx.get(f"http://127.0.0.1:{s.inference_http_port}/v1/models", timeout=30, trust_env=False)
    assert resp.status_code == 200, resp.text
    assert route.name in {m["id"] for m in resp.json()["data"]}


# -- 8. prompt rollback --------------------------------------------------------------------------------------
def test_moving_the_production_label_back_rolls_the_prompt_back_on_the_next_request(stack, fakes):
    s, client = stack
    fake = fakes()
    name = unique("prompt").replace("-", "_")
    for system in ("Version one: answer briefly.", "Version two: answer at length."):
        client.inference.RegisterPromptTemplate(inference_pb2.RegisterPromptTemplateRequest(
            name=name, system=system, user="{question}", labels=["production"]), timeout=10)
    d = register(client, unique("pr"), fake.url, prompt_template=name)   # its template at the production label
    route = set_route(client, inference_pb2.Route(name=unique("pr"), primary=ref(d)))

    r2 = generate(client, route.name)
    assert (r2.prompt_template, r2.prompt_version) == (name, 2)
    assert "Version two" in fake.tgi.requests[-1]["inputs"]

    back = client.inference.SetPromptLabel(inference_pb2.SetPromptLabelRequest(name=name, version=1,
                                                                               label="production"), timeout=10)
    assert back.version == 1 and "production" in back.labels
    r1 = generate(client, route.name)
    assert (r1.prompt_template, r1.prompt_version) == (name, 1)
    assert "Version one" in fake.tgi.requests[-1]["inputs"]
    # the label moved; version 2 is kept, without it
    listed = client.inference.ListPromptTemplates(inference_pb2.ListPromptTemplatesRequest(name=name), timeout=10)
    assert {t.version: list(t.labels) for t in listed.templates} == {1: ["production"], 2: []}

    code, msg = code_of(lambda: client.inference.SetPromptLabel(inference_pb2.SetPromptLabelRequest(
        name=name, version=9, label="production"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "version 9" in msg, msg


def test_llmops_traces_lists_the_requests_a_canary_answered(stack, fakes):
    """`llmops traces --deployment D@V --arm canary`: the trace list by how each request was served."""
    from click.testing import CliRunner

    from llmops.cli import main
    from llmops.v1 import tracing_pb2

    s, client = stack
    wide = {**s.to_env(), "COLUMNS": "250"}   # the table at full width, ids whole
    a, b = fakes(), fakes(passage=B_WORDS)
    da, db = register(client, unique("ta"), a.url), register(client, unique("tb"), b.url)
    route = set_route(client, inference_pb2.Route(name=unique("traced"), primary=ref(da), canary=inference_pb2.Canary(
        deployment=ref(db), percent=100)))
    ids = {generate(client, route.name).trace_id for _ in range(2)}
    wait_until(lambda: {t.trace_id for t in client.tracing.ListTraces(tracing_pb2.ListTracesRequest(
        deployment=db.name, deployment_version=db.version, arm="canary"), timeout=10).traces} == ids,
        what="the canary's traces in the trace store")
    out = CliRunner().invoke(main, ["traces", "--deployment", f"{db.name}@{db.version}", "--arm", "canary"],
                             env=wide)
    assert out.exit_code == 0, out.output
    assert all(i in out.output for i in ids) and "canary" in out.output, out.output
    none = CliRunner().invoke(main, ["traces", "--deployment", f"{db.name}@{db.version}", "--arm", "primary"],
                              env=wide)
    assert none.exit_code == 0 and not any(i in none.output for i in ids), none.output
    bad = CliRunner().invoke(main, ["traces", "--deployment", "x@y"], env=wide)
    assert bad.exit_code == 2 and "the version after @ is a number" in bad.output
