"""The Rollouts dashboard (deploy/grafana/rollouts.py): its JSON is generated from the
declaration, it reads only metrics the services export, every query shows 0 rather than nothing
on a stack without a canary, and it has the panels a rollout is watched with."""
import importlib.util
import json
import re
import sys
from pathlib import Path

from llmops.common.metrics import REGISTRY

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"


def rollouts_module():
    spec = importlib.util.spec_from_file_location("llmops_rollouts_dashboard", GRAFANA / "rollouts.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_rollouts_dashboard_is_generated_from_its_declaration():
    assert rollouts_module().main(["--check"]) == 0, "run python deploy/grafana/rollouts.py"


def test_the_rollouts_dashboard_reads_exported_metrics_and_shows_zeros_without_a_canary():
    dash = json.loads((GRAFANA / "dashboards" / "rollouts.json").read_text())
    assert dash["uid"] == "llmops-rollouts" and "llmops" in dash["tags"]
    exported = {m.name for m in REGISTRY.collect()}
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in dash["panels"]}
    for title, queries in exprs.items():
        for expr in queries:
            used = {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in re.findall(r"\b(llmops_[a-z_]+)", expr)}
            assert used and used <= exported, (title, sorted(used - exported))
            assert expr.endswith("or vector(0)"), (title, expr)
    every = " ".join(e for qs in exprs.values() for e in qs)
    for metric in ("llmops_rollout_decisions_total", "llmops_rollout_samples", "llmops_rollout_score_mean",
                   "llmops_rollout_statistic", "llmops_rollout_threshold"):
        assert metric in every
    stat = next(p for p in dash["panels"] if p["title"].startswith("Sequential test statistic"))
    assert stat["fieldConfig"]["defaults"]["custom"]["scaleDistribution"] == {"type": "log", "log": 10}
    assert [t["legendFormat"].split()[0] for t in stat["targets"]] == ["statistic", "threshold"]
