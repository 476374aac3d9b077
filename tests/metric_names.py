"""Metric names referenced by the Prometheus rules and the Grafana dashboard.

`referenced_metric_names()` lets a test compare what the operator artefacts
query with what a live worker's /metrics exposes:

    from tests.metric_names import referenced_metric_names
    missing = referenced_metric_names() - names_in_live_metrics_output

Histogram series (`_bucket`, `_sum`, `_count`) are reduced to the base name
(`timestamp_end_to_end_latency_seconds`); recording-rule names (with ':'),
PromQL functions and keywords, label names and `up` are left out.
The rules are read with PyYAML, an exposition with prometheus_client's parser;
PromQL has no Python parser, so expressions are scanned with regular expressions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "timestamp-pipeline.json"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Synthetic series of Prometheus itself, not exposed by a worker.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "start", "end", "atan2",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*(.*?)\s*,\s*[A-Za-z_]\w*\s*\)", re.S)
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Base metric names that one PromQL expression selects."""
    text = _LABEL_VALUES.sub(r"\1", expr)  # Grafana's label_values(metric, label)
    text = _STRING.sub('""', text)
    text = _GRAFANA_VAR.sub("", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS or ":" in name or name in SYNTHETIC:
            continue
        names.add(_base_name(name))
    return names


def _base_name(name: str) -> str:
    """A histogram's or summary's series name without `_bucket`, `_sum` or `_count`."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _walk(node) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def rule_expressions(path: Path = RULES) -> list[str]:
    """The `expr` of every recording and alerting rule of a rules file, in file order.

    Every `expr` key of the YAML document counts, wherever it is (in a rules file:
    groups[].rules[].expr); each value without surrounding whitespace.
    """
    return [str(node["expr"]).strip() for node in _walk(yaml.safe_load(path.read_text())) if "expr" in node]


def dashboard_expressions(path: Path = DASHBOARD) -> list[str]:
    """PromQL of every panel target (rows' nested panels too) and variable query."""
    dashboard = json.loads(path.read_text())
    exprs = []
    for panel in _walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []) if isinstance(panel.get("targets"), list) else []:
            if isinstance(target, dict) and target.get("expr"):
                exprs.append(target["expr"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if query:
            exprs.append(query)
    return exprs


def referenced_metric_names(rules: Path = RULES, dashboard: Path = DASHBOARD) -> set[str]:
    """Every metric name the alert/recording rules and the dashboard query."""
    names: set[str] = set()
    for expr in [*rule_expressions(rules), *dashboard_expressions(dashboard)]:
        names |= metric_names(expr)
    return names


def exposed_metric_names(exposition: str) -> set[str]:
    """Base metric names in a Prometheus text exposition (a /metrics body).

    Names come from `# TYPE` (and `# HELP`) lines as well as samples, so a labelled
    counter that has not counted anything yet (no sample, only HELP/TYPE) still
    counts as exposed; `_bucket/_sum/_count` are stripped like in metric_names().
    """
    names = set()
    for family in text_string_to_metric_families(exposition):
        # The parser names a counter family without its `_total` (OpenMetrics' way);
        # prometheus_client's exposition, which this reads, declares it with.
        declared = f"{family.name}_total" if family.type == "counter" else family.name
        names |= {_base_name(name) for name in (declared, *(sample.name for sample in family.samples))}
    return names


if __name__ == "__main__":
    print("\n".join(sorted(referenced_metric_names())))
