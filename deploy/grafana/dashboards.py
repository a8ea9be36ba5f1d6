"""The four llmops Grafana dashboards, declared once and written as provisioned JSON.

    python deploy/grafana/dashboards.py          # rewrite deploy/grafana/dashboards/*.json
    python deploy/grafana/dashboards.py --check  # exit 1 if the JSON files are out of date

Each panel is a title, a unit and its PromQL queries. The JSON is what Grafana loads (see
provisioning/); this module is what people edit. A test keeps the two in step, and another runs
every query against a real Prometheus scraping a running stack.

Queries use Grafana's ``$__rate_interval`` and ``$__range``; ``$model`` is a dashboard variable
(``label_values(llmops_tokens_total, model)``, multi-select, "All" = ``.*``).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "llmops-prometheus"}
SERVER_ERRORS = "INTERNAL|UNKNOWN|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|RESOURCE_EXHAUSTED"
RI = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"          # "timeseries" | "stat"
    description: str = ""
    width: int = 12
    overrides: dict = field(default_factory=dict)


def q(expr: str, legend: str = "") -> Query:
    return Query(" ".join(expr.split()), legend)


def quantiles(metric: str, by: str, selector: str = "") -> tuple[Query, ...]:
    return tuple(
        q(f"histogram_quantile({p}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket{selector}[{RI}])))",
          f"p{int(p * 100)}{' {{' + by + '}}' if by else ''}")
        for p in (0.5, 0.95, 0.99)
    )


def mean(metric: str, by: str, selector: str = "") -> str:
    return (f"sum by ({by}) (rate({metric}_sum{selector}[{RI}])) / "
            f"sum by ({by}) (rate({metric}_count{selector}[{RI}]))")


MODEL = '{model=~"$model"}'

OVERVIEW = [
    Panel("Requests per second by service and method", (
        q(f"sum by (service, method) (rate(llmops_grpc_requests_total[{RI}]))", "{{service}} {{method}}"),), "reqps"),
    Panel("Generate latency (inference, end to end)",
          quantiles("llmops_grpc_request_duration_seconds", "", '{service="inference",method=~"Generate|GenerateStream"}'),
          "s"),
    Panel("Server error ratio by service", (
        q(f"""(sum by (service) (rate(llmops_grpc_requests_total{{code=~"{SERVER_ERRORS}"}}[{RI}]))
              or sum by (service) (rate(llmops_grpc_requests_total[{RI}])) * 0)
              / sum by (service) (rate(llmops_grpc_requests_total[{RI}]))""", "{{service}}"),), "percentunit",
          description="Errors the platform caused (INTERNAL, UNAVAILABLE, ...); the alert fires above 5%."),
    Panel("Non-OK responses by code", (
        q(f'sum by (service, code) (rate(llmops_grpc_requests_total{{code!="OK"}}[{RI}]))', "{{service}} {{code}}"),),
          "reqps", description="Client errors (INVALID_ARGUMENT, NOT_FOUND) included: a spike is a misbehaving client."),
    Panel("Tokens per second by model", (
        q(f"sum by (model, kind) (rate(llmops_tokens_total{MODEL}[{RI}]))", "{{model}} {{kind}}"),), "short"),
    Panel("Cost per hour by model (USD)", (
        q(f"sum by (model) (rate(llmops_cost_usd_total{MODEL}[{RI}])) * 3600", "{{model}}"),), "currencyUSD",
          description="From LLMOPS_MODEL_PRICES; models without a price are not shown."),
    Panel("Cost in the time range (USD)", (
        q(f"sum by (model) (increase(llmops_cost_usd_total{MODEL}[$__range]))", "{{model}}"),), "currencyUSD",
          kind="stat"),
    Panel("Generation latency by model (p95)", (
        q(f"histogram_quantile(0.95, sum by (le, model) (rate(llmops_generation_duration_seconds_bucket{MODEL}[{RI}])))",
          "{{model}}"),), "s"),
    # routes: which deployment version served, on which arm, and what it took
    Panel("Route requests per second by deployment version and arm", (
        q(f"sum by (route, deployment, version, arm, outcome) (rate(llmops_route_requests_total[{RI}]))",
          "{{route}} {{deployment}} v{{version}} {{arm}} {{outcome}}"),), "reqps",
          description="By the deployment version that answered (a fallback's, when it fell back); "
                      "shadow copies are not requests: see Shadow copies."),
    Panel("Route error ratio by deployment version and arm", (
        q(f"""(sum by (route, deployment, version, arm) (rate(llmops_route_requests_total{{outcome="error"}}[{RI}]))
              or sum by (route, deployment, version, arm) (rate(llmops_route_requests_total[{RI}])) * 0)
              / sum by (route, deployment, version, arm) (rate(llmops_route_requests_total[{RI}]))""",
          "{{route}} {{deployment}} v{{version}} {{arm}}"),), "percentunit",
          description="Requests that failed after every retry and fallback; a canary's error limit reads the same."),
    Panel("Attempts per second by deployment version and outcome", (
        q(f"sum by (route, deployment, version, outcome) (rate(llmops_route_attempts_total[{RI}]))",
          "{{route}} {{deployment}} v{{version}} {{outcome}}"),), "ops",
          description="Every attempt, retries and fallbacks included: unavailable, timeout, rate_limited, error, "
                      "deadline; circuit_open = skipped while its circuit breaker is open."),
    Panel("Fallbacks per second by route", (
        q(f"sum by (route) (rate(llmops_route_fallbacks_total[{RI}])) or vector(0)", "{{route}}"),), "reqps",
          description="Requests answered by a fallback deployment instead of their arm's own."),
    Panel("Circuit breakers open", (
        q("sum by (deployment, version) (llmops_circuit_open) or vector(0)", "{{deployment}} v{{version}}"),),
          "short", description="Inference replicas on which the deployment version's circuit breaker is open "
                               "(its attempts are skipped until the cooldown ends)."),
    Panel("Shadow copies per second by deployment version and outcome", (
        q(f"sum by (route, deployment, version, outcome) (rate(llmops_shadow_requests_total[{RI}])) or vector(0)",
          "{{route}} {{deployment}} v{{version}} {{outcome}}"),), "ops",
          description="Copies of requests sent to a route's shadow; skipped = not sent because the shadow was busy. "
                      "Their answers are judged (Quality: judge score by deployment version), never returned."),
]

QUALITY = [
    Panel("Judge score mean by evaluator", (
        q(mean("llmops_judge_score", "evaluator, metric"), "{{evaluator}}"),), "short",
          description="0-1 metrics and 1-5 rubrics; a drop in a RAG-triad score fires LlmopsJudgeScoreDrop."),
    Panel("Judge score mean by model and prompt version", (
        q(mean("llmops_judge_score", "metric, model, prompt_version", MODEL), "{{metric}} {{model}} v{{prompt_version}}"),),
          "short"),
    Panel("Judge score mean by deployment version", (
        q(mean("llmops_judge_score", "metric, deployment, deployment_version", MODEL),
          "{{metric}} {{deployment}} v{{deployment_version}}"),), "short",
          description="By the deployment version that answered (shadows included), so a canary's scores sit beside "
                      "the primary's; an empty deployment = a completion that came in through OTLP or Kafka."),
    Panel("Judge score distribution (p10, p50)", (
        q(f"histogram_quantile(0.1, sum by (le, metric) (rate(llmops_judge_score_bucket[{RI}])))", "p10 {{metric}}"),
        q(f"histogram_quantile(0.5, sum by (le, metric) (rate(llmops_judge_score_bucket[{RI}])))", "p50 {{metric}}"),
    ), "short"),
    Panel("Judged per second, and not judged by reason", (
        q(f"sum by (evaluator) (rate(llmops_judge_score_count[{RI}]))", "judged {{evaluator}}"),
        q(f"sum by (evaluator, reason) (rate(llmops_judge_skipped_total[{RI}]))", "skipped {{evaluator}} {{reason}}"),
    ), "ops"),
    Panel("Judge errors per second", (
        q(f"sum by (evaluator) (rate(llmops_judge_errors_total[{RI}])) or vector(0)", "{{evaluator}}"),), "ops",
          description="Evaluations that ended in an error score (the judge model failed or answered garbage)."),
    Panel("Judge delay after the completion (p95)", (
        q(f"histogram_quantile(0.95, sum by (le, tier) (rate(llmops_judge_delay_seconds_bucket[{RI}])))", "{{tier}}"),),
          "s"),
    Panel("User feedback: mean score and rate", (
        q(mean("llmops_feedback_score", "name"), "mean {{name}}"),
        q(f"sum by (name) (rate(llmops_feedback_score_count[{RI}]))", "per second {{name}}"),
        q(f"sum by (name) (rate(llmops_feedback_negative_total[{RI}]))", "negative per second {{name}}"),
    ), "short", description="The mean is over non-negative scores (thumbs 0/1, ratings 1-5); "
                            "negative ones (a -1 thumbs-down) are counted on their own."),
    Panel("Retrieval: best hit's score (p50) and hits per search", (
        q(f"histogram_quantile(0.5, sum by (le, collection) (rate(llmops_retrieval_top_score_bucket[{RI}])))",
          "top score p50 {{collection}}"),
        q(mean("llmops_retrieval_hits", "collection"), "hits {{collection}}"),
    ), "short"),
]

DRIFT = [
    Panel("Drift share of the last window", (
        q("max by (monitor) (llmops_drift_share)", "{{monitor}}"),), "percentunit",
          description="Share of drifted tabular features; the monitor's drift_share threshold decides a drifted window."),
    Panel("Drifted features in the last window", (
        q("max by (monitor, feature) (llmops_drift_feature_drifted)", "{{monitor}} {{feature}}"),), "short",
          description="1 = drifted. Details: `llmops drift report` or the Evidently HTML report."),
    Panel("Windows evaluated in the time range", (
        q("sum by (monitor, drifted) (increase(llmops_drift_windows_total[$__range]))",
          "{{monitor}} drifted={{drifted}}"),), "short", kind="stat"),
    Panel("Retrain events in the time range", (
        q("sum by (monitor) (increase(llmops_retrain_events_total[$__range]))", "{{monitor}}"),), "short", kind="stat",
          description="Each is on llmops.retrain and in `llmops drift events`."),
    Panel("Evidently time per window (p50, p95)", (
        q(f"histogram_quantile(0.5, sum by (le, monitor) (rate(llmops_drift_report_seconds_bucket[{RI}])))",
          "p50 {{monitor}}"),
        q(f"histogram_quantile(0.95, sum by (le, monitor) (rate(llmops_drift_report_seconds_bucket[{RI}])))",
          "p95 {{monitor}}"),
    ), "s"),
    Panel("Drift join: outcomes per second and traces waiting", (
        q(f"sum by (outcome) (rate(llmops_drift_joined_total[{RI}]))", "{{outcome}}"),
        q("max(llmops_drift_join_pending)", "pending"),
    ), "short"),
]

PIPELINE = [
    Panel("Consumer lag by topic and group", (
        q("max by (topic, group) (llmops_consumer_lag_messages)", "{{group}} {{topic}}"),), "short",
          description="End offsets minus committed offsets; LlmopsConsumerLag fires above 1,000 for 10 min."),
    Panel("Events consumed per second", (
        q(f"sum by (topic, group) (rate(llmops_events_consumed_total[{RI}]))", "{{group}} {{topic}}"),), "ops"),
    Panel("Events published per second", (
        q(f"sum by (service, topic) (rate(llmops_events_published_total[{RI}]))", "{{service}} {{topic}}"),), "ops"),
    Panel("Dead-lettered messages in the time range", (
        q("sum by (topic, group, error) (increase(llmops_dlq_messages_total[$__range])) or vector(0)",
          "{{group}} {{topic}} {{error}}"),), "short", kind="stat",
          description="Each is on llmops.dlq with the reason in its headers."),
    Panel("Events the request path could not deliver", (
        q("sum by (topic, reason) (increase(llmops_events_undelivered_total[$__range])) or vector(0)",
          "{{topic}} {{reason}}"),), "short", kind="stat"),
    Panel("Publish buffer depth", (
        q("max by (service) (llmops_publish_queue_depth)", "{{service}}"),), "short"),
    Panel("Broker reachable (per service) and round trip p95", (
        q("min by (service) (llmops_broker_up)", "up {{service}}"),
        q(f"histogram_quantile(0.95, sum by (le) (rate(llmops_broker_roundtrip_seconds_bucket[{RI}])))", "round trip p95"),
    ), "short"),
    Panel("Services: scraped and ready", (
        q('up{job="llmops"}', "scraped {{service}}"),
        q("max by (service) (llmops_service_ready)", "ready {{service}}"),
    ), "short"),
]

DASHBOARDS = {
    "overview": ("llmops / Overview", "Traffic, latency, errors, tokens and cost by model; routes by deployment "
                 "version and arm: attempts, fallbacks, circuit breakers, shadow copies", OVERVIEW),
    "quality": ("llmops / Quality", "Judge scores by evaluator, model, prompt version and deployment version; "
                "feedback; retrieval", QUALITY),
    "drift": ("llmops / Drift", "Evidently drift monitors and retrain events", DRIFT),
    "pipeline": ("llmops / Pipeline", "Kafka: consumer lag, DLQ, undelivered events, broker health", PIPELINE),
}


def panel_json(p: Panel, pid: int, x: int, y: int) -> dict:
    out = {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description, "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": t.expr, "legendFormat": t.legend,
                     "range": p.kind == "timeseries", "instant": p.kind == "stat"}
                    for i, t in enumerate(p.queries)],
    }
    if p.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "none", "textMode": "value_and_name"}
    else:
        out["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    return out


def dashboard_json(uid: str) -> dict:
    title, description, panels = DASHBOARDS[uid]
    body = []
    x = y = 0
    for i, p in enumerate(panels, start=1):
        if x + p.width > 24:
            x, y = 0, y + 8
        body.append(panel_json(p, i, x, y))
        x += p.width
    uses_model = any("$model" in t.expr for p in panels for t in p.queries)
    templating = [{
        "name": "model", "label": "model", "type": "query", "datasource": DATASOURCE,
        "query": {"query": "label_values(llmops_tokens_total, model)", "refId": "model"},
        "definition": "label_values(llmops_tokens_total, model)",
        "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }] if uses_model else []
    return {
        "uid": f"llmops-{uid}", "title": title, "description": description, "tags": ["llmops"],
        "schemaVersion": 39, "version": 1, "editable": False, "graphTooltip": 1, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"}, "timezone": "browser",
        "templating": {"list": templating}, "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["llmops"], "asDropdown": True, "title": "llmops"}],
        "panels": body,
    }


def render(uid: str) -> str:
    return json.dumps(dashboard_json(uid), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for uid in DASHBOARDS:
        path = OUT / f"{uid}.json"
        text = render(uid)
        if "--check" in argv:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}; run python deploy/grafana/dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
