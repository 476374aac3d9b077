"""Operator artefacts: Prometheus rules, their unit tests, scrape config, dashboard, runbooks.

promtool comes from deploy/prometheus/ensure-promtool.sh (installs Debian's
`prometheus` package when no promtool is on PATH; needs root the first time).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.metric_names import (
    DASHBOARD,
    RULES,
    dashboard_expressions,
    exposed_metric_names,
    metric_names,
    referenced_metric_names,
    rule_expressions,
)
from tests.promtool import promtool_path

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES_TEST = PROMETHEUS / "rules.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
ENSURE = PROMETHEUS / "ensure-promtool.sh"
OPERATIONS = ROOT / "docs" / "operations.md"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.fixture(scope="module")
def promtool() -> str:
    return promtool_path()


# ------------------------------------------------------------------ promtool


def test_ensure_promtool_is_idempotent_and_quiet(promtool):
    result = run("bash", ENSURE)
    assert result.returncode == 0, output(result)
    assert result.stdout == f"{promtool}\n" and result.stderr == "", output(result)
    assert run(promtool, "--version").returncode == 0


def test_promtool_check_rules(promtool):
    result = run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, output(result)


def test_promtool_test_rules(promtool):
    result = run(promtool, "test", "rules", RULES_TEST)
    assert result.returncode == 0, output(result)


def test_promtool_check_config(promtool):
    result = run(promtool, "check", "config", CONFIG)
    assert result.returncode == 0, output(result)


def test_dashboard_queries_are_valid_promql(promtool, tmp_path):
    """Every dashboard query, Grafana variables substituted, parses as a rule expression."""
    substitutions = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$job": "timestamp-pipeline",
                     "$instance": ".*"}
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(dashboard_expressions()):
        if expr.startswith("label_values("):
            continue  # Grafana's variable function, not PromQL
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
        lines += [f"      - record: dashboard:query_{i}:check", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = run(promtool, "check", "rules", rules)
    assert result.returncode == 0, f"{rules.read_text()}\n{output(result)}"


# --------------------------------------------------------- rules, runbooks


def alert_blocks() -> dict[str, str]:
    """Alert name -> its text in rules.yml."""
    parts = re.split(r"^\s*- alert:\s*", RULES.read_text(), flags=re.M)[1:]
    return {part.split()[0]: part.split("\n- ", 1)[0] for part in parts}


def github_slug(heading: str) -> str:
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


EXPECTED_ALERTS = {
    "HighHttpErrorRate", "PublishFailures", "EndToEndLatencyP95High", "EndToEndLatencyP99High",
    "HighDatabaseWriteLatency", "ConsumerLagHigh", "ConsumerLagGrowing", "HighInvalidEventRate",
    "DatabaseWriteFailures", "CircuitBreakerOpen", "DeadLettersArriving", "WorkerDown", "NoWorkers",
    "TimestampAuditGap", "TimestampAuditNotRunning", "PartitionStalled", "TableStoreUnwritable",
}


def test_every_expected_alert_is_defined_with_severity_summary_description_runbook():
    blocks = alert_blocks()
    assert set(blocks) == EXPECTED_ALERTS
    for name, block in blocks.items():
        assert re.search(r"^\s*severity:\s*(critical|warning)\s*$", block, re.M), name
        for annotation in ("summary", "description", "runbook_url"):
            assert re.search(rf"^\s*{annotation}:\s*\S", block, re.M), f"{name} lacks {annotation}"


def test_every_runbook_url_points_at_a_heading_of_operations_md():
    text = OPERATIONS.read_text()
    assert text.startswith("# Operations\n")
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)
    assert "Alerts" in headings and "Metrics" in headings
    anchors = {github_slug(h) for h in headings}
    for name, block in alert_blocks().items():
        url = re.search(r"runbook_url:\s*[\"']?([^\"'\s]+)", block).group(1)
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md", f"{name}: {url}"
        assert anchor == name.lower() and anchor in anchors, f"{name}: no heading for #{anchor}"


def test_every_alert_has_a_firing_and_a_not_firing_unit_test():
    firing: set[str] = set()
    silent: set[str] = set()
    # One chunk per alert_rule_test entry: from its alertname to the next one / next test.
    for chunk in re.split(r"^\s*- alertname:\s*", RULES_TEST.read_text(), flags=re.M)[1:]:
        name = chunk.split()[0]
        chunk = re.split(r"^\s*- name:", chunk, flags=re.M)[0]
        (silent if re.search(r"exp_alerts:\s*\[\]", chunk) else firing).add(name)
    assert EXPECTED_ALERTS - firing == set(), "alerts never tested firing"
    assert EXPECTED_ALERTS - silent == set(), "alerts never tested not firing"


def test_main_recording_rules_are_tested():
    tests = RULES_TEST.read_text()
    for record in ("timestamp:http_requests:rate5m", "timestamp:http_requests_5xx:ratio_rate5m",
                   "timestamp:end_to_end_latency_seconds:p95", "timestamp:end_to_end_latency_seconds:p99",
                   "timestamp:consumer_lag_messages:sum", "timestamp:consumer_lag_messages:deriv10m",
                   "timestamp:events_invalid:ratio_rate5m", "timestamp:db_write_duration_seconds:p95"):
        assert re.search(rf"expr: .*{re.escape(record)}\b", tests), record


# --------------------------------------------------------------- dashboard


def test_dashboard_is_valid_and_uses_the_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "timestamp-pipeline"
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert targets and all(t["datasource"]["uid"] == "${datasource}" for t in targets)
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for word in ("commands published", "events processed", "end-to-end latency", "http requests", "error",
                 "consumer lag", "database write latency", "batch size", "table keys"):
        assert word in titles, word


def test_grafana_provisioning_files():
    datasource = (GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text()
    dashboards = (GRAFANA_PROVISIONING / "dashboards" / "timestamp-pipeline.yml").read_text()
    assert "apiVersion: 1" in datasource and "type: prometheus" in datasource
    assert "apiVersion: 1" in dashboards and "type: file" in dashboards


# ------------------------------------------------------------ metric names

DOCUMENTED_METRICS = {
    "timestamp_http_requests_total", "timestamp_http_request_duration_seconds",
    "timestamp_commands_published_total", "timestamp_command_publish_failures_total", "timestamp_http_requests_shed_total",
    "timestamp_events_processed_total", "timestamp_batch_size_events", "timestamp_db_write_duration_seconds",
    "timestamp_db_write_failures_total", "timestamp_end_to_end_latency_seconds",
    "timestamp_consumer_lag_messages", "timestamp_table_keys", "timestamp_circuit_breaker_state",
    "timestamp_dead_letters_total", "timestamp_audit_gap_messages", "timestamp_audit_last_success_timestamp_seconds", "timestamp_partition_stalled",
    "timestamp_table_store_unwritable", "timestamp_table_store_memory_bytes",
}


def test_rule_reader_finds_one_expression_per_rule():
    text = RULES.read_text()
    count = len(re.findall(r"^\s*- (record|alert):", text, re.M))
    exprs = rule_expressions()
    assert len(exprs) == count == 33
    assert all(e and not e.startswith(("|", ">", '"', "'")) for e in exprs)
    assert 'absent(up{job="timestamp-pipeline"} == 1)' in exprs


def test_referenced_metric_names():
    names = referenced_metric_names()
    assert "timestamp_end_to_end_latency_seconds" in names
    assert "timestamp_consumer_lag_messages" in names
    assert not {n for n in names if ":" in n or n.endswith(("_bucket", "_sum", "_count"))}
    assert not names & {"up", "le", "job", "sum", "rate", "by", "histogram_quantile", "deriv", "absent"}
    # Everything queried is documented, and every documented metric is used somewhere.
    assert {n for n in names if not n.startswith("faust_")} == DOCUMENTED_METRICS
    table = OPERATIONS.read_text().split("## Metrics", 1)[1]
    assert {n for n in DOCUMENTED_METRICS if f"| `{n}` |" not in table} == set()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (job, le) (rate(a_seconds_bucket{job="x",route="/t/{value}"}[5m]))', {"a_seconds"}),
        ("rate(b_sum[5m]) / rate(b_count[5m])", {"b"}),
        ("x_total / on(job) group_left(instance) y_total offset 5m", {"x_total", "y_total"}),
        ("histogram_quantile(0.99, sum(rate(c_bucket[$__rate_interval])) by (le)) > bool 1e3", {"c"}),
        ('absent(up{job="timestamp-pipeline"} == 1)', set()),
        ("timestamp:consumer_lag_messages:deriv10m > 0 and timestamp:consumer_lag_messages:sum > 1000", set()),
        ('sum without (instance) (faust_messages_received{job="$job"})', {"faust_messages_received"}),
        ('label_values(d_total{job="$job"}, instance)', {"d_total"}),
    ],
)
def test_metric_names_of_one_expression(expr, expected):
    assert metric_names(expr) == expected


def test_exposed_metric_names_reads_type_lines_and_samples():
    exposition = (
        "# HELP timestamp_command_publish_failures_total x\n"
        "# TYPE timestamp_command_publish_failures_total counter\n"
        "# TYPE timestamp_db_write_duration_seconds histogram\n"
        'timestamp_db_write_duration_seconds_bucket{le="+Inf"} 0.0\n'
        "timestamp_db_write_duration_seconds_count 0.0\n"
        'faust_messages_received{app="x"} 3.0\n'
    )
    assert exposed_metric_names(exposition) == {
        "timestamp_command_publish_failures_total", "timestamp_db_write_duration_seconds", "faust_messages_received",
    }
