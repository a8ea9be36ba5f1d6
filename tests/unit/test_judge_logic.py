"""Judge logic that needs no model: sampling, the catalogue's configuration, claims, G-Eval's
probability weighting and the pairwise judge's order swap (with a scripted judge whose
preferences are known, standing in for a model's behaviour)."""
from __future__ import annotations

import math

import pytest

from llmops.backends.protocol import Generation, GenerationParams, ModelLimits, TokenOut
from llmops.judging.catalog import CatalogError, Sampling, build_catalog
from llmops.judging.claims import claims_of, split_sentences
from llmops.judging.evaluator import Sample
from llmops.judging.judge_model import JudgeModel
from llmops.judging.llm_tier import BUILTIN_RUBRICS, RubricJudge
from llmops.judging.pairwise import PairwiseJudge, combine


class ScriptedBackend:
    """A judge whose next-token distribution is ``decide(prompt) -> {token: prob}``."""
    kind = "scripted"
    name = "scripted"

    def __init__(self, decide, text: str = "Because.") -> None:
        self.decide = decide
        self.text = text
        self.prompts: list[str] = []

    def limits(self) -> ModelLimits:
        return ModelLimits(4000, 8000)

    def render_chat(self, messages):
        return "".join(f"<{m.role}>{m.content}</{m.role}>" for m in messages) + "<assistant>"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def generate(self, prompt: str, params: GenerationParams) -> Generation:
        self.prompts.append(prompt)
        if params.top_n_tokens:
            dist = self.decide(prompt)
            top = sorted(((t, math.log(p)) for t, p in dist.items() if p > 0), key=lambda x: -x[1])
            tok = TokenOut(0, top[0][0], top[0][1], top=top)
            return Generation(tok.text, "length", self.count_tokens(prompt), 1, [tok])
        return Generation(self.text, "eos_token", self.count_tokens(prompt), 2)

    def generate_stream(self, prompt, params):  # pragma: no cover - not used by judges
        raise NotImplementedError


def first_answer_shown(prompt: str) -> str:
    return prompt.split("[The Start of Assistant A's Answer]\n", 1)[1].split("\n", 1)[0]


# -- sampling -----------------------------------------------------------------------------------

def test_sampling_is_deterministic_per_trace_and_close_to_the_rate():
    rule = Sampling(rate=0.3)
    samples = [Sample("q", "a", trace_id=f"{i:032x}") for i in range(4000)]
    first = [rule.selects(s, "rubric.helpfulness") for s in samples]
    again = [rule.selects(s, "rubric.helpfulness") for s in samples]
    assert first == again                        # a redelivery is judged the same way
    assert 0.27 < sum(first) / len(first) < 0.33
    other = [rule.selects(s, "rag.faithfulness.llm") for s in samples]
    assert other != first                        # evaluators sample independently


def test_sampling_filters_on_model_prompt_version_and_metadata():
    rule = Sampling(rate=1.0, models=("m1",), prompt_versions=(2,), metadata={"tenant": "acme"})
    ok = Sample("q", "a", trace_id="0" * 32, model="m1", prompt_version=2, metadata={"tenant": "acme", "x": "y"})
    assert rule.selects(ok, "e")
    assert not rule.selects(Sample("q", "a", model="m2", prompt_version=2, metadata={"tenant": "acme"}), "e")
    assert not rule.selects(Sample("q", "a", model="m1", prompt_version=1, metadata={"tenant": "acme"}), "e")
    assert not rule.selects(Sample("q", "a", model="m1", prompt_version=2, metadata={"tenant": "other"}), "e")
    assert not Sampling(rate=0.0).selects(ok, "e")


class _NoEmbedder:
    dim = 3

    def embed(self, texts):  # pragma: no cover - the catalogue never embeds while it is built
        raise AssertionError("not used")


def _catalog(config=None, judge=True):
    from llmops.judging.embedding_tier import EmbeddingCache

    jm = JudgeModel(ScriptedBackend(lambda p: {"Yes": 0.5, "No": 0.5})) if judge else None
    return build_catalog(EmbeddingCache(_NoEmbedder()), jm, config, llm_rate=0.25)


