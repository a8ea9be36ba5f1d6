from llmops.retrieval.store import Hit, relative_score_fusion


def h(id_, vec=0.0, kw=0.0):
    return Hit(id_, id_.split("#")[0], f"text of {id_}", {}, vector_similarity=vec, keyword_score=kw)


VEC = [h("a#0", vec=0.9), h("b#0", vec=0.5), h("c#0", vec=0.1)]
KW = [h("c#0", kw=12.0), h("b#0", kw=6.0), h("d#0", kw=1.0)]


def test_alpha_one_is_vector_order_and_alpha_zero_keyword_order():
    assert [x.id for x in relative_score_fusion(VEC, [], 1.0, 3)] == ["a#0", "b#0", "c#0"]
    assert [x.id for x in relative_score_fusion([], KW, 0.0, 3)] == ["c#0", "b#0", "d#0"]


def test_hybrid_rewards_agreement_and_scores_are_normalised():
    fused = relative_score_fusion(VEC, KW, 0.5, 4)
    scores = {x.id: x.score for x in fused}
    # b is middling in both lists; a is top only for vectors, c top only for keywords
    assert scores["a#0"] == 0.5 and scores["c#0"] == 0.5
    assert abs(scores["b#0"] - (0.5 * 0.5 + 0.5 * (5 / 11))) < 1e-9
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    b = next(x for x in fused if x.id == "b#0")
    assert b.vector_similarity == 0.5 and b.keyword_score == 6.0


def test_top_k_cuts_the_list():
    assert len(relative_score_fusion(VEC, KW, 0.5, 2)) == 2
