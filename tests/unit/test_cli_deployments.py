"""The pure parts of ``llmops deploy|routes|rollout|rollback``: NAME@VERSION, --param, --price,
--retry-on, a route built from flags over its current revision, what changed between revisions,
and the usage errors the CLI reports before it calls any server."""
import datetime as dt

import pytest
from click.testing import CliRunner
from google.protobuf.timestamp_pb2 import Timestamp

from llmops.cli import main
from llmops.cli.deployments import (CLEAR, FlagError, RouteFlags, age, build_deployment, build_route,
                                    deployment_uses, parse_params, parse_price, parse_ref, parse_retry_on,
                                    promoted_route, ref_text, route_changes, route_facts)
from llmops.v1 import inference_pb2

Ref = inference_pb2.DeploymentRef


# -- NAME@VERSION --------------------------------------------------------------------------------
@pytest.mark.parametrize("text,name,version", [
    ("smol", "smol", 0), ("smol@3", "smol", 3), ("smol@latest", "smol", 0), ("gpt-4o.mini_v2@12", "gpt-4o.mini_v2", 12),
])
def test_a_deployment_ref_is_a_name_and_an_optional_version(text, name, version):
    ref = parse_ref(text)
    assert (ref.name, ref.version) == (name, version)


@pytest.mark.parametrize("text", ["", "@3", "smol@", "smol@0", "smol@-1", "smol@v2", "smol@1.5"])
def test_a_bad_ref_says_what_a_ref_looks_like(text):
    with pytest.raises(FlagError, match="NAME|version"):
        parse_ref(text)


def test_a_ref_reads_back_as_written_and_version_0_as_latest():
    assert ref_text(Ref(name="smol", version=3)) == "smol@3"
    assert ref_text(Ref(name="smol")) == "smol@latest"
    assert ref_text(Ref()) == "-"


# -- --param, --price, --retry-on ----------------------------------------------------------------
def test_params_take_tgi_names_and_their_types():
    p = parse_params(["max_new_tokens=64", "temperature=0.7", "top-p=0.9", "stop=###", "stop=\nQ:", "seed=7",
                      "do_sample=true"])
    assert p.max_new_tokens == 64 and p.HasField("max_new_tokens")
    assert p.temperature == pytest.approx(0.7) and p.top_p == pytest.approx(0.9)
    assert list(p.stop) == ["###", "\nQ:"] and p.seed == 7 and p.do_sample is True
    assert not p.HasField("top_k")    # unset stays unset: the server's default


def test_a_value_may_hold_an_equals_sign():
    assert list(parse_params(["stop=a=b"]).stop) == ["a=b"]


@pytest.mark.parametrize("item,msg", [
    ("max_new_tokens", "KEY=VALUE"),
    ("=3", "KEY=VALUE"),
    ("max_tokens=64", "unknown parameter 'max_tokens'; known: .*max_new_tokens"),
    ("max_new_tokens=lots", "max_new_tokens must be a whole number"),
    ("temperature=hot", "temperature must be a number"),
    ("do_sample=maybe", "do_sample must be true or false"),
])
def test_a_bad_param_names_the_problem(item, msg):
    with pytest.raises(FlagError, match=msg):
        parse_params([item])


def test_price_is_prompt_slash_completion_per_million_tokens():
    assert parse_price("0.15/0.60") == (0.15, 0.60)
    assert parse_price("0/0") == (0.0, 0.0)
    for bad in ("0.15", "a/b", "0.15/", "-1/2"):
        with pytest.raises(FlagError, match="--price"):
            parse_price(bad)


def test_retry_on_lists_failure_kinds_and_all_means_every_kind():
    assert parse_retry_on("unavailable, rate-limited") == [inference_pb2.RETRY_ON_UNAVAILABLE,
                                                           inference_pb2.RETRY_ON_RATE_LIMITED]
    assert parse_retry_on("timeout,timeout") == [inference_pb2.RETRY_ON_TIMEOUT]
    assert parse_retry_on("all") == []   # empty = all three, in the contract
    for bad in ("", "503", "timeout,oops"):
        with pytest.raises(FlagError, match="unavailable, timeout, rate_limited"):
            parse_retry_on(bad)


