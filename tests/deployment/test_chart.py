"""The Helm chart, offline: lint, render, Kubernetes and CRD schemas, KEDA, and drift against the code.

helm is built from its Go module (`make deploy-tools`); the Kubernetes schemas
ship with kubernetes-validate; the KEDA and prometheus-operator CRDs and KEDA's
scaler parameters come from their Go modules, at the versions pinned in
deploy/tools/versions.env.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from app.settings import SETTINGS
from tests.deployment import schemas, tools
from tests.metric_names import metric_names, rule_expressions

ROOT = tools.ROOT
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DEFAULTS = yaml.safe_load((tools.CHART / "values.yaml").read_text())
EXAMPLE = yaml.safe_load(tools.EXAMPLE_VALUES.read_text())
EVERYTHING = ("--set", "keda.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
              "--set", "metrics.prometheusRule.enabled=true", "--set", "auth.enabled=true",
              "--set", "secret.apiKeys={k1,k2}", "--set", "tracing.otlpEndpoint=http://collector:4318",
              "--set", "persistence.enabled=false")
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule", "TriggerAuthentication"}
SCRAM_VALUES = tools.CHART / "examples" / "scram-keda.yaml"


@pytest.fixture(scope="module")
def default():
    return tools.kinds(tools.render())


@pytest.fixture(scope="module")
def example():
    return tools.kinds(tools.render("-f", str(tools.EXAMPLE_VALUES), release="timestamps", namespace="timestamps"))


@pytest.fixture(scope="module")
def scram():
    return tools.kinds(tools.render("-f", str(SCRAM_VALUES), release="timestamps", namespace="timestamps"))


@pytest.fixture(scope="module")
def everything():
    return tools.kinds(tools.render(*EVERYTHING))


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, tuple]:
    keda, operator = tools.module_dirs()
    crds = operator / "example" / "prometheus-operator-crd"
    result = {}
    for path, version in ((keda / "config/crd/bases/keda.sh_scaledobjects.yaml", "v1alpha1"),
                          (keda / "config/crd/bases/keda.sh_triggerauthentications.yaml", "v1alpha1"),
                          (crds / "monitoring.coreos.com_servicemonitors.yaml", "v1"),
                          (crds / "monitoring.coreos.com_prometheusrules.yaml", "v1")):
        api_version, kind, validator = schemas.crd_validator(path, version)
        result[kind] = (api_version, validator)
    return result


def container(docs: dict) -> dict:
    [worker] = docs["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return worker


def env_names(docs: dict) -> set[str]:
    return {item["name"] for item in container(docs)["env"]} | set(docs["ConfigMap"]["data"])


# ---------------------------------------------------------------------------
# helm lint and the schemas
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, tools.EXAMPLE_VALUES, SCRAM_VALUES], ids=["default", "example", "scram"])
def test_helm_lint_strict(values):
    args = ["-f", str(values)] if values else []
    result = tools.run([tools.helm(), "lint", "--strict", str(tools.CHART), "--kube-version",
                        tools.KUBERNETES_VERSION, *args])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("args", [(), ("-f", str(tools.EXAMPLE_VALUES)), EVERYTHING, ("-f", str(SCRAM_VALUES))],
                         ids=["default", "example", "everything", "scram"])
def test_every_rendered_manifest_is_valid_for_kubernetes(args, tmp_path, crd_validators):
    docs = tools.render(*args)
    builtin = [d for d in docs if d["kind"] not in CRD_KINDS]
    files = []
    for i, doc in enumerate(builtin):
        files.append(tmp_path / f"{i:02d}-{doc['kind']}.yaml")
        files[-1].write_text(yaml.safe_dump(doc))
    result = tools.run([tools.tool("kubernetes-validate"), "--strict", "-k", tools.KUBERNETES_VERSION,
                        *map(str, files)])
    assert result.returncode == 0, result.stdout + result.stderr
    passed = result.stdout.count(" passed for resource ")
    assert passed == len(builtin), f"{passed} of {len(builtin)} resources validated:\n{result.stdout}{result.stderr}"

    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            api_version, validator = crd_validators[doc["kind"]]
            assert doc["apiVersion"] == api_version
            assert not schemas.errors(validator, doc), f"{doc['kind']}: {schemas.errors(validator, doc)}"


def test_crd_schemas_are_strict(everything, crd_validators):
    """The CRD validation is not a pass-through: an unknown or mistyped field fails it."""
    for kind in CRD_KINDS - {"TriggerAuthentication"}:
        _, validator = crd_validators[kind]
        bad = copy.deepcopy(everything[kind])
        bad["spec"]["unknownField"] = True
        assert schemas.errors(validator, bad), f"{kind} accepted an unknown spec field"
    _, validator = crd_validators["ScaledObject"]
    bad = copy.deepcopy(everything["ScaledObject"])
    bad["spec"]["maxReplicaCount"] = "eight"
    assert schemas.errors(validator, bad)


def test_values_schema_refuses_bad_values():
    for args, message in [
        (("--set", "config.NOT_A_SETTING=1"), "NOT_A_SETTING"),
        (("--set", "keda.scaleDown.stabilizationWindowSeconds=300"), "stabilizationWindowSeconds"),
        (("--set", "keda.scaleDown.podsPerPeriod=2"), "podsPerPeriod"),
        (("--set", "keda.minReplicaCount=0"), "minReplicaCount"),
        (("--set", "keda.lagThreshold=1000"), "lagThreshold"),  # a number, not a string
        (("--set", "web.port=80"), "port"),
        (("--set", "kafka.bootstrapServers=kafka"), "bootstrapServers"),
    ]:
        assert message in tools.render_fails(*args), args


def test_templates_refuse_inconsistent_values():
    assert "exceeds kafka.commandTopicPartitions" in tools.render_fails(
        "--set", "keda.enabled=true", "--set", "keda.maxReplicaCount=9")
    assert "exceeds kafka.commandTopicPartitions" in tools.render_fails("--set", "replicaCount=9")
    # A setting the chart owns: refused by the schema, and by the template without it.
    assert "'APP_ID'" in tools.render_fails("--set", "config.APP_ID=other")
    assert "config.APP_ID" in tools.render_fails("--set", "config.APP_ID=other", "--skip-schema-validation")
    assert "secret.apiKeys" in tools.render_fails("--set", "auth.enabled=true")


# ---------------------------------------------------------------------------
# The StatefulSet and its Services
# ---------------------------------------------------------------------------


def test_statefulset_identities_probes_security_and_resources(default):
    sts = default["StatefulSet"]
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    worker = container(default)
    headless, api = default["Service/peers"], default["Service/api"]

    assert spec["replicas"] == DEFAULTS["replicaCount"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for service in (headless, api):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == "http"
    [claim] = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["WORKER_DATA_DIR"].startswith(mounts["data"] + "/"), "RocksDB state on the claim"
    assert mounts["tmp"] == "/tmp"

    # Each pod advertises its own DNS name under the headless Service.
    assert env["WEB_HOST"] == f"$(POD_NAME).{headless['metadata']['name']}.$(POD_NAMESPACE).svc.cluster.local"
    order = [e["name"] for e in worker["env"]]
    assert order.index("POD_NAME") < order.index("WEB_HOST") and order.index("POD_NAMESPACE") < order.index("WEB_HOST")

    probes = {kind: worker[f"{kind}Probe"] for kind in ("startup", "liveness", "readiness")}
    assert probes["liveness"]["httpGet"]["path"] == "/health/live"
    assert probes["readiness"]["httpGet"]["path"] == "/health/ready"
    assert probes["startup"]["httpGet"]["path"] == "/health/live"
    startup_budget = probes["startup"]["failureThreshold"] * probes["startup"]["periodSeconds"]
    assert startup_budget >= 300, f"startup probe allows only {startup_budget} s for table recovery"
    assert all(p["httpGet"]["port"] == "http" for p in probes.values())

    shutdown = float(default["ConfigMap"]["data"]["SHUTDOWN_TIMEOUT_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > shutdown

    security = worker["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and security["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert worker["resources"]["requests"]["cpu"] and worker["resources"]["limits"]["memory"]

    assert default["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert default["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert not CRD_KINDS & default.keys(), "KEDA and prometheus-operator objects are opt-in"


def test_config_from_a_configmap_and_secrets_from_a_secret(default, example):
    worker = container(default)
    assert worker["envFrom"] == [{"configMapRef": {"name": default["ConfigMap"]["metadata"]["name"]}}]
    [database_url] = [e for e in worker["env"] if e["name"] == "DATABASE_URL"]
    assert database_url["valueFrom"]["secretKeyRef"]["name"] == default["Secret"]["metadata"]["name"]
    assert "DATABASE_URL" not in default["ConfigMap"]["data"]
    checksums = default["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/secret"} <= checksums.keys(), "a config change rolls the workers"

    # With an existing Secret the chart creates none and reads the API keys as a file from it.
    assert "Secret" not in example
    existing = EXAMPLE["secret"]["existingSecret"]
    worker = container(example)
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in worker["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs == [existing]
    volumes = {v["name"]: v for v in example["StatefulSet"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == existing
    mount = next(m for m in worker["volumeMounts"] if m["name"] == "api-keys")
    api_keys_file = next(e["value"] for e in worker["env"] if e["name"] == "API_KEYS_FILE")
    assert api_keys_file == f"{mount['mountPath']}/{volumes['api-keys']['secret']['items'][0]['path']}"


# ---------------------------------------------------------------------------
# KEDA
# ---------------------------------------------------------------------------


def test_keda_scaled_object_on_the_worker_group_lag(example):
    scaled, config = example["ScaledObject"], example["ConfigMap"]["data"]
    spec = scaled["spec"]
    assert "replicas" not in example["StatefulSet"]["spec"], "KEDA owns the replica count"
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                      "name": example["StatefulSet"]["metadata"]["name"]}
    partitions = int(config["COMMAND_TOPIC_PARTITIONS"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions

    [trigger] = spec["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert metadata["topic"] == config["COMMAND_TOPIC"]
    assert metadata["consumerGroup"] == config["APP_ID"], "Faust's consumer group is the app id"
    assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert metadata["allowIdleConsumers"] == "false"
    assert int(metadata["lagThreshold"]) > 0

    keda, _ = tools.module_dirs()
    parameters = schemas.scaler_parameters(keda / "schema" / "generated" / "scalers-schema.json", "kafka")
    assert not schemas.trigger_metadata_errors(metadata, parameters)
    # The check is real: KEDA's scaler schema refuses a numeric threshold and an unknown key.
    assert schemas.trigger_metadata_errors({**metadata, "lagThreshold": 1000, "lagTreshold": "1"}, parameters)

    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    down = behavior["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 600
    assert down["policies"] and all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"])


def test_a_scram_cluster_gets_file_credentials_and_a_trigger_authentication(scram, crd_validators):
    env = {item["name"]: item for item in container(scram)["env"]}
    assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "timestamp-kafka", "key": "username"}
    assert env["KAFKA_CREATE_TOPICS"]["value"] == "false"
    assert "KAFKA_SASL_PASSWORD" not in env  # a file, never a plain value
    mounts = {m["name"]: m["mountPath"] for m in container(scram)["volumeMounts"]}
    assert env["KAFKA_SASL_PASSWORD_FILE"]["value"] == f"{mounts['kafka-credentials']}/password"
    assert env["KAFKA_SSL_CAFILE"]["value"] == f"{mounts['kafka-credentials']}/ca.crt"
    assert env["DATABASE_PASSWORD_FILE"]["value"] == f"{mounts['postgres-password']}/password"
    volumes = {v["name"]: v for v in scram["StatefulSet"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-credentials"]["secret"]["secretName"] == "timestamp-kafka"
    assert {i["key"] for i in volumes["kafka-credentials"]["secret"]["items"]} == {"password", "ca.crt"}

    [trigger] = scram["ScaledObject"]["spec"]["triggers"]
    auth = scram["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"username", "password", "ca"}
    assert all(ref["name"] == "timestamp-kafka" for ref in refs.values())
    keda, _ = tools.module_dirs()
    parameters = schemas.scaler_parameters(keda / "schema" / "generated" / "scalers-schema.json", "kafka")
    assert not schemas.trigger_metadata_errors(trigger["metadata"], parameters)
    for name in refs:  # KEDA's kafka scaler reads each of them from a TriggerAuthentication
        assert parameters[name].get("triggerAuthenticationVariableReadable"), name
    _, validator = crd_validators["TriggerAuthentication"]
    bad = copy.deepcopy(auth)
    bad["spec"]["secretTargetRef"][0]["unknown"] = "x"
    assert schemas.errors(validator, bad), "the TriggerAuthentication CRD check is not a pass-through"


def test_plaintext_has_no_trigger_authentication(everything):
    assert "TriggerAuthentication" not in everything
    assert "authenticationRef" not in everything["ScaledObject"]["spec"]["triggers"][0]


def test_keda_off_by_default_and_replicas_back(default):
    assert "ScaledObject" not in default
    assert default["StatefulSet"]["spec"]["replicas"] <= int(default["ConfigMap"]["data"]["COMMAND_TOPIC_PARTITIONS"])


# ---------------------------------------------------------------------------
# Monitoring: one source of rules
# ---------------------------------------------------------------------------


def test_prometheus_rule_is_deploy_prometheus_rules_yml(everything):
    link = tools.CHART / "files" / "prometheus-rules.yml"
    assert link.is_symlink() and link.resolve() == RULES.resolve(), "the chart's rules file must link to the source"
    rendered = everything["PrometheusRule"]["spec"]
    assert rendered == yaml.safe_load(RULES.read_text()), "PrometheusRule differs from deploy/prometheus/rules.yml"


def test_service_monitor_scrapes_every_worker_as_the_rules_job(everything):
    monitor = everything["ServiceMonitor"]["spec"]
    headless = everything["Service/peers"]
    assert monitor["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    assert not monitor["selector"]["matchLabels"].items() <= everything["Service/api"]["metadata"]["labels"].items(), \
        "scraping the API Service too would scrape every worker twice"
    [endpoint] = monitor["endpoints"]
    assert endpoint["port"] == headless["spec"]["ports"][0]["name"] and endpoint["path"] == "/metrics"
    [relabel] = endpoint["relabelings"]
    jobs_in_rules = set(re.findall(r'job="([^"]+)"', RULES.read_text()))
    prometheus_yml = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert relabel["targetLabel"] == "job" and {relabel["replacement"]} == jobs_in_rules
    assert relabel["replacement"] in {job["job_name"] for job in prometheus_yml["scrape_configs"]}


# ---------------------------------------------------------------------------
# Drift: the chart against the code
# ---------------------------------------------------------------------------


def app_pages() -> set[str]:
    return {m for path in (ROOT / "web").glob("*.py") for m in re.findall(r'@app\.page\("([^"]+)"\)', path.read_text())}


def faust_env_names() -> set[str]:
    from faust.types.settings.settings import Settings

    return {getattr(getattr(Settings, name), "env_name") for name in dir(Settings)
            if getattr(getattr(Settings, name, None), "env_name", None)}


def test_ports_match_the_image_and_faust(default):
    from faust.types import _env

    port = DEFAULTS["web"]["port"]
    [container_port] = container(default)["ports"]
    env = {e["name"]: e.get("value") for e in container(default)["env"]}
    dockerfile = tools.DOCKERFILE.read_text()
    assert container_port == {"name": "http", "containerPort": port, "protocol": "TCP"}
    assert env["WEB_PORT"] == str(port) and default["Service/peers"]["spec"]["ports"][0]["port"] == port
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.M) and f"WEB_PORT={port}" in dockerfile
    assert _env.WEB_PORT == port, "the chart's port is Faust's default web port"


def test_probe_and_metrics_paths_are_served_by_the_app(everything):
    pages = app_pages()
    worker = container(everything)
    for kind in ("startup", "liveness", "readiness"):
        assert worker[f"{kind}Probe"]["httpGet"]["path"] in pages
    assert everything["ServiceMonitor"]["spec"]["endpoints"][0]["path"] in pages
    healthcheck_paths = re.findall(r"/health/\w+", tools.DOCKERFILE.read_text())
    assert healthcheck_paths and set(healthcheck_paths) <= pages


def test_environment_names_are_settings_the_service_reads(everything, example):
    faust_names = faust_env_names()
    assert {"WEB_HOST", "WEB_PORT", "WEB_BIND"} <= faust_names, "Faust reads the web settings from these variables"
    docs_text = (ROOT / "docs" / "configuration.md").read_text()
    for docs in (everything, example):
        for name in env_names(docs):
            if name in ("POD_NAME", "POD_NAMESPACE"):
                continue  # only expanded into WEB_HOST
            assert name in SETTINGS or name in {"WEB_HOST", "WEB_PORT", "WEB_BIND"} or (
                name.startswith("OTEL_") and name in docs_text), f"{name} is read by nothing in the service"


def _memory_budget_mib(table_store: int, base: int) -> int:
    """docs/deployment.md "Memory budget": base + what the table's stores may hold, all partitions together."""
    return base + table_store


