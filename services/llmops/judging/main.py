"""Composition root of the judging service.

Two faust apps, so two consumer groups on ``llmops.completions``: ``<prefix>judging`` runs the
cheap and safety tiers on every completion; ``<prefix>judging-llm`` runs the sampled LLM tier and
may lag (its lag is the ``llmops_consumer_lag_messages`` gauge) without slowing the other.
"""
from __future__ import annotations

import asyncio
import logging

from llmops.common.bus import DeadLetterQueue, EventBus
from llmops.common.busy import BusySignal
from llmops.common.lag import LagMonitor
from llmops.common.runtime import ServiceParts, streaming_parts
from llmops.common.settings import Settings
from llmops.common.stream import batch_agent, make_app
from llmops.backends import open_backend, spec_from_settings
from llmops.judging.api import JudgingServicer
from llmops.judging import claims, reference
from llmops.judging.catalog import build_catalog, load_config
from llmops.judging.embedding_tier import EmbeddingCache
from llmops.judging.judge_model import JudgeModel
from llmops.judging.on_demand import OnDemandJudge
from llmops.judging.online import CHEAP_TIERS, LLM_TIERS, CompletionJudge
from llmops.judging.pairwise import PairwiseJudge
from llmops.embedding import LoadingEmbedder
from llmops.v1 import judging_pb2, judging_pb2_grpc

log = logging.getLogger(__name__)


def load_judge(settings: Settings) -> JudgeModel | None:
    """The judge model: any backend :func:`open_backend` knows (``LLMOPS_JUDGE_BACKEND``); a remote one
    talks to LLMOPS_JUDGE_URL, else to the same server as inference's backend of that kind."""
    if settings.judge_backend == "none":
        return None
    embedded = settings.judge_backend == "llama_cpp"
    local = {"model_path": settings.resolved_judge_model_path, "n_threads": settings.judge_threads,
             "priority": settings.judge_priority}
    spec = spec_from_settings(settings, settings.judge_backend, f"judge:{settings.model_name}", url=settings.judge_url,
                              url_hint=" or LLMOPS_JUDGE_URL", **(local if embedded else {}))
    # only an embedded judge competes with local generations for the CPU, so only it yields to them
    return JudgeModel(open_backend(spec), yield_to=BusySignal(settings.busy_signal_path) if embedded else None,
                      max_wait_s=settings.judge_yield_s)


def load_evaluator_libraries() -> None:
    """What the evaluators import on first use (nltk's stemmer for the claims of every completion,
    sacrebleu and rouge-score for the reference metrics): seconds of CPU, done while the service
    starts rather than in its first batch."""
    reference.load_libraries()
    claims.stem("warming")


async def build(settings: Settings) -> ServiceParts:
    # the embedding model loads in a thread of its own while the judge model loads, the gRPC server
    # starts and the consumer groups are joined (SERVING waits for it: ``loading``)
    embedder = LoadingEmbedder(settings.resolved_embedding_model)
    judge = await asyncio.to_thread(load_judge, settings)
    cache = EmbeddingCache(embedder, max_bytes=settings.embedding_cache_bytes)
    catalog = build_catalog(cache, judge, load_config(settings.judge_config), settings.judge_llm_sample_rate)
    bus = EventBus(settings)

    cheap_app = make_app(settings, "judging")
    cheap = CompletionJudge(catalog, CHEAP_TIERS, bus, cache, settings.topic_prefix, label="cheap")
    batch_agent(cheap_app, cheap.topics, cheap, lambda: DeadLetterQueue(bus, cheap_app.conf.id),
                name="judge_cheap", max_batch=settings.judge_batch_size, within_s=0.05)
    apps = [cheap_app]
    groups = {cheap_app.conf.id: cheap.topics}
    if judge is not None and catalog.online(LLM_TIERS):
        llm_app = make_app(settings, "judging-llm")
        llm = CompletionJudge(catalog, LLM_TIERS, bus, None, settings.topic_prefix, label="llm")
        batch_agent(llm_app, llm.topics, llm, lambda: DeadLetterQueue(bus, llm_app.conf.id),
                    name="judge_llm", max_batch=4, within_s=0.05)
        apps.append(llm_app)
        groups[llm_app.conf.id] = llm.topics
    servicer = JudgingServicer(OnDemandJudge(catalog, cache, PairwiseJudge(judge) if judge else None, bus,
                                             settings.topic_prefix))

    def close() -> None:
        if judge is not None:
            judge.backend.close()

    return streaming_parts(
        settings, bus, apps,
        register=lambda s: judging_pb2_grpc.add_JudgingServiceServicer_to_server(servicer, s.server),
        service_names=[judging_pb2.DESCRIPTOR.services_by_name["JudgingService"].full_name],
        close=close, companions=[LagMonitor(settings, groups)],
        loading=[embedder.loaded, lambda: asyncio.to_thread(load_evaluator_libraries)],
    )
