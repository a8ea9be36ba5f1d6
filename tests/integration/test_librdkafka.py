"""The input topics through librdkafka, the C client most non-Java languages build on (Go, .NET,
Node, Ruby, PHP, Rust and kcat), tried as a new user would against the embedded broker: retrieval
and the judging service (cheap tier only: no judge model) run in-process.

``confluent_kafka`` (librdkafka 2.16, bundled in its wheel) produces a JSON and a protobuf
document and a JSON completion without a timestamp, reads the cheap-tier scores of that
completion off ``<prefix>scores`` and an undecodable message off ``<prefix>dlq``. kcat, Debian's
librdkafka command-line client, fails with its own librdkafka 2.0 and works with the wheel's."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from llmops.cli.client import Client
from llmops.judging.main import build as build_judging
from llmops.retrieval.main import build as build_retrieval
from llmops.v1 import events_pb2, retrieval_pb2
from tests.support import make_settings, running_services, wait_until

JSON = [("content-type", b"application/json")]
CHEAP = {"rag.faithfulness.cheap", "rag.answer_relevancy.cheap", "rag.context_relevancy.cheap",
         "safety.pii", "safety.prompt_injection"}


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("librdkafka"), kafka, judge_backend="none")
    with running_services(s, (("retrieval", build_retrieval), ("judging", build_judging))):
        yield s, Client(s)


def produce(bootstrap: str, topic: str, items) -> None:
    """(key, value, headers) with librdkafka; fails unless the broker acknowledged every one."""
    errors: list = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False})
    for key, value, headers in items:
        p.produce(topic, value=value, key=key, headers=headers,
                  on_delivery=lambda err, msg: err is not None and errors.append(err))
    assert p.flush(30) == 0 and not errors, errors


def consume_until(bootstrap: str, topic: str, done, timeout_s: float = 60.0, what: str = "messages") -> list:
    """Read every partition of ``topic`` from its start with librdkafka until ``done(messages)``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"librdkafka-test-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False})
    try:
        partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
        out: list = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in c.consume(num_messages=500, timeout=0.5):
                assert m.error() is None, m.error()
                out.append(m)
            if done(out):
                return out
    finally:
        c.close()
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} on {topic} ({len(out)} messages read)")


def searchable(client, query: str, collection: str) -> list[str]:
    r = client.retrieval.Search(retrieval_pb2.SearchRequest(query=query, collection=collection), timeout=10)
    return [c.document_id for c in r.results]


def test_json_and_protobuf_documents_from_librdkafka_are_indexed(stack):
    s, client = stack
    as_json = json.dumps({"id": "rd:otter", "text": "Sea otters hold hands while they sleep.",
                          "collection": "rdkafka"}).encode()
    as_protobuf = events_pb2.DocumentEvent(id="rd:heron", text="Grey herons stand still in shallow water to fish.",
                                           collection="rdkafka").SerializeToString()
    produce(s.kafka_bootstrap, s.topic("documents"), [
        (b"rd:otter", as_json, JSON),
        (b"rd:heron", as_protobuf, [("content-type", b"application/x-protobuf"),
                                    ("llmops-type", b"llmops.v1.DocumentEvent")]),
    ])
    assert wait_until(lambda: searchable(client, "otters sleeping", "rdkafka")[:1] == ["rd:otter"] or None,
                      timeout_s=30, what="the JSON document")
    assert wait_until(lambda: searchable(client, "herons fishing", "rdkafka")[:1] == ["rd:heron"] or None,
                      timeout_s=30, what="the protobuf document")


def test_a_json_completion_without_timestamp_is_judged_and_its_scores_read_with_librdkafka(stack):
    s, _ = stack
    tid = uuid.uuid4().hex
    completion = {"traceId": tid, "model": "external-model", "prompt": "What does assert raise when it fails?",
                  "answer": "It raises AssertionError.",
                  "contexts": [{"documentId": "d1", "text": "If the expression is false, assert raises AssertionError."}]}
    produce(s.kafka_bootstrap, s.topic("completions"), [(tid.encode(), json.dumps(completion).encode(), JSON)])

    def scores(msgs):
        return {ev.score.evaluator: (ev, dict(m.headers())) for m in msgs if m.key() == tid.encode()
                for ev in [events_pb2.ScoreEvent.FromString(m.value())]}

    got = scores(consume_until(s.kafka_bootstrap, s.topic("scores"), lambda msgs: CHEAP <= set(scores(msgs)),
                               what="the cheap-tier scores of the JSON completion"))
    assert CHEAP <= set(got)
    for ev, headers in got.values():
        assert ev.trace_id == tid and ev.model == "external-model" and ev.tier in ("cheap", "safety")
        assert headers["llmops-type"] == b"llmops.v1.ScoreEvent" and headers["content-type"] == b"application/x-protobuf"
        assert headers["traceparent"].decode().split("-")[1:3] == [tid, ev.span_id]
    assert got["rag.faithfulness.cheap"][0].score.value > 0.5


