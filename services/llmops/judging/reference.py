"""Reference metrics for offline evaluation: an answer scored against a known good answer.

Exact match and token F1 follow the official SQuAD v1.1 evaluation script
(``evaluate-v1.1.py``, https://rajpurkar.github.io/SQuAD-explorer/), so numbers are comparable
with published extractive-QA results. BLEU comes from sacrebleu and ROUGE-L from Google's
rouge-score package rather than from our own code: both metrics have many subtly different
variants (tokenisation, smoothing, stemming), and a score is only worth reporting if someone
else can reproduce it with the same library.

Every metric returns a float in [0, 1] so that the tiers of the judging service share one scale.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from rouge_score import rouge_scorer

Metric = Callable[[str, str], float]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.

    This is ``normalize_answer`` of the official SQuAD v1.1 evaluation script, step for step and
    in the same order (lower -> punctuation -> articles -> whitespace), because a different order
    changes results: "The-end" becomes "theend" here, but "end" if articles went first. Only
    ``string.punctuation`` is removed, as in SQuAD, so curly quotes or CJK punctuation stay.
    """
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if prediction and reference are equal after :func:`normalize_answer`, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall on normalised tokens (SQuAD).

    Tokens are counted with multiplicity (a bag of words, ``Counter`` intersection), as in the
    SQuAD script. SQuAD v1.1 returns 0 when both sides normalise to nothing; we follow the SQuAD
    v2.0 script instead (both empty -> 1.0, exactly one empty -> 0.0), because an answer of
    "The." to a reference of "a" is a correct match of two empty answers, not a miss.
    """
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU from sacrebleu, scaled from [0, 100] to [0, 1].

    BLEU is a corpus metric; on one sentence an n-gram order without any match makes the
    geometric mean zero. We therefore use what sacrebleu recommends for sentence level, which is
    also what its ``sentence_bleu`` defaults to: NIST exponential-decay smoothing
    (``smooth_method="exp"``, method 3 of Chen & Cherry 2014) and ``use_effective_order=True``
    (sacrebleu warns "It is recommended to enable `effective_order` for sentence-level BLEU"),
    which leaves out n-gram orders longer than the answer, so that a correct one-word answer
    scores 1.0. Both are spelled out here so that a change of sacrebleu's defaults cannot change
    our scores silently.
    Tokenisation is sacrebleu's default ``13a`` (the WMT standard), case-sensitive.
    """
    import sacrebleu   # imported on first use (see load_libraries)

    result = sacrebleu.sentence_bleu(prediction, [reference], smooth_method="exp", use_effective_order=True)
    # exp(mean of logs) of a perfect match comes out as 100.00000000000004; keep the scale honest
    return min(result.score / 100.0, 1.0)


@lru_cache(maxsize=1)
def _rouge_l_scorer() -> rouge_scorer.RougeScorer:
    """One scorer for the process: building it loads the Porter stemmer, which is not free."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def load_libraries() -> None:
    """Import what :func:`bleu` and :func:`rouge_l` use, which they otherwise do on first use:
    seconds of CPU (rouge-score imports nltk, which imports SciPy and scikit-learn), so a service
    does it while it starts, off its import path (a thread, alongside its group join)."""
    import sacrebleu  # noqa: F401

    _rouge_l_scorer()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of stemmed tokens) in [0, 1].

    rouge-score's default tokenizer keeps only ``[a-z0-9]`` runs after lowercasing, so text
    without Latin letters or digits (Korean, Chinese, ...) has no tokens and scores 0.0: use
    token F1 or BLEU for those languages.
    """
    return float(_rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure)


def best_of(metric: Metric, prediction: str, references: Sequence[str]) -> float:
    """The best score of ``prediction`` over several acceptable references.

    This is SQuAD's ``metric_max_over_ground_truths``: a question often has more than one right
    answer, and matching any one of them fully is a full match. No references scores 0.0.
    """
    return max((metric(prediction, ref) for ref in references), default=0.0)