def test_memory_request_and_limit_follow_from_the_budget(default):
    store, memory = DEFAULTS["tableStore"], DEFAULTS["memory"]
    # The chart's defaults are the service's.
    assert store["rocksdbMemoryMiB"] == int(SETTINGS["TABLE_ROCKSDB_MEMORY_MIB"].default)
    assert store["rocksdbWriteBufferMiB"] == int(SETTINGS["TABLE_ROCKSDB_WRITE_BUFFER_MIB"].default)
    data = default["ConfigMap"]["data"]
    assert data["TABLE_ROCKSDB_MEMORY_MIB"] == str(store["rocksdbMemoryMiB"])
    assert data["TABLE_ROCKSDB_WRITE_BUFFER_MIB"] == str(store["rocksdbWriteBufferMiB"])

    budget = _memory_budget_mib(store["rocksdbMemoryMiB"], memory["baseMiB"])
    resources = container(default)["resources"]
    assert resources["requests"]["memory"] == f"{budget}Mi"
    assert resources["limits"]["memory"] == f"{budget * (100 + memory['limitHeadroomPercent']) // 100}Mi"
    assert resources["requests"]["cpu"] == DEFAULTS["resources"]["requests"]["cpu"]

    # The stores' limit is the worker's, whatever the partitions it holds.
    bigger = container(tools.kinds(tools.render("--set", "tableStore.rocksdbMemoryMiB=256",
                                                "--set", "kafka.commandTopicPartitions=16")))
    assert bigger["resources"]["requests"]["memory"] == f"{_memory_budget_mib(256, memory['baseMiB'])}Mi"

    chosen = container(tools.kinds(tools.render("--set", "resources.limits.memory=3Gi")))
    assert chosen["resources"]["limits"]["memory"] == "3Gi" and chosen["resources"]["requests"]["memory"] == f"{budget}Mi"


