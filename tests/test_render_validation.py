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

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as k8s_utils

from components.topology import RELEASE_NAME
from tests.conftest import STACKS

# AKS's supported minors at the time of writing include 1.33 (the oldest still in standard support).
KUBERNETES_VERSION = "1.33.0"
OPERATOR_GROUP = "monitoring.coreos.com"
SCHEMAS = Path(__file__).parent / "schemas"
Rendered = Callable[[str], Path]


@cache
def crd_validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    path = SCHEMAS / f"{kind.lower()}.{version}.schema.json"
    assert path.is_file(), f"no CRD schema for {kind} {version}: add it with tests/schemas/derive.py"
    schema = json.loads(path.read_text())
    return jsonschema.Draft7Validator(schema)


def validate(manifest: dict[str, Any]) -> list[str]:
    """Problems with one manifest; empty when it is valid."""
    api_version, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
    metadata = manifest.get("metadata") or {}
    if not metadata.get("name"):
        return ["metadata.name is missing"]
    group, _, version = api_version.rpartition("/")
    if group == OPERATOR_GROUP:
        problems = [
            f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
            for error in crd_validator(kind, version).iter_errors(manifest)
        ]
        if not metadata.get("namespace"):
            problems.append("a namespaced custom resource without metadata.namespace")
        return problems
    if "." in group and not group.endswith(".k8s.io"):  # built-in groups: core, apps, batch, *.k8s.io
        return [f"{api_version} {kind}: no schema for this custom resource group"]
    try:
        k8s_utils.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'.'.join(str(p) for p in err.path)}: {err.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as err:
        return [f"{api_version} {kind}: {err}"]
    return []


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
    (found,) = [m for _, m in manifests(rendered("dev")) if m["kind"] == "PodMonitor"]
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
