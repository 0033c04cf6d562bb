"""Every query in both dashboards names a metric the relays actually export.

The exported names come from the real code, not from a list kept here: the Prometheus names from a
rendered ``RelayMetrics`` (its exposition parsed back), the CloudWatch names, units and dimension
from ``metric_data`` (what the relay's publisher sends), and the namespace and dimension the relays
are given from the relay's own settings as ``infra/ecs.tf`` sets them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from polysocket_core.settings import declared
from relay_node.control.aws.metrics import metric_data
from relay_node.control.aws.settings import CloudSettings
from relay_node.metrics import RelayMetrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana" / "polysocket-relays.json"
CLOUDWATCH = ROOT / "infra" / "dashboard.tf"
TARGET_LABELS = {"instance", "job"}  # the labels Prometheus itself adds to every scraped sample


# --- what the relays export ----------------------------------------------------------------------

def prometheus_exports() -> dict[str, set[str]]:
    """Sample name -> its label names, from a node's real exposition. One error is counted first: a
    labelled family has no sample before its first label value."""
    metrics = RelayMetrics()
    metrics.errors.labels("bad_request").inc()
    metrics.poll_waits.observe(0.2)
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def cloudwatch_exports() -> tuple[set[str], int]:
    """The metric names the publisher sends, and how many dimensions each datapoint carries when a
    dimension is configured (infra/ecs.tf configures one)."""
    data = metric_data(3, 10, "Name", "value")
    dims = {len(d["Dimensions"]) for d in data}
    assert len(dims) == 1
    return {str(d["MetricName"]) for d in data}, dims.pop()


# --- PromQL: the metric names and label names an expression uses ----------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_WORD = re.compile(r"(?<![\w.$:])[A-Za-z_:][\w:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "atan2"}


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) of a PromQL expression. Words followed by "(" are functions or
    aggregations; label names come from matchers and from by/without/on/ignoring lists."""
    text = _STRING.sub('""', expr)
    labels = {m.group(1) for block in _MATCHERS.findall(text)
              for m in re.finditer(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", block)}
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for listed in _GROUPING.findall(text):
        labels.update(name.strip() for name in listed.split(",") if name.strip())
    text = _GROUPING.sub(" ", text)
    metrics = {m.group() for m in _WORD.finditer(text)
               if m.group() not in _KEYWORDS and not text[m.end():].lstrip().startswith("(")}
    return metrics, labels


def test_the_promql_reader_finds_names() -> None:
    """The reader the checks below rely on: it finds a wrong name, and only names."""
    assert promql_names('sum by (code) (rate(polysocket_nope_total{instance=~"$i", job="x"}[5m]))') == (
        {"polysocket_nope_total"}, {"code", "instance", "job"})
    assert promql_names("histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval])))") == (
        {"a_bucket"}, {"le"})
    assert promql_names("sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) offset 5m") == ({"a_sum", "a_count"}, set())


# --- Grafana -----------------------------------------------------------------------------------------

def grafana_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    dash = json.loads(GRAFANA.read_text())
    for panel in dash["panels"]:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert found, f"variable {var['name']}: only label_values(metric, label) is checked here: {query}"
            yield f"variable {var['name']}", f"{found.group(1)}{{{found.group(2)}=\"\"}}"


GRAFANA_QUERIES = list(grafana_queries())


def test_grafana_has_queries() -> None:
    assert len(GRAFANA_QUERIES) >= 10
    assert json.loads(GRAFANA.read_text())["uid"] == "polysocket-relays"


@pytest.mark.parametrize(("where", "expr"), GRAFANA_QUERIES, ids=[w for w, _ in GRAFANA_QUERIES])
def test_grafana_query_names_exported_metrics(where: str, expr: str) -> None:
    exported = prometheus_exports()
    metrics, labels = promql_names(expr)
    assert metrics, f"{where}: names no metric: {expr}"
    unknown = metrics - set(exported)
    assert not unknown, f"{where}: the relays export no {sorted(unknown)} ({expr})"
    known_labels = TARGET_LABELS.union(*(exported[m] for m in metrics))
    assert labels <= known_labels, f"{where}: no label {sorted(labels - known_labels)} on {sorted(metrics)}"


# --- CloudWatch ----------------------------------------------------------------------------------------

def cloudwatch_body() -> dict[str, Any]:
    """The dashboard's JSON, read from the heredoc in infra/dashboard.tf. Terraform interpolations
    inside strings stay as text ("${local.x}"); a bare one (a number) reads as 0."""
    found = re.search(r"dashboard_body\s*=\s*<<-JSON\n(.*?)\n\s*JSON\n", CLOUDWATCH.read_text(), re.S)
    assert found, "infra/dashboard.tf: dashboard_body must be a <<-JSON heredoc"
    body = re.sub(r'(?<!["\w])\$\{[^}]*\}(?!["\w])', "0", found.group(1))
    return dict(json.loads(body))


def cloudwatch_metric_rows() -> Iterator[tuple[str, list[Any]]]:
    for widget in cloudwatch_body()["widgets"]:
        if widget["type"] != "metric":
            continue
        previous: list[Any] = []
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], dict):  # a metric-math expression names no metric itself
                continue
            fields = [p for p in row if not isinstance(p, dict)]
            # "." repeats the row above's value in that position
            resolved = [previous[i] if p == "." and i < len(previous) else p for i, p in enumerate(fields)]
            previous = resolved
            yield widget["properties"]["title"], resolved


def env_of(field: str) -> str:
    return next(d.env for d in declared(CloudSettings) if d.field == field)


def tf_local_set_for(env: str) -> str:
    """The Terraform expression infra/ecs.tf gives the relays for a POLYSOCKET_* variable."""
    found = re.search(rf"^\s*{env}\s*=\s*(\S+)\s*$", (ROOT / "infra" / "ecs.tf").read_text(), re.M)
    assert found, f"infra/ecs.tf does not set {env}"
    return "${" + found.group(1) + "}"


def test_cloudwatch_queries_name_published_metrics() -> None:
    names, dimensions = cloudwatch_exports()
    namespace = tf_local_set_for(env_of("cloudwatch_namespace"))
    dimension = (tf_local_set_for(env_of("metric_dimension_name")), tf_local_set_for(env_of("metric_dimension_value")))
    rows = list(cloudwatch_metric_rows())
    assert len(rows) >= 4
    assert {row[1] for _, row in rows} == names  # every published metric is on the dashboard
    for title, row in rows:
        assert row[0] == namespace, f"{title}: namespace {row[0]} is not the one the relays publish to"
        assert row[1] in names, f"{title}: the relays publish no {row[1]} (only {sorted(names)})"
        # a query matches a metric stream only with exactly its dimensions
        assert len(row[2:]) == 2 * dimensions and tuple(row[2:4]) == dimension, f"{title}: dimensions {row[2:]}"


def test_the_cloudwatch_reader_reads_the_heredoc() -> None:
    """It sees every metric widget, and a wrong name would fail the check above."""
    titles = {title for title, _ in cloudwatch_metric_rows()}
    assert "Open sockets" in titles
    assert "Utilisation" not in cloudwatch_exports()[0] and "OpenSockets" in cloudwatch_exports()[0]
