"""Alert and recording rules of ipa-ops, deployed as PrometheusRule custom resources.

The groups are built by pure functions in `components.rules.groups`; this component only
declares them where kube-prometheus-stack's rule selector finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_kubernetes.apiextensions import CustomResource

from components.rules.groups import Group, alert_groups, alert_names, recording_groups, recording_names, rule_groups
from components.settings import Settings
from components.topology import RELEASE_LABELS  # the label the chart's Prometheus selects rules by


@dataclass(frozen=True)
class AlertRulesArgs:
    """The rule groups, built from the settings by the pure functions of `components.rules.groups`."""

    recording_groups: list[Group]
    alert_groups: list[Group]

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertRulesArgs:
        return cls(recording_groups=recording_groups(settings), alert_groups=alert_groups(settings))


def prometheus_rule_body(name: str, namespace: pulumi.Input[str], groups: list[Group]) -> dict[str, Any]:
    """The PrometheusRule object (apiVersion, kind, metadata, spec), as plain data."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**RELEASE_LABELS, "app.kubernetes.io/part-of": "ipa-ops", "app.kubernetes.io/component": "rules"},
        },
        "spec": {"groups": groups},
    }


class AlertRules(pulumi.ComponentResource):
    """Recording rules and alerts of the IPA platform, in the monitoring `namespace`."""

    def __init__(
        self, name: str, args: AlertRulesArgs, *, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ipa-ops:monitoring:AlertRules", name, None, opts)
        self.rules: dict[str, CustomResource] = {}
        for rule_name, groups in (("ipa-recording-rules", args.recording_groups), ("ipa-alerts", args.alert_groups)):
            body = prometheus_rule_body(rule_name, namespace, groups)
            self.rules[rule_name] = CustomResource(
                f"{name}-{rule_name}",
                api_version=str(body["apiVersion"]),
                kind=str(body["kind"]),
                metadata=body["metadata"],
                spec=body["spec"],
                # The resources were once named without the prefix: the alias makes this a rename, not a
                # delete and re-create of the same Kubernetes object.
                opts=pulumi.ResourceOptions(parent=self, aliases=[pulumi.Alias(name=rule_name)]),
            )
        self.register_outputs({"prometheus_rules": list(self.rules)})


__all__ = ["AlertRules", "AlertRulesArgs", "alert_names", "prometheus_rule_body", "recording_names", "rule_groups"]
