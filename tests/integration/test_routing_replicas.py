"""Live route changes across inference replicas: two replicas in-process (their own ports, data
dirs and SQLite stores; the same embedded broker and topic prefix) follow the compacted config
topic, so a change made on one is served by the other within a second, without a restart; a
replica started afterwards, with an empty data dir, starts with the current state."""
from __future__ import annotations

import time
import uuid

import pytest

from llmops.cli.client import Client, generate_request
from llmops.inference.main import build as build_inference
from llmops.v1 import inference_pb2
from tests.fakes.tgi_server import FakeTgiConfig, FakeTgiServer
from tests.support import ServiceThread, make_settings, wait_until

ROUTE = "live"
B_WORDS = "Bravo answers come from the second deployment and only from it , every time .".split()


@pytest.fixture(scope="module")
def fakes():
    with FakeTgiServer() as one, FakeTgiServer(FakeTgiConfig(passage=B_WORDS)) as two:
        yield one, two


def replica_settings(tmp_path_factory, kafka, prefix: str, fake: FakeTgiServer, name: str):
    return make_settings(tmp_path_factory.mktemp(name), kafka, topic_prefix=prefix, model_backend="tgi",
                         tgi_url=fake.url, model_name="replica-default", inference_http_port=0)


@pytest.fixture(scope="module")
def replicas(kafka, tmp_path_factory, fakes):
    one, _ = fakes
    prefix = f"t{uuid.uuid4().hex[:8]}."
    started = []
    try:
        for name in ("replica-a", "replica-b"):
            s = replica_settings(tmp_path_factory, kafka, prefix, one, name)
            started.append(ServiceThread("inference", s, build_inference).start())
        clients = [Client(t.settings) for t in started]

        def third():
            s = replica_settings(tmp_path_factory, kafka, prefix, one, "replica-c")
            started.append(ServiceThread("inference", s, build_inference).start())
            clients.append(Client(s))
            return clients[-1]

        yield clients, third
        for c in clients:
            c.close()
    finally:
        for t in reversed(started):
            t.stop()


def generate(client: Client, model: str):
    return client.inference.Generate(generate_request("Where is Paris?", model=model, max_new_tokens=4), timeout=30)


def test_a_rollback_on_one_replica_is_served_by_the_other_within_a_second_and_a_new_replica_starts_with_it(
        replicas, fakes):
    (a, b), third = replicas
    one, two = fakes
    d1 = a.inference.RegisterDeployment(inference_pb2.Deployment(name="live-one", backend="tgi", url=one.url), timeout=30)
    d2 = a.inference.RegisterDeployment(inference_pb2.Deployment(name="live-two", backend="tgi", url=two.url), timeout=30)

    def set_primary(d):
        return a.inference.SetRoute(inference_pb2.SetRouteRequest(
            route=inference_pb2.Route(name=ROUTE, primary=inference_pb2.DeploymentRef(name=d.name, version=d.version)),
            changed_by="alice", reason=f"serve {d.name}"), timeout=30)

    r1, r2 = set_primary(d1), set_primary(d2)
    assert (r1.revision, r2.revision) == (1, 2)
    served = wait_until(lambda: (r := generate(b, ROUTE)).route_revision == 2 and r, timeout_s=10,
                        what="replica B serving revision 2")
    assert served.deployment == "live-two"

    t0 = time.monotonic()
    back = a.inference.Rollback(inference_pb2.RollbackRequest(route=ROUTE, changed_by="bob", reason="two is worse"),
                                timeout=30)
    assert (back.revision, back.restored_from, back.primary.name) == (3, 1, "live-one")
    on_b = wait_until(lambda: (r := generate(b, ROUTE)).route_revision == 3 and r, timeout_s=5, interval_s=0.01,
                      what="replica B serving the rollback")
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"replica B served the rollback {elapsed:.3f} s after it was made on A"
    assert on_b.deployment == "live-one"
    # B's own store mirrors the history too (who changed it and why)
    stored = wait_until(lambda: (r := b.inference.GetRoute(inference_pb2.GetRouteRequest(name=ROUTE), timeout=10))
                        .revision == 3 and r, timeout_s=5, interval_s=0.01, what="replica B's store at revision 3")
    assert (stored.changed_by, stored.reason, stored.restored_from) == ("bob", "two is worse", 1)
    history = b.inference.ListRoutes(inference_pb2.ListRoutesRequest(name=ROUTE), timeout=10)
    assert [(r.revision, r.changed_by) for r in history.routes] == [(3, "bob"), (2, "alice"), (1, "alice")]

    c = third()   # an empty data dir: everything comes from the config topic
    now = c.inference.GetRoute(inference_pb2.GetRouteRequest(name=ROUTE), timeout=10)
    assert (now.revision, now.primary.name, now.restored_from) == (3, "live-one", 1)
    first = generate(c, ROUTE)
    assert (first.route_revision, first.deployment) == (3, "live-one")
    listed = {d.name for d in c.inference.ListDeployments(inference_pb2.ListDeploymentsRequest(), timeout=10).deployments}
    assert {"live-one", "live-two"} <= listed


def test_a_prompt_rolled_back_on_one_replica_is_used_by_the_other_within_a_second(replicas, fakes):
    (a, b, *_), _ = replicas
    one, _ = fakes
    for system in ("Live version one.", "Live version two."):
        a.inference.RegisterPromptTemplate(inference_pb2.RegisterPromptTemplateRequest(
            name="live_prompt", system=system, user="{question}", labels=["production"]), timeout=10)
    d = a.inference.RegisterDeployment(inference_pb2.Deployment(name="live-prompted", backend="tgi", url=one.url,
                                                                prompt_template="live_prompt"), timeout=30)
    a.inference.SetRoute(inference_pb2.SetRouteRequest(route=inference_pb2.Route(
        name="live-prompted", primary=inference_pb2.DeploymentRef(name=d.name, version=d.version))), timeout=30)
    on_b = wait_until(lambda: (r := generate(b, "live-prompted")).prompt_version == 2 and r, timeout_s=10,
                      what="replica B using prompt version 2")
    assert on_b.prompt_template == "live_prompt" and "Live version two." in one.tgi.requests[-1]["inputs"]

    t0 = time.monotonic()
    a.inference.SetPromptLabel(inference_pb2.SetPromptLabelRequest(name="live_prompt", version=1, label="production"),
                               timeout=10)
    wait_until(lambda: generate(b, "live-prompted").prompt_version == 1, timeout_s=5, interval_s=0.01,
               what="replica B using prompt version 1 again")
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"replica B used the rolled-back prompt {elapsed:.3f} s after the change on A"
    assert "Live version one." in one.tgi.requests[-1]["inputs"]
    listed = b.inference.ListPromptTemplates(inference_pb2.ListPromptTemplatesRequest(name="live_prompt"), timeout=10)
    assert {t.version: list(t.labels) for t in listed.templates} == {1: ["production"], 2: []}
