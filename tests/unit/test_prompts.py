import pytest

from llmops.common.errors import InvalidArgument, NotFound
from llmops.inference.prompts import PRODUCTION, PromptRegistry


@pytest.fixture
def reg():
    return PromptRegistry(":memory:")


def test_defaults_are_seeded_and_labelled_production(reg):
    assert {t.name for t in reg.list()} == {"chat", "rag"}
    rag = reg.resolve("rag")
    assert rag.version == 1 and PRODUCTION in rag.labels
    assert "[1] first" in rag.render_user("q?", ["first", "second"]) and "q?" in rag.render_user("q?", [])


def test_versions_increase_and_the_label_moves(reg):
    v2 = reg.register("rag", "sys", "Q: {question}\nC: {contexts}", [PRODUCTION])
    v3 = reg.register("rag", "sys", "{question}")
    assert (v2.version, v3.version) == (2, 3)
    assert reg.resolve("rag").version == 2          # production, not the newest
    assert reg.resolve("rag", 3).user == "{question}"
    labels = {t.version: t.labels for t in reg.list("rag")}
    assert PRODUCTION not in labels[1] and PRODUCTION in labels[2]


def test_resolve_errors_say_what_exists(reg):
    with pytest.raises(NotFound, match="known templates: chat, rag"):
        reg.resolve("nope")
    with pytest.raises(NotFound, match="no version 9"):
        reg.resolve("chat", 9)


@pytest.mark.parametrize("user,msg", [("{question} {user_id}", "unknown field"), ("{question", "not a valid"),
                                      ("   ", "empty"),
                                      # a width of 900 million: a gigabyte on every request rendered with it
                                      ("{question:>900000000}", r"format spec or conversion in \{question:>900000000\}"),
                                      ("{contexts!r}", r"format spec or conversion in \{contexts!r\}"),
                                      ("{question:{contexts}}", "format spec"),
                                      ("{question.__class__}", "unknown field"), ("{question[0]}", "unknown field"),
                                      ("{}", "unknown field")])
def test_bad_templates_are_rejected(reg, user, msg):
    with pytest.raises(InvalidArgument, match=msg):
        reg.register("x", "", user)


def test_resolve_is_cached_and_every_change_reaches_it():
    from llmops.inference.prompts import PromptRegistry, PromptTemplate

    reg = PromptRegistry(":memory:")
    reg.register("faq", "", "v1 {question}", ["production"])
    assert reg.resolve("faq").version == 1
    reg.register("faq", "", "v2 {question}", ["production"])
    assert reg.resolve("faq").version == 2          # register clears the cache
    reg.set_label("faq", 1, "production")
    assert reg.resolve("faq").version == 1          # so does a label move
    reg.put(PromptTemplate("faq", 3, "", "v3 {question}"))
    assert reg.resolve("faq", 3).user == "v3 {question}"   # and a version from another replica
