"""Shared pieces of the IPA dashboards: variables, links, alert annotations and standard panels.

Every dashboard is a `Board`: panels are added row by row and laid out on Grafana's 24-column
grid, ids are assigned in order, and `Board.build()` returns the dashboard JSON as a dict.
Panels query the `$datasource` variable; every panel carries a description, a unit and, where a
setting defines a limit, thresholds drawn from that setting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

from components.settings import Settings
from components.topology import BACKEND_JOB, DASHBOARDS, topology

TAG = "ipa"
FOLDER = "IPA Platform"
DATASOURCE = common_models.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Selectors shared by the panels; the variables are defined below.
BACKEND = 'job="$job", namespace="$namespace"'
RULES = 'namespace="$namespace"'  # recording rules keep `namespace` and drop `job`


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Step:
    """A threshold step: from `value` upwards the colour is `color` (None = the base step)."""

    value: float | None
    color: str


def steps(*pairs: tuple[float | None, str]) -> list[Step]:
    return [Step(value, color) for value, color in pairs]


def limit_steps(warn: float | None, critical: float) -> list[Step]:
    """green below `warn`, orange from it, red from `critical`."""
    pairs: list[tuple[float | None, str]] = [(None, "green")]
    if warn is not None:
        pairs.append((warn, "orange"))
    pairs.append((critical, "red"))
    return steps(*pairs)


def floor_steps(critical: float, warn: float | None = None) -> list[Step]:
    """For values that must stay high (success rate, SLO): red below `critical`, green above."""
    pairs: list[tuple[float | None, str]] = [(None, "red")]
    if warn is not None:
        pairs.append((critical, "orange"))
        pairs.append((warn, "green"))
    else:
        pairs.append((critical, "green"))
    return steps(*pairs)


def runbook_url(settings: Settings, alert: str) -> str:
    return topology(settings).runbook_url(alert)


# --- variables -------------------------------------------------------------------------------------


def datasource_variable() -> dashboard_builders.DatasourceVariable:
    return (
        dashboard_builders.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus of the cluster (kube-prometheus-stack).")
    )


def query_variable(
    name: str, label: str, query: str, description: str, multi: bool = False, default: str | None = None
) -> dashboard_builders.QueryVariable:
    variable = (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .definition(query)
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        # "All" matches every value, including ones not seen in the time range.
        variable = variable.all_value(".*").current(dashboard_models.VariableOption(text="All", value="$__all", selected=True))
    elif default is not None:
        variable = variable.current(dashboard_models.VariableOption(text=default, value=default, selected=True))
    return variable


def job_variable() -> dashboard_builders.QueryVariable:
    return query_variable(
        "job",
        "Job",
        "label_values(http_requests_total, job)",
        'Scrape job of the backend pods (the PodMonitor sets job="ipa-backend").',
        default=BACKEND_JOB,
    )


def namespace_variable(settings: Settings) -> dashboard_builders.QueryVariable:
    return query_variable(
        "namespace",
        "Namespace",
        'label_values(http_requests_total{job="$job"}, namespace)',
        "Namespace of the ipa-backend pods.",
        default=settings.backend_namespace,
    )


def workflow_variable() -> dashboard_builders.QueryVariable:
    return query_variable(
        "workflow",
        "Workflow",
        'label_values(ipa_executions_total{job="$job", namespace="$namespace"}, workflow)',
        "Workflows to show (regex match; All = every workflow).",
        multi=True,
    )


def model_variable() -> dashboard_builders.QueryVariable:
    return query_variable(
        "model",
        "Model",
        'label_values(claude_api_requests_total{job="$job", namespace="$namespace"}, model)',
        "Claude models to show (regex match; All = every model).",
        multi=True,
    )


def backend_variables(settings: Settings) -> list[Any]:
    return [datasource_variable(), job_variable(), namespace_variable(settings)]


# --- links and annotations ---------------------------------------------------------------------


def dashboard_links(settings: Settings, current_uid: str) -> list[cogbuilder.Builder[dashboard_models.DashboardLink]]:
    """A link to every other IPA dashboard (keeping time range and variables) and to the runbooks."""
    links: list[cogbuilder.Builder[dashboard_models.DashboardLink]] = [
        dashboard_builders.DashboardLink(title)
        .type(dashboard_models.DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .icon("dashboard")
        .tooltip(f"Open {title}")
        .include_vars(True)
        .keep_time(True)
        for uid, title in DASHBOARDS.items()
        if uid != current_uid
    ]
    links.append(
        dashboard_builders.DashboardLink("Runbooks")
        .type(dashboard_models.DashboardLinkType.LINK)
        .url(settings.runbook_base_url)
        .icon("doc")
        .tooltip("What to do when an IPA alert fires")
        .target_blank(True)
    )
    return links


def panel_links(settings: Settings, alerts: Sequence[str]) -> list[dashboard_builders.DashboardLink]:
    """Links in a panel's header menu to the runbooks of the alerts that watch what it shows."""
    return [
        dashboard_builders.DashboardLink(f"Runbook: {alert}")
        .type(dashboard_models.DashboardLinkType.LINK)
        .icon("doc")
        .tooltip(f"Runbook of the {alert} alert")
        .url(runbook_url(settings, alert))
        .target_blank(True)
        for alert in alerts
    ]


