"""The whole stack, started the way `make run` starts it, driven as a client would."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from llmops.cli.client import Client
from llmops.common.settings import Settings
from llmops.v1 import inference_pb2, retrieval_pb2, tracing_pb2
from tests.support import consume_until, free_port, health, interrupt, make_settings, produce, wait_until

LLMOPS = [sys.executable, "-m", "llmops.cli"]


def stack_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env.update(s.to_env())
    env.pop("LLMOPS_KAFKA_BOOTSTRAP", None)           # the stack starts its own embedded broker…
    env["LLMOPS_KAFKA_EMBEDDED_PORT"] = str(free_port())  # …on a port of its own
    return env


@contextlib.contextmanager
def llmops_up(settings: Settings, log_path: Path):
    """``llmops up`` on ``settings`` with an embedded broker of its own, until the block ends; yields
    (the settings a client uses, with that broker, and the stack's environment). It must stop cleanly."""
    env = stack_env(settings)
    kafka = f"127.0.0.1:{env['LLMOPS_KAFKA_EMBEDDED_PORT']}"
    with open(log_path, "w+") as log:
        proc = subprocess.Popen([*LLMOPS, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: "running; Ctrl-C" in log_path.read_text() or proc.poll() is not None,
                       timeout_s=300, what="llmops up")
            assert proc.poll() is None, log_path.read_text()[-3000:]
            yield Settings(**{**settings.model_dump(), "kafka_bootstrap": kafka}), env
        finally:
            rc = interrupt(proc)
    assert rc == 0, log_path.read_text()[-3000:]


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data", "")


def test_make_run_demo_answers_from_the_corpus_and_exits(settings):
    env = stack_env(settings)
    proc = subprocess.run([*LLMOPS, "demo", "--exit-after", "--max-new-tokens", "48"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "platform up" in out and "indexed 79 documents" in out
    results = json.loads((settings.data_dir / "demo-results.json").read_text())
    assert len(results) == 6
    for r in results:
        assert len(r["trace_id"]) == 32 and r["answer"].strip() and r["completion_tokens"] > 0
    # the contexts come from the topic that holds the answer
    assert all(r["hit"] for r in results), [(r["question"], r["retrieved_topics"]) for r in results]
    assert f"trace {results[0]['trace_id']} is stored with 4 spans" in out
    # the demo ends with drift: English reference window, Korean shift, one retrain event
    drift = json.loads((settings.data_dir / "demo-drift.json").read_text())
    assert drift["retrain_event"]["monitor"] == "default", out[-3000:]
    assert "prompt_embedding" in drift["retrain_event"]["evidence"] or "faithfulness" in drift["retrain_event"]["reason"]
    assert drift["windows"] and drift["windows"][0]["drift"] and Path(drift["windows"][0]["report"]).exists()
    assert "retrain event retrain-default-" in out and "monitor default" in out
    assert out.rstrip().endswith("stopped")
    for svc in ("inference", "retrieval", "tracing", "judging", "drift"):
        assert health(settings.grpc_target(svc)) == "UNREACHABLE"


def test_llmops_up_serves_rag_traces_dlq_and_stops_cleanly(settings):
    env = stack_env(settings)
    kafka = f"127.0.0.1:{env['LLMOPS_KAFKA_EMBEDDED_PORT']}"
    log = open(settings.data_dir.parent / "up.log", "w+")
    proc = subprocess.Popen([*LLMOPS, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: "running; Ctrl-C" in Path(log.name).read_text() or proc.poll() is not None,
                   timeout_s=300, what="llmops up")
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        status = subprocess.run([*LLMOPS, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and status.stdout.count("SERVING") == 6, status.stdout  # kafka + 5 services

        client = Client(Settings(**{**settings.model_dump(), "kafka_bootstrap": kafka}))
        from pydoc_data.topics import topics

        docs = [retrieval_pb2.Document(id=f"pydoc:{t}", text=topics[t], metadata={"topic": t})
                for t in ("nonlocal", "global", "assert", "lambda", "import", "while")]
        client.upsert(docs)
        t0 = time.monotonic()
        r = client.generate("What does the nonlocal statement do?", rag=True, max_new_tokens=32)
        assert r.contexts and r.contexts[0].metadata["topic"] == "nonlocal", [c.document_id for c in r.contexts]
        def request_spans(t):   # the judging service adds its own spans to the trace, too
            return [s for s in t.spans if s.service != "judging"]

        trace = wait_until(lambda: (t := client.get_trace(r.trace_id)) and len(request_spans(t)) == 4 and t,
                           timeout_s=10, what="GetTrace to show the request's spans")
        assert time.monotonic() - t0 < r.latency_ms / 1000 + 10
        assert {s.name for s in request_spans(trace)} == {"generate", "retrieval", "prompt", "generation"}
        # every completion is scored online: the cheap tier shows up on the trace within seconds
        cheap = {"rag.faithfulness.cheap", "rag.answer_relevancy.cheap", "rag.context_relevancy.cheap",
                 "safety.pii", "safety.prompt_injection"}
        scored = wait_until(lambda: (t := client.get_trace(r.trace_id)) and cheap <= {x.evaluator for x in t.scores}
                            and t, timeout_s=15, what="cheap-tier scores on the trace")
        assert all(x.status == 1 for x in scored.scores if x.evaluator in cheap)
        assert time.monotonic() - t0 < r.latency_ms / 1000 + 15

        with pytest.raises(grpc.RpcError) as info:
            client.inference.Generate(inference_pb2.GenerateRequest(prompt=""), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # an undecodable message is parked on the DLQ and the consumer keeps going
        produce(kafka, settings.topic("spans"), [(b"junk", b"\xffnot a span", [])])
        r2 = client.generate("Say ok.", max_new_tokens=4)
        wait_until(lambda: len(request_spans(client.get_trace(r2.trace_id))) == 3, timeout_s=15, what="spans after junk")
        def junk_span(msgs):
            return [m for m in msgs if m.key == b"junk"
                    and dict(m.headers)["dlq-source-topic"] == settings.topic("spans").encode()]

        dlq = junk_span(consume_until(kafka, settings.topic("dlq"), junk_span, timeout_s=20, what="the junk span"))
        assert dlq and dict(dlq[0].headers)["dlq-reason"].startswith(b"not a valid llmops.v1.SpanEvent")

        # the commands a person types
        notes = settings.data_dir.parent / "notes"
        notes.mkdir()
        (notes / "otters.md").write_text("# Otters\n\nSea otters hold hands while they sleep so they do not drift apart.")
        (notes / "bees.txt").write_text("Honey bees communicate the direction of flowers with a waggle dance.")
        cli_env = {**env, "LLMOPS_KAFKA_BOOTSTRAP": kafka}
        ing = subprocess.run([*LLMOPS, "ingest", str(notes), "--collection", "notes"], env=cli_env,
                             capture_output=True, text=True, timeout=120)
        assert ing.returncode == 0 and "indexed 2 documents" in ing.stdout, ing.stdout + ing.stderr
        gen = subprocess.run([*LLMOPS, "generate", "Why do sea otters hold hands?", "--rag", "--collection", "notes",
                              "--top-k", "1", "--max-new-tokens", "16"], env=cli_env, capture_output=True, text=True,
                             timeout=120)
        assert gen.returncode == 0, gen.stdout + gen.stderr
        assert "otters.md" in gen.stdout
        tid = gen.stdout.split("trace ", 1)[1].split()[0]
        # the question comes with the completion, the spans on their own topic: wait for both
        shown = wait_until(lambda: (p := subprocess.run([*LLMOPS, "trace", tid], env=cli_env, capture_output=True,
                                                        text=True, timeout=60)).returncode == 0
                           and "generation" in p.stdout and "Why do sea otters hold hands?" in p.stdout and p.stdout,
                           timeout_s=60, what="llmops trace")   # each try starts the CLI: seconds on 2 busy cores
        assert "retrieval" in shown and "Why do sea otters hold hands?" in shown
        fb = subprocess.run([*LLMOPS, "feedback", tid, "1", "--comment", "helpful"], env=cli_env,
                            capture_output=True, text=True, timeout=60)
        assert fb.returncode == 0 and "recorded" in fb.stdout
        assert [f.comment for f in client.get_trace(tid).feedback] == ["helpful"]
        bad = subprocess.run([*LLMOPS, "generate", "", "--no-stream"], env=cli_env, capture_output=True, text=True,
                             timeout=60)
        assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stdout

        # offline evaluation: two runs of one dataset, stored with the traces, then compared
        dataset = notes / "qa.jsonl"
        dataset.write_text(
            '{"id": "otters", "question": "Why do sea otters hold hands?", "reference": "so they do not drift apart"}\n'
            '{"id": "bees", "question": "How do honey bees share where flowers are?", "reference": "a waggle dance"}\n')
        for name, tokens in (("short", "6"), ("long", "32")):
            ev = subprocess.run([*LLMOPS, "eval", str(dataset), "--name", name, "--rag", "--collection", "notes",
                                 "--max-new-tokens", tokens], env=cli_env, capture_output=True, text=True, timeout=300)
            assert ev.returncode == 0, ev.stdout + ev.stderr
            assert f"run {name}" in ev.stdout and "reference.token_f1" in ev.stdout
        again = subprocess.run([*LLMOPS, "eval", str(dataset), "--name", "short"], env=cli_env, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 1 and "ALREADY_EXISTS" in again.stdout
        listed = subprocess.run([*LLMOPS, "eval", "list"], env=cli_env, capture_output=True, text=True, timeout=60)
        assert "short" in listed.stdout and "long" in listed.stdout
        out_json = notes / "cmp.json"
        cmp = subprocess.run([*LLMOPS, "eval", "compare", "short", "long", "--json", str(out_json)], env=cli_env,
                             capture_output=True, text=True, timeout=600)
        assert cmp.returncode == 0, cmp.stdout + cmp.stderr
        assert "A wins" in cmp.stdout and "pairwise judge (both orders)" in cmp.stdout
        result = json.loads(out_json.read_text())
        assert result["same_dataset"] and result["common_items"] == 2
        assert sum(result["pairwise"]["verdicts"][k] for k in ("A", "B", "tie")) == 2
        f1 = next(m for m in result["metrics"] if m["evaluator"] == "reference.token_f1")
        assert f1["wins_a"] + f1["wins_b"] + f1["ties"] == 2
        run = client.tracing.GetEvalRun(tracing_pb2.GetEvalRunRequest(name="long"))
        assert [i.item_id for i in run.items] == ["otters", "bees"]
        # the item's scores are on its trace too: the Score RPC publishes them, tracing stores them
        item_trace = wait_until(lambda: (t := client.get_trace(run.items[0].trace_id))
                                and "reference.token_f1" in {x.evaluator for x in t.scores}
                                and t.summary.metadata.get("llmops.eval_run") and t,
                                timeout_s=30, what="the eval item's score and run on its trace")
        assert "reference.token_f1" in {x.evaluator for x in item_trace.scores}
        assert item_trace.summary.metadata["llmops.eval_run"] == "long"

        # drift: the monitor is up, has no reference before its first window, and refuses a bad one
        rep = subprocess.run([*LLMOPS, "drift", "report"], env=cli_env, capture_output=True, text=True, timeout=60)
        assert rep.returncode == 0 and "monitor default" in rep.stdout and "none yet" in rep.stdout, rep.stdout
        bad_ref = subprocess.run([*LLMOPS, "drift", "reference", "default", "--first-n", "100000"], env=cli_env,
                                 capture_output=True, text=True, timeout=60)
        assert bad_ref.returncode == 1 and "INVALID_ARGUMENT" in bad_ref.stdout, bad_ref.stdout
        evs = subprocess.run([*LLMOPS, "drift", "events"], env=cli_env, capture_output=True, text=True, timeout=60)
        assert evs.returncode == 0 and "no retrain events" in evs.stdout
    finally:
        rc = interrupt(proc)
    text = Path(log.name).read_text()
    assert rc == 0, text[-3000:]
    assert text.rstrip().endswith("stopped")
    for svc in ("inference", "retrieval", "tracing", "judging", "drift"):
        assert health(settings.grpc_target(svc)) == "UNREACHABLE"


def test_a_crashed_service_is_reported_by_name_and_restarted(settings):
    env = stack_env(settings)
    env["LLMOPS_TRACE_DB"] = str(settings.data_dir / "traces.db")
    log = open(settings.data_dir.parent / "up.log", "w+")
    proc = subprocess.Popen([*LLMOPS, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: "running; Ctrl-C" in Path(log.name).read_text() or proc.poll() is not None,
                   timeout_s=300, what="llmops up")
        pid = int(Path(log.name).read_text().split("started tracing (pid ", 1)[1].split(",")[0])
        os.kill(pid, signal.SIGKILL)
        # the supervisor reports the crash by name, restarts it, and it serves again
        wait_until(lambda: "tracing is SERVING again" in Path(log.name).read_text() or proc.poll() is not None,
                   timeout_s=180, what="tracing restarted and SERVING again")
        assert proc.poll() is None, Path(log.name).read_text()[-3000:]
        assert health(settings.grpc_target("tracing")) == "SERVING"
        proc.send_signal(signal.SIGINT)          # Ctrl-C still stops everything
        rc = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = Path(log.name).read_text()
    assert "service 'tracing' exited with code -9: restarting it" in text
    assert rc == 0, text[-3000:]
    assert text.rstrip().endswith("stopped")  # the others were stopped, not left running
    for svc in ("inference", "retrieval", "tracing"):
        assert health(settings.grpc_target(svc)) == "UNREACHABLE"
