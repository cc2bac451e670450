"""The Grafana dashboards (charts/kubehull/dashboards): the committed JSON is what generate.py writes; every PromQL
expression parses and selects only series that a running operator, node agent and hulld really export, with
labels they really carry; the chart ships each dashboard as a ConfigMap for Grafana's dashboard sidecar."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import promql_parser
import pytest
import yaml
from cri_api.v1 import api_pb2 as cri
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hulld.metrics import Metrics as HulldMetrics
from kubehull_harness.operators import OperatorProcess
from kubehull_harness.pytest_plugin import OCIRegistry
from kubehull_harness.waiting import wait_until
from tests.agent.conftest import AgentProcess, kubelet_reports
from tests.chart.test_chart import CHART, helm
from tests.hulld.conftest import Hulld
from tests.hulld.test_lifecycle import container_config, pod_config
from tests.operator.conftest import Cluster

DASHBOARDS = CHART / "dashboards"
GENERATOR = DASHBOARDS / "generate.py"
TITLES = {"kubehull-nodes": "kubehull / Nodes & runtimes", "kubehull-operator": "kubehull / Operator"}  # by uid

# Labels Prometheus adds to every series it scrapes (the dashboards select nodes and replicas by instance).
TARGET_LABELS = frozenset({"instance", "job"})
# Series this test cannot give samples to: their names are checked against the exposition, their labels cannot be.
UNSAMPLED = {"kubehull_agent_hulld_lifecycle_total": "counted only when the agent installs hulld from a bundle"}
# In the text format a histogram's TYPE line names the family, its samples carry these suffixes; a counter's TYPE
# line (prometheus_client writes x_total) and a gauge's name the series themselves.
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
# Grafana's interval variables, replaced by a duration before parsing.
GRAFANA_INTERVALS = re.compile(r"\$__(?:rate_interval|interval|range)\b")
METRIC_NAMES = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*(?:\|[A-Za-z_:][A-Za-z0-9_:]*)*")


# --- what the components expose -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Exposition:
    """Every series name some scrape declares, and the label names of the series that have samples.

    A labelled metric nobody has used yet has no samples, only its ``# TYPE`` line: its series names come from
    that line (with the histogram suffixes); its label names are unknown until it has samples."""

    names: set[str] = dataclasses.field(default_factory=set)
    labels: dict[str, set[str]] = dataclasses.field(default_factory=dict)

    def add(self, text: str) -> None:
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split(maxsplit=3)
                self.names.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
        for metric in text_string_to_metric_families(text):
            for sample in metric.samples:
                self.names.add(sample.name)
                self.labels.setdefault(sample.name, set()).update(sample.labels)


# --- what the dashboards query ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Query:
    where: str
    expr: str
    legend: str = ""  # its {{label}}s must be labels of the result


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def queries(board: dict[str, Any]) -> Iterator[Query]:
    """Every panel target's expression, and every query variable's ``label_values(selector, label)``."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from panels(item.get("panels", []))

    for item in panels(board["panels"]):
        if item["type"] == "row":
            continue
        assert item.get("targets"), f"{board['title']} / {item['title']}: no query"
        for target in item["targets"]:
            yield Query(
                f"{board['title']} / {item['title']} / {target['refId']}",
                target["expr"],
                target.get("legendFormat", ""),
            )
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        text = variable["query"] if isinstance(variable["query"], str) else variable["query"]["query"]
        where = f"{board['title']} / ${variable['name']}"
        called = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", text.strip(), re.DOTALL)
        assert called, f"{where}: not label_values(selector, label): {text}"
        yield Query(where, called[1], "{{" + called[2] + "}}")


def series_names(selector: promql_parser.VectorSelector) -> list[str] | None:
    """The series a selector names: by name, or by a ``__name__`` matcher (equal, or an alternation of names)."""
    if selector.name:
        return [selector.name]
    for matcher in selector.matchers.matchers:
        if matcher.name != "__name__":
            continue
        if matcher.op == promql_parser.MatchOp.Equal:
            return [matcher.value]
        if matcher.op == promql_parser.MatchOp.Re and METRIC_NAMES.fullmatch(matcher.value):
            return matcher.value.split("|")
    return None


