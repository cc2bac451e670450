"""kubehull's Grafana dashboards, as code (grafana-foundation-sdk), written as plain JSON beside this file.

    python charts/kubehull/dashboards/generate.py           # (re)write kubehull-nodes.json, kubehull-operator.json
    python charts/kubehull/dashboards/generate.py --check   # exit 1 if a committed JSON differs from this code

The chart ships the JSON files as ConfigMaps for Grafana's dashboard sidecar (templates/dashboards.yaml); this
script is not packaged (.helmignore). Every PromQL expression names only metrics the components export: the
tests check each one against the live /metrics of a running operator, node agent and hulld
(tests/chart/test_dashboards.py). The metrics are documented in docs/operator.md, docs/agent.md, docs/hulld.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, statetimeline, table
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
TAGS = ["kubehull"]

Panel = TypeVar("Panel", ts.Panel, stat.Panel, statetimeline.Panel, table.Panel)


# --- building blocks ---------------------------------------------------------------------------------------------


def query(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    built = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        built = built.legend_format(legend)
    if instant:
        built = built.instant().format(PromQueryFormat.TABLE)
    return built


def p50_p99(buckets: str, legend: str = "") -> list[prometheus.Dataquery]:
    """The median and 99th percentile of ``buckets`` (a rate of ``_bucket`` series summed by ``le``)."""
    prefix = f"{legend} " if legend else ""
    return [
        query(f"histogram_quantile({q}, {buckets})", f"{prefix}{name}") for q, name in (("0.5", "p50"), ("0.99", "p99"))
    ]


def panel(
    builder: Panel, title: str, description: str, queries: list[prometheus.Dataquery], *, w: int, h: int = 8
) -> Panel:
    """Title, description, the dashboard's data source, size, and the queries with refIds A, B, C..."""
    built = builder.title(title).description(description).datasource(DATASOURCE).span(w).height(h)
    for number, target in enumerate(queries):
        built = built.with_target(target.ref_id(chr(ord("A") + number)))
    return built


def graph(
    title: str,
    description: str,
    queries: list[prometheus.Dataquery],
    *,
    unit: str,
    w: int = 12,
    h: int = 8,
    stacked: bool = False,
    bars: bool = False,
) -> ts.Panel:
    builder = (
        ts.Panel()
        .unit(unit)
        .min(0)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.RIGHT)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI))
    )
    if stacked:
        builder = builder.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    if bars:
        builder = builder.draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(80)
    return panel(builder, title, description, queries, w=w, h=h)


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for value, color in steps])
    )


