"""The monitoring profile: every metric the dashboard plots is one the code exports, and the
compose file, Prometheus' and Grafana's files agree on names, addresses and paths.

Nothing of the profile is started: the files are parsed. The metric names are those of a real
scrape of the API's `/metrics` (`prometheus_client.REGISTRY` with the queue's gauges read at
scrape time) in a process that has imported every module defining metrics.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import headers

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.prod.yml"
PROMETHEUS_FILE = ROOT / "docker" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "docker" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "vkp.json"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARDS_PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "vkp.yml"

# Every module that defines metrics (each registers them in the default registry on import).
METRIC_MODULES = (
    "src.arq.metrics",
    "src.monitoring.http",
    "src.monitoring.router",
    "src.vk.metrics",
    "src.webhooks.metrics",
    "src.morphology.metrics",
)
MONITORING_SERVICES = ("prometheus", "grafana")
METRIC_NAME = re.compile(r"\bvkp_[a-zA-Z0-9_]+")
DEFAULT = re.compile(r"\$\{[A-Z0-9_]+:-([^}]*)\}")


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def _services() -> dict[str, Any]:
    services = _yaml(COMPOSE_FILE)["services"]
    assert isinstance(services, dict)
    return services


def _defaults(value: object) -> str:
    """A compose value with each `${VAR:-default}` replaced by its default."""
    return DEFAULT.sub(r"\1", str(value))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes (short syntax) as container path -> source."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        mounts[target] = source
    return mounts


def _host_path(source: str) -> Path:
    assert source.startswith("./"), f"{source} is not a path in the repository"
    return ROOT / source


def _networks(service: dict[str, Any]) -> dict[str, Any]:
    networks = service.get("networks") or {}
    if isinstance(networks, list):
        return {name: {} for name in networks}
    return {name: spec or {} for name, spec in networks.items()}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(dashboard, dict)
    return dashboard


def _expressions() -> list[str]:
    return [
        target["expr"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


async def _exported(client: httpx.AsyncClient) -> dict[str, str]:
    """The metric families a scrape of `/metrics` shows: name (no `_total`) -> type."""
    for module in METRIC_MODULES:  # the workers' too: one registry per process
        importlib.import_module(module)
    response = await client.get("/metrics", headers=headers("root"))
    assert response.status_code == 200, response.text
    return {family.name: family.type for family in text_string_to_metric_families(response.text)}


# -- the dashboard ----------------------------------------------------------------------------


async def test_the_dashboard_plots_only_exported_metrics(client: httpx.AsyncClient) -> None:
    families = await _exported(client)
    used = {name for expr in _expressions() for name in METRIC_NAME.findall(expr)}
    assert len(used) >= 25, sorted(used)
    unknown = []
    for name in sorted(used):
        base, _, suffix = name.rpartition("_")
        if suffix == "total":
            known = families.get(base) == "counter"
        elif suffix in ("bucket", "sum", "count"):
            known = families.get(base) == "histogram"
        else:
            known = families.get(name) == "gauge"
        if not known:
            unknown.append(name)
    assert unknown == [], f"the dashboard plots metrics no module exports: {unknown}"


@pytest.mark.parametrize(
    "metric",
    [
        "vkp_queue_jobs",  # queue depth by state and priority
        "vkp_jobs_completed_total",  # throughput
        "vkp_jobs_failed_total",  # failure rate
        "vkp_job_duration_seconds_bucket",  # p95 duration
        "vkp_job_queue_wait_seconds_bucket",  # p95 queue wait
        "vkp_vk_errors_total",
        "vkp_vk_requests_total",
        "vkp_vk_rate_limit_wait_seconds_bucket",
        "vkp_webhook_deliveries_total",
        "vkp_http_requests_total",
        "vkp_http_request_duration_seconds_bucket",
        "vkp_morphology_cache_hits_total",
    ],
)
def test_the_dashboard_shows(metric: str) -> None:
    assert any(metric in expr for expr in _expressions())


def test_quantiles_are_taken_over_buckets_by_le() -> None:
    for expr in _expressions():
        for match in re.finditer(r"histogram_quantile\(0\.\d+, sum by \(([^)]*)\)", expr):
            assert "le" in [label.strip() for label in match.group(1).split(",")], expr


def test_every_panel_uses_the_provisioned_datasource() -> None:
    [datasource] = _yaml(DATASOURCES_FILE)["datasources"]
    for panel in _panels(_dashboard()["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel
        assert panel["targets"], panel["title"]
    ids = [panel["id"] for panel in _panels(_dashboard()["panels"])]
    assert len(ids) == len(set(ids))


# -- the compose profile ----------------------------------------------------------------------


def test_the_profile_has_prometheus_and_grafana_only() -> None:
    services = _services()
    for name, service in services.items():
        if name in MONITORING_SERVICES:
            assert service.get("profiles") == ["monitoring"], name
        else:
            assert "profiles" not in service, f"{name} must start without a profile"
    assert services["prometheus"]["image"].startswith("prom/prometheus:v")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name in MONITORING_SERVICES:
        assert not services[name]["image"].endswith(":latest"), name


def test_prometheus_reads_the_repositorys_config() -> None:
    prometheus = _services()["prometheus"]
    [config] = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    source = _mounts(prometheus)[config.removeprefix("--config.file=")]
    assert _host_path(source) == PROMETHEUS_FILE
    # It has no authentication of its own: published on the host's loopback only.
    assert all(str(port).startswith("127.0.0.1:") for port in prometheus.get("ports", []))


def test_scrape_targets_are_the_compose_services() -> None:
    services = _services()
    jobs = {job["job_name"]: job for job in _yaml(PROMETHEUS_FILE)["scrape_configs"]}
    assert set(jobs) == {"api", "arq_worker"}

    api = jobs["api"]
    assert api.get("metrics_path", "/metrics") == "/metrics"
    [static] = api["static_configs"]
    [target] = static["targets"]
    host, port = target.split(":")
    assert host in services
    api_command = " ".join(services[host]["command"])
    assert re.search(rf"--port[ =]{port}\b", api_command), api_command

    worker = jobs["arq_worker"]
    [discovery] = worker["dns_sd_configs"]
    assert discovery["type"] == "A"  # one target per replica
    [name] = discovery["names"]
    assert name in services
    environment = services[name]["environment"]
    assert str(environment["ARQ_METRICS_PORT"]) == str(discovery["port"])
    assert environment["ARQ_METRICS_HOST"] == "0.0.0.0"
    assert "ports" not in services[name]  # the metrics port stays on the compose networks


def test_prometheus_alone_may_scrape_the_api_without_a_credential() -> None:
    services = _services()
    compose = _yaml(COMPOSE_FILE)
    address = _networks(services["prometheus"])["monitoring"]["ipv4_address"]
    assert services["api"]["environment"]["METRICS_ALLOW"] == address
    [pool] = compose["networks"]["monitoring"]["ipam"]["config"]
    subnet = ipaddress.ip_network(_defaults(pool["subnet"]))
    prometheus_ip = ipaddress.ip_address(_defaults(address))
    assert prometheus_ip in subnet
    assert prometheus_ip != next(subnet.hosts())  # not the gateway
    for name in ("api", "arq_worker", *MONITORING_SERVICES):
        assert "monitoring" in _networks(services[name]), name
    for name in ("api", "arq_worker"):
        assert "default" in _networks(services[name]), name  # still beside Redis and PostgreSQL


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana = _services()["grafana"]
    mounts = _mounts(grafana)
    assert _host_path(mounts["/etc/grafana/provisioning"]) == GRAFANA / "provisioning"

    [provider] = _yaml(DASHBOARDS_PROVIDER_FILE)["providers"]
    assert provider["type"] == "file"
    dashboards_path = provider["options"]["path"]
    assert dashboards_path in mounts, f"nothing is mounted at {dashboards_path}"
    assert (_host_path(mounts[dashboards_path]) / DASHBOARD_FILE.name).is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_path}/{DASHBOARD_FILE.name}"

    [datasource] = _yaml(DATASOURCES_FILE)["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "monitoring" in _networks(grafana)


def test_grafana_has_no_anonymous_access_and_no_default_password() -> None:
    grafana = _services()["grafana"]
    environment = grafana["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert environment["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    # Without the variable (or with Grafana's default) the container refuses to start.
    guard = " ".join(grafana["entrypoint"])
    assert '-z "$$GF_SECURITY_ADMIN_PASSWORD"' in guard and "exit 1" in guard
    assert guard.endswith("exec /run.sh")
