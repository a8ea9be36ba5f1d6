"""Splitting an answer into claims (sentences) and a claim into the content words whose
presence in the contexts counts as lexical support."""
from __future__ import annotations

import re
from functools import lru_cache

# a sentence ends at . ! ? (or their CJK forms) followed by space, or at a line break
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_WORD = re.compile(r"[^\W_]+(?:[.'’-][^\W_]+)*", re.UNICODE)
_NUMBER = re.compile(r"^(?:\d|(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
                     r"hundred|thousand|million|billion|first|second|third|fourth|fifth|twice|half|dozen)$)",
                     re.IGNORECASE)
# a clause boundary inside a sentence: a claim is checked clause by clause, so that one wrong
# clause is not averaged away by the correct ones around it
_CLAUSE = re.compile(r"[,;:]\s+|\s+(?:and|but|so|while|because|which|whereas)\s+")
# abbreviations that end in a period without ending a sentence
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Mr|Mrs|Ms|Dr|Prof|St|No|approx|cf)\.$", re.IGNORECASE)

STOPWORDS = frozenset("""
a an the and or but if then else of to in on at by for with from into onto over under about as is are was were
be been being am do does did done have has had having it its this that these those there here they them their
he she him her his hers we us our you your i me my mine not no nor so than too very can could should would may
might must shall will just also only both each few more most other some such own same which who whom whose what
when where why how all any up down out off again further once while during before after above below between
through until against because per via yes one s t
""".split())


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, with bullets stripped and abbreviations kept whole."""
    pieces: list[str] = []
    for raw in _SENTENCE_END.split(text.strip()):
        raw = _BULLET.sub("", raw).strip()
        if not raw:
            continue
        if pieces and _ABBREV.search(pieces[-1]):
            pieces[-1] = f"{pieces[-1]} {raw}"
        else:
            pieces.append(raw)
    return pieces


def claims_of(answer: str, max_claims: int = 12) -> list[str]:
    """The answer's claims: its sentences with at least two words (a lone "Yes." is not a claim)."""
    out = [s for s in split_sentences(answer) if len(_WORD.findall(s)) >= 2]
    return out[:max_claims]


def clauses_of(claim: str) -> list[str]:
    """A claim cut at clause boundaries into parts of at least three words."""
    parts = [p.strip() for p in _CLAUSE.split(claim)]
    return [p for p in parts if len(_WORD.findall(p)) >= 3] or [claim]


@lru_cache(maxsize=1)
def _porter():
    from nltk.stem.porter import PorterStemmer  # rouge-score's own dependency; needs no data

    return PorterStemmer()


#: words this long or shorter are cached (a natural vocabulary); longer ones (hashes, base64, a run
#: of CJK characters without spaces) are stemmed each time, so the cache holds at most about
#: 200,000 x 32 characters (~30 MB) whatever the traffic
MAX_CACHED_WORD = 32


@lru_cache(maxsize=200_000)
def _cached_stem(word: str) -> str:
    return _porter().stem(word)


def stem(word: str) -> str:
    return _cached_stem(word) if len(word) <= MAX_CACHED_WORD else _porter().stem(word)


def content_terms(text: str) -> list[tuple[str, str]]:
    """(stemmed term, kind) for each content word; kind is "number" (digits or a number word),
    "name" (capitalised mid-sentence: people, places, products) or "word"."""
    out: list[tuple[str, str]] = []
    words = _WORD.findall(text)
    for i, w in enumerate(words):
        low = w.lower()
        if _NUMBER.match(w):
            out.append((stem(low), "number"))
        elif low not in STOPWORDS:
            out.append((stem(low), "name" if i > 0 and w[:1].isupper() else "word"))
    return out


def term_set(text: str) -> set[str]:
    return {stem(w.lower()) for w in _WORD.findall(text)}
