"""The demo corpus: a real one that ships with Python (``pydoc_data.topics``, the language
reference topics behind ``help()``), and questions whose answers are in it."""
from __future__ import annotations

from dataclasses import dataclass

from llmops.v1 import retrieval_pb2

SOURCE = "pydoc_data.topics"


@dataclass(frozen=True)
class DemoQuestion:
    question: str
    topics: tuple[str, ...]   # the corpus topics that hold the answer


QUESTIONS = (
    DemoQuestion("What does the assert statement do when its expression is false?", ("assert",)),
    DemoQuestion("What does the nonlocal statement do?", ("nonlocal",)),
    DemoQuestion("What happens when a break statement runs inside a loop?", ("break",)),
    DemoQuestion("How does a lambda expression create an anonymous function?", ("lambda",)),
    DemoQuestion("What does the global statement declare?", ("global",)),
    DemoQuestion("How does the with statement use __enter__ and __exit__?", ("with", "context-managers")),
)


def corpus_documents() -> list[retrieval_pb2.Document]:
    from pydoc_data.topics import topics

    return [retrieval_pb2.Document(id=f"pydoc:{name}", text=text, metadata={"source": SOURCE, "topic": name})
            for name, text in sorted(topics.items())]