def test_a_deployment_from_flags():
    d = build_deployment("smol", "openai", url="http://127.0.0.1:8080/v1", remote_model="smollm2",
                         prompt_template="rag", prompt_version=2, params=["max_new_tokens=64"], price="0.15/0.60",
                         timeout_s=5, description="SmolLM2 on llama.cpp's server", created_by="ops")
    assert (d.name, d.backend, d.url, d.remote_model, d.prompt_template, d.prompt_version) == (
        "smol", "openai", "http://127.0.0.1:8080/v1", "smollm2", "rag", 2)
    assert d.default_parameters.max_new_tokens == 64 and d.timeout_s == 5
    assert (d.prompt_price_per_m, d.completion_price_per_m) == (0.15, 0.60)
    bare = build_deployment("smol", "llama_cpp")
    assert not bare.HasField("prompt_version") and not bare.HasField("prompt_price_per_m")   # unset, not 0


# -- a route from flags over the current revision ----------------------------------------------------
def current_route() -> inference_pb2.Route:
    r = inference_pb2.Route(name="chat", revision=4, changed_by="alice", reason="fallback added", restored_from=2,
                            primary=Ref(name="smol", version=1), fallbacks=[Ref(name="gemma", version=1)],
                            attempt_timeout_s=10)
    r.retry.attempts = 3
    r.canary.deployment.CopyFrom(Ref(name="smol", version=2))
    r.canary.percent = 10
    r.canary.policy.max_drop = 0.1
    r.canary.policy.max_error_rate = 0.05
    r.created_at.GetCurrentTime()
    return r


def test_a_new_route_needs_a_primary():
    with pytest.raises(FlagError, match="give it a --primary"):
        build_route("chat", None, RouteFlags(fallbacks=("gemma",)))


def test_a_new_route_from_flags():
    r = build_route("chat", None, RouteFlags(primary="smol@1", fallbacks=("gemma@1", "remote"), retries=2, backoff=0.2,
                                             retry_on="unavailable,timeout", attempt_timeout=5, deadline=20,
                                             circuit_failures=3, circuit_cooldown=10))
    assert r.name == "chat" and ref_text(r.primary) == "smol@1"
    assert [ref_text(f) for f in r.fallbacks] == ["gemma@1", "remote@latest"]
    assert r.retry.attempts == 3 and r.retry.initial_backoff_s == 0.2   # 2 retries = 3 attempts
    assert list(r.retry.retry_on) == [inference_pb2.RETRY_ON_UNAVAILABLE, inference_pb2.RETRY_ON_TIMEOUT]
    assert (r.attempt_timeout_s, r.deadline_s, r.circuit.failure_threshold, r.circuit.cooldown_s) == (5, 20, 3, 10)
    assert not r.HasField("canary") and not r.HasField("shadow")


def test_only_the_given_flags_change_and_bookkeeping_is_left_to_the_server():
    cur = current_route()
    r = build_route("chat", cur, RouteFlags(canary_percent=25))
    assert r.canary.percent == 25
    assert ref_text(r.canary.deployment) == "smol@2" and r.canary.policy.max_drop == pytest.approx(0.1)
    assert ref_text(r.primary) == "smol@1" and [ref_text(f) for f in r.fallbacks] == ["gemma@1"]
    assert r.retry.attempts == 3 and r.attempt_timeout_s == 10
    assert (r.revision, r.changed_by, r.reason, r.restored_from) == (0, "", "", 0) and not r.HasField("created_at")
    assert cur.canary.percent == 10   # the current revision is not modified


