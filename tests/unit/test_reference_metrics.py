import pytest

from llmops.judging.reference import best_of, bleu, exact_match, normalize_answer, rouge_l, token_f1

IDENTICAL = "The cat sat on the mat near the door."
PARAPHRASE = "A cat was sitting on the mat by the door."
UNRELATED = "Stock markets fell sharply on Monday morning."


def test_normalisation_is_squads():
    assert normalize_answer("  The Eiffel   Tower! ") == "eiffel tower"
    assert normalize_answer("An apple a day, keeps THE doctor away.") == "apple day keeps doctor away"
    # punctuation goes before articles, so a hyphenated article is glued, not dropped
    assert normalize_answer("The-end") == "theend"
    # articles only as whole words
    assert normalize_answer("Theatre and anthem") == "theatre and anthem"


def test_exact_match_after_normalisation():
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("Eiffel Tower", "Tower Eiffel") == 0.0
    assert exact_match("Paris, France", "Paris") == 0.0


def test_token_f1_hand_computed_values():
    # 3 of 4 tokens shared each way: P = R = 3/4
    assert token_f1("the cat sat on the mat", "a cat sat on a hat") == pytest.approx(0.75)
    # 1 shared token, P = 1/5, R = 1: F1 = 2 * 0.2 / 1.2
    assert token_f1("Paris is the capital of France", "Paris") == pytest.approx(1 / 3)
    # a bag of words: the repeated "new" counts once against a reference that has it once
    assert token_f1("new new york", "New York") == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert token_f1("Berlin", "Paris") == 0.0
    assert token_f1("The Eiffel Tower", "eiffel tower!") == 1.0


def test_token_f1_empty_answers():
    assert token_f1("", "") == 1.0
    assert token_f1("The.", "a") == 1.0  # both normalise to nothing
    assert token_f1("", "Paris") == 0.0
    assert token_f1("Paris", "") == 0.0


def test_bleu_orders_identical_paraphrase_unrelated():
    same, para, other = bleu(IDENTICAL, IDENTICAL), bleu(PARAPHRASE, IDENTICAL), bleu(UNRELATED, IDENTICAL)
    assert same == pytest.approx(1.0)
    assert same > para > other >= 0.0
    assert 0.0 <= other < 0.1


def test_bleu_short_answer_uses_effective_order():
    # without effective order a one-word exact answer has no 2-, 3- or 4-grams and scores far below 1
    assert bleu("Paris", "Paris") == pytest.approx(1.0)
    assert bleu("", "Paris") == 0.0


def test_rouge_l_orders_identical_paraphrase_unrelated():
    same, para, other = rouge_l(IDENTICAL, IDENTICAL), rouge_l(PARAPHRASE, IDENTICAL), rouge_l(UNRELATED, IDENTICAL)
    assert same == pytest.approx(1.0)
    assert same > para > other >= 0.0


def test_rouge_l_hand_computed_and_stemmed():
    # LCS "the cat on the mat" = 5 of 6 tokens on each side
    assert rouge_l("the cat sat on the mat", "the cat lay on the mat") == pytest.approx(5 / 6)
    # the Porter stemmer makes cats/cat and running/run equal; are/is still differ: LCS 3 of 4
    assert rouge_l("The cats are running", "the cat is running") == pytest.approx(0.75)
    assert rouge_l("", "the cat") == 0.0


def test_best_of_takes_the_best_reference():
    assert best_of(exact_match, "Paris", ["London", "paris."]) == 1.0
    # vs "york": P = 1/3, R = 1 -> 0.5; vs "new york": P = 2/3, R = 1 -> 0.8
    assert best_of(token_f1, "new york city", ["york", "new york"]) == pytest.approx(0.8)
    assert best_of(rouge_l, IDENTICAL, [UNRELATED, PARAPHRASE]) == rouge_l(IDENTICAL, PARAPHRASE)
    assert best_of(token_f1, "anything", []) == 0.0


@pytest.mark.parametrize("metric", [exact_match, token_f1, bleu, rouge_l])
def test_every_metric_is_in_the_unit_interval(metric):
    for prediction in (IDENTICAL, PARAPHRASE, UNRELATED, "", "Paris"):
        assert 0.0 <= metric(prediction, IDENTICAL) <= 1.0