def single(
    title: str,
    description: str,
    queries: list[prometheus.Dataquery],
    *,
    unit: str = "short",
    steps: tuple[tuple[float | None, str], ...] = ((None, "text"),),
    w: int = 6,
    h: int = 4,
) -> stat.Panel:
    builder = (
        stat.Panel()
        .unit(unit)
        .thresholds(thresholds(*steps))
        .color_scheme(dashboard.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
        .color_mode(common_models.BigValueColorMode.VALUE)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .text_mode(common_models.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .no_value("0")
    )
    return panel(builder, title, description, queries, w=w, h=h)


def alarm() -> models.DynamicConfigValue:
    """Thresholds for a count of bad things: green at 0, red from 1."""
    return models.DynamicConfigValue(id_val="thresholds", value=thresholds((None, "green"), (1, "red")).build())


def readiness_mappings() -> list[models.ValueMapping]:
    return [
        models.ValueMap(
            options={
                "0": models.ValueMappingResult(text="not ready", color="red", index=0),
                "1": models.ValueMappingResult(text="ready", color="green", index=1),
            }
        )
    ]


def variable(name: str, label: str, values_of: str, description: str) -> dashboard.QueryVariable:
    """A multi-value variable from ``label_values(...)``; "All" is ``.*`` so series without the label match too."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(values_of)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
    )


def board(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .annotation(
            dashboard.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(models.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .link(
            dashboard.DashboardLink("kubehull")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
        )
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )


def row(title: str) -> dashboard.Row:
    return dashboard.Row(title).collapsed(False)


def numbered(built: models.Dashboard) -> models.Dashboard:
    """Panel ids 1, 2, 3... in layout order: stable across runs, unique within the dashboard."""
    for number, item in enumerate(built.panels or [], start=1):
        item.id_val = number
    return built


# --- kubehull / Nodes & runtimes ---------------------------------------------------------------------------------

NODE = 'instance=~"$instance"'
HANDLER = 'handler=~"$handler"'


def nodes() -> models.Dashboard:
    sel = f"{NODE}, {HANDLER}"
    cri_sel = f'{sel}, handler!=""'  # CRI calls that concern a pod or container of some runtime handler
    latency = f"sum by (handler, le) (rate(hulld_cri_operation_duration_seconds_bucket{{{cri_sel}}}[{RATE}]))"
    probe = f"sum by (handler, le) (rate(kubehull_agent_probe_duration_seconds_bucket{{{sel}}}[{RATE}]))"
    pull = f'sum by (le) (rate(hulld_image_pull_duration_seconds_bucket{{{NODE}, result="ok"}}[{RATE}]))'
    built = (
        board(
            "kubehull-nodes",
            "kubehull / Nodes & runtimes",
            "Per node: the kubehull agent's handler readiness and probes, and hulld (the CRI runtime): pods and "
            "containers per runtime handler, CRI latency and errors, image pulls. Scrape both the agent "
            "(kubehull_agent_*) and hulld (hulld_*) on every node.",
        )
        .with_variable(
            variable(
                "instance",
                "Node (scrape target)",
                'label_values({__name__=~"kubehull_agent_hulld_up|hulld_images"}, instance)',
                "The agent's and hulld's scrape targets (instance label); the metrics carry no node name.",
            )
        )
        .with_variable(
            variable(
                "handler",
                "Runtime handler",
                'label_values({__name__=~"kubehull_agent_handler_ready|hulld_cri_operations_total"}, handler)',
                "RuntimeProfile handlers (agent) and the handlers hulld served CRI calls for.",
            )
        )
        # --- overview
        .with_row(row("Handlers"))
        .with_panel(
            single(
                "hulld up",
                "Agents reporting, and those whose hulld answers on its socket and is ready (kubehull_agent_hulld_up).",
                [
                    query(f"count(kubehull_agent_hulld_up{{{NODE}}})", "agents"),
                    query(f"sum(kubehull_agent_hulld_up{{{NODE}}})", "hulld up"),
                ],
            )
        )
        .with_panel(
            single(
                "Handlers",
                "Handlers that passed / failed their last probe, over the selected nodes "
                "(kubehull_agent_handler_ready).",
                [
                    query(f"sum(kubehull_agent_handler_ready{{{sel}}})", "ready"),
                    query(f"count(kubehull_agent_handler_ready{{{sel}}} == 0) or vector(0)", "not ready"),
                ],
                steps=((None, "green"),),
            ).override_by_name("not ready", [alarm()])
        )
        .with_panel(
            single(
                "Pods and containers",
                "Ready pod sandboxes and running containers in hulld (hulld_sandboxes, hulld_containers).",
                [
                    query(f'sum(hulld_sandboxes{{{sel}, state="ready"}})', "pods ready"),
                    query(f'sum(hulld_containers{{{sel}, state="running"}})', "containers running"),
                ],
            )
        )
        .with_panel(
            single(
                "Image pulls (time range)",
                "Image pulls in the dashboard's time range, by result (hulld_image_pulls_total).",
                [query(f"sum by (result) (increase(hulld_image_pulls_total{{{NODE}}}[$__range]))", "{{result}}")],
            )
        )
        .with_panel(
            panel(
                statetimeline.Panel()
                .mappings(readiness_mappings())
                .thresholds(thresholds((None, "red"), (1, "green")))
                .color_scheme(dashboard.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
                .show_value(common_models.VisibilityMode.NEVER)
                .merge_values(True)
                .fill_opacity(80),
                "Handlers ready per node",
                "1 while the handler passed its last probe on that node (kubehull_agent_handler_ready).",
                [
                    query(
                        f"max by (instance, handler) (kubehull_agent_handler_ready{{{sel}}})",
                        "{{instance}} {{handler}}",
                    )
                ],
                w=24,
            )
        )
        .with_panel(
            graph(
                "Handler probe duration (p50, p99)",
                "How long the agent's probe (a pod and a `true` container under the handler) takes "
                "(kubehull_agent_probe_duration_seconds).",
                p50_p99(probe, "{{handler}}"),
                unit="s",
            )
        )
        .with_panel(
            graph(
                "Failed probes by reason",
                "Probes that did not pass, by handler and reason: BinaryNotFound, ProbeFailed, ProbeTimedOut "
                "(kubehull_agent_probe_duration_seconds_count).",
                [
                    query(
                        "sum by (handler, result) (increase(kubehull_agent_probe_duration_seconds_count"
                        f'{{{sel}, result!="ready"}}[{RATE}]))',
                        "{{handler}} {{result}}",
                    )
                ],
                unit="short",
                bars=True,
            )
        )
        # --- pods and containers
        .with_row(row("Pods & containers"))
        .with_panel(
            graph(
                "Pod sandboxes per handler",
                "hulld's pod sandboxes by runtime handler and state (hulld_sandboxes).",
                [query(f"sum by (handler, state) (hulld_sandboxes{{{sel}}})", "{{handler}} {{state}}")],
                unit="short",
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Containers per handler",
                "hulld's containers by runtime handler and state (hulld_containers).",
                [query(f"sum by (handler, state) (hulld_containers{{{sel}}})", "{{handler}} {{state}}")],
                unit="short",
                stacked=True,
            )
        )
        # --- CRI
        .with_row(row("CRI operations"))
        .with_panel(
            graph(
                "CRI latency per handler (p50, p99)",
                "Latency of the CRI calls that concern a pod or container, per runtime handler "
                "(hulld_cri_operation_duration_seconds). Image and runtime-wide calls have no handler.",
                p50_p99(latency, "{{handler}}"),
                unit="s",
            )
        )
        .with_panel(
            graph(
                "CRI calls per handler",
                "CRI calls served per second, by runtime handler and gRPC code (hulld_cri_operations_total).",
                [
                    query(
                        f"sum by (handler, code) (rate(hulld_cri_operations_total{{{cri_sel}}}[{RATE}]))",
                        "{{handler}} {{code}}",
                    )
                ],
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "CRI latency p99 by operation",
                "p99 latency of each CRI operation, over the selected handlers (image calls included when "
                "the handler is All) (hulld_cri_operation_duration_seconds).",
                [
                    query(
                        "histogram_quantile(0.99, sum by (operation, le) "
                        f"(rate(hulld_cri_operation_duration_seconds_bucket{{{sel}}}[{RATE}])))",
                        "{{operation}}",
                    )
                ],
                unit="s",
            )
        )
        .with_panel(
            graph(
                "CRI errors",
                "Failed CRI calls per second by handler, operation and gRPC code (hulld_cri_operation_errors_total).",
                [
                    query(
                        f"sum by (handler, operation, code) (rate(hulld_cri_operation_errors_total{{{sel}}}[{RATE}]))",
                        "{{handler}} {{operation}} {{code}}",
                    )
                ],
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "CRI error ratio per handler",
                "Failed over served CRI calls, per runtime handler "
                "(hulld_cri_operation_errors_total / hulld_cri_operations_total).",
                [
                    query(
                        f"sum by (handler) (rate(hulld_cri_operation_errors_total{{{cri_sel}}}[{RATE}]))"
                        f" / sum by (handler) (rate(hulld_cri_operations_total{{{cri_sel}}}[{RATE}]))",
                        "{{handler}}",
                    )
                ],
                unit="percentunit",
                w=24,
            )
        )
        # --- images
        .with_row(row("Images"))
        .with_panel(
            graph(
                "Image pulls by result",
                "Image pulls per second: ok, or the error kind (hulld_image_pulls_total).",
                [query(f"sum by (result) (rate(hulld_image_pulls_total{{{NODE}}}[{RATE}]))", "{{result}}")],
                unit="reqps",
                w=6,
            )
        )
        .with_panel(
            graph(
                "Image pull duration (p50, p99)",
                "Duration of successful pulls (hulld_image_pull_duration_seconds).",
                p50_p99(pull),
                unit="s",
                w=6,
            )
        )
        .with_panel(
            graph(
                "Image download throughput",
                "Bytes downloaded from registries per second, per node (hulld_image_pull_bytes_total).",
                [
                    query(
                        f"sum by (instance) (rate(hulld_image_pull_bytes_total{{{NODE}}}[{RATE}]))",
                        "{{instance}}",
                    )
                ],
                unit="Bps",
                w=6,
            )
        )
        .with_panel(
            graph(
                "Images in store",
                "Images in hulld's store, per node (hulld_images).",
                [query(f"sum by (instance) (hulld_images{{{NODE}}})", "{{instance}}")],
                unit="short",
                w=6,
            )
        )
        # --- streaming
        .with_row(row("Streaming"))
        .with_panel(
            graph(
                "Streaming sessions by result",
                "kubectl exec, attach and port-forward sessions ended per second: ok, error (the command could not "
                "start, a forwarded port could not be reached), abandoned (the client never opened its streams) "
                "(hulld_streaming_sessions_total).",
                [
                    query(
                        f"sum by (kind, result) (rate(hulld_streaming_sessions_total{{{NODE}}}[{RATE}]))",
                        "{{kind}} {{result}}",
                    )
                ],
                unit="reqps",
                w=12,
            )
        )
        .with_panel(
            graph(
                "Streaming throughput",
                "Bytes per second through streaming sessions, in (from the client) and out "
                "(hulld_streaming_bytes_total).",
                [
                    query(
                        f"sum by (kind, direction) (rate(hulld_streaming_bytes_total{{{NODE}}}[{RATE}]))",
                        "{{kind}} {{direction}}",
                    )
                ],
                unit="Bps",
                w=12,
            )
        )
        # --- agent
        .with_row(row("Agent"))
        .with_panel(
            panel(
                table.Panel().with_transformation(
                    models.DataTransformerConfig(
                        id_val="organize",
                        options={"excludeByName": {"Time": True, "Value": True, "__name__": True}},
                    )
                ),
                "hulld version per node",
                "The hulld version each agent runs (kubehull_agent_hulld_info).",
                [query(f"kubehull_agent_hulld_info{{{NODE}}}", instant=True)],
                w=8,
            )
        )
        .with_panel(
            graph(
                "hulld lifecycle",
                "What agents did to have the right hulld running: installed, started, adopted, upgraded "
                "(kubehull_agent_hulld_lifecycle_total).",
                [
                    query(
                        f"sum by (action) (increase(kubehull_agent_hulld_lifecycle_total{{{NODE}}}[{RATE}]))",
                        "{{action}}",
                    )
                ],
                unit="short",
                w=8,
                bars=True,
            )
        )
        .with_panel(
            graph(
                "Configuration and status writes",
                "Runtime configurations written (hulld's file, or containerd's drop-in) and reloads or restarts "
                "that failed (kubehull_agent_config_renders_total, kubehull_agent_reload_failures_total), "
                "NodeRuntime status writes by result "
                "(kubehull_agent_status_writes_total).",
                [
                    query(f"sum(increase(kubehull_agent_config_renders_total{{{NODE}}}[{RATE}]))", "renders"),
                    query(f"sum(increase(kubehull_agent_reload_failures_total{{{NODE}}}[{RATE}]))", "reload failures"),
                    query(
                        f"sum by (result) (increase(kubehull_agent_status_writes_total{{{NODE}}}[{RATE}]))",
                        "status writes {{result}}",
                    ),
                ],
                unit="short",
                w=8,
                bars=True,
            )
        )
    )
    return numbered(built.build())


# --- kubehull / Operator -----------------------------------------------------------------------------------------

REPLICA = 'instance=~"$instance"'


def operator() -> models.Dashboard:
    profiles = f'{REPLICA}, profile=~"$profile"'
    passes = f"sum by (le) (rate(kubehull_operator_reconcile_duration_seconds_bucket{{{REPLICA}}}[{RATE}]))"
    built = (
        board(
            "kubehull-operator",
            "kubehull / Operator",
            "The kubehull operator: RuntimeProfiles by condition, the reconcile loop's rate, latency and errors, "
            "its writes to the API, and each profile's fan-out to nodes. Only the leader replica reconciles; "
            "gauges come from it.",
        )
        .with_variable(
            variable(
                "instance",
                "Operator replica",
                "label_values(kubehull_operator_leader, instance)",
                "The operator's scrape targets (instance label).",
            )
        )
        .with_variable(
            variable(
                "profile",
                "RuntimeProfile",
                "label_values(kubehull_operator_profile_nodes, profile)",
                "RuntimeProfiles the leader reports node counts for.",
            )
        )
        # --- overview
        .with_row(row("Overview"))
        .with_panel(
            single(
                "Leader",
                "Replicas holding the leader lease (should be 1) and replicas scraped (kubehull_operator_leader).",
                [
                    query(f"sum(kubehull_operator_leader{{{REPLICA}}})", "leaders"),
                    query(f"count(kubehull_operator_leader{{{REPLICA}}})", "replicas"),
                ],
                w=6,
            )
        )
        .with_panel(
            single(
                "Profiles",
                "RuntimeProfiles Ready, not Ready (False or Unknown) and Degraded (kubehull_operator_profiles).",
                [
                    query(f'max(kubehull_operator_profiles{{{REPLICA}, condition="Ready", status="True"}})', "Ready"),
                    query(
                        "sum(max by (status) "
                        f'(kubehull_operator_profiles{{{REPLICA}, condition="Ready", status!="True"}}))',
                        "not Ready",
                    ),
                    query(
                        f'max(kubehull_operator_profiles{{{REPLICA}, condition="Degraded", status="True"}})',
                        "Degraded",
                    ),
                ],
                w=10,
            )
        )
        .with_panel(
            single(
                "Nodes failing",
                "Nodes where a selected profile's handler failed its probe (kubehull_operator_profile_nodes).",
                [
                    query(
                        f'sum(max by (profile) (kubehull_operator_profile_nodes{{{profiles}, state="failed"}}))',
                        "failed",
                    )
                ],
                steps=((None, "green"), (1, "red")),
                w=8,
            )
        )
        # --- profiles
        .with_row(row("Profiles"))
        .with_panel(
            graph(
                "Profiles by condition",
                "RuntimeProfiles by condition type and status (kubehull_operator_profiles).",
                [
                    query(
                        f"max by (condition, status) (kubehull_operator_profiles{{{REPLICA}}})",
                        "{{condition}}={{status}}",
                    )
                ],
                unit="short",
            )
        )
        .with_panel(
            graph(
                "Node fan-out per profile",
                "Nodes of each RuntimeProfile by state: desired, ready, updating, failed "
                "(kubehull_operator_profile_nodes).",
                [
                    query(
                        f"max by (profile, state) (kubehull_operator_profile_nodes{{{profiles}}})",
                        "{{profile}} {{state}}",
                    )
                ],
                unit="short",
            )
        )
        .with_panel(
            panel(
                table.Panel().with_transformation(
                    models.DataTransformerConfig(
                        id_val="groupingToMatrix",
                        options={"columnField": "state", "rowField": "profile", "valueField": "Value"},
                    )
                ),
                "Nodes per profile, now",
                "One row per RuntimeProfile: desired, ready, updating and failed nodes "
                "(kubehull_operator_profile_nodes).",
                [query(f"max by (profile, state) (kubehull_operator_profile_nodes{{{profiles}}})", instant=True)],
                w=24,
            )
        )
        # --- reconciliation
        .with_row(row("Reconciliation"))
        .with_panel(
            graph(
                "Reconcile passes",
                "Reconciliation passes over the whole cluster per second "
                "(kubehull_operator_reconcile_duration_seconds_count).",
                [
                    query(
                        f"sum(rate(kubehull_operator_reconcile_duration_seconds_count{{{REPLICA}}}[{RATE}]))",
                        "passes",
                    )
                ],
                unit="ops",
                w=8,
            )
        )
        .with_panel(
            graph(
                "Reconcile pass latency (p50, p99)",
                "Duration of one pass: snapshot, plan, writes (kubehull_operator_reconcile_duration_seconds).",
                p50_p99(passes),
                unit="s",
                w=8,
            )
        )
        .with_panel(
            graph(
                "Objects reconciled",
                "Objects written to bring them to the desired state per second, by kind and result "
                "(kubehull_operator_reconciles_total).",
                [
                    query(
                        f"sum by (kind, result) (rate(kubehull_operator_reconciles_total{{{REPLICA}}}[{RATE}]))",
                        "{{kind}} {{result}}",
                    )
                ],
                unit="ops",
                w=8,
            )
        )
        .with_panel(
            graph(
                "Reconcile errors",
                "Objects whose write failed (error) or raced the watch (conflict), by kind "
                "(kubehull_operator_reconciles_total); API writes that failed, by resource, verb and HTTP status "
                "(kubehull_operator_api_writes_total).",
                [
                    query(
                        "sum by (kind, result) "
                        f'(rate(kubehull_operator_reconciles_total{{{REPLICA}, result!="ok"}}[{RATE}]))',
                        "{{kind}} {{result}}",
                    ),
                    query(
                        "sum by (resource, verb, result) "
                        f'(rate(kubehull_operator_api_writes_total{{{REPLICA}, result!="ok"}}[{RATE}]))',
                        "{{verb}} {{resource}} {{result}}",
                    ),
                ],
                unit="ops",
            )
        )
        .with_panel(
            graph(
                "API writes",
                "Writes the operator sent to the Kubernetes API per second, by resource and verb "
                "(kubehull_operator_api_writes_total).",
                [
                    query(
                        f"sum by (resource, verb) (rate(kubehull_operator_api_writes_total{{{REPLICA}}}[{RATE}]))",
                        "{{verb}} {{resource}}",
                    )
                ],
                unit="ops",
            )
        )
        .with_panel(
            graph(
                "Node fan-out writes",
                "Per-node objects written per second: NodeRuntimes (a profile's handlers on each node) and "
                "Node labels (kubehull_operator_reconciles_total).",
                [
                    query(
                        "sum by (kind) (rate(kubehull_operator_reconciles_total"
                        f'{{{REPLICA}, kind=~"NodeRuntime|Node"}}[{RATE}]))',
                        "{{kind}}",
                    )
                ],
                unit="ops",
                w=24,
            )
        )
    )
    return numbered(built.build())


# --- writing -----------------------------------------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], models.Dashboard]] = {
    "kubehull-nodes.json": nodes,
    "kubehull-operator.json": operator,
}


def render(build: Callable[[], models.Dashboard]) -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a written dashboard differs from this code")
    parser.add_argument("--out", type=Path, default=HERE, help="directory of the JSON files (default: beside this)")
    args = parser.parse_args(argv)
    drifted = []
    for name, build in DASHBOARDS.items():
        path = args.out / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                drifted.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if drifted:
        for path in drifted:
            print(
                f"{path} differs from generate.py; run: python charts/kubehull/dashboards/generate.py", file=sys.stderr
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