def test_catalog_defaults_and_overrides():
    cat = _catalog()
    online = {e.evaluator.name for e in cat.online(("cheap", "safety", "llm"))}
    assert {"rag.faithfulness.cheap", "rag.answer_relevancy.cheap", "rag.context_relevancy.cheap",
            "safety.pii", "safety.prompt_injection", "rag.faithfulness.llm", "rubric.helpfulness"} == online
    assert cat.entries["rag.faithfulness.llm"].sampling.rate == 0.25
    cat = _catalog({"evaluators": {"rag.faithfulness.llm": {"online": False},
                                   "rag.answer_relevancy.llm": {"online": True, "rate": 1, "models": ["m"]}},
                    "rubrics": [{"name": "concise", "criteria": "Short and to the point.", "online": True}]})
    online = {e.evaluator.name for e in cat.online(("llm",))}
    assert online == {"rag.answer_relevancy.llm", "rubric.helpfulness", "rubric.concise"}
    assert cat.entries["rag.answer_relevancy.llm"].sampling.models == ("m",)
    assert cat.settings_of("rag.answer_relevancy.llm")["sampling.models"] == "m"


def test_catalog_without_a_judge_has_no_llm_tier():
    cat = _catalog(judge=False)
    assert not [n for n in cat.names if n.startswith(("rubric.", "rag.faithfulness.llm"))]
    assert "reference.rouge_l" in cat and "safety.pii" in cat