def selectors(node: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(child: promql_parser.Expr) -> None:
        if isinstance(child, promql_parser.VectorSelector):
            found.append(child)

    promql_parser.walk(node, visit)
    return found


def problems(query: Query, exposed: Exposition) -> list[str]:
    """What is wrong with one query against what the components expose; empty if nothing."""
    try:
        tree = promql_parser.parse(GRAFANA_INTERVALS.sub("5m", query.expr))
    except Exception as error:  # the parser raises a plain exception with the reason
        return [f"does not parse: {error}"]
    found: list[str] = []

    def labels_of(node: promql_parser.Expr) -> set[str] | None:
        """Label names the series under ``node`` carry; None if some have no samples to tell."""
        available = set(TARGET_LABELS)
        for selector in selectors(node):
            for name in series_names(selector) or []:
                if name not in exposed.labels:
                    return None
                available |= exposed.labels[name]
        return available

    def require(labels: list[str], node: promql_parser.Expr, what: str) -> None:
        available = labels_of(node)
        if available is not None:
            shown = " ".join(node.prettify().split())
            found.extend(f"{what} {label!r}: no such label on {shown}" for label in labels if label not in available)

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names = series_names(node)
            if names is None:
                found.append(f"{node.prettify()}: names no metric")
                return
            for name in names:
                if name not in exposed.names:
                    close = difflib.get_close_matches(name, exposed.names, n=2)
                    found.append(
                        f"{name} is not exported" + (f" (did you mean {' or '.join(close)}?)" if close else "")
                    )
                elif name not in exposed.labels and name not in UNSAMPLED:
                    found.append(f"{name} has no samples: drive it in this test, or list it in UNSAMPLED with why")
            require([m.name for m in node.matchers.matchers if m.name != "__name__"], node, "matcher on")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            require(node.modifier.labels, node.expr, "aggregation by/without")
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching.labels if node.modifier.matching else []
            require([*matching, *(node.modifier.group_labels or [])], node, "vector matching on")

    promql_parser.walk(tree, visit)
    require(re.findall(r"\{\{\s*(\w+)\s*\}\}", query.legend), tree, "legend")
    return found


# --- the tests ----------------------------------------------------------------------------------------------------


def test_dashboards_are_what_generate_py_writes(tmp_path: Path) -> None:
    checked = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=120, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # ... and --check does notice a change.
    for path in DASHBOARDS.glob("*.json"):
        shutil.copy(path, tmp_path)
    edited = tmp_path / "kubehull-operator.json"
    edited.write_text(edited.read_text().replace("kubehull_operator_leader", "kubehull_operator_leadr", 1))
    drifted = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert drifted.returncode == 1
    assert "kubehull-operator.json differs" in drifted.stderr
    assert "kubehull-nodes.json" not in drifted.stderr


def test_dashboards_titles_and_uids() -> None:
    boards = [load(path) for path in sorted(DASHBOARDS.glob("*.json"))]
    assert {board["uid"]: board["title"] for board in boards} == TITLES
    for board in boards:
        datasources = {json.dumps(t["datasource"]) for q in board["panels"] for t in q.get("targets", [])}
        assert datasources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}


def test_the_check_catches_wrong_names_and_labels() -> None:
    """The checker itself, on hulld's real exposition format: it must not pass everything."""
    metrics = HulldMetrics()
    metrics.operations.labels("RunPodSandbox", "runc", "OK").inc()
    exposed = Exposition()
    exposed.add(generate_latest(metrics.registry).decode())
    ok = 'sum by (handler) (rate(hulld_cri_operations_total{handler!="", instance=~"$instance"}[$__rate_interval]))'
    assert problems(Query("ok", ok, "{{handler}} {{instance}}"), exposed) == []
    (typo,) = problems(Query("typo", "hulld_cri_operation_total"), exposed)
    assert typo.startswith("hulld_cri_operation_total is not exported (did you mean hulld_cri_operations_total")
    assert problems(Query("a counter's family name is no series", "rate(hulld_cri_operations[5m])"), exposed)
    assert problems(Query("a histogram's neither", "hulld_cri_operation_duration_seconds"), exposed)
    assert problems(Query("no samples", "hulld_cri_operation_duration_seconds_bucket"), exposed) == [
        "hulld_cri_operation_duration_seconds_bucket has no samples: drive it in this test, or list it in "
        "UNSAMPLED with why"
    ]
    assert problems(Query("matcher", 'hulld_cri_operations_total{handlr="runc"}'), exposed)
    assert problems(Query("by", "sum by (node) (hulld_cri_operations_total)"), exposed)
    assert problems(Query("legend", "sum by (code) (hulld_cri_operations_total)", "{{cod}}"), exposed)
    assert problems(Query("on", "hulld_cri_operations_total / on (nod) hulld_cri_operations_total"), exposed)
    assert problems(Query("regex", '{__name__=~"hulld_cri_operations_total|hulld_imagez"}'), exposed)
    assert problems(Query("parse", "sum by (handler) (rate(hulld_cri_operations_total[5m])"), exposed)