def alert_annotation(name: str, alerts: Sequence[str], color: str = "red") -> dashboard_builders.AnnotationQuery:
    """Marks the time ranges where these alerts fired."""
    return (
        dashboard_builders.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(color)
        .expr('ALERTS{alertstate="firing", alertname=~"' + "|".join(alerts) + '"}')
        .title_format("{{alertname}} ({{severity}})")
        .text_format("{{alertname}} firing")
        .tag_keys("alertname,severity")
        .step("60s")
    )


# --- panels --------------------------------------------------------------------------------------


def _target(query: Query, ref_id: str) -> prometheus_builders.Dataquery:
    target = prometheus_builders.Dataquery().expr(query.expr).ref_id(ref_id).datasource(DATASOURCE)
    if query.legend:
        target = target.legend_format(query.legend)
    return target.instant() if query.instant else target.range()


def _thresholds(threshold_steps: Sequence[Step]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=s.value, color=s.color) for s in threshold_steps])
    )


def _common(
    panel: Any,
    settings: Settings,
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    threshold_steps: Sequence[Step] | None,
    alerts: Sequence[str],
) -> Any:
    panel = panel.title(title).description(description).datasource(DATASOURCE).unit(unit)
    for index, query in enumerate(queries):
        panel = panel.with_target(_target(query, chr(ord("A") + index)))
    panel = panel.thresholds(_thresholds(threshold_steps or steps((None, "green"))))
    if alerts:
        panel = panel.links(panel_links(settings, alerts))
    return panel


def graph(
    settings: Settings,
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    threshold_steps: Sequence[Step] | None = None,
    alerts: Sequence[str] = (),
    stack: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
) -> timeseries.Panel:
    """A time series; thresholds, when given, are drawn as dashed lines."""
    panel: timeseries.Panel = _common(timeseries.Panel(), settings, title, description, unit, queries, threshold_steps, alerts)
    panel = (
        panel.legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI).sort(common_models.SortOrder.DESCENDING))
        .line_width(1)
        .fill_opacity(10)
        .show_points(common_models.VisibilityMode.NEVER)
        .span_nulls(False)
    )
    if threshold_steps:
        panel = panel.thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(common_models.GraphThresholdsStyleMode.DASHED))
    if stack:
        panel = panel.stacking(common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL)).fill_opacity(40)
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def single(
    settings: Settings,
    title: str,
    description: str,
    unit: str,
    query: Query | Sequence[Query],
    threshold_steps: Sequence[Step] | None = None,
    alerts: Sequence[str] = (),
    decimals: int | None = None,
) -> stat.Panel:
    """A big number (last value), coloured by its thresholds."""
    queries = [query] if isinstance(query, Query) else list(query)
    panel: stat.Panel = _common(stat.Panel(), settings, title, description, unit, queries, threshold_steps, alerts)
    panel = (
        panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(common_models.BigValueGraphMode.AREA)
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def bars(
    settings: Settings,
    title: str,
    description: str,
    unit: str,
    query: Query,
    threshold_steps: Sequence[Step] | None = None,
    alerts: Sequence[str] = (),
    max_value: float | None = None,
) -> bargauge.Panel:
    """Horizontal bars, one per series (e.g. the slowest handlers)."""
    panel: bargauge.Panel = _common(bargauge.Panel(), settings, title, description, unit, [query], threshold_steps, alerts)
    panel = (
        panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .min(0)
    )
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def grid(settings: Settings, title: str, description: str, unit: str, query: Query) -> table.Panel:
    """A table of an instant query's series, one row per series, label columns kept."""
    panel: table.Panel = _common(table.Panel(), settings, title, description, unit, [query], None, ())
    return panel.with_transformation(
        dashboard_models.DataTransformerConfig(id_val="labelsToFields", options={"mode": "columns"})
    ).show_header(True)


# --- the board -----------------------------------------------------------------------------------


class Board:
    """Lays panels out left to right in rows of 24 columns and assigns unique ids."""

    def __init__(
        self,
        settings: Settings,
        uid: str,
        description: str,
        variables: Sequence[Any],
        annotations: Sequence[dashboard_builders.AnnotationQuery] = (),
    ) -> None:
        self.uid = uid
        self.dashboard = (
            dashboard_builders.Dashboard(DASHBOARDS[uid])
            .uid(uid)
            .description(description)
            .tags([TAG])
            .editable()
            .timezone("browser")
            .time("now-6h", "now")
            .refresh("1m")
            .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
            .variables(list(variables))
            .annotations(list(annotations))
            .links(dashboard_links(settings, uid))
        )
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def _new_line(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def row(self, title: str) -> Board:
        self._new_line()
        self.dashboard = self.dashboard.with_row(
            dashboard_builders.Row(title).id(self.next_id).grid_pos(dashboard_models.GridPos(h=1, w=24, x=0, y=self.y))
        )
        self.next_id += 1
        self.y += 1
        return self

    def add(self, panel: Any, width: int = 12, height: int = 8) -> Board:
        if self.x + width > 24:
            self._new_line()
        panel = panel.id(self.next_id).grid_pos(dashboard_models.GridPos(h=height, w=width, x=self.x, y=self.y))
        self.dashboard = self.dashboard.with_panel(panel)
        self.next_id += 1
        self.x += width
        self.row_height = max(self.row_height, height)
        if self.x >= 24:
            self._new_line()
        return self

    def build(self) -> dict[str, Any]:
        """The dashboard JSON (a plain dict, stable key order)."""
        built: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(self.dashboard.build()))
        return built
