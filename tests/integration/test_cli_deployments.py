"""``llmops deploy|routes|rollback|rollout|prompt-label`` against the real inference service (and the
drift service for ``rollout status``) running in-process on the real embedded broker, SQLite and
llama.cpp, driven through click exactly as an operator types the commands."""
import json
import random

import pytest
from click.testing import CliRunner

from llmops.cli import main
from llmops.cli.stack import free_port
from llmops.common.envelope import encode
from llmops.common.spans import new_trace_id
from llmops.drift.api import DriftServicer
from llmops.inference.api import InferenceServicer
from llmops.inference.main import build as build_inference
from llmops.v1 import common_pb2, events_pb2
from tests.support import make_settings, produce, running_services, wait_until

ADMIN_RPCS = ("RegisterDeployment", "GetDeployment", "ListDeployments", "SetRoute", "GetRoute", "ListRoutes",
              "Rollback", "SetPromptLabel")
MISSING = [rpc for rpc in ADMIN_RPCS if rpc not in vars(InferenceServicer)]
needs_admin_rpcs = pytest.mark.skipif(
    bool(MISSING), reason=f"the inference service does not implement {', '.join(MISSING)} yet (llmops.inference.api."
                          "InferenceServicer): the CLI has nothing to talk to")


@pytest.fixture(scope="module")
def cli(kafka, tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("cli-deployments"), kafka)
    env = s.to_env()
    runner = CliRunner()

    def run(*args, code=0):
        res = runner.invoke(main, list(args), env=env)
        assert res.exit_code == code, f"llmops {' '.join(args)} exited {res.exit_code}:\n{res.output}"
        assert "Traceback" not in res.output
        return res

    with running_services(s, (("inference", build_inference),)):
        # base@1 and base@2 and route solo (one revision), for the error cases
        run("deploy", "base", "--backend", "llama_cpp")
        run("deploy", "base", "--backend", "llama_cpp")
        run("routes", "set", "solo", "--primary", "base@1", "--reason", "a route with one revision")
        yield run, s


def as_json(res):
    return json.loads(res.stdout)


@needs_admin_rpcs
def test_register_list_and_show_deployment_versions(cli):
    run, _ = cli
    first = run("deploy", "smol", "--backend", "llama_cpp", "--param", "max_new_tokens=16", "--price", "0.15/0.60",
                "--description", "SmolLM2, short answers", "--by", "alice")
    assert "smol@1 registered" in first.output
    second = run("deploy", "smol", "--backend", "llama_cpp", "--param", "max_new_tokens=32", "--param",
                 "temperature=0.7", "--prompt-template", "chat", "--prompt-version", "1")
    assert "smol@2 registered" in second.output
    run("deploy", "remote", "--backend", "openai", "--url", "http://127.0.0.1:9/v1", "--remote-model", "smollm2",
        "--timeout", "5")

    newest = {d["name"]: d for d in as_json(run("deploy", "list", "--json"))["deployments"]}
    assert newest["smol"]["version"] == 2 and newest["remote"]["version"] == 1
    versions = [d["version"] for d in as_json(run("deploy", "list", "smol", "--all-versions", "--json"))["deployments"]]
    assert sorted(versions) == [1, 2]

    v1 = as_json(run("deploy", "show", "smol@1", "--json"))
    assert v1["default_parameters"] == {"max_new_tokens": 16} and v1["created_by"] == "alice"
    assert (v1["prompt_price_per_m"], v1["completion_price_per_m"]) == (0.15, 0.60)
    assert as_json(run("deploy", "show", "smol", "--json"))["version"] == 2   # no version: the newest
    table = run("deploy", "list").output
    assert "smol@2" in table and "remote@1" in table


