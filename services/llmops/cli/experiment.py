"""Offline evaluation (experiments): a JSONL dataset through the real inference path and the
evaluators, stored as an ``EvalRun`` next to the traces; and the comparison of two runs.

A dataset line is ``{"id": "...", "question": "...", "reference": "...", "metadata": {...}}``;
only ``question`` is required (``input``/``expected`` are accepted as aliases). The run records
the sha256 of the file's bytes, so two runs can be checked to have seen the same items.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import grpc

from llmops.v1 import common_pb2, inference_pb2, judging_pb2, tracing_pb2

LOWER_IS_BETTER_PREFIXES = ("safety.",)
EPS = 1e-9


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class DatasetItem:
    item_id: str
    question: str
    reference: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


def load_dataset(path: str | Path) -> tuple[list[DatasetItem], str]:
    """The items of a JSONL dataset and the sha256 of its bytes; errors name the line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    items: list[DatasetItem] = []
    seen: set[str] = set()
    for n, line in enumerate(raw.decode("utf-8", errors="strict").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{n}: expected a JSON object")
        question = obj.get("question", obj.get("input", ""))
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{path}:{n}: 'question' is missing or empty")
        reference = obj.get("reference", obj.get("expected", "")) or ""
        item_id = str(obj.get("id", n))
        if item_id in seen:
            raise DatasetError(f"{path}:{n}: duplicate id {item_id!r}")
        seen.add(item_id)
        md = obj.get("metadata", {}) or {}
        items.append(DatasetItem(item_id, question, str(reference), {str(k): str(v) for k, v in md.items()}))
    if not items:
        raise DatasetError(f"{path}: no items")
    return items, hashlib.sha256(raw).hexdigest()


def aggregates(items: Sequence[tracing_pb2.EvalItem]) -> dict[str, float]:
    """Mean value per evaluator over the items where that evaluator gave an OK score."""
    values: dict[str, list[float]] = {}
    for it in items:
        for sc in it.scores:
            if sc.status != common_pb2.SCORE_STATUS_ERROR:
                values.setdefault(sc.evaluator, []).append(sc.value)
    return {k: statistics.fmean(v) for k, v in sorted(values.items())}


def run_experiment(client, dataset: str | Path, *, name: str, model: str = "", prompt_template: str = "",
                   prompt_version: int | None = None, retrieval: bool = False, collection: str = "",
                   evaluators: Sequence[str] = (), max_new_tokens: int | None = None,
                   on_item: Callable[[int, int, tracing_pb2.EvalItem], None] = lambda i, n, it: None,
                   timeout_s: float = 600) -> tracing_pb2.EvalRun:
    """Run every item through ``Generate`` then ``Score`` (scores attached to the item's trace),
    and save the run with ``SaveEvalRun``. ``client`` is :class:`llmops.cli.client.Client`."""
    items, digest = load_dataset(dataset)
    run = tracing_pb2.EvalRun(name=name, dataset=Path(dataset).name, dataset_hash=digest, model=model,
                              prompt_template=prompt_template, prompt_version=prompt_version or 0,
                              retrieval=retrieval, evaluators=list(evaluators))
    for i, item in enumerate(items, 1):
        out = run.items.add(item_id=item.item_id, question=item.question, reference=item.reference,
                            metadata=item.metadata)
        req = inference_pb2.GenerateRequest(prompt=item.question, model=model, prompt_template=prompt_template,
                                            metadata={**item.metadata, "llmops.eval_run": name,
                                                      "llmops.eval_item": item.item_id})
        if prompt_version is not None:
            req.prompt_version = prompt_version
        if max_new_tokens is not None:
            req.parameters.max_new_tokens = max_new_tokens
        if retrieval:
            req.retrieval.enabled = True
            req.retrieval.collection = collection
        try:
            resp = client.inference.Generate(req, timeout=timeout_s)
            out.answer, out.trace_id, out.latency_ms = resp.text, resp.trace_id, resp.latency_ms
            out.contexts.extend(c.text for c in resp.contexts)
            if not run.model:
                run.model = resp.model
            run.prompt_template, run.prompt_version = resp.prompt_template, resp.prompt_version
            scores = client.judging.Score(judging_pb2.ScoreRequest(
                question=item.question, answer=resp.text or " ", contexts=out.contexts, reference=item.reference,
                evaluators=list(evaluators), trace_id=resp.trace_id), timeout=timeout_s)
            out.scores.extend(scores.scores)
        except grpc.RpcError as exc:
            out.error = f"{exc.code().name}: {exc.details()}"
        on_item(i, len(items), out)
    for k, v in aggregates(run.items).items():
        run.aggregates[k] = v
    return client.tracing.SaveEvalRun(tracing_pb2.SaveEvalRunRequest(run=run), timeout=60)


# -- comparison ----------------------------------------------------------------------------------

@dataclass
class MetricRow:
    evaluator: str
    mean_a: float | None
    mean_b: float | None
    wins_a: int = 0           # items where A scored better
    wins_b: int = 0
    ties: int = 0

    @property
    def delta(self) -> float | None:
        if self.mean_a is None or self.mean_b is None:
            return None
        return self.mean_b - self.mean_a


@dataclass
class PairwiseRow:
    item_id: str
    winner: str               # "A" | "B" | "tie"
    consistent: bool
    p_a: float
    p_b: float


@dataclass
class Comparison:
    run_a: tracing_pb2.EvalRun
    run_b: tracing_pb2.EvalRun
    metrics: list[MetricRow]
    pairwise: list[PairwiseRow]
    common_items: int
    same_dataset: bool

    def verdicts(self) -> dict[str, int]:
        out = {"A": 0, "B": 0, "tie": 0, "inconsistent": 0}
        for p in self.pairwise:
            out[p.winner] += 1
            out["inconsistent"] += 0 if p.consistent else 1
        return out

    def to_dict(self) -> dict:
        return {
            "run_a": self.run_a.name, "run_b": self.run_b.name, "same_dataset": self.same_dataset,
            "common_items": self.common_items,
            "metrics": [{"evaluator": m.evaluator, "mean_a": m.mean_a, "mean_b": m.mean_b, "delta": m.delta,
                         "wins_a": m.wins_a, "wins_b": m.wins_b, "ties": m.ties} for m in self.metrics],
            "pairwise": {"verdicts": self.verdicts(), "items": [p.__dict__ for p in self.pairwise]},
        }


def _ok_scores(item: tracing_pb2.EvalItem) -> dict[str, float]:
    return {s.evaluator: s.value for s in item.scores if s.status != common_pb2.SCORE_STATUS_ERROR}


def compare_runs(a: tracing_pb2.EvalRun, b: tracing_pb2.EvalRun,
                 judge_pair: Callable[[tracing_pb2.EvalItem, tracing_pb2.EvalItem], judging_pb2.CompareResponse] | None = None
                 ) -> Comparison:
    """Aggregates side by side, item-level wins and losses per evaluator (items matched by id), and,
    when ``judge_pair`` is given, the pairwise judge's verdict on each item both runs answered."""
    items_b = {i.item_id: i for i in b.items}
    pairs = [(ia, items_b[ia.item_id]) for ia in a.items if ia.item_id in items_b]
    names = sorted(set(a.aggregates) | set(b.aggregates))
    rows = {n: MetricRow(n, a.aggregates.get(n), b.aggregates.get(n)) for n in names}
    for ia, ib in pairs:
        sa, sb = _ok_scores(ia), _ok_scores(ib)
        for n in set(sa) & set(sb):
            row = rows.setdefault(n, MetricRow(n, None, None))
            diff = sb[n] - sa[n]
            if n.startswith(LOWER_IS_BETTER_PREFIXES):
                diff = -diff
            if math.isclose(diff, 0.0, abs_tol=EPS):
                row.ties += 1
            elif diff > 0:
                row.wins_b += 1
            else:
                row.wins_a += 1
    verdicts: list[PairwiseRow] = []
    if judge_pair is not None:
        for ia, ib in pairs:
            if ia.error or ib.error:
                continue
            v = judge_pair(ia, ib)
            verdicts.append(PairwiseRow(ia.item_id, v.winner, v.consistent, v.p_a, v.p_b))
    return Comparison(a, b, [rows[n] for n in sorted(rows)], verdicts, len(pairs), a.dataset_hash == b.dataset_hash)