def test_values_schema_knows_every_setting():
    """config accepts exactly the settings the chart does not set itself: a new setting needs a decision here."""
    schema = json.loads((tools.CHART / "values.schema.json").read_text())
    free = set(schema["properties"]["config"]["propertyNames"]["anyOf"][0]["enum"])
    helpers = (tools.CHART / "templates" / "_helpers.tpl").read_text()
    owned = set(re.findall(r'"([A-Z_]+)"', re.search(r"\$owned := list ([^}]*)}}", helpers).group(1)))
    assert owned <= SETTINGS.keys(), owned - SETTINGS.keys()
    assert not owned & free
    assert owned | free == SETTINGS.keys(), f"settings the chart neither sets nor accepts: {SETTINGS.keys() - owned - free}"


def test_rules_reference_metrics_the_code_defines(everything):
    source = (ROOT / "app" / "observability" / "metrics.py").read_text()
    defined = {f"timestamp_{name}" for name in re.findall(r'f"\{PREFIX\}_(\w+)"', source)}
    rendered_rules = tools.CHART / "files" / "prometheus-rules.yml"
    referenced = set().union(*(metric_names(expr) for expr in rule_expressions(rendered_rules)))
    assert referenced, "no metric names found in the rules"
    assert referenced <= defined, f"rules use metrics app/observability/metrics.py does not define: {referenced - defined}"


