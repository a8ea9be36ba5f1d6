"""The evaluator catalogue: every evaluator the judging service knows, which of them run online
(on the stream), and how each is sampled.

Built-in defaults run the cheap RAG triad and the safety flags on 100% of completions, and the
LLM-tier faithfulness and helpfulness rubric on a sample. A JSON file (``LLMOPS_JUDGE_CONFIG``)
changes any of that and adds rubrics::

    {"evaluators": {"rag.faithfulness.llm": {"online": true, "rate": 0.5,
                                             "models": ["smollm2-135m-instruct"],
                                             "prompt_versions": [2], "metadata": {"tenant": "acme"}}},
     "rubrics": [{"name": "concise", "criteria": "...", "steps": ["..."], "needs_reference": false,
                  "online": true, "rate": 0.1}]}
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from llmops.judging import reference, safety
from llmops.judging.embedding_tier import AnswerRelevancy, ContextRelevancy, EmbeddingCache, Faithfulness
from llmops.judging.evaluator import Evaluator, Judgement, Sample
from llmops.judging.judge_model import JudgeModel
from llmops.judging.llm_tier import (BUILTIN_RUBRICS, LlmAnswerRelevancy, LlmContextRelevancy, LlmFaithfulness,
                                     Rubric, RubricJudge)


class CatalogError(ValueError):
    """The judge configuration is invalid."""


@dataclass(frozen=True)
class Sampling:
    """Which completions an evaluator judges online: a deterministic share of traces (the same
    trace is always in or out, so a redelivery is judged the same way), narrowed by filters."""
    rate: float = 1.0
    models: tuple[str, ...] = ()
    prompt_templates: tuple[str, ...] = ()
    prompt_versions: tuple[int, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def selects(self, sample: Sample, evaluator: str) -> bool:
        if self.models and sample.model not in self.models:
            return False
        if self.prompt_templates and sample.prompt_template not in self.prompt_templates:
            return False
        if self.prompt_versions and sample.prompt_version not in self.prompt_versions:
            return False
        if any(sample.metadata.get(k) != v for k, v in self.metadata.items()):
            return False
        if self.rate >= 1.0:
            return True
        digest = hashlib.blake2b(f"{sample.trace_id}:{evaluator}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < self.rate

    def describe(self) -> dict[str, str]:
        out = {"rate": f"{self.rate:g}"}
        if self.models:
            out["models"] = ",".join(self.models)
        if self.prompt_templates:
            out["prompt_templates"] = ",".join(self.prompt_templates)
        if self.prompt_versions:
            out["prompt_versions"] = ",".join(map(str, self.prompt_versions))
        if self.metadata:
            out["metadata"] = ",".join(f"{k}={v}" for k, v in sorted(self.metadata.items()))
        return out


# -- reference metrics and safety flags as evaluators -------------------------------------------

class ReferenceMetric:
    tier = "reference"
    needs_reference = True
    needs_contexts = False
    scale = "0-1"
    version = "1"

    def __init__(self, metric: str, fn: Callable[[str, str], float], description: str) -> None:
        self.metric, self.fn, self.description = metric, fn, description
        self.name = f"reference.{metric}"

    def settings(self) -> dict[str, str]:
        return {}

    async def evaluate(self, samples: Sequence[Sample]) -> list[Judgement]:
        out = []
        for s in samples:
            if not s.reference:
                out.append(Judgement.failed(f"{self.metric} needs a reference answer"))
            else:
                out.append(Judgement(float(self.fn(s.answer, s.reference))))
        return out


class SafetyFlag:
    """1.0 when something was found, else 0.0; the explanation lists the findings (masked)."""
    tier = "safety"
    needs_reference = False
    needs_contexts = False
    scale = "flag"
    version = "1"

    def __init__(self, metric: str, find: Callable[[str], list], fields: Callable[[Sample], list[tuple[str, str]]],
                 description: str) -> None:
        self.metric, self.find, self.fields, self.description = metric, find, fields, description
        self.name = f"safety.{metric}"

    def settings(self) -> dict[str, str]:
        return {}

    async def evaluate(self, samples: Sequence[Sample]) -> list[Judgement]:
        out = []
        for s in samples:
            found = [{"field": where, **f.to_dict()} for where, text in self.fields(s) for f in self.find(text)]
            out.append(Judgement(1.0 if found else 0.0, json.dumps({"findings": found}, ensure_ascii=False)))
        return out


def _prompt_and_answer(s: Sample) -> list[tuple[str, str]]:
    return [("prompt", s.question), ("answer", s.answer)]


def _prompt_and_contexts(s: Sample) -> list[tuple[str, str]]:
    # retrieved documents can carry an injection too (indirect prompt injection)
    return [("prompt", s.question)] + [(f"context[{i}]", c) for i, c in enumerate(s.contexts)]


# -- the catalogue ------------------------------------------------------------------------------

@dataclass
class Entry:
    evaluator: Evaluator
    online: bool
    sampling: Sampling


class Catalog:
    def __init__(self, entries: dict[str, Entry]) -> None:
        self.entries = entries

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> Evaluator:
        return self.entries[name].evaluator

    @property
    def names(self) -> list[str]:
        return sorted(self.entries)

    def online(self, tiers: Sequence[str]) -> list[Entry]:
        return [e for e in self.entries.values() if e.online and e.evaluator.tier in tiers]

    def defaults_for_request(self, has_reference: bool, has_contexts: bool) -> list[str]:
        """What ``Score`` runs when the request names no evaluator: the cheap and safety tiers, plus
        the reference metrics when there is a reference. Context metrics need contexts."""
        out = []
        for name, e in sorted(self.entries.items()):
            ev = e.evaluator
            if ev.tier in ("cheap", "safety") or (ev.tier == "reference" and has_reference):
                if ev.needs_contexts and not has_contexts:
                    continue
                out.append(name)
        return out

    def settings_of(self, name: str) -> dict[str, str]:
        e = self.entries[name]
        out = dict(e.evaluator.settings())
        out["online"] = "true" if e.online else "false"
        out.update({f"sampling.{k}": v for k, v in e.sampling.describe().items()})
        return out


def _sampling(raw: Mapping, default_rate: float, where: str) -> Sampling:
    rate = float(raw.get("rate", default_rate))
    if not 0.0 <= rate <= 1.0:
        raise CatalogError(f"{where}: rate must be within [0, 1], got {rate}")
    md = raw.get("metadata", {})
    if not isinstance(md, dict):
        raise CatalogError(f"{where}: metadata must be an object of key: value")
    return Sampling(rate=rate, models=tuple(raw.get("models", ())),
                    prompt_templates=tuple(raw.get("prompt_templates", ())),
                    prompt_versions=tuple(int(v) for v in raw.get("prompt_versions", ())),
                    metadata={str(k): str(v) for k, v in md.items()})


def load_config(path: str | Path | None) -> dict:
    if not path:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"judge config {path}: {exc}") from None
    if not isinstance(raw, dict) or set(raw) - {"evaluators", "rubrics"}:
        raise CatalogError(f"judge config {path}: expected an object with 'evaluators' and/or 'rubrics'")
    return raw


def build_catalog(cache: EmbeddingCache, judge: JudgeModel | None, config: Mapping | None = None,
                  llm_rate: float = 0.25) -> Catalog:
    """Every evaluator, with its online switch and sampling from ``config`` (see module doc).
    Without a judge model the LLM tier is left out (``Score`` then says it is not available)."""
    config = dict(config or {})
    evaluators: list[tuple[Evaluator, bool, float]] = [
        (Faithfulness(cache), True, 1.0),
        (AnswerRelevancy(cache), True, 1.0),
        (ContextRelevancy(cache), True, 1.0),
        (SafetyFlag("pii", safety.find_pii, _prompt_and_answer,
                    "PII in the prompt or the answer: e-mail, phone, card number (Luhn), SSN, NINO, IBAN, RRN."),
         True, 1.0),
        (SafetyFlag("prompt_injection", safety.find_injection, _prompt_and_contexts,
                    "Prompt-injection attempts in the prompt or in retrieved contexts."), True, 1.0),
        (ReferenceMetric("exact_match", reference.exact_match, "SQuAD exact match after normalisation."), False, 1.0),
        (ReferenceMetric("token_f1", reference.token_f1, "SQuAD token-level F1."), False, 1.0),
        (ReferenceMetric("bleu", reference.bleu, "Sentence BLEU (sacrebleu), 0-1."), False, 1.0),
        (ReferenceMetric("rouge_l", reference.rouge_l, "ROUGE-L F-measure (rouge-score, stemmed)."), False, 1.0),
    ]
    rubrics = list(BUILTIN_RUBRICS)
    rubric_online: dict[str, dict] = {}
    for i, raw in enumerate(config.get("rubrics", [])):
        try:
            r = Rubric(name=str(raw["name"]), criteria=str(raw["criteria"]), steps=tuple(raw.get("steps", ())),
                       needs_reference=bool(raw.get("needs_reference", False)),
                       description=str(raw.get("description", "")))
        except (KeyError, TypeError) as exc:
            raise CatalogError(f"rubrics[{i}]: needs at least 'name' and 'criteria' ({exc})") from None
        rubrics = [x for x in rubrics if x.name != r.name] + [r]
        rubric_online[f"rubric.{r.name}"] = raw
    if judge is not None:
        evaluators += [(LlmFaithfulness(judge), True, llm_rate), (LlmAnswerRelevancy(judge), False, llm_rate),
                       (LlmContextRelevancy(judge), False, llm_rate)]
        evaluators += [(RubricJudge(judge, r), r.name == "helpfulness", llm_rate) for r in rubrics]
    overrides = {**rubric_online, **config.get("evaluators", {})}
    entries: dict[str, Entry] = {}
    for ev, online, rate in evaluators:
        raw = overrides.get(ev.name, {})
        if not isinstance(raw, dict):
            raise CatalogError(f"evaluators.{ev.name}: expected an object")
        entries[ev.name] = Entry(ev, bool(raw.get("online", online)), _sampling(raw, rate, f"evaluators.{ev.name}"))
    unknown = set(config.get("evaluators", {})) - set(entries)
    if unknown:
        raise CatalogError(f"judge config names unknown evaluators: {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(sorted(entries))})")
    return Catalog(entries)
