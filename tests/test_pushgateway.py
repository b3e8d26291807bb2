"""The Pushgateway Helm release (the component alone, under mocks, and its values): persistence,
ServiceMonitor with honorLabels, and the URL output the backup Jobs push to."""

from __future__ import annotations

from typing import Any

import pulumi

from components.pushgateway import Pushgateway, PushgatewayArgs, pushgateway_values
from components.settings import load_settings
from components.topology import RELEASE_NAME
from offline.runner import Run
from tests.conftest import RunStack, stack_settings

RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "observability"  # what MonitoringStack hands over, as a plain value


def pushgateway_only() -> None:
    pushgateway = Pushgateway("pushgateway", PushgatewayArgs.from_settings(load_settings()), namespace=NAMESPACE)
    pulumi.export("url", pushgateway.url)


def run_pushgateway(run_stack: RunStack, stack: str) -> Run:
    return run_stack(stack, program=pushgateway_only)


def _release(run: Run) -> Any:
    found = [r for r in run.of_type(RELEASE) if r.inputs.get("name") == "prometheus-pushgateway"]
    assert len(found) == 1
    return found[0]


def test_release_is_pinned_in_the_monitoring_namespace(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    release = _release(run_pushgateway(run_stack, stack))
    assert release.parent_type == "ipa-ops:monitoring:Pushgateway"
    assert release.inputs["chart"] == "prometheus-pushgateway"
    assert release.inputs["version"] == settings.pushgateway_chart_version == "3.8.0"
    assert release.inputs["namespace"] == NAMESPACE
    assert release.inputs["repositoryOpts"] == {"repo": "https://prometheus-community.github.io/helm-charts"}


def test_persistence_is_on_and_used(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    values = _release(run_pushgateway(run_stack, stack)).inputs["values"]
    volume = values["persistentVolume"]
    assert volume["enabled"] is True
    assert volume["storageClass"] == settings.storage_class
    # The chart only mounts the volume; the Pushgateway writes to it only with --persistence.file.
    assert f"--persistence.file={volume['mountPath']}/pushgateway.data" in values["extraArgs"]
    assert values["strategy"] == {"type": "Recreate"}


def test_service_monitor_honors_pushed_labels(run_stack: RunStack, stack: str) -> None:
    monitor = _release(run_pushgateway(run_stack, stack)).inputs["values"]["serviceMonitor"]
    assert monitor["enabled"] is True
    assert monitor["honorLabels"] is True  # keeps job="ipa-backup" from the pushes
    assert monitor["additionalLabels"] == {"release": RELEASE_NAME}
    assert monitor["namespace"] == NAMESPACE


def test_pushgateway_runs_restricted(stack: str) -> None:
    values = pushgateway_values(PushgatewayArgs.from_settings(stack_settings(stack)), NAMESPACE)
    ctx = values["containerSecurityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["securityContext"]["runAsNonRoot"] is True and values["securityContext"]["runAsUser"] != 0
    assert values["automountServiceAccountToken"] is False
    assert values["resources"]["requests"] and values["resources"]["limits"]["memory"]


def test_url_is_the_chart_service(run_stack: RunStack, stack: str) -> None:
    # Release name contains the chart name, so the chart names its Service after the release.
    assert run_pushgateway(run_stack, stack).exports["url"] == f"http://prometheus-pushgateway.{NAMESPACE}.svc:9091"


def test_main_program_puts_it_in_the_monitoring_namespace(run_stack: RunStack) -> None:
    settings = stack_settings("dev", {"monitoringNamespace": "observability"})
    release = _release(run_stack("dev", {"monitoringNamespace": "observability"}))
    assert release.inputs["namespace"] == release.inputs["values"]["serviceMonitor"]["namespace"] == settings.monitoring_namespace
