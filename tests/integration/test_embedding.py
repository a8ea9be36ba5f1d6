"""The packaged all-MiniLM-L6-v2 run on plain torch (:class:`BertEmbedder`, what the services
open) gives sentence-transformers' own vectors, in the callers' order, for short, empty, padded,
accented, CJK and over-long texts across batch boundaries; opening it imports neither
sentence-transformers nor transformers; a model of another shape is opened on
sentence-transformers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from llmops.common.settings import packaged_embedder
from llmops.embedding import BertEmbedder, SentenceTransformerEmbedder, open_embedder

ROOT = Path(__file__).resolve().parents[2]

TEXTS = ["hello world", "", "   padded with spaces   ", "Héllo Wörld: accents ÀÉÎ, 中文字符 and 🎉",
         "word " * 400, "A list is an ordered, mutable sequence; items are added with append and read by index.",
         *(f"question {i}: how do I reverse a list in python without copying it?" * (1 + i % 4) for i in range(70))]


def test_the_plain_bert_path_gives_sentence_transformers_vectors(embedder):
    bert = BertEmbedder(packaged_embedder(), batch_size=16)     # several batches, sorted by length inside
    assert isinstance(embedder, SentenceTransformerEmbedder) and bert.dim == embedder.dim == 384
    got, want = bert.embed(TEXTS), embedder.embed(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert float(np.abs(got - want).max()) < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.allclose(bert.embed(TEXTS[3:4])[0], got[3], atol=1e-5)   # alone or in a batch: the same
    assert bert.embed([]).shape == (0, 384)


def test_opening_the_packaged_model_imports_no_sentence_transformers():
    code = ("import sys, json; from llmops.embedding import open_embedder; from llmops.common.settings import "
            "packaged_embedder; e = open_embedder(packaged_embedder()); e.embed(['x']); "
            "print(json.dumps([type(e).__name__, sorted(sys.modules)]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    kind, modules = json.loads(r.stdout.strip().splitlines()[-1])
    assert kind == "BertEmbedder"
    assert [m for m in ("sentence_transformers", "transformers", "sklearn") if m in modules] == []


def test_a_model_of_another_shape_is_opened_on_sentence_transformers(tmp_path):
    model = tmp_path / "cls-pooled"
    shutil.copytree(packaged_embedder(), model)
    pooling = model / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(cfg))
    assert BertEmbedder.fits(packaged_embedder()) and not BertEmbedder.fits(str(model))
    opened = open_embedder(str(model))
    assert isinstance(opened, SentenceTransformerEmbedder)
    assert opened.embed(["a sentence"]).shape == (1, 384)
