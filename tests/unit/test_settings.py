import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops.common.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_work_on_a_laptop(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("LLMOPS_"):
            monkeypatch.delenv(k)
    s = Settings()
    assert s.embedded_broker and s.bootstrap_servers == "127.0.0.1:9092"
    assert [s.grpc_port(n) for n in ("inference", "retrieval", "tracing", "judging", "drift")] == [
        50051, 50052, 50053, 50054, 50055]
    assert [s.metrics_port(n) for n in ("inference", "retrieval", "tracing", "judging", "drift")] == [
        9101, 9102, 9103, 9104, 9105]
    assert s.trace_db_url.startswith("sqlite:///") and s.trace_db_url.endswith("/.llmops/traces.db")
    assert s.resolved_model_path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and Path(s.resolved_model_path).is_file()
    assert (Path(s.resolved_embedding_model) / "config.json").is_file()
    assert s.topic("spans") == "llmops.spans"


def test_env_prefix_and_types(monkeypatch):
    monkeypatch.setenv("LLMOPS_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("LLMOPS_TOPIC_PARTITIONS", "6")
    monkeypatch.setenv("LLMOPS_TRACE_DB", "postgresql://u:p@db:5432/llmops")
    s = Settings()
    assert not s.embedded_broker and s.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert s.topic_partitions == 6
    assert s.trace_db_url == "postgresql+psycopg://u:p@db:5432/llmops"


def test_bad_values_are_rejected(monkeypatch):
    monkeypatch.setenv("LLMOPS_TOPIC_PARTITIONS", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("LLMOPS_TOPIC_PARTITIONS")
    monkeypatch.setenv("LLMOPS_TOPIC_PREFIX", "bad prefix/")
    with pytest.raises(ValidationError):
        Settings()


TEST_ONLY = {"LLMOPS_TEST_POSTGRES_URL", "LLMOPS_TEST_KAFKA_BOOTSTRAP"}


def test_readme_configuration_table_lists_every_variable():
    text = README.read_text()
    table = text[text.index("## Configuration"):text.index("## Run in production")]
    documented = set(re.findall(r"^\| `(LLMOPS_[A-Z0-9_]+)`", table, flags=re.M))
    expected = {f"LLMOPS_{name.upper()}" for name in Settings.model_fields} | TEST_ONLY
    mentioned = set(re.findall(r"(LLMOPS_[A-Z0-9_]+)", text))
    assert mentioned <= expected, f"README mentions variables that do not exist: {sorted(mentioned - expected)}"
    assert expected - documented == set(), f"README's configuration table misses {sorted(expected - documented)}"
    assert documented - expected == set(), f"README documents unknown settings {sorted(documented - expected)}"
