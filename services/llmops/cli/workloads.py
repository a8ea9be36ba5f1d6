"""Two workloads for showing and measuring drift: English questions about Python (the demo
corpus's domain) and Korean questions about cooking (another language and another domain).

Each is a pool of distinct prompts built from templates; a stream samples the pool with
replacement, so a stream of one workload is stationary and a switch between them is a shift.
"""
from __future__ import annotations

import random

PYTHON_TOPICS = (
    "assert statement", "nonlocal statement", "global statement", "break statement", "continue statement",
    "lambda expression", "with statement", "try statement", "raise statement", "return statement",
    "yield expression", "import statement", "del statement", "pass statement", "for loop", "while loop",
    "if statement", "class definition", "function definition", "decorator", "list comprehension",
    "generator expression", "context manager", "iterator protocol", "descriptor", "slice", "f-string",
    "boolean operation", "comparison chain", "conditional expression", "augmented assignment",
    "starred assignment", "await expression", "async for loop", "async with statement", "match statement",
    "operator precedence", "integer literal", "string literal", "dictionary display", "set display",
    "attribute reference", "subscription", "call expression", "exception handling", "name binding",
    "scope rules", "__init__ method", "__enter__ method", "__exit__ method", "__call__ method",
    "__getattr__ method", "__len__ method", "__iter__ method", "__next__ method", "__eq__ method",
)
PYTHON_TEMPLATES = (
    "What does the {t} do in Python?",
    "How do I use the {t} in Python?",
    "Explain the {t} in Python with an example.",
    "When should I use the {t} in Python?",
    "What is a common mistake with the {t} in Python?",
    "Can you describe how the Python {t} works?",
)

KOREAN_DISHES = (
    "김치찌개", "된장찌개", "불고기", "비빔밥", "잡채", "떡볶이", "삼계탕", "갈비찜", "순두부찌개", "김밥",
    "미역국", "제육볶음", "해물파전", "감자탕", "냉면", "칼국수", "닭갈비", "콩나물국", "계란말이", "오징어볶음",
    "부대찌개", "육개장", "갈비탕", "호박죽", "김치볶음밥", "닭볶음탕", "소불고기", "멸치볶음", "시금치나물", "전복죽",
)
KOREAN_TEMPLATES = (
    "{d} 맛있게 만드는 방법을 알려주세요.",
    "{d}에 어떤 재료가 필요한가요?",
    "{d}를 만들 때 자주 하는 실수는 무엇인가요?",
    "집에서 {d}를 쉽게 만드는 비법이 있나요?",
    "{d}는 얼마나 오래 끓여야 하나요?",
    "{d}에 어울리는 반찬을 추천해 주세요.",
)


def python_prompts() -> list[str]:
    return [tpl.format(t=t) for t in PYTHON_TOPICS for tpl in PYTHON_TEMPLATES]


def korean_prompts() -> list[str]:
    return [tpl.format(d=d) for d in KOREAN_DISHES for tpl in KOREAN_TEMPLATES]


def stream(pool: list[str], n: int, seed: int) -> list[str]:
    """``n`` prompts drawn from ``pool`` with replacement: a stationary stream."""
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(n)]


ENGLISH_ANSWERS = (
    "In Python this statement controls how the program runs; see the language reference.",
    "It binds names in the current scope and evaluates the expression first.",
    "Use it inside a function body; the interpreter raises an error otherwise.",
    "The documentation describes it under the compound statements section, with an example.",
    "It returns an object that supports the iterator protocol.",
)
KOREAN_ANSWERS = (
    "그 요리는 재료를 먼저 손질한 뒤 중불에서 끓이면 됩니다.",
    "간장과 마늘로 양념하고 삼십 분 정도 재워 두세요.",
    "육수를 먼저 내고 채소를 넣은 다음 약불로 줄이면 됩니다.",
    "고춧가루는 마지막에 넣어야 색이 곱게 나옵니다.",
    "밥과 함께 김치나 나물 반찬을 곁들이면 좋습니다.",
)


def synthetic_completion(prompt: str, rng: random.Random, *, shifted: bool = False, trace_id: str = ""):
    """A completion event for ``prompt`` with the request features a RAG service would report:
    the shifted workload retrieves worse (another domain) and answers in Korean."""
    from llmops.common.spans import new_trace_id
    from llmops.v1 import common_pb2, events_pb2

    ev = events_pb2.CompletionEvent(
        trace_id=trace_id or new_trace_id(), model="smollm2-135m-instruct", prompt=prompt,
        answer=rng.choice(KOREAN_ANSWERS if shifted else ENGLISH_ANSWERS), prompt_template="rag", prompt_version=1,
        latency_ms=rng.gauss(900, 80), finish_reason=rng.choice(["eos_token", "length"]),
        retrieval_top_score=rng.gauss(0.35 if shifted else 0.6, 0.06),
        usage=common_pb2.Usage(prompt_tokens=len(prompt.encode()) // 3, completion_tokens=int(rng.gauss(40, 5))))
    ev.timestamp.GetCurrentTime()
    return ev
