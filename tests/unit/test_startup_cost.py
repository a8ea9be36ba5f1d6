"""What a service pays for at its start, which is the recovery time of every fault that restarts
it: importing a service's composition root does not import the model libraries (torch,
sentence-transformers), drift's Evidently, the judge's scikit-learn and nltk or LanceDB (each of which
the service loads in a thread while it joins its group, or on first use); the embedding model loads in a thread of its own
while the service starts (its gRPC server, its group join), and whoever needs the model waits for
it; a load that failed fails whoever waits."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from llmops.embedding import LoadingEmbedder

ROOT = Path(__file__).resolve().parents[2]
#: loaded in a thread while the service starts (the model), or on first use (Evidently, in a window)
HEAVY = ("torch", "sentence_transformers", "transformers", "evidently", "sklearn", "nltk", "lancedb")


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("service", ["retrieval", "judging", "drift", "tracing", "inference"])
def test_a_service_composition_root_imports_no_model_library(service):
    loaded = modules_after_import(f"llmops.{service}.main")
    assert sorted(m for m in HEAVY if m in loaded) == []


class Model:
    dim = 3

    def embed(self, texts):
        return np.ones((len(texts), 3), dtype=np.float32)


def test_the_model_loads_in_a_thread_of_its_own_and_embed_waits_for_it():
    release, loading_in = threading.Event(), []

    def load():
        loading_in.append(threading.current_thread().name)
        release.wait(10)
        return Model()

    emb = LoadingEmbedder("/models/all-MiniLM-L6-v2/", load=load)
    assert emb.name == "all-MiniLM-L6-v2"         # known before the model is (an evaluator's config names it)
    got: list = []
    caller = threading.Thread(target=lambda: got.append(emb.embed(["a", "b"])))
    caller.start()
    caller.join(0.3)
    assert caller.is_alive() and not got and not emb.is_loaded()   # waiting for the model
    assert loading_in and loading_in[0] != threading.current_thread().name
    release.set()
    caller.join(10)
    assert got[0].shape == (2, 3) and emb.dim == 3 and emb.is_loaded()

    async def loaded() -> None:
        await asyncio.wait_for(emb.loaded(), 5)

    asyncio.run(loaded())


def test_a_load_that_failed_fails_whoever_waits_and_a_cancelled_waiter_does_not_cancel_it():
    release = threading.Event()

    def load():
        release.wait(10)
        raise FileNotFoundError("no model there")

    emb = LoadingEmbedder("/nowhere", load=load)

    async def main() -> None:
        waiter = asyncio.create_task(emb.loaded())
        await asyncio.sleep(0.05)
        waiter.cancel()                           # a stop while starting
        await asyncio.gather(waiter, return_exceptions=True)
        release.set()
        with pytest.raises(FileNotFoundError):
            await asyncio.wait_for(emb.loaded(), 5)

    asyncio.run(main())
    with pytest.raises(FileNotFoundError):
        emb.embed(["x"])
    assert not emb.is_loaded()


def test_a_retriever_still_opening_is_unavailable_to_searches_and_upserts_wait_for_it():
    from llmops.common.errors import Unavailable
    from llmops.retrieval.retriever import DocumentIn, Retriever

    class Store:
        def __init__(self) -> None:
            self.tables: dict[str, int] = {}
            self.rows: list = []

        def ensure_collection(self, name, dim): self.tables.setdefault(name, dim)
        def has_collection(self, name): return name in self.tables
        def replace_documents(self, collection, ids, chunks): self.rows += chunks
        def search(self, collection, query, vector, alpha, top_k, filters): return []

    retriever = Retriever(Model(), None, open_now=False)
    store = Store()

    async def main() -> None:
        with pytest.raises(Unavailable):            # not "collection default does not exist"
            await retriever.search("what is a list", alpha=0.0)
        upsert = asyncio.create_task(retriever.upsert("default", [DocumentIn("d1", "a list is a sequence")]))
        await asyncio.sleep(0.2)
        assert not upsert.done() and store.rows == []
        await asyncio.to_thread(retriever.open, store)
        assert await asyncio.wait_for(upsert, 5) == (1, 1)
        assert store.tables == {"default": 3} and len(store.rows) == 1
        assert await retriever.search("what is a list", alpha=0.0) == []

    asyncio.run(main())