@needs_admin_rpcs
def test_a_route_with_a_canary_its_history_and_a_rollback(cli):
    run, _ = cli
    created = run("routes", "set", "chat", "--primary", "smol@1", "--fallback", "remote", "--retries", "2",
                  "--retry-on", "unavailable,timeout", "--reason", "first route", "--by", "alice")
    assert "route chat revision 1 (new route)" in created.output
    r1 = as_json(run("routes", "show", "chat", "--json"))
    assert r1["fallbacks"] == [{"name": "remote", "version": 1}]   # version 0 resolved by the server
    assert r1["retry"]["attempts"] == 3 and r1["changed_by"] == "alice" and r1["reason"] == "first route"

    canary = run("routes", "set", "chat", "--canary", "smol@2", "--canary-percent", "20", "--sticky", "session",
                 "--max-drop", "0.1", "--min-samples", "20", "--reason", "try v2 on 20%")
    assert "revision 2 (was 1)" in canary.output and "canary: - -> smol@2 20% sticky per session" in canary.output
    r2 = as_json(run("routes", "show", "chat", "--json"))
    # only the given flags changed: the primary, fallbacks and retries of revision 1 are still there
    assert r2["primary"] == {"name": "smol", "version": 1} and r2["fallbacks"] == r1["fallbacks"]
    assert r2["retry"] == r1["retry"]
    assert r2["canary"]["deployment"] == {"name": "smol", "version": 2} and r2["canary"]["percent"] == 20
    assert r2["canary"]["policy"]["min_samples"] == 20

    dry = run("routes", "set", "chat", "--canary-percent", "50", "--reason", "not really", "--dry-run")
    assert "canary: smol@2 20% sticky per session -> smol@2 50% sticky per session" in dry.output
    history = as_json(run("routes", "history", "chat", "--json"))["routes"]
    assert [r["revision"] for r in history] == [2, 1]   # newest first; the dry run stored nothing
    assert [r["reason"] for r in history] == ["try v2 on 20%", "first route"]
    assert "chat" in run("routes").output

    back = run("rollback", "chat", "--reason", "v2 answers off-topic")
    assert "revision 3 (was 2) restores revision 1" in back.output
    assert "canary: smol@2 20% sticky per session -> -" in back.output
    r3 = as_json(run("routes", "show", "chat", "--json"))
    assert r3["restored_from"] == 1 and "canary" not in r3 and r3["reason"] == "v2 answers off-topic"
    assert as_json(run("routes", "show", "chat", "--revision", "2", "--json"))["canary"]["percent"] == 20

    run("routes", "set", "chat", "--canary", "smol@2", "--canary-percent", "10", "--reason", "again")
    promoted = run("rollout", "promote", "chat", "--reason", "it held")
    assert "canary promoted" in promoted.output and "primary: smol@1 -> smol@2" in promoted.output
    r5 = as_json(run("routes", "show", "chat", "--json"))
    assert r5["revision"] == 5 and r5["primary"] == {"name": "smol", "version": 2} and "canary" not in r5


@needs_admin_rpcs
@pytest.mark.parametrize("args,code,words", [
    (("routes", "set", "chat2", "--primary", "nope", "--reason", "x"), "NOT_FOUND", ["nope"]),
    (("routes", "set", "chat2", "--primary", "base@1", "--canary", "base@2", "--canary-percent", "150",
      "--reason", "x"), "INVALID_ARGUMENT", ["canary.percent", "150"]),
    (("routes", "set", "chat2", "--primary", "base@1", "--fallback", "base@2", "--reason", "x"),
     "INVALID_ARGUMENT", ["cycle"]),
    (("routes", "show", "nope"), "NOT_FOUND", ["nope"]),
    (("routes", "history", "nope"), "NOT_FOUND", ["nope"]),
    (("rollback", "nope", "--reason", "x"), "NOT_FOUND", ["nope"]),
    (("rollback", "solo", "--reason", "x"), "FAILED_PRECONDITION", ["no earlier"]),
    (("rollback", "solo", "--to-revision", "5", "--reason", "x"), "INVALID_ARGUMENT", ["to_revision"]),
    (("deploy", "show", "base@99"), "NOT_FOUND", ["base"]),
    (("deploy", "broken", "--backend", "tgi"), "INVALID_ARGUMENT", ["url"]),
    (("deploy", "bad[/name]", "--backend", "llama_cpp"), "INVALID_ARGUMENT", ["bad[/name]"]),
    (("prompt-label", "chat", "99", "production"), "NOT_FOUND", []),
])
def test_server_errors_print_the_code_and_message_and_exit_1(cli, args, code, words):
    run, _ = cli
    res = run(*args, code=1)
    assert res.stderr.startswith(f"{code}: ") and len(res.stderr.strip()) > len(code) + 10, res.output
    for w in words:
        assert w in res.stderr


@needs_admin_rpcs
def test_prompt_label_moves_a_label(cli):
    run, _ = cli
    out = run("prompt-label", "chat", "1", "staging").output
    assert "label staging -> version 1" in out and "staging" in out.split("its labels:")[1]


def test_an_unreachable_server_is_unavailable_not_a_traceback(tmp_path):
    s = make_settings(tmp_path, "127.0.0.1:1", inference_port=free_port())
    res = CliRunner().invoke(main, ["routes"], env=s.to_env())
    assert res.exit_code == 1 and res.stderr.startswith("UNAVAILABLE: ") and "Traceback" not in res.output


