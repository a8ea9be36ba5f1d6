"""``llmops dlq list`` and ``llmops dlq replay`` end to end on the real broker: a poison record is
dead-lettered by a faust batch agent, listed, replayed once after the fix (stored then), and a
second replay sends nothing."""
from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner
from llmops.cli import main
from llmops.cli.dlq import read_topic
from llmops.common.topics import ensure_topics

from tests.integration.dlq_support import AgentThread, SteeredStore, committed
from tests.support import make_settings, produce, wait_until


def _env(settings) -> dict[str, str]:
    return {"LLMOPS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "LLMOPS_TOPIC_PREFIX": settings.topic_prefix,
            "LLMOPS_DATA_DIR": str(settings.data_dir), "COLUMNS": "240"}


def _cli(settings, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=_env(settings), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _listed(settings, *filters: str) -> list[dict]:
    return [json.loads(line) for line in _cli(settings, "dlq", "list", "--json", *filters).splitlines() if line]


def test_dlq_list_shows_the_dead_letter_and_replay_republishes_it_once(tmp_path, kafka):
    settings = make_settings(tmp_path, kafka)
    asyncio.run(ensure_topics(settings))
    topic = settings.topic("completions")
    produce(kafka, topic, [(f"trace-{i}".encode(), b"poison" if i == 3 else f"ok-{i}".encode(),
                            [("llmops-type", b"llmops.v1.CompletionEvent")]) for i in range(6)])
    store = SteeredStore(poison=frozenset({b"poison"}))
    agent = AgentThread(settings, "dlqcli", [topic], store).start()
    try:
        wait_until(lambda: len(store.stored) >= 5, 60, what="the 5 good records stored")
        wait_until(lambda: len(_listed(settings)) == 1, 30, what="the poison record on the DLQ")

        (letter,) = _listed(settings)
        assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (topic, 0, 3)
        assert letter["key"] == "trace-3" and letter["error"] == "ValueError"
        assert "the store refuses b'poison'" in letter["reason"] and letter["consumer_group"] == agent.group
        assert letter["headers"] == {"llmops-type": "llmops.v1.CompletionEvent"} and letter["replayed"] is None
        assert letter["time"].startswith("20")
        # the filters
        assert len(_listed(settings, "--topic", "completions")) == 1
        assert _listed(settings, "--topic", "spans") == []
        assert len(_listed(settings, "--reason", "REFUSES", "--since", "1h")) == 1
        assert _listed(settings, "--reason", "no such reason") == []
        assert _listed(settings, "--since", "2999-01-01T00:00:00Z") == []
        table = _cli(settings, "dlq", "list")
        assert f"{topic}/0/3" in table and "1 dead letters" in table

        dry = _cli(settings, "dlq", "replay", "--dry-run")
        assert "would re-publish 1 to" in dry
        assert len(asyncio.run(read_topic(settings, topic))) == 6          # a dry run sends nothing

        store.fixed = True                                                 # the cause is fixed
        out = _cli(settings, "dlq", "replay", "--topic", "completions")
        assert f"re-published 1 to {topic}" in out
        wait_until(lambda: b"poison" in store.values(), 30, what="the replayed record stored")
        records = asyncio.run(read_topic(settings, topic))
        assert len(records) == 7
        replayed = records[-1]
        assert replayed.key == b"trace-3" and replayed.value == b"poison"
        assert dict(replayed.headers) == {"llmops-type": b"llmops.v1.CompletionEvent",
                                          "dlq-replayed-from": f"{topic}/0/3".encode()}

        again = _cli(settings, "dlq", "replay")                             # idempotent: nothing re-sent
        assert "re-published nothing; 1 replayed before" in again
        assert len(asyncio.run(read_topic(settings, topic))) == 7
        (listed,) = _listed(settings)
        assert listed["replayed"]["to_offset"] == 6
        wait_until(lambda: committed(settings, agent.group, topic) == 7, 30, what="offset 7 committed")
        assert store.values().count(b"poison") == 1
    finally:
        agent.stop()
