"""The deployment store's contract, on real SQLite and real PostgreSQL: versions and revisions are
assigned in order and never twice (also by writers racing on one database), history is kept newest
first, mirroring a record read from the config topic is idempotent."""
from __future__ import annotations

import threading

import pytest

from llmops.inference.config_store import DeploymentStore
from llmops.v1 import inference_pb2


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'deployments.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def dep(name: str, url: str = "http://tgi:80") -> inference_pb2.Deployment:
    return inference_pb2.Deployment(name=name, backend="tgi", url=url)


def route(name: str, primary: str, version: int, by: str = "ops") -> inference_pb2.Route:
    return inference_pb2.Route(name=name, primary=inference_pb2.DeploymentRef(name=primary, version=version),
                               changed_by=by)


def test_versions_revisions_and_history(store_url):
    store = DeploymentStore(store_url)
    try:
        a1 = store.add_deployment(dep("a"))
        a2 = store.add_deployment(dep("a", "http://tgi-2:80"))
        b1 = store.add_deployment(dep("b"))
        assert (a1.version, a2.version, b1.version) == (1, 2, 1) and a2.HasField("created_at")
        assert store.deployment("a").url == "http://tgi-2:80" and store.deployment("a", 1).url == "http://tgi:80"
        assert store.deployment("a", 9) is None and store.deployment("zzz") is None
        assert [(d.name, d.version) for d in store.deployments()] == [("a", 2), ("b", 1)]
        assert [(d.name, d.version) for d in store.deployments("a", all_versions=True)] == [("a", 1), ("a", 2)]

        r1 = store.add_route(route("chat", "a", 1))
        r2 = store.add_route(route("chat", "a", 2, by="alice"))
        store.add_route(route("other", "b", 1))
        assert (r1.revision, r2.revision) == (1, 2)
        assert store.route("chat").primary.version == 2 and store.route("chat", 1).primary.version == 1
        assert [r.revision for r in store.route_history("chat")] == [2, 1]
        assert [(r.name, r.revision) for r in store.current_routes()] == [("chat", 2), ("other", 1)]
        assert store.route_history("chat")[0].changed_by == "alice"

        store.put_route(r2)                      # the feed brings back what this store wrote: nothing changes
        store.put_deployment(a1)
        mirrored = inference_pb2.Route()
        mirrored.CopyFrom(r2)
        mirrored.revision = 3
        store.put_route(mirrored)                # a revision written by another replica's store
        assert [r.revision for r in store.route_history("chat")] == [3, 2, 1]
    finally:
        store.close()


def test_racing_writers_never_share_a_revision(store_url):
    """Two replicas on one database: each revision number goes to exactly one writer."""
    stores = [DeploymentStore(store_url) for _ in range(2)]
    try:
        stores[0].add_deployment(dep("a"))
        got: list[int] = []
        lock = threading.Lock()

        def write(store: DeploymentStore) -> None:
            for _ in range(10):
                r = store.add_route(route("chat", "a", 1))
                with lock:
                    got.append(r.revision)

        threads = [threading.Thread(target=write, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(got) == list(range(1, 21))
        assert [r.revision for r in stores[1].route_history("chat")] == list(range(20, 0, -1))
    finally:
        for s in stores:
            s.close()


def test_an_expected_revision_refuses_a_change_made_meanwhile(store_url):
    from llmops.inference.config_store import RevisionConflict

    store = DeploymentStore(store_url)
    try:
        store.add_deployment(dep("a"))
        with pytest.raises(RevisionConflict, match="does not exist"):
            store.add_route(route("chat", "a", 1), expected_revision=3)
        assert store.add_route(route("chat", "a", 1), expected_revision=0).revision == 1
        with pytest.raises(RevisionConflict, match="at revision 1"):
            store.add_route(route("chat", "a", 1), expected_revision=0)   # "create" once it exists
        assert store.add_route(route("chat", "a", 1), expected_revision=1).revision == 2
        with pytest.raises(RevisionConflict, match="not at the expected 1"):
            store.add_route(route("chat", "a", 1), expected_revision=1)   # the second of two read-modify-writes
        assert [r.revision for r in store.route_history("chat")] == [2, 1]
    finally:
        store.close()