def test_fallbacks_are_replaced_as_a_list_or_removed():
    cur = current_route()
    assert [ref_text(f) for f in build_route("chat", cur, RouteFlags(fallbacks=("a@1", "b@2"))).fallbacks] == [
        "a@1", "b@2"]
    assert list(build_route("chat", cur, RouteFlags(fallbacks=())).fallbacks) == []


def test_a_cooldown_alone_keeps_the_default_breaker_on():
    # an unset breaker is the default 5 failures; a set one with 0 failures is off
    r = build_route("chat", current_route(), RouteFlags(circuit_cooldown=60))
    assert (r.circuit.failure_threshold, r.circuit.cooldown_s) == (5, 60)
    off = build_route("chat", current_route(), RouteFlags(circuit_failures=0))
    assert off.HasField("circuit") and off.circuit.failure_threshold == 0
    assert route_facts(off)["circuit breaker"] == "off"


def test_a_new_canary_with_its_policy():
    r = build_route("chat", None, RouteFlags(primary="smol@1", canary="smol@2", canary_percent=20, sticky="session",
                                             score="faithfulness", min_samples=50, max_samples=400, max_drop=0.05,
                                             alpha=0.01, max_error_rate=0.1, max_latency_ratio=1.5, auto_promote=True))
    c = r.canary
    assert (ref_text(c.deployment), c.percent, c.sticky) == ("smol@2", 20, "session")
    p = c.policy
    assert (p.score, p.min_samples, p.max_samples, p.auto_promote) == ("faithfulness", 50, 400, True)
    assert p.max_drop == pytest.approx(0.05) and p.alpha == pytest.approx(0.01)
    assert p.max_error_rate == pytest.approx(0.1) and p.max_latency_ratio == pytest.approx(1.5)


def test_canary_flags_edit_the_existing_canary_and_none_clears_a_limit():
    r = build_route("chat", current_route(), RouteFlags(max_error_rate=CLEAR, auto_promote=True, sticky="user"))
    assert not r.canary.policy.HasField("max_error_rate") and r.canary.policy.auto_promote
    assert r.canary.sticky == "user" and r.canary.percent == 10
    assert build_route("chat", r, RouteFlags(sticky="none")).canary.sticky == ""


@pytest.mark.parametrize("flags,msg", [
    (RouteFlags(primary="smol@1", canary="smol@2"), "needs --canary-percent"),
    (RouteFlags(primary="smol@1", canary_percent=20), "has no canary: --canary-percent need --canary"),
    (RouteFlags(primary="smol@1", max_drop=0.1), "has no canary: --max-drop"),
    (RouteFlags(primary="smol@1", shadow="gemma@1"), "needs --shadow-percent"),
    (RouteFlags(primary="smol@1", shadow_percent=5), "has no shadow"),
    (RouteFlags(primary="smol@x"), "version"),
])
def test_flags_that_cannot_make_a_route_say_which(flags, msg):
    with pytest.raises(FlagError, match=msg):
        build_route("chat", None, flags)


def test_no_canary_and_no_shadow_remove_them_and_refuse_contradictions():
    cur = current_route()
    cur.shadow.deployment.CopyFrom(Ref(name="gemma", version=1))
    cur.shadow.percent = 5
    r = build_route("chat", cur, RouteFlags(no_canary=True, no_shadow=True))
    assert not r.HasField("canary") and not r.HasField("shadow")
    with pytest.raises(FlagError, match="--no-canary .* --canary-percent"):
        build_route("chat", cur, RouteFlags(no_canary=True, canary_percent=5))
    with pytest.raises(FlagError, match="--no-shadow .* --shadow"):
        build_route("chat", cur, RouteFlags(no_shadow=True, shadow="x@1"))


def test_promote_makes_the_canary_the_primary():
    r = promoted_route(current_route())
    assert ref_text(r.primary) == "smol@2" and not r.HasField("canary")
    assert [ref_text(f) for f in r.fallbacks] == ["gemma@1"]
    with pytest.raises(FlagError, match="no canary to promote"):
        promoted_route(r)