@pytest.mark.cluster
@pytest.mark.registry
@pytest.mark.root
@pytest.mark.slow
def test_every_query_selects_what_the_running_components_export(
    cluster: Cluster,
    operator: OperatorProcess,
    hulld_with_network: Hulld,
    oci_registry: OCIRegistry,
    tmp_path: Path,
    component_logs: Path,
) -> None:
    hulld = hulld_with_network
    all_queries = [query for path in sorted(DASHBOARDS.glob("*.json")) for query in queries(load(path))]
    assert len(all_queries) > 40
    node = cluster.create_node("node")
    kubelet_reports(cluster, node, "hulld://0.1.0")
    image = oci_registry.images["busybox"].reference
    agent = AgentProcess(cluster.server, node, hulld, image, tmp_path, component_logs)
    try:
        # A profile: the operator plans and writes it (RuntimeClass, NodeRuntime, node label, status); the agent
        # renders its handler into hulld's configuration and probes it: an image pull, a pod, a container.
        profile = cluster.create_profile(
            "runc",
            {
                "handler": "runc",
                "runtime": {"engine": "runc", "path": "/usr/sbin/runc"},
                "rollout": {"maxUnavailable": "100%"},
            },
        )
        wait_until(lambda: cluster.condition(profile, "Ready").get("status") == "True", 120, f"{profile} Ready")
        # A pod that stays (a probe removes its own): the sandbox and container gauges by handler.
        pod_file = pod_config(tmp_path, "dashboards")
        pod = hulld.crictl("runp", "--runtime", "runc", pod_file).stdout.strip()
        sleeper = container_config(tmp_path, "sleeper", image, ["sleep", "3600"])
        sleeping = hulld.crictl("create", pod, sleeper, pod_file).stdout.strip()
        hulld.crictl("start", sleeping)
        hulld.crictl("exec", sleeping, "true")  # a streaming session
        # A CRI call that fails: the error counter.
        with pytest.raises(grpc.RpcError) as failed:
            hulld.runtime().PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id="0" * 64), timeout=10)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND

        wait_until(lambda: "kubehull_operator_profile_nodes{" in operator.metrics(), 30, "the profile's node gauge")
        wait_until(lambda: 'kubehull_agent_handler_ready{handler="runc"} 1.0' in agent.metrics(), 30, "readiness")
        wait_until(lambda: 'hulld_containers{handler="runc",state="running"}' in hulld.metrics(), 30, "containers")
        # hulld counts a streaming session when it closes, after the client has gone.
        wait_until(lambda: "hulld_streaming_sessions_total{" in hulld.metrics(), 30, "the exec's session counted")
        exposed = Exposition()
        for scrape in (operator.metrics, agent.metrics, hulld.metrics):
            exposed.add(scrape())
    finally:
        agent.stop()
    found = {query.where: problems(query, exposed) for query in all_queries}
    wrong = {where: messages for where, messages in found.items() if messages}
    assert not wrong, "dashboard queries that do not match the components' metrics:\n" + "\n".join(
        f"  {where}: {'; '.join(messages)}" for where, messages in wrong.items()
    )


def configmaps(rendered: str) -> dict[str, dict[str, Any]]:
    """The dashboard ConfigMaps of a rendering, by the file each carries."""
    found = {}
    for document in yaml.safe_load_all(rendered):
        if document and document["kind"] == "ConfigMap" and "dashboard" in document["metadata"]["name"]:
            (name,) = document["data"]
            found[name] = document
    return found


@pytest.mark.cluster
def test_chart_ships_each_dashboard_as_a_sidecar_configmap() -> None:
    template = ("template", "kh", str(CHART), "--namespace", "monitoring", "--kube-version", "1.36.5")
    files = {path.name: path.read_text() for path in DASHBOARDS.glob("*.json")}
    assert set(files) == {"kubehull-nodes.json", "kubehull-operator.json"}

    shipped = configmaps(helm(*template))
    assert set(shipped) == set(files)
    for name, configmap in shipped.items():
        assert configmap["data"][name] == files[name]  # the exact JSON
        assert configmap["metadata"]["namespace"] == "monitoring"
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert "annotations" not in configmap["metadata"]
    assert {c["metadata"]["name"] for c in shipped.values()} == {"kh-dashboard-nodes", "kh-dashboard-operator"}

    custom = configmaps(
        helm(
            *template,
            "--set",
            "dashboards.label=example.com/dashboard",
            "--set",
            "dashboards.labelValue=1",  # an integer to --set: still the label value "1"
            "--set",
            "dashboards.annotations.grafana_folder=kubehull",
        )
    )
    for name, configmap in custom.items():
        assert configmap["data"][name] == files[name]
        assert configmap["metadata"]["labels"]["example.com/dashboard"] == "1"
        assert "grafana_dashboard" not in configmap["metadata"]["labels"]
        assert configmap["metadata"]["annotations"] == {"grafana_folder": "kubehull"}

    assert configmaps(helm(*template, "--set", "dashboards.enabled=false")) == {}
