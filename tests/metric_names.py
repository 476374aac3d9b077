"""Metric names referenced by the Prometheus rules and the Grafana dashboard.

`referenced_metric_names()` lets a test compare what the operator artefacts
query with what a live worker's /metrics exposes:

    from tests.metric_names import referenced_metric_names
    missing = referenced_metric_names() - names_in_live_metrics_output

Histogram series (`_bucket`, `_sum`, `_count`) are reduced to the base name
(`timestamp_end_to_end_latency_seconds`); recording-rule names (with ':'),
PromQL functions and keywords, label names and `up` are left out.
Pure Python, standard library only (no PyYAML in the project).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

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
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return re.sub(r"\s+#.*$", "", value)  # plain scalar: drop a trailing comment


def rule_expressions(path: Path = RULES) -> list[str]:
    """The `expr` of every recording and alerting rule of a rules file.

    A small reader for the YAML this file uses: `expr:` with a plain, quoted,
    or block (`|`, `>`) scalar, possibly continued on more-indented lines.
    """
    lines = path.read_text().splitlines()
    exprs = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*(?:-\s+)?)expr:\s*(.*)$", lines[i])
        i += 1
        if not match:
            continue
        key_column = len(match.group(1))
        head = match.group(2).strip()
        body = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > key_column):
            body.append(lines[i].strip())
            i += 1
        if head[:1] in ("|", ">"):
            exprs.append("\n".join(body).strip())
        else:
            exprs.append(_unquote(" ".join([head, *body])))
    return exprs


def _walk(node) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


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

    Reads `# TYPE` lines as well as samples, so a labelled counter that has
    not counted anything yet (no sample, only HELP/TYPE) still counts as
    exposed; `_bucket/_sum/_count` are stripped like in metric_names().
    """
    names = set()
    for line in exposition.splitlines():
        line = line.strip()
        if line.startswith("# TYPE "):
            parts = line.split()
            name = parts[2] if len(parts) > 2 else ""
        elif line and not line.startswith("#"):
            name = re.split(r"[\s{]", line, maxsplit=1)[0]
        else:
            continue
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        if name:
            names.add(name)
    return names


if __name__ == "__main__":
    print("\n".join(sorted(referenced_metric_names())))