@pytest.mark.parametrize("config, message", [
    ({"evaluators": {"no.such": {}}}, "unknown evaluators: no.such"),
    ({"evaluators": {"rag.faithfulness.llm": {"rate": 1.5}}}, "rate must be within [0, 1]"),
    ({"rubrics": [{"name": "x"}]}, "needs at least 'name' and 'criteria'"),
])
def test_catalog_rejects_bad_configuration(config, message):
    with pytest.raises(CatalogError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _catalog(config)


def test_changed_rubric_gets_a_new_version():
    cat = _catalog({"rubrics": [{"name": "helpfulness", "criteria": "Something else entirely."}]})
    builtin = RubricJudge(JudgeModel(ScriptedBackend(lambda p: {})), BUILTIN_RUBRICS[0])
    assert cat.get("rubric.helpfulness").version != builtin.version


# -- claims ---------------------------------------------------------------------------------------

def test_sentences_and_claims():
    text = "Python was created by Guido van Rossum, e.g. in 1991. It is popular!\n- It has a GIL.\nYes."
    assert split_sentences(text) == ["Python was created by Guido van Rossum, e.g. in 1991.", "It is popular!",
                                     "It has a GIL.", "Yes."]
    assert claims_of(text) == split_sentences(text)[:3]          # "Yes." is not a claim


# -- G-Eval ---------------------------------------------------------------------------------------

async def test_rubric_score_is_the_probability_weighted_mean():
    backend = ScriptedBackend(lambda p: {"3": 0.2, "4": 0.6, "5": 0.2, "x": 0.5}, text="Clear and complete.")
    judge = RubricJudge(JudgeModel(backend), BUILTIN_RUBRICS[0])
    [j] = await judge.evaluate([Sample("How do I sort a list?", "Use sorted(xs).")])
    assert j.ok
    assert j.value == pytest.approx(3 * 0.2 + 4 * 0.6 + 5 * 0.2)   # 'x' is not a score token
    assert j.explanation.startswith("Clear and complete.")
    assert [c.purpose for c in j.calls] == ["reasoning", "score"]
    assert all(c.prompt_tokens > 0 for c in j.calls)


async def test_rubric_needing_a_reference_fails_without_one():
    correctness = next(r for r in BUILTIN_RUBRICS if r.name == "correctness")
    [j] = await RubricJudge(JudgeModel(ScriptedBackend(lambda p: {"5": 1.0})), correctness).evaluate(
        [Sample("q", "a")])
    assert not j.ok and "reference" in j.error


async def test_judge_without_any_choice_probability_is_an_error_not_a_score():
    from llmops.judging.llm_tier import LlmAnswerRelevancy

    [j] = await LlmAnswerRelevancy(JudgeModel(ScriptedBackend(lambda p: {"Maybe": 1.0}))).evaluate(
        [Sample("q", "a")])
    assert not j.ok and "no probability" in j.error
    assert len(j.calls) == 1                     # the failed call is still traced


# -- pairwise -------------------------------------------------------------------------------------

def test_combine_orders():
    assert combine({"A": .8, "B": .1, "tie": .1}, {"A": .7, "B": .2, "tie": .1})[:2] == ("A", True)
    winner, consistent, w_ab, w_ba, mean = combine({"A": .8, "B": .1, "tie": .1}, {"A": .1, "B": .8, "tie": .1})
    assert (winner, consistent, w_ab, w_ba) == ("tie", False, "A", "B")
    assert mean["A"] == pytest.approx(0.45)


async def test_position_biased_judge_gives_an_inconsistent_tie():
    backend = ScriptedBackend(lambda p: {"A": 0.9, "B": 0.1})          # always prefers the first shown
    v = await PairwiseJudge(JudgeModel(backend)).compare("q", "answer one", "answer two")
    assert (v.winner, v.consistent, v.winner_ab, v.winner_ba) == ("tie", False, "A", "B")
    assert len(backend.prompts) == 2
    assert first_answer_shown(backend.prompts[0]) == "answer one"
    assert first_answer_shown(backend.prompts[1]) == "answer two"      # really asked in both orders


async def test_a_real_preference_survives_the_swap_and_mirrors():
    def prefers_correct(prompt):
        first_is_good = "correct" in first_answer_shown(prompt)
        return {"A": 0.8, "B": 0.15, "C": 0.05} if first_is_good else {"A": 0.15, "B": 0.8, "C": 0.05}

    judge = PairwiseJudge(JudgeModel(ScriptedBackend(prefers_correct)))
    v = await judge.compare("q", "a wrong answer", "the correct answer")
    assert (v.winner, v.consistent) == ("B", True)
    assert v.p_b == pytest.approx(0.8) and v.p_tie == pytest.approx(0.05)
    mirrored = await judge.compare("q", "the correct answer", "a wrong answer")
    assert (mirrored.winner, mirrored.consistent) == ("A", True)
    assert mirrored.p_a == pytest.approx(v.p_b)
    assert v.usage[0] > 0 and v.usage[1] == 2


def test_every_score_names_a_span_that_is_published_with_it():
    """Cheap and safety evaluations call no judge model: their scores name the run span of their
    trace; an LLM-tier evaluation names its own judge span. The traceparent header names the same
    span, and every span hangs below the judged request's root span."""
    from llmops.common.envelope import parse_traceparent
    from llmops.judging.evaluator import JudgeCall, Judgement
    from llmops.judging.online import Outcome, events_for
    from llmops.v1 import events_pb2

    class Ev:
        def __init__(self, name, tier):
            self.name, self.metric, self.version, self.tier = name, name.split(".")[-1], "1", tier

    tid, root = "a" * 32, "b" * 16
    sample = Sample(question="q", answer="a", trace_id=tid)
    call = JudgeCall("score", "judge-model", 1_000, 2_000, 10, 2)
    outcomes = [Outcome(sample, Ev("rag.faithfulness.cheap", "cheap"), Judgement(0.8)),
                Outcome(sample, Ev("safety.pii", "safety"), Judgement.failed("regex blew up")),
                Outcome(sample, Ev("rag.faithfulness.llm", "llm"), Judgement(0.5, calls=[call]))]
    completion = events_pb2.CompletionEvent(trace_id=tid, root_span_id=root, model="m")
    out = events_for(outcomes, {tid: completion}, "p.", label="cheap", start_ns=5_000, end_ns=9_000)
    spans = {m.span_id: m for topic, _, m, _ in out if topic == "p.spans"}
    scores = [(m, h) for topic, _, m, h in out if topic == "p.scores"]
    assert len(scores) == 3 and all(m.span_id in spans for m, _ in scores)
    assert all(parse_traceparent(h) == (tid, m.span_id) for m, h in scores)
    by = {m.score.evaluator: spans[m.span_id] for m, _ in scores}
    run = by["rag.faithfulness.cheap"]
    assert by["safety.pii"] is run and run.name == "judge cheap" and run.parent_span_id == root
    assert run.attributes["judge.evaluators"] == "rag.faithfulness.cheap,safety.pii"
    assert run.attributes["judge.score.safety.pii"] == "error" and "regex blew up" in run.status_message
    assert run.start_time.ToNanoseconds() == 5_000 and run.end_time.ToNanoseconds() == 9_000
    llm = by["rag.faithfulness.llm"]
    assert llm.name == "judge rag.faithfulness.llm" and llm.parent_span_id == root
    assert [s.name for s in spans.values() if s.parent_span_id == llm.span_id] == ["judge.call"]


# -- served through a route: scores by deployment version; failed requests are not judged ---------
class _Sent:
    """Collects what the judge sends (the broker's door; the integration tests use the real one)."""

    def __init__(self):
        self.events = []

    async def send_many(self, messages):
        self.events.extend(messages)


def _routed(trace_id: str, **fields):
    from llmops.v1 import events_pb2

    c = events_pb2.CompletionEvent(trace_id=trace_id, root_span_id="b" * 16, model="m", prompt="What is 2+2?",
                                   answer="It is 4.", prompt_template="chat", prompt_version=3, route="chat",
                                   route_revision=7, deployment="smol", deployment_version=2, arm="canary",
                                   attempts=1, **fields)
    c.timestamp.GetCurrentTime()
    return c


def _records(*completions):
    from llmops.common.envelope import Record, encode

    return [Record("p.completions", 0, i, c.trace_id.encode(), *encode(c)) for i, c in enumerate(completions)]


async def test_scores_carry_the_deployment_version_that_answered():
    from llmops.common import metrics
    from llmops.judging.online import CompletionJudge

    sent = _Sent()
    judge = CompletionJudge(_catalog(), ("safety",), sent, None, topic_prefix="p.", label="cheap")
    labels = {"evaluator": "safety.pii", "metric": "pii", "model": "m", "prompt_version": "3",
              "deployment": "smol", "deployment_version": "2"}
    before = metrics.REGISTRY.get_sample_value("llmops_judge_score_count", labels) or 0
    shadow = _routed("d" * 32, shadow_of="c" * 32)
    shadow.arm, shadow.deployment_version = "shadow", 2
    assert await judge.handle(_records(_routed("c" * 32), shadow)) == []
    scores = [m for topic, _, m, _ in sent.events if topic == "p.scores"]
    assert {(s.trace_id, s.score.evaluator) for s in scores} == {
        (t, e) for t in ("c" * 32, "d" * 32) for e in ("safety.pii", "safety.prompt_injection")}
    for s in scores:
        assert (s.route, s.route_revision, s.deployment, s.deployment_version) == ("chat", 7, "smol", 2)
        assert s.arm == ("canary" if s.trace_id == "c" * 32 else "shadow")   # a shadow is judged like any other
        assert (s.model, s.prompt_template, s.prompt_version) == ("m", "chat", 3)
    assert metrics.REGISTRY.get_sample_value("llmops_judge_score_count", labels) == before + 2


async def test_a_failed_request_is_skipped_and_counted_not_judged():
    from llmops.common import metrics
    from llmops.judging.online import CompletionJudge

    sent = _Sent()
    judge = CompletionJudge(_catalog(), ("safety",), sent, None, topic_prefix="p.", label="cheap")

    def skipped(evaluator):
        return metrics.REGISTRY.get_sample_value(
            "llmops_judge_skipped_total", {"evaluator": evaluator, "reason": "failed_request"}) or 0

    before = {e: skipped(e) for e in ("safety.pii", "safety.prompt_injection")}
    failed = _routed("e" * 32, error="UNAVAILABLE: every deployment of route chat failed")
    failed.answer = ""
    assert await judge.handle(_records(failed)) == []
    assert sent.events == []
    assert {e: skipped(e) - n for e, n in before.items()} == {"safety.pii": 1, "safety.prompt_injection": 1}
    # in a batch with a good completion, only the good one is judged
    await judge.handle(_records(failed, _routed("f" * 32)))
    assert {m.trace_id for topic, _, m, _ in sent.events if topic == "p.scores"} == {"f" * 32}
    assert {e: skipped(e) - n for e, n in before.items()} == {"safety.pii": 2, "safety.prompt_injection": 2}