def test_an_undecodable_message_lands_on_the_dlq_with_its_reason(stack):
    s, _ = stack
    key = f"rd:bad:{uuid.uuid4().hex[:6]}".encode()
    produce(s.kafka_bootstrap, s.topic("documents"), [(key, b'{"id": "x", "txt": "typo"}', JSON)])

    def mine(msgs):
        return [m for m in msgs if m.key() == key]

    (m,) = mine(consume_until(s.kafka_bootstrap, s.topic("dlq"), mine, what="the undecodable document"))
    headers = dict(m.headers())
    assert headers["dlq-reason"].decode() == ('JSON llmops.v1.DocumentEvent does not match protobuf\'s JSON mapping: '
                                              'unknown field "txt" in llmops.v1.DocumentEvent')
    assert headers["dlq-source-topic"] == s.topic("documents").encode()
    assert headers["dlq-consumer-group"] == f"{s.topic_prefix}retrieval".encode()
    assert headers["content-type"] == b"application/json" and m.value() == b'{"id": "x", "txt": "typo"}'


# -- kcat (Debian's librdkafka client) --------------------------------------------------------
def kcat() -> str:
    path = shutil.which("kcat")
    assert path, "kcat is not installed: apt-get install kcat (listed in .ci/apt-packages)"
    return path


def librdkafka_version(env=None) -> tuple[int, ...]:
    out = subprocess.run([kcat(), "-V"], capture_output=True, text=True, env=env, timeout=30).stdout
    return tuple(int(x) for x in re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out).groups())


@pytest.fixture(scope="module")
def wheel_librdkafka(tmp_path_factory) -> dict:
    """The environment that runs kcat against the librdkafka of the confluent-kafka wheel: the
    wheel names its copy ``librdkafka-<hash>.so.1``, kcat asks for ``librdkafka.so.1``."""
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    (so,) = libs.glob("librdkafka*.so*")
    d = tmp_path_factory.mktemp("librdkafka")
    (d / "librdkafka.so.1").symlink_to(so)
    return {**os.environ, "LD_LIBRARY_PATH": str(d)}


def test_kcat_with_librdkafka_before_2_2_cannot_talk_to_the_embedded_broker(kafka):
    version = librdkafka_version()
    if version >= (2, 2, 0):
        pytest.skip(f"this kcat runs librdkafka {'.'.join(map(str, version))}, which reads the broker's tagged fields")
    r = subprocess.run([kcat(), "-b", kafka, "-L", "-m", "5"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "ApiVersionRequest failed: Local: Read underflow" in r.stderr, r.stderr[-2000:]


def test_kcat_with_the_wheels_librdkafka_produces_a_json_document(stack, wheel_librdkafka):
    s, client = stack
    assert librdkafka_version(wheel_librdkafka) >= (2, 2, 0)
    doc = json.dumps({"id": "kcat:kimchi", "text": "Kimchi is fermented napa cabbage with chili.", "collection": "kcat"})
    r = subprocess.run([kcat(), "-b", s.kafka_bootstrap, "-P", "-t", s.topic("documents"), "-k", "kcat:kimchi",
                        "-H", "content-type=application/json"], input=doc + "\n", capture_output=True, text=True,
                       env=wheel_librdkafka, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert wait_until(lambda: searchable(client, "fermented cabbage", "kcat")[:1] == ["kcat:kimchi"] or None,
                      timeout_s=30, what="the document kcat produced")
    listed = subprocess.run([kcat(), "-b", s.kafka_bootstrap, "-L", "-t", s.topic("documents")], capture_output=True,
                            text=True, env=wheel_librdkafka, timeout=60)
    assert listed.returncode == 0 and f'topic "{s.topic("documents")}"' in listed.stdout, listed.stderr[-2000:]
