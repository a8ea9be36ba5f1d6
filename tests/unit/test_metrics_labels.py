"""Label values that clients choose are bounded: the first N distinct values (and the known ones)
pass, any later one is counted under "other", so no client can grow a metric's series without
bound. The call sites that put client strings into labels go through the bound."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmops.common import metrics
from llmops.common.metrics import OTHER, BoundedLabel, BoundedLabels


def series(metric_name: str, label: str) -> set[str]:
    """The values of ``label`` among the series of ``metric_name`` in the registry."""
    return {s.labels[label] for fam in metrics.REGISTRY.collect() for s in fam.samples
            if s.name == metric_name and label in s.labels}


def folded(label: str) -> float:
    return metrics.REGISTRY.get_sample_value("llmops_metric_label_values_folded_total", {"label": label}) or 0.0


def test_first_values_pass_and_the_rest_fold_into_other():
    bound = BoundedLabel("t_first", max_values=3)
    assert [bound(v) for v in ("a", "b", "a", "c")] == ["a", "b", "a", "c"]
    before = folded("t_first")
    assert [bound(v) for v in ("d", "e", "b")] == [OTHER, OTHER, "b"]   # a value seen before still passes
    assert folded("t_first") - before == 2
    assert bound.values() == {"a", "b", "c"}


def test_known_values_always_pass_and_other_is_not_counted_as_a_value():
    bound = BoundedLabel("t_known", known=("user",), max_values=1)
    assert bound("x") == "x"
    assert bound("user") == "user" and bound("other") == OTHER
    assert bound("y") == OTHER
    assert bound.values() == {"x"}


def test_overlong_values_fold_even_below_the_limit():
    bound = BoundedLabel("t_long", max_values=10)
    assert bound("z" * (metrics.MAX_LABEL_VALUE_LENGTH + 1)) == OTHER
    assert bound.values() == frozenset()


def test_the_setting_is_the_default_limit(monkeypatch):
    monkeypatch.setattr(metrics, "_max_label_values", metrics.DEFAULT_MAX_LABEL_VALUES)
    bound = BoundedLabel("t_setting")
    assert bound.max_values == 100
    metrics.set_max_label_values(2)
    assert [bound(v) for v in "abc"] == ["a", "b", OTHER]


def test_a_combination_of_labels_is_bounded_as_a_whole():
    bound = BoundedLabels("t_combo", max_values=2)
    assert bound("m1", 1) == ("m1", "1")
    assert bound("m1", 2) == ("m1", "2")
    assert bound("m2", 1) == (OTHER, OTHER)   # each value alone was seen: the pair is new
    assert bound("m1", 1) == ("m1", "1")


def test_settings_and_serve_metrics_apply_the_limit(monkeypatch):
    from llmops.common.settings import Settings

    assert Settings().metrics_max_label_values == 100
    monkeypatch.setenv("LLMOPS_METRICS_MAX_LABEL_VALUES", "7")
    assert Settings().metrics_max_label_values == 7
    monkeypatch.setattr(metrics, "_max_label_values", metrics.DEFAULT_MAX_LABEL_VALUES)
    monkeypatch.setattr(metrics, "_SERVING", {("127.0.0.1", 1)})   # already serving: no HTTP server
    metrics.serve_metrics("127.0.0.1", 1, max_label_values=7)
    assert BoundedLabel("t_serve").max_values == 7


# -- the call sites ----------------------------------------------------------------------------------

@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(metrics, "_max_label_values", 5)
    return 5


def test_feedback_names_from_clients_are_bounded(small_limit):
    from llmops.tracing.ingest import TraceIngestor
    from llmops.v1 import common_pb2, events_pb2

    store = SimpleNamespace(write_spans=None, write_completions=None, write_scores=None, write_feedback=None)
    ingestor = TraceIngestor(store, "llmops.")
    before = series("llmops_feedback_score_count", "name")
    events = [events_pb2.FeedbackEvent(trace_id="0" * 32, feedback=common_pb2.Feedback(name=f"fb-{i}", score=1.0))
              for i in range(200)]
    import inspect

    extra = [len(events)] if len(inspect.signature(ingestor._stored).parameters) > 2 else []   # stored count
    ingestor._stored("llmops.feedback", events, *extra)
    after = series("llmops_feedback_score_count", "name")
    assert len(after - before) <= small_limit + 1 and OTHER in after


def test_collections_from_clients_are_bounded(small_limit):
    import asyncio

    from llmops.retrieval.retriever import Retriever

    class Store:
        def ensure_collection(self, name, dim): ...
        def has_collection(self, name): return True
        def search(self, collection, query, vector, alpha, top_k, filters): return []

    retriever = Retriever(SimpleNamespace(dim=3, embed=None), Store())
    before = series("llmops_retrieval_hits_count", "collection")

    async def searches():
        for i in range(100):
            await retriever.search("what is a lambda", alpha=0.0, collection=f"c{i}")

    asyncio.run(searches())
    after = series("llmops_retrieval_hits_count", "collection")
    assert len(after - before) <= small_limit + 1 and OTHER in after


def test_judged_models_and_versions_from_events_are_bounded(small_limit):
    from llmops.judging.evaluator import Judgement, Sample
    from llmops.judging.online import Outcome, observe

    ev = SimpleNamespace(name="t.evaluator", metric="t_metric", version="1")
    before = series("llmops_judge_score_count", "model")
    observe([Outcome(Sample("q", "a", model=f"model-{i}", prompt_version=i, deployment=f"d{i}", deployment_version=i),
                     ev, Judgement(0.5)) for i in range(100)])
    combos = {(s.labels["model"], s.labels["prompt_version"], s.labels["deployment"])
              for fam in metrics.REGISTRY.collect() for s in fam.samples
              if s.name == "llmops_judge_score_count" and s.labels.get("evaluator") == "t.evaluator"}
    assert len(combos) <= small_limit + 1 and (OTHER, OTHER, OTHER) in combos
    assert len(series("llmops_judge_score_count", "model") - before) <= small_limit + 1
