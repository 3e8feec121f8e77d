"""The deployment recipes: Docker is not on the CI machine, so their content is checked here.

docker-compose.yml must parse, run PostgreSQL and two replicas of `supportbot run`, and use
only settings that .env.example documents; the Dockerfile and the systemd unit must run the
service as a user other than root, with a health check.
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from supportbot.metrics import PrometheusEvents
from supportbot.settings import load_settings
from tickets.ports import DELIVERED, DELIVERY_FAILED, IMAP_CONNECTED, IMAP_LAG, INTAKE
from tickets.vitals import RouteBacklog, Vitals

ROOT = Path(__file__).resolve().parents[2]
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?:[:?\-+][^}]*)?\}")


def documented_keys() -> set[str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, re.M))


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=VALUE list form
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_runs_postgresql_a_migration_and_two_replicas() -> None:
    services = compose()["services"]
    replicas = [name for name, s in services.items() if s.get("image") == "supportbot:latest"]
    assert sorted(replicas) == ["migrate", "supportbot-1", "supportbot-2"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["migrate"]["command"] == ["supportbot", "db", "upgrade"]
    for name in ("supportbot-1", "supportbot-2"):
        replica = services[name]
        assert "command" not in replica, "replicas run the image's CMD: supportbot run"
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert replica["env_file"] == ".env"
    ports = {p for name in ("supportbot-1", "supportbot-2") for p in services[name]["ports"]}
    assert len(ports) == 2, "each replica's operator port is published on its own host port"


def test_compose_uses_only_documented_settings() -> None:
    documented = documented_keys()
    services = compose()["services"]
    for name, service in services.items():
        if service.get("image") != "supportbot:latest":
            continue
        unknown = set(environment_of(service)) - documented
        assert not unknown, f"{name} sets keys .env.example does not document: {unknown}"
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    interpolated = set(INTERPOLATION.findall(text))
    assert "POSTGRES_PASSWORD" in interpolated
    assert interpolated <= documented, f"undocumented: {interpolated - documented}"


def test_the_replicas_settings_load() -> None:
    """What compose hands a replica is a configuration the service accepts."""
    replica = compose()["services"]["supportbot-1"]
    environ = {
        key: INTERPOLATION.sub("secret", value) for key, value in environment_of(replica).items()
    }
    settings = load_settings(environ, env_file=None)
    assert settings.database_url.startswith("postgresql://supportbot:secret@postgres:5432/")
    assert settings.http_listen == ("0.0.0.0", 8080)


def test_the_image_is_slim_non_root_and_checks_its_health() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages and all("-slim" in line for line in stages)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    text = "\n".join(lines)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert lines[-1] == 'CMD ["supportbot", "run"]'


def test_the_systemd_unit_runs_the_service_as_its_own_user() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "supportbot.service", encoding="utf-8")
    service = unit["Service"]
    assert service["ExecStart"].endswith("supportbot run")
    assert service["User"] not in ("root", "0")
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_grafana_dashboard_asks_only_for_metrics_the_service_exposes() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    asked = {name for expr in exprs for name in re.findall(r"\bsupportbot_[a-z0-9_]+", expr)}
    events = PrometheusEvents()  # every family once, as a busy service would show them
    events.figures.vitals = Vitals(
        waiting={("basic", "on_track"): 1}, backlog={"telegram": RouteBacklog(1, 1.0)}
    )
    events.figures.roles = {"jobs": "leader"}
    events.count(INTAKE, channel="email")
    events.count(DELIVERED, route="email")
    events.count(DELIVERY_FAILED, route="email", outcome="retried")
    events.measure(IMAP_LAG, 3.0)
    events.measure(IMAP_CONNECTED, 1.0)
    exposed = {
        sample.name
        for family in text_string_to_metric_families(events.exposition().decode())
        for sample in family.samples
    }
    assert len(dashboard["panels"]) >= 10
    assert asked, "the dashboard's queries name the service's metrics"
    assert asked <= exposed, f"unknown metrics: {asked - exposed}"
