"""Every Kubernetes object of both stacks' renders (build/<stack>/kubernetes/*.yaml, every
component's, not only the monitoring stack's) validated against its schema:
- built-in kinds with kubernetes-validate (strict: unknown fields fail) for a current AKS version;
- Prometheus Operator kinds against the operator's CRD schemas (tests/schemas/, derived by
  tests/schemas/derive.py from the CRDs of kube-prometheus-stack 88.5.3 / operator 0.93.1).
Any other kind fails, so a new custom resource needs its schema here first."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as k8s_utils

from components.topology import RELEASE_NAME
from offline import kube_schema
from offline.kube_schema import KUBERNETES_VERSION, CrdKey, CrdSchemas
from tests.conftest import STACKS

OPERATOR_GROUP = "monitoring.coreos.com"
SCHEMAS = Path(__file__).parent / "schemas"
Rendered = Callable[[str], Path]


OPERATOR_KINDS = {"podmonitor": "PodMonitor", "servicemonitor": "ServiceMonitor", "prometheusrule": "PrometheusRule"}


@cache
def operator_schemas() -> CrdSchemas:
    """The schemas of tests/schemas/ and of the AKS add-ons' kinds (offline/schemas/), by (group, version, kind)."""
    found: dict[CrdKey, dict[str, Any]] = {}
    for path in sorted(SCHEMAS.glob("*.v*.schema.json")):
        name, version = path.name.split(".")[:2]
        found[(OPERATOR_GROUP, version, OPERATOR_KINDS[name])] = json.loads(path.read_text())
    return CrdSchemas.from_schemas({**found, **kube_schema.addon_schemas()})


def validate(manifest: dict[str, Any]) -> list[str]:
    """Problems with one manifest; empty when it is valid (offline/kube_schema.py)."""
    return kube_schema.validate(manifest, operator_schemas())


def manifests(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, yaml.safe_load(path.read_text())) for path in sorted((folder / "kubernetes").glob("*.yaml"))]


def test_kubernetes_version_is_bundled() -> None:
    assert KUBERNETES_VERSION in k8s_utils.all_versions()


@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_object_is_valid(stack: str, rendered: Rendered) -> None:
    found = manifests(rendered(stack))
    kinds = {m["kind"] for _, m in found}
    assert {"Namespace", "Secret", "PodMonitor"} <= kinds, kinds
    problems = {name: validate(manifest) for name, manifest in found}
    assert not {name: p for name, p in problems.items() if p}, json.dumps(problems, indent=1)


@pytest.mark.parametrize("stack", STACKS)
def test_operator_objects_are_selected_by_the_stack(stack: str, rendered: Rendered) -> None:
    """Prometheus only loads operator objects labelled with the release name."""
    operator_objects = [m for _, m in manifests(rendered(stack)) if m["apiVersion"].startswith(OPERATOR_GROUP + "/")]
    assert operator_objects
    for manifest in operator_objects:
        assert (manifest["metadata"].get("labels") or {}).get("release") == RELEASE_NAME, manifest["metadata"]


def pod_monitor(rendered: Rendered) -> dict[str, Any]:
    (found,) = [m for _, m in manifests(rendered("dev")) if m["kind"] == "PodMonitor" and m["metadata"]["name"] == "ipa-backend"]
    return copy.deepcopy(found)


def test_validators_reject_bad_objects(rendered: Rendered) -> None:
    """The checks can fail: an unknown field, a wrong type and an unknown kind are refused."""
    misspelt = pod_monitor(rendered)
    misspelt["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"
    assert validate(misspelt)
    wrong_type = pod_monitor(rendered)
    wrong_type["spec"]["selector"] = "app=ipa-backend"
    assert validate(wrong_type)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"finalizer": []}}
    assert validate(namespace)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {}, "template": {}},
    }
    assert validate(deployment)
    assert validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "x", "namespace": "y"}})
    assert validate(pod_monitor(rendered)) == []
