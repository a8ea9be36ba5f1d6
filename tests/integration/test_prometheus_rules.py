"""deploy/prometheus with the real promtool (Debian's `prometheus` package, installed by
`make`): the scrape config and the alert rules are valid, every alert fires in its rule unit
tests, and every metric the rules read is one the services export."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmops.common.metrics import REGISTRY

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus package (.ci/apt-packages)")
    return path


def run(promtool, *args):
    return subprocess.run([promtool, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)


def test_scrape_config_and_rules_are_valid(promtool):
    for config in ("prometheus.yml", "prometheus.compose.yml"):   # llmops up on one host; docker-compose
        cfg = run(promtool, "check", "config", config)
        assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    rules = run(promtool, "check", "rules", "alerts.yml")
    defined = len(re.findall(r"- alert: (\w+)", (DEPLOY / "alerts.yml").read_text()))
    assert rules.returncode == 0 and f"{defined} rules found" in rules.stdout, rules.stdout + rules.stderr


def test_every_alert_fires_in_its_rule_tests(promtool):
    out = run(promtool, "test", "rules", "alerts_test.yml")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "alerts_test.yml").read_text()))
    defined = set(re.findall(r"- alert: (\w+)", (DEPLOY / "alerts.yml").read_text()))
    assert tested == defined


def test_the_rules_read_metrics_the_services_export():
    exported = {m.name for m in REGISTRY.collect()}
    used = set(re.findall(r"\b(llmops_[a-z_]+)", (DEPLOY / "alerts.yml").read_text()))
    base = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert base and base <= exported, sorted(base - exported)