def test_changes_between_revisions_read_as_old_to_new():
    cur = current_route()
    new = build_route("chat", cur, RouteFlags(canary_percent=50, fallbacks=()))
    changes = route_changes(cur, new)
    assert "fallbacks: gemma@1 -> -" in changes
    assert "canary: smol@2 10% -> smol@2 50%" in changes
    assert len(changes) == 2
    assert route_changes(cur, build_route("chat", cur, RouteFlags())) == []
    created = route_changes(None, build_route("chat", None, RouteFlags(primary="smol@1")))
    assert created[0] == "primary: smol@1" and not any(c.startswith("canary") for c in created)


def test_removing_the_canary_is_one_line_not_its_policy_too():
    cur = current_route()
    assert route_changes(cur, build_route("chat", cur, RouteFlags(no_canary=True))) == [
        "canary: smol@2 10% -> -"]


def test_age_reads_like_kubectl():
    now = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.UTC)
    ts = Timestamp()
    for delta, text in ((dt.timedelta(seconds=45), "45s"), (dt.timedelta(minutes=12, seconds=5), "12m"),
                        (dt.timedelta(hours=3), "3h"), (dt.timedelta(days=2, hours=5), "2d")):
        ts.FromDatetime(now - delta)
        assert age(ts, now) == text
    assert age(Timestamp(), now) == "-"


def test_facts_spell_out_the_servers_defaults():
    facts = route_facts(build_route("chat", None, RouteFlags(primary="smol@1")))
    assert facts["retry"] == "no retry"
    assert facts["circuit breaker"] == "5 failures, 30s cooldown (default)"
    facts = route_facts(current_route())
    assert facts["retry"] == "2 retries, backoff 0.1s..2s x2, on all"
    assert facts["canary policy"] == ("faithfulness (cheap), 30..500 judged, max drop 0.1, alpha 0.01, "
                                      "error rate <= 0.05, a person promotes")


def test_a_deployment_is_used_by_the_routes_that_name_its_version():
    d = inference_pb2.Deployment(name="smol", version=2)
    other = inference_pb2.Route(name="other", primary=Ref(name="smol", version=1))
    assert deployment_uses(d, [current_route(), other]) == ["chat (canary)"]


# -- usage errors before any RPC (exit 2, click's message, no traceback) -----------------------------
@pytest.mark.parametrize("args,msg", [
    (["deploy", "smol", "--backend", "llama_cpp", "--param", "max_tokens=3"], "unknown parameter 'max_tokens'"),
    (["deploy", "smol", "--backend", "llama_cpp", "--price", "cheap"], "--price 'cheap'"),
    (["deploy", "smol", "--backend", "vllm"], "'vllm' is not one of"),
    (["deploy", "show", "smol@two"], "the version after '@'"),
    (["routes", "set", "chat", "--primary", "a", "--fallback", "b", "--no-fallbacks", "--reason", "x"],
     "--no-fallbacks removes the fallbacks"),
    (["routes", "set", "chat", "--primary", "a"], "Missing option '--reason'"),
    (["routes", "set", "chat", "--primary", "a", "--retries", "10", "--reason", "x"], "--retries"),
    (["routes", "set", "chat", "--max-error-rate", "lots", "--reason", "x"], "not a number"),
    (["rollback", "chat"], "Missing option '--reason'"),
    (["prompt-label", "rag", "0"], "VERSION"),
])
def test_usage_errors_exit_2_with_the_reason(args, msg):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert msg in res.output and "Traceback" not in res.output


def test_deploy_name_registers_and_subcommands_still_resolve():
    runner = CliRunner()
    register = runner.invoke(main, ["deploy", "smol", "--help"])
    assert register.exit_code == 0 and "Usage: main deploy register [OPTIONS] NAME" in register.output
    assert "Usage: main deploy list" in runner.invoke(main, ["deploy", "list", "--help"]).output
    assert "--canary-percent" in runner.invoke(main, ["routes", "set", "--help"]).output
