"""Every Grafana panel shows data: the real Prometheus (Debian's `prometheus` package) scrapes a
stack started by `llmops up` under a small workload, with the alert rules of deploy/prometheus
loaded, and every PromQL query of every dashboard returns a finite value."""
import json
import math
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from llmops.cli.client import Client
from llmops.common.settings import SERVICES, Settings
from llmops.v1 import inference_pb2, retrieval_pb2, tracing_pb2
from tests.e2e.test_stack import LLMOPS, stack_env
from tests.support import free_port, make_settings, produce, wait_until

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
# what Grafana substitutes; a 5-minute rate window covers the whole workload
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "15m", "$model": ".*"}


def prom_query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def prom_get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)


def finite_values(resp: dict) -> list[float]:
    data = resp["data"]
    rows = data["result"] if data["resultType"] in ("vector", "matrix") else [{"value": data["result"]}]
    vals = [float(r["value"][1]) for r in rows if "value" in r]
    return [v for v in vals if math.isfinite(v)]


def prometheus_config(s: Settings, tmp: Path) -> Path:
    """deploy/prometheus/prometheus.yml with this stack's ports and a 1 s scrape."""
    cfg = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "llmops")
    assert [c["labels"]["service"] for c in job["static_configs"]] == list(SERVICES)
    for c in job["static_configs"]:
        c["targets"] = [f"127.0.0.1:{s.metrics_port(c['labels']['service'])}"]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data", "", drift_window_size=10, drift_join_wait_s=1.0,
                         model_prices="smollm2-135m-instruct=0.50/1.50", judge_llm_sample_rate=0.2)


def test_every_dashboard_query_returns_data_from_a_live_stack(settings, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make install` installs Debian's prometheus package (.ci/apt-packages)")
    env = stack_env(settings)
    kafka = f"127.0.0.1:{env['LLMOPS_KAFKA_EMBEDDED_PORT']}"
    log = open(tmp_path / "up.log", "w+")
    stack = subprocess.Popen([*LLMOPS, "up"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    prom_port = free_port()
    prom_log = open(tmp_path / "prometheus.log", "w+")
    prom = subprocess.Popen([binary, f"--config.file={prometheus_config(settings, tmp_path)}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=prom_log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{prom_port}"
    try:
        wait_until(lambda: "running; Ctrl-C" in Path(log.name).read_text() or stack.poll() is not None,
                   timeout_s=300, what="llmops up")
        assert stack.poll() is None, Path(log.name).read_text()[-3000:]
        client = Client(Settings(**{**settings.model_dump(), "kafka_bootstrap": kafka}))

        # the workload: a corpus, RAG and plain requests, a bad request, feedback, a junk document
        from pydoc_data.topics import topics

        names = ("nonlocal", "global", "assert", "lambda", "import", "while")
        client.upsert([retrieval_pb2.Document(id=f"pydoc:{t}", text=topics[t], metadata={"topic": t}) for t in names])
        questions = [f"What does the {t} statement do in Python?" for t in names]
        traces = []
        for i in range(22):   # a drift reference of 10, then one window of 10
            r = client.generate(questions[i % len(questions)], rag=i % 2 == 0, max_new_tokens=8)
            assert r.usage.HasField("cost_usd") and r.usage.cost_usd > 0
            traces.append(r.trace_id)
        with pytest.raises(grpc.RpcError) as bad_request:
            client.inference.Generate(inference_pb2.GenerateRequest(prompt=""), timeout=30)
        assert bad_request.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad_request.value.details()
        for tid, score in zip(traces[:4], (1, 0, 1, 1)):
            client.tracing.SubmitFeedback(tracing_pb2.SubmitFeedbackRequest(trace_id=tid, score=score), timeout=10)
        produce(kafka, settings.topic("documents"), [(b"junk", b"\xffnot a document", [])])

        # the cost is on the trace, as the generation span and the summary show it
        # the summary comes with the completion, the generation span on the spans topic: in any order
        trace = wait_until(lambda: (t := client.get_trace(traces[0])) and t.summary.usage.HasField("cost_usd")
                           and any(sp.name == "generation" for sp in t.spans) and t,
                           timeout_s=20, what="the trace's cost and its generation span")
        expected = (trace.summary.usage.prompt_tokens * 0.5 + trace.summary.usage.completion_tokens * 1.5) / 1e6
        assert trace.summary.usage.cost_usd == pytest.approx(expected)
        gen = next(s for s in trace.spans if s.name == "generation")
        assert float(gen.attributes["cost_usd"]) == pytest.approx(expected)

        # Prometheus sees every service, and the drift window has been evaluated
        wait_until(lambda: len([v for v in finite_values(prom_query(base, 'up{job="llmops"} == 1'))]) == 5,
                   timeout_s=60, what="Prometheus scraping the five services")
        wait_until(lambda: finite_values(prom_query(base, "llmops_drift_share")), timeout_s=180,
                   what="a drift window in Prometheus")
        wait_until(lambda: finite_values(prom_query(base, "llmops_dlq_messages_total")), timeout_s=60,
                   what="the junk document on the DLQ")
        wait_until(lambda: finite_values(prom_query(base, "llmops_feedback_score_count")), timeout_s=60,
                   what="feedback in Prometheus")

        queries = []
        for path in sorted(DASHBOARDS.glob("*.json")):
            dash = json.loads(path.read_text())
            for panel in dash["panels"]:
                for t in panel["targets"]:
                    expr = t["expr"]
                    for var, value in GRAFANA_VARS.items():
                        expr = expr.replace(var, value)
                    queries.append((path.stem, panel["title"], expr))

        def panels_without_data():
            empty = []
            for board, title, expr in queries:
                resp = prom_query(base, expr)
                assert resp["status"] == "success", (board, title, resp)
                if not finite_values(resp):
                    empty.append((board, title, expr))
            return empty

        # a rate needs two samples after the workload: poll scrape by scrape (1 s) until every panel
        # has data, or the deadline, rather than sleeping for a guess of how many scrapes it takes
        deadline = time.monotonic() + 60
        while (empty := panels_without_data()) and time.monotonic() < deadline:
            time.sleep(1.0)
        report = []
        for board, title, expr in empty:
            raw = {m: prom_query(base, f"{m}[30s]")["data"]["result"]   # what Prometheus holds, to debug
                   for m in sorted(set(re.findall(r"\b(llmops_[a-z_]+)", expr)))}
            report.append(f"{board} / {title}: {expr}\n    {json.dumps(raw)[:1500]}")
        assert not empty, "panels without data:\n" + "\n".join(report)
        assert len(queries) >= 30

        # the dashboards' model variable has values, and every alert rule evaluates cleanly
        models = prom_get(base, "/api/v1/label/model/values?" + urllib.parse.urlencode({"match[]": "llmops_tokens_total"}))
        assert settings.model_name in models["data"]
        rules = [r for g in prom_get(base, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
        defined = set(re.findall(r"- alert: (\w+)", (PROMETHEUS_DIR / "alerts.yml").read_text()))
        assert {r["name"] for r in rules} == defined and all(r["health"] == "ok" for r in rules), \
            [(r["name"], r.get("lastError")) for r in rules]
        retrain = prom_query(base, 'sum(llmops_retrain_events_total{monitor="default"})')
        assert finite_values(retrain), "the retrain counter is exported from the start, at 0 if none fired"
    finally:
        prom.send_signal(signal.SIGTERM)
        stack.send_signal(signal.SIGINT)
        for p in (prom, stack):
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
