"""A rollout decided by the judge, on the whole stack (`llmops up`), with the real model and the real
cheap judge: a canary whose prompt version answers off-topic is rolled back by itself, before its
sample limit, with a DeploymentEvent and its evidence; a canary as good as the primary is promoted.
Then a person rolls the route back by hand."""
import subprocess
import sys
import time

import grpc
import pytest

from llmops.cli.client import Client
from llmops.v1 import events_pb2, inference_pb2, inference_pb2_grpc, retrieval_pb2
from tests.e2e.test_stack import llmops_up
from tests.support import consume, make_settings, wait_until

LLMOPS = [sys.executable, "-m", "llmops.cli"]
TOPICS = ("nonlocal", "global", "assert", "lambda", "import", "while")
QUESTIONS = ["What does the nonlocal statement do?", "What does the global statement do?",
             "What does the assert statement do?", "What is a lambda expression?",
             "What does the import statement do?", "How does a while loop work?"]
POEM = "Write a short poem about the sea, the moon and sailors. Do not write about anything else."


@pytest.fixture
def stack(tmp_path):
    with llmops_up(make_settings(tmp_path / "data", "", judge_backend="none"), tmp_path / "up.log") as (s, env):
        yield s, env, s.kafka_bootstrap   # judge_backend none: the cheap tier judges


def canary_route(name: str, canary: inference_pb2.Deployment, max_samples: int) -> inference_pb2.Route:
    """A 50% canary, sticky per session: :func:`one_session_per_arm` then splits the traffic exactly."""
    return inference_pb2.Route(
        name=name, primary=inference_pb2.DeploymentRef(name=name, version=1),
        canary=inference_pb2.Canary(
            deployment=inference_pb2.DeploymentRef(name=canary.name, version=canary.version), percent=50,
            sticky="session",
            policy=inference_pb2.RolloutPolicy(min_samples=5, max_samples=max_samples, max_drop=0.05, alpha=0.01,
                                               auto_promote=True)))


def one_session_per_arm(route: str) -> list[str]:
    """A session the route's 50% sticky split sends to the primary and one it sends to the canary
    (the split is a stable hash of route and session), so that alternating them gives both arms the
    same number of requests: a random split can leave the primary short of min_samples when the
    canary reaches max_samples, and the monitor then rightly only reports the canary as passed."""
    from llmops.inference.routing import bucket

    sides: dict[bool, str] = {}
    for i in range(1000):
        sides.setdefault(bucket(route, f"e2e-{i}") < 50, f"e2e-{i}")
        if len(sides) == 2:
            return [sides[False], sides[True]]
    raise AssertionError("no session on each side of a 50% split")


def drive_until_decided(client: Client, admin, route: str, revision: int, limit: int,
                        questions: list[str] = QUESTIONS) -> tuple[inference_pb2.Route, int]:
    """RAG requests until the route leaves ``revision`` (a decision was applied); (new route, requests sent)."""
    sessions = one_session_per_arm(route)
    for n in range(limit):
        # each question to both arms in turn: the arms compare on the same questions
        client.generate(questions[(n // 2) % len(questions)], rag=True, max_new_tokens=24, session_id=sessions[n % 2])
        current = admin.GetRoute(inference_pb2.GetRouteRequest(name=route), timeout=10)
        if current.revision != revision:
            return current, n + 1
    # the judge lags the requests by a moment: the last ones' scores may still be on their way
    current = wait_until(lambda: (r := admin.GetRoute(inference_pb2.GetRouteRequest(name=route), timeout=10))
                         .revision != revision and r, timeout_s=30, what=f"a rollout decision on {route}")
    return current, limit


def test_the_judge_rolls_back_a_bad_canary_and_promotes_a_good_one(stack):
    settings, env, kafka = stack
    client = Client(settings)
    from pydoc_data.topics import topics

    client.upsert([retrieval_pb2.Document(id=f"pydoc:{t}", text=topics[t][:1500], metadata={"topic": t})
                   for t in TOPICS])
    admin = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(settings.grpc_target("inference")))
    route = settings.model_name
    assert admin.GetRoute(inference_pb2.GetRouteRequest(name=route), timeout=10).revision == 1

    # a prompt version that ignores the question and its contexts, and a deployment version that uses it
    poem = admin.RegisterPromptTemplate(inference_pb2.RegisterPromptTemplateRequest(
        name="rag", system="You are a poet.", user=POEM), timeout=10)
    bad = admin.RegisterDeployment(inference_pb2.Deployment(
        name=route, backend="llama_cpp", prompt_template="rag", prompt_version=poem.version,
        description="rag prompt that answers off-topic"), timeout=10)
    assert bad.version == 2
    set_at = admin.SetRoute(inference_pb2.SetRouteRequest(route=canary_route(route, bad, max_samples=60),
                                                          changed_by="e2e", reason="try the poem prompt"), timeout=10)
    after, sent = drive_until_decided(client, admin, route, set_at.revision, limit=70)
    assert not after.HasField("canary") and after.primary.version == 1 and after.changed_by == "rollout-monitor"
    assert "rollback" in after.reason
    events = [events_pb2.DeploymentEvent.FromString(m.value)
              for m in consume(kafka, settings.topic("deployments"), want=1, timeout_s=20)]
    ev = next(e for e in events if e.route_revision == set_at.revision)
    assert ev.decision == events_pb2.ROLLOUT_DECISION_ROLLBACK
    e = ev.evidence
    assert 5 <= e.canary_n < 60, e                         # decided before the sample limit
    assert e.canary_mean < e.primary_mean - 0.05 and e.statistic >= e.threshold == pytest.approx(100)
    assert e.test == "msprt" and e.primary_n > 0
    # served answers while the canary ran came from both versions
    history = admin.ListRoutes(inference_pb2.ListRoutesRequest(name=route), timeout=10).routes
    assert [r.revision for r in history][:2] == [after.revision, set_at.revision]

    # the same prompt as the primary, as a new deployment version: as good, so it is promoted (one
    # question, answered greedily, gives both arms the same answer and score: no drop at all)
    good = admin.RegisterDeployment(inference_pb2.Deployment(
        name=route, backend="llama_cpp", description="same prompt, new version"), timeout=10)
    set_at = admin.SetRoute(inference_pb2.SetRouteRequest(route=canary_route(route, good, max_samples=8),
                                                          changed_by="e2e", reason="same prompt"), timeout=10)
    t0 = time.monotonic()
    after, sent = drive_until_decided(client, admin, route, set_at.revision, limit=60, questions=QUESTIONS[:1])
    assert not after.HasField("canary") and (after.primary.name, after.primary.version) == (route, good.version)
    assert "promotion" in after.reason, after.reason
    r = client.generate(QUESTIONS[0], rag=True, max_new_tokens=8)
    assert (r.deployment, r.deployment_version, r.arm) == (route, good.version, "primary")

    # a person rolls it back: the revision before the promotion, from the CLI
    cli_env = {**env, "LLMOPS_KAFKA_BOOTSTRAP": kafka}
    out = subprocess.run([*LLMOPS, "rollback", route, "--reason", "e2e: back to v1"], env=cli_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    back = admin.GetRoute(inference_pb2.GetRouteRequest(name=route), timeout=10)
    assert back.restored_from == set_at.revision and back.HasField("canary")   # the revision with the canary
    status = subprocess.run([*LLMOPS, "rollout", "status", route], env=cli_env, capture_output=True, text=True,
                            timeout=120)
    assert status.returncode == 0 and "rollback" in status.stdout.lower(), status.stdout + status.stderr
    assert time.monotonic() - t0 < 600
