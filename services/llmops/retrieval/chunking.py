"""Split long documents into overlapping chunks on paragraph, sentence and word boundaries."""
from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # character offset in the document


def _pieces(text: str, size: int) -> list[tuple[int, str]]:
    """Units no longer than ``size``: paragraphs, else sentences, else word-wrapped slices."""
    out: list[tuple[int, str]] = []
    for para in re.finditer(r"\S(?:.*?\S)?(?=\n\s*\n|\Z)", text, flags=re.S):
        p, base = para.group(0), para.start()
        if len(p) <= size:
            out.append((base, p))
            continue
        pos = 0
        for sent in _SENTENCE_END.split(p):
            idx = p.find(sent, pos)
            pos = idx + len(sent)
            while len(sent) > size:
                cut = sent.rfind(" ", 0, size)
                cut = cut if cut > size // 2 else size
                out.append((base + idx, sent[:cut]))
                sent, idx = sent[cut:].lstrip(), idx + cut + (len(sent[cut:]) - len(sent[cut:].lstrip()))
            if sent:
                out.append((base + idx, sent))
    return out


def chunk_text(text: str, size: int = 800, overlap: int = 120) -> list[Chunk]:
    """Greedy packing of boundary-aligned pieces up to ``size`` characters. Each chunk after the
    first starts with up to ``overlap`` characters of the end of the previous one (cut at a word)."""
    if overlap >= size:
        raise ValueError("chunk overlap must be smaller than the chunk size")
    text = text.strip()
    if not text:
        return []
    if len(text) <= size:
        return [Chunk(0, text, 0)]
    chunks: list[Chunk] = []
    cur, cur_start = "", 0
    for start, piece in _pieces(text, size - overlap - 1):  # room for the overlap and a space
        candidate = f"{cur}\n\n{piece}" if cur else piece
        if cur and len(candidate) > size:
            chunks.append(Chunk(len(chunks), cur, cur_start))
            tail = cur[-overlap:] if overlap else ""
            if tail and " " in tail:
                tail = tail[tail.find(" ") + 1:]
            cur = f"{tail} {piece}".strip() if tail else piece
            cur_start = start - len(tail)
        else:
            if not cur:
                cur_start = start
            cur = candidate
    if cur:
        chunks.append(Chunk(len(chunks), cur, cur_start))
    return chunks