def test_packaged_chart_carries_the_rules_and_a_linkless_checkout_fails_loudly(tmp_path):
    # helm package stores the linked file's content: the packaged chart is self-contained.
    result = tools.run([tools.helm(), "package", str(tools.CHART), "-d", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    [package] = tmp_path.glob("timestamp-pipeline-*.tgz")
    rendered = tools.run([tools.helm(), "template", "tp", str(package), "--kube-version", tools.KUBERNETES_VERSION,
                          "--set", "metrics.prometheusRule.enabled=true"])
    assert rendered.returncode == 0, rendered.stderr
    [rule] = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())

    # A checkout without symbolic links has the link's target path as the file's text.
    copy = tmp_path / "chart"
    shutil.copytree(tools.CHART, copy, symlinks=True)
    (copy / "files" / "prometheus-rules.yml").unlink()
    (copy / "files" / "prometheus-rules.yml").write_text("../../../prometheus/rules.yml")
    failed = tools.run([tools.helm(), "template", "tp", str(copy), "--kube-version", tools.KUBERNETES_VERSION,
                        "--set", "metrics.prometheusRule.enabled=true"])
    assert failed.returncode != 0 and "holds no rule groups" in failed.stderr


def test_static_membership_names_each_worker_by_its_pod(default):
    env = {item["name"]: item for item in container(default)["env"]}
    assert env["KAFKA_GROUP_INSTANCE_ID"]["value"] == "$(POD_NAME)"
    names = [item["name"] for item in container(default)["env"]]
    assert names.index("POD_NAME") < names.index("KAFKA_GROUP_INSTANCE_ID"), "$(POD_NAME) expands only after it"
    session = float(default["ConfigMap"]["data"]["KAFKA_SESSION_TIMEOUT_SECONDS"])
    assert session >= 30, "a restart must fit in the session timeout, or static membership moves partitions anyway"