def judged_traffic(s, route: str, revision: int, n: int, *, canary_mean: float, primary_mean: float = 0.75):
    """``n`` served requests of ``route``, every 5th on the canary (smol@2), each with its cheap
    faithfulness score, as inference and judging publish them."""
    rng = random.Random(11)
    completions, scores = [], []
    for i in range(n):
        arm, version, mean = ("canary", 2, canary_mean) if i % 5 == 0 else ("primary", 1, primary_mean)
        served = dict(route=route, route_revision=revision, deployment="smol", deployment_version=version, arm=arm)
        c = events_pb2.CompletionEvent(trace_id=new_trace_id(), model="smol", prompt=f"question {i}",
                                       answer=f"answer {i}", attempts=1, latency_ms=rng.gauss(120, 15), **served)
        c.timestamp.GetCurrentTime()
        completions.append(c)
        scores.append(events_pb2.ScoreEvent(trace_id=c.trace_id, model="smol", tier="cheap", **served,
                                            score=common_pb2.Score(name="faithfulness",
                                                                   evaluator="rag.faithfulness.cheap",
                                                                   value=rng.betavariate(mean * 10, (1 - mean) * 10),
                                                                   status=common_pb2.SCORE_STATUS_OK)))
    produce(s.bootstrap_servers, s.topic("completions"), [(c.trace_id.encode(), *encode(c)) for c in completions])
    produce(s.bootstrap_servers, s.topic("scores"), [(e.trace_id.encode(), *encode(e)) for e in scores])


@pytest.mark.skipif("GetRollout" not in vars(DriftServicer),
                    reason="the drift service does not implement GetRollout yet (llmops.drift.api.DriftServicer)")
@needs_admin_rpcs
def test_rollout_status_follows_a_bad_canary_to_its_automatic_rollback(kafka, tmp_path):
    from llmops.drift.main import build as build_drift

    s = make_settings(tmp_path, kafka, drift_join_wait_s=1.0)
    env = s.to_env()
    runner = CliRunner()

    def run(*args, code=0):
        res = runner.invoke(main, list(args), env=env)
        assert res.exit_code == code, f"llmops {' '.join(args)} exited {res.exit_code}:\n{res.output}"
        assert "Traceback" not in res.output
        return res

    def rollouts():
        return json.loads(run("rollout", "status", "--json").stdout)["rollouts"]

    with running_services(s, (("drift", build_drift), ("inference", build_inference))):
        run("deploy", "smol", "--backend", "llama_cpp")
        run("deploy", "smol", "--backend", "llama_cpp", "--prompt-template", "chat")
        run("routes", "set", "chat", "--primary", "smol@1", "--canary", "smol@2", "--canary-percent", "20",
            "--sticky", "session", "--max-error-rate", "0.5", "--reason", "canary of v2")
        first = run("rollout", "status", "chat").output   # the monitor may not have the route from the config topic yet
        assert "smol@2" in first and "20%" in first and ("waiting" in first or "gathering" in first)
        [st] = wait_until(lambda: [r for r in rollouts() if r["state"] == "gathering"], timeout_s=30,
                          what="the canary in the rollout monitor")
        assert (st["route"], st["route_revision"], st["canary"], st["canary_percent"]) == (
            "chat", 1, {"name": "smol", "version": 2}, 20)
        gathering = run("rollout", "status", "chat").output
        assert "state: gathering" in gathering and "canary smol@2 at 20% of requests, sticky per session" in gathering
        assert "error rate <= 0.5" in gathering

        judged_traffic(s, "chat", 1, 1500, canary_mean=0.3)
        [st] = wait_until(lambda: [r for r in rollouts() if r["state"] == "rolled_back"], timeout_s=60,
                          what="the rollout monitor's rollback")
        ev = st["evidence"]
        assert 30 <= int(ev["canary_n"]) < 500 and ev["statistic"] >= ev["threshold"]
        shown = run("rollout", "status", "chat").output
        assert "state: rolled_back" in shown and "(reached)" in shown and "rollback" in shown
        assert f"{ev['canary_mean']:.3f}" in shown and f"{ev['primary_mean']:.3f}" in shown

        # inference applies the decision: a new revision without the canary, by the rollout monitor
        r2 = wait_until(lambda: (r := json.loads(run("routes", "show", "chat", "--json").stdout))["revision"] == 2 and r,
                        timeout_s=15, what="the rollback applied to the route")
        assert "canary" not in r2 and r2["primary"] == {"name": "smol", "version": 1}
        history = run("routes", "history", "chat").output
        assert "canary of v2" in history and "2 revisions, current 2" in history

        missing = run("rollout", "status", "nope", code=1)
        assert missing.stderr.startswith("NOT_FOUND: ") and "nope" in missing.stderr
