"""The llmops / Rollouts Grafana dashboard: canaries decided by the judge (the drift service's
rollout monitor), declared with the panels of dashboards.py and written as provisioned JSON.

    python deploy/grafana/rollouts.py          # rewrite deploy/grafana/dashboards/rollouts.json
    python deploy/grafana/rollouts.py --check  # exit 1 if it is out of date

Every query ends in ``or vector(0)``: a stack with no canary shows zeros, not empty panels. The
statistic panel is on a log scale: the mSPRT's likelihood ratio spans many decades, and the
rollback threshold (1/alpha, 100 by default) is drawn beside it.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards" / "rollouts.json"


def _dashboards():
    """deploy/grafana/dashboards.py (a script, not a package), for its Panel and JSON layout."""
    spec = importlib.util.spec_from_file_location("llmops_dashboards", HERE / "dashboards.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


D = _dashboards()
Panel, q, RI = D.Panel, D.q, D.RI
STATISTIC_PANEL = "Sequential test statistic against its rollback threshold"

ROLLOUTS = [
    Panel("Rollout decisions in the time range", (
        q("sum by (route, decision) (increase(llmops_rollout_decisions_total[$__range])) or vector(0)",
          "{{route}} {{decision}}"),), "short", kind="stat",
          description="Each is a DeploymentEvent on llmops.deployments with its evidence (`llmops rollout status`); "
                      "a rollback fires LlmopsCanaryRolledBack."),
    Panel("Rollout decisions over time", (
        q(f"sum by (route, decision) (increase(llmops_rollout_decisions_total[{RI}])) or vector(0)",
          "{{route}} {{decision}}"),), "short",
          description="rollback: the canary is worse than max_drop (or its errors or latency exceed the policy); "
                      "promote / passed: it held until max_samples."),
    Panel("Judged requests per arm (running canary)", (
        q("max by (route, arm) (llmops_rollout_samples) or vector(0)", "{{route}} {{arm}}"),), "short",
          description="Requests of the route revision whose score of the policy's name and tier has come. Nothing "
                      "is decided before min_samples on both arms; the canary is decided by max_samples."),
    Panel("Compared score mean per arm", (
        q("max by (route, arm) (llmops_rollout_score_mean) or vector(0)", "{{route}} {{arm}}"),), "short",
          description="The policy's score (default the cheap faithfulness) of answers the arm's own deployment gave; "
                      "failed and fallen-back requests are left out."),
    Panel(STATISTIC_PANEL, (
        q("max by (route) (llmops_rollout_statistic) or vector(0)", "statistic {{route}}"),
        q("max by (route) (llmops_rollout_threshold) or vector(0)", "threshold 1/alpha {{route}}"),
    ), "short", description="The one-sided mSPRT likelihood ratio of 'the canary is worse than max_drop'; "
                            "at or above the threshold (after min_samples) the canary is rolled back."),
    Panel("Canary requests per second by outcome", (
        q(f'sum by (route, outcome) (rate(llmops_route_requests_total{{arm="canary"}}[{RI}])) or vector(0)',
          "{{route}} {{outcome}}"),), "reqps",
          description="From the inference service. Errors and fallbacks count against the canary's max_error_rate."),
]

DESCRIPTION = ("Canary rollouts decided by the judge: decisions, judged requests, score means per arm, "
               "the sequential test against its threshold")
D.DASHBOARDS["rollouts"] = ("llmops / Rollouts", DESCRIPTION, ROLLOUTS)


def dashboard_json() -> dict:
    out = D.dashboard_json("rollouts")
    for panel in out["panels"]:
        if panel["title"] == STATISTIC_PANEL:
            panel["fieldConfig"]["defaults"]["custom"] = {"scaleDistribution": {"type": "log", "log": 10}}
    return out


def render() -> str:
    return json.dumps(dashboard_json(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"out of date: {OUT.name}; run python deploy/grafana/rollouts.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
