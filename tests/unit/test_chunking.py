import pytest

from llmops.retrieval.chunking import chunk_text


def test_short_text_is_one_chunk():
    assert [c.text for c in chunk_text("  hello world  ", 100, 10)] == ["hello world"]
    assert chunk_text("   ", 100, 10) == []


def test_long_text_chunks_respect_size_and_overlap_and_cover_everything():
    paras = [f"Paragraph {i}. " + " ".join(f"word{i}_{j}" for j in range(40)) for i in range(30)]
    text = "\n\n".join(paras)
    chunks = chunk_text(text, size=500, overlap=80)
    assert len(chunks) > 5
    assert all(len(c.text) <= 500 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    joined = " ".join(c.text for c in chunks)
    for i in range(30):  # no word is lost
        assert f"word{i}_39" in joined and f"Paragraph {i}." in joined
    # neighbours share text (the overlap)
    shared = sum(1 for a, b in zip(chunks, chunks[1:]) if a.text.split()[-1] in b.text)
    assert shared >= len(chunks) // 2


def test_a_single_huge_word_run_is_still_cut():
    chunks = chunk_text("x" * 5000, size=800, overlap=100)
    assert len(chunks) >= 6 and all(len(c.text) <= 800 for c in chunks)


def test_overlap_must_be_smaller_than_size():
    with pytest.raises(ValueError):
        chunk_text("abc " * 1000, size=100, overlap=100)
