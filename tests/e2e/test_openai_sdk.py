"""The official openai SDK, unmodified (in its own venv), against the whole stack as `llmops up`
starts it: its calls are traced, scored online by the cheap tier and counted by the drift
monitor, like Generate's."""
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from llmops.cli.client import Client
from llmops.v1 import drift_pb2, retrieval_pb2
from tests.e2e.test_stack import llmops_up
from tests.support import make_settings, wait_until

PEER_PYTHON = Path(__file__).resolve().parents[2] / ".peers" / "otel" / "bin" / "python"
CHEAP = {"rag.faithfulness.cheap", "rag.answer_relevancy.cheap", "rag.context_relevancy.cheap",
         "safety.pii", "safety.prompt_injection"}


def test_openai_sdk_traffic_is_traced_judged_and_counted_by_drift(tmp_path):
    if not PEER_PYTHON.exists():
        pytest.fail(f"{PEER_PYTHON} is missing: `make .peers/otel/.ok` builds the openai SDK's venv")
    s = make_settings(tmp_path / "data", "", drift_join_wait_s=2.0)
    with llmops_up(s, tmp_path / "up.log") as (client_settings, env):
        client = Client(client_settings)
        from pydoc_data.topics import topics

        client.upsert([retrieval_pb2.Document(id=f"pydoc:{t}", text=topics[t], metadata={"topic": t})
                       for t in ("nonlocal", "global", "assert", "lambda")], "pydoc")

        def window_count() -> int:
            st = client.drift.GetStatus(drift_pb2.GetStatusRequest(monitor="default"), timeout=10)
            return st.monitors[0].current_window_count

        before = window_count()
        script = textwrap.dedent("""
            import json, os, openai
            client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="sk-anything", max_retries=0, timeout=300)
            r = client.chat.completions.create(
                model="smollm2-135m-instruct", max_tokens=32, user="dana",
                messages=[{"role": "user", "content": "What does the nonlocal statement do?"}],
                extra_body={"llmops": {"retrieval": {"collection": "pydoc", "top_k": 2}, "session_id": "sdk-e2e"}})
            chunks = list(client.chat.completions.create(
                model="smollm2-135m-instruct", max_tokens=16, stream=True,
                messages=[{"role": "user", "content": "What is a lambda expression?"}],
                extra_body={"llmops": {"retrieval": {"collection": "pydoc"}, "session_id": "sdk-e2e"}}))
            print(json.dumps({"ids": [r.id, chunks[0].id], "contexts": r.llmops["contexts"]}))
        """)
        peer_env = {**os.environ, "NO_PROXY": "*", "no_proxy": "*",
                    "BASE_URL": f"http://127.0.0.1:{s.inference_http_port}/v1"}
        done = subprocess.run([str(PEER_PYTHON), "-c", script], env=peer_env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["contexts"][0]["metadata"]["topic"] == "nonlocal"
        trace_ids = [i.split("-", 1)[1] for i in out["ids"]]
        for tid in trace_ids:
            t = wait_until(lambda: (t := client.get_trace(tid)) and CHEAP <= {x.evaluator for x in t.scores} and t,
                           timeout_s=60, what=f"cheap-tier scores on {tid}")
            assert t.summary.session_id == "sdk-e2e" and t.summary.answer.strip()
            root = next(sp for sp in t.spans if sp.name in ("generate", "generate_stream"))
            assert root.attributes["llmops.door"] == "openai"
        wait_until(lambda: window_count() >= before + 2, timeout_s=60,
                   what="both completions counted in the drift monitor's open window")
