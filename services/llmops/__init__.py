"""llmops: traced inference, RAG, online judging and drift monitors on a Kafka backbone.

Models come from pip packages and load from disk; nothing is fetched from a model hub at run time.
The switches below say so to huggingface-hub, transformers and tokenizers, here and only here:
every entry point (the ``llmops`` command, each service process, the tests, the benchmarks)
imports this package before any of those libraries. An explicit setting in the environment wins.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")   # the embedder runs in worker threads
