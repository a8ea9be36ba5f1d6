"""The deployment files, checked for structure (no Docker engine runs here): docker-compose.yml
wires the production shape with env names the settings module knows, the Grafana dashboards
are the ones deploy/grafana/dashboards.py declares and read only exported metrics, and the
provisioning points the dashboards at the datasource it defines."""
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from llmops.common.metrics import REGISTRY
from llmops.common.settings import SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
GRAFANA = ROOT / "deploy" / "grafana"
DEFAULTS = Settings.model_construct()   # field defaults, without reading this process's environment
INFRA = {"kafka", "weaviate", "tgi", "postgres", "prometheus", "grafana"}


def _dashboards_module():
    spec = importlib.util.spec_from_file_location("llmops_dashboards", GRAFANA / "dashboards.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def test_compose_runs_the_production_shape():
    services = COMPOSE["services"]
    assert set(services) == INFRA | set(SERVICES)
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    # the five services come from one image, built from the Dockerfile at the root
    assert {services[s]["build"] for s in SERVICES} == {"."}
    assert len({services[s]["image"] for s in SERVICES}) == 1
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["llmops"]' in dockerfile and "pip install" in dockerfile
    assert "HF_HUB_OFFLINE=1" in dockerfile   # the models come from pip packages, never a hub
    assert "kafka" in services["kafka"]["image"] and services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == \
        "broker,controller"   # KRaft, one node, no ZooKeeper


def test_each_service_serves_itself_on_its_ports_and_checks_its_own_health():
    for name in SERVICES:
        svc = COMPOSE["services"][name]
        assert svc["command"] == ["serve", name]
        assert svc["healthcheck"]["test"] == ["CMD", "llmops", "health", name]
        published = {p.split(":")[1] for p in svc["ports"]}
        assert published == {str(DEFAULTS.grpc_port(name))}
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.compose.yml").read_text())
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "llmops")
    targets = {c["labels"]["service"]: c["targets"][0] for c in job["static_configs"]}
    assert targets == {s: f"{s}:{DEFAULTS.metrics_port(s)}" for s in SERVICES}


def test_compose_env_names_are_settings_and_their_values_are_valid():
    known = {f"LLMOPS_{n.upper()}" for n in Settings.model_fields}
    env = COMPOSE["x-llmops"]["environment"]
    names = set(env)
    assert names <= known, f"compose sets unknown settings: {sorted(names - known)}"
    for name in SERVICES:   # every service gets the whole shared environment (the YAML merge)
        assert COMPOSE["services"][name]["environment"] == env
    values = {k[len("LLMOPS_"):].lower(): _interpolate(v) for k, v in env.items()}
    values = {k: v for k, v in values.items() if v != ""}
    s = Settings(**values)   # the values parse and validate as the services would read them
    assert not s.embedded_broker and s.bootstrap_servers == "kafka:9092"
    assert s.model_backend == "tgi" and s.tgi_url == "http://tgi:80" and s.judge_backend == "tgi"
    assert s.vector_store == "weaviate" and s.weaviate_url == "http://weaviate:8080"
    assert s.trace_db_url.startswith("postgresql+psycopg://") and s.drift_db_url.startswith("postgresql+psycopg://")
    assert s.grpc_target("retrieval") == "retrieval:50052"


def test_compose_dependencies_exist_and_follow_the_data():
    services = COMPOSE["services"]
    deps = {n: set(s.get("depends_on", {})) for n, s in services.items()}
    for name, ds in deps.items():
        assert ds <= set(services), f"{name} depends on unknown {ds - set(services)}"
    for name in SERVICES:
        assert "kafka" in deps[name] and services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert {"tgi", "retrieval"} <= deps["inference"]
    assert "weaviate" in deps["retrieval"] and "tgi" in deps["judging"]
    assert "postgres" in deps["tracing"] and "postgres" in deps["drift"]
    assert "prometheus" in deps["grafana"]

    seen: set[str] = set()   # no cycles: compose would refuse to start

    def visit(n: str, path: tuple[str, ...]) -> None:
        assert n not in path, f"dependency cycle {' -> '.join(path + (n,))}"
        if n in seen:
            return
        for d in deps[n]:
            visit(d, path + (n,))
        seen.add(n)

    for n in services:
        visit(n, ())


def test_compose_mounts_exist_and_named_volumes_are_declared():
    declared = set(COMPOSE["volumes"])
    for name, svc in COMPOSE["services"].items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"
            else:
                assert src in declared, f"{name} uses undeclared volume {src}"
    prom = COMPOSE["services"]["prometheus"]
    assert any("prometheus.compose.yml" in c for c in prom["command"])


def test_dashboards_are_generated_from_their_declaration():
    mod = _dashboards_module()
    assert mod.main(["--check"]) == 0, "run python deploy/grafana/dashboards.py"
    files = sorted(p.stem for p in (GRAFANA / "dashboards").glob("*.json"))
    assert files == sorted(["overview", "quality", "drift", "pipeline", "rollouts"])   # rollouts: deploy/grafana/rollouts.py


def dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for t in panel["targets"]:
                out.append((path.stem, panel["title"], t["expr"]))
    return out


def test_dashboards_read_exported_metrics_from_the_provisioned_datasource():
    exported = {m.name for m in REGISTRY.collect()} | {"up"}
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert ds["type"] == "prometheus"
    for path in (GRAFANA / "dashboards").glob("*.json"):
        dash = json.loads(path.read_text())
        assert dash["uid"].startswith("llmops-") and dash["panels"]
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == ds["uid"], panel["title"]
    queries = dashboard_queries()
    assert len(queries) >= 30
    for dash, title, expr in queries:
        used = {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in re.findall(r"\b(llmops_[a-z_]+|up)\b", expr)}
        assert used and used <= exported, f"{dash}/{title} reads unknown metrics {sorted(used - exported)}"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "llmops.yml").read_text())["providers"][0]
    mounts = COMPOSE["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts


@pytest.mark.parametrize("board,needs", [
    ("overview", ["llmops_grpc_requests_total", "llmops_grpc_request_duration_seconds_bucket", "llmops_tokens_total",
                  "llmops_cost_usd_total", "llmops_route_requests_total", "llmops_route_attempts_total",
                  "llmops_route_fallbacks_total", "llmops_circuit_open", "llmops_shadow_requests_total"]),
    ("quality", ["llmops_judge_score_sum", "llmops_feedback_score", "prompt_version", "deployment_version"]),
    ("drift", ["llmops_drift_share", "llmops_drift_feature_drifted", "llmops_retrain_events_total"]),
    ("pipeline", ["llmops_consumer_lag_messages", "llmops_dlq_messages_total", "llmops_events_undelivered_total",
                  "llmops_broker_up"]),
])
def test_each_dashboard_shows_what_the_issue_asks_for(board, needs):
    text = " ".join(e for d, _, e in dashboard_queries() if d == board)
    for n in needs:
        assert n in text, f"{board} does not show {n}"
