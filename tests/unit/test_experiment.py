"""Offline evaluation logic without a stack: datasets, aggregates and run comparison."""
import hashlib

import pytest

from llmops.cli.experiment import DatasetError, aggregates, compare_runs, load_dataset
from llmops.v1 import common_pb2, judging_pb2, tracing_pb2

OK, ERR = common_pb2.SCORE_STATUS_OK, common_pb2.SCORE_STATUS_ERROR


def test_dataset_items_hash_and_aliases(tmp_path):
    path = tmp_path / "qa.jsonl"
    raw = b'{"id": "a", "question": "Q1", "reference": "R1", "metadata": {"k": 1}}\n\n{"input": "Q2", "expected": "R2"}\n'
    path.write_bytes(raw)
    items, digest = load_dataset(path)
    assert digest == hashlib.sha256(raw).hexdigest()
    assert [(i.item_id, i.question, i.reference) for i in items] == [("a", "Q1", "R1"), ("3", "Q2", "R2")]
    assert items[0].metadata == {"k": "1"}


@pytest.mark.parametrize("content, message", [
    ('{"question": "q"}\nnot json\n', ":2: not JSON"),
    ('{"question": ""}\n', ":1: 'question' is missing or empty"),
    ('{"id": "x", "question": "q"}\n{"id": "x", "question": "q2"}\n', ":2: duplicate id 'x'"),
    ('[1, 2]\n', ":1: expected a JSON object"),
    ("\n", "no items"),
])
def test_bad_datasets_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def item(item_id, answer, **scores):
    it = tracing_pb2.EvalItem(item_id=item_id, question=f"q-{item_id}", answer=answer)
    for evaluator, value in scores.items():
        name = evaluator.replace("__", ".")
        status = ERR if value is None else OK
        it.scores.add(name=name.split(".")[-1], evaluator=name, value=value or 0.0, version="1", status=status)
    return it


def run(name, items, dataset_hash="h"):
    r = tracing_pb2.EvalRun(name=name, dataset_hash=dataset_hash, items=items)
    for k, v in aggregates(r.items).items():
        r.aggregates[k] = v
    return r


def test_aggregates_skip_error_scores():
    r = run("a", [item("1", "x", reference__token_f1=0.5), item("2", "y", reference__token_f1=None),
                  item("3", "z", reference__token_f1=1.0)])
    assert dict(r.aggregates) == {"reference.token_f1": 0.75}


def test_compare_counts_item_wins_with_lower_is_better_flags_and_pairwise():
    a = run("a", [item("1", "a1", reference__token_f1=0.2, safety__pii=1.0),
                  item("2", "a2", reference__token_f1=0.9, safety__pii=0.0),
                  item("3", "a3", reference__token_f1=0.5),
                  item("only-a", "x", reference__token_f1=1.0)])
    b = run("b", [item("1", "b1", reference__token_f1=0.6, safety__pii=0.0),
                  item("2", "b2", reference__token_f1=0.3, safety__pii=0.0),
                  item("3", "b3", reference__token_f1=0.5)], dataset_hash="other")
    asked = []

    def judge(ia, ib):
        asked.append((ia.answer, ib.answer))
        return judging_pb2.CompareResponse(winner="B" if ia.item_id == "1" else "tie",
                                           consistent=ia.item_id != "2", p_a=0.2, p_b=0.7)

    c = compare_runs(a, b, judge)
    assert c.common_items == 3 and not c.same_dataset
    rows = {m.evaluator: m for m in c.metrics}
    f1 = rows["reference.token_f1"]
    assert (f1.wins_a, f1.wins_b, f1.ties) == (1, 1, 1)
    assert f1.mean_a == pytest.approx(0.65) and f1.delta == pytest.approx(0.4667 - 0.65, abs=1e-3)
    pii = rows["safety.pii"]
    assert (pii.wins_a, pii.wins_b, pii.ties) == (0, 1, 1)      # B flagged less PII: B wins
    assert asked == [("a1", "b1"), ("a2", "b2"), ("a3", "b3")]
    assert c.verdicts() == {"A": 0, "B": 1, "tie": 2, "inconsistent": 1}
    assert c.to_dict()["pairwise"]["verdicts"]["B"] == 1
