"""Schema validation of Kubernetes manifests, shared by the render tests and the chart checks.

- Built-in kinds: kubernetes-validate, strict (an unknown field fails), for the Kubernetes version
  of the clusters (AKS 1.33).
- Custom resources: the openAPIV3Schema of their CustomResourceDefinition, made strict the way the
  API server's strict field validation is (see `strict_crd_schema`).

`null` values are dropped before validating: the API server decodes a JSON null as "unset", and
Helm charts render many of them (`args: null`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as k8s_utils

# kubernetes-validate parses its schema files (the definitions file is megabytes) on every call;
# they never change, so parse each once.
k8s_utils.schema_contents = cache(k8s_utils.schema_contents)

# AKS's supported minors at the time of writing include 1.33 (the oldest still in standard support).
KUBERNETES_VERSION = "1.33.0"

Manifest = dict[str, Any]
CrdKey = tuple[str, str, str]  # (group, version, kind)


class _Loader(yaml.CSafeLoader):
    """YAML as Kubernetes reads it: PyYAML (YAML 1.1) has no constructor for a bare `=` (the
    "value" tag), which the Prometheus Operator CRDs use as an enum value; Go's YAML reads a string."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def load_manifests(text: str) -> list[Manifest]:
    """Every non-empty document of a multi-document YAML stream."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value if v is not None]
    return value


def strict_crd_schema(node: Any) -> Any:
    """A CRD's openAPIV3Schema as jsonschema validates it like the API server does:
    - Go/RE2 puts inline flags anywhere (`^(?i)(abort|warn)?$`); Python's `re` wants them first,
      so a leading `^(?i)` becomes `(?i)^` (same language);
    - `additionalProperties: false` on every object that lists `properties` and neither preserves
      unknown fields nor sets additionalProperties: strict field validation (kubectl's default)
      rejects unknown fields, so a typo must fail here too."""
    if isinstance(node, list):
        return [strict_crd_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_crd_schema(value) for key, value in node.items()}
    pattern = out.get("pattern")
    if isinstance(pattern, str):
        out["pattern"] = re.sub(r"^\^\(\?([a-z]+)\)", r"(?\1)^", pattern)
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


class CrdSchemas:
    """Validators of the custom resources that a set of CustomResourceDefinitions defines."""

    def __init__(self, crds: Iterable[Manifest]) -> None:
        self.schemas: dict[CrdKey, dict[str, Any]] = {}
        self.namespaced: dict[tuple[str, str], bool] = {}
        self._validators: dict[CrdKey, jsonschema.protocols.Validator] = {}
        for crd in crds:
            spec = crd.get("spec") or {}
            group, kind = spec.get("group", ""), (spec.get("names") or {}).get("kind", "")
            self.namespaced[(group, kind)] = spec.get("scope") != "Cluster"
            for version in spec.get("versions") or []:
                if version.get("served"):
                    schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
                    self.schemas[(group, version["name"], kind)] = strict_crd_schema(schema)

    @classmethod
    def from_schemas(cls, schemas: Mapping[CrdKey, dict[str, Any]]) -> CrdSchemas:
        """From openAPIV3Schemas already extracted (and made strict) by kind."""
        made = cls([])
        made.schemas = dict(schemas)
        made.namespaced = {(group, kind): True for group, _, kind in schemas}
        return made

    def groups(self) -> set[str]:
        return {group for group, _, _ in self.schemas}

    def validator(self, key: CrdKey) -> jsonschema.protocols.Validator | None:
        if key not in self._validators and key in self.schemas:
            self._validators[key] = jsonschema.Draft7Validator(self.schemas[key])
        return self._validators.get(key)


ADDON_SCHEMAS = Path(__file__).resolve().parent / "schemas"


def addon_schemas(folder: Path = ADDON_SCHEMAS) -> dict[CrdKey, dict[str, Any]]:
    """Schemas of custom resources whose CRDs come with AKS add-ons, not with a chart of the render:
    offline/schemas/<kind>.<group>.<version>.schema.json, the kind in `x-kind`."""
    found: dict[CrdKey, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        group, version = path.name.removesuffix(".schema.json").split(".", 1)[1].rsplit(".", 1)
        found[(group, version, str(schema["x-kind"]))] = schema
    return found


def is_builtin_group(group: str) -> bool:
    """core (""), apps, batch, policy... and every *.k8s.io group."""
    return "." not in group or group.endswith(".k8s.io")


def validate(manifest: Manifest, crds: CrdSchemas) -> list[str]:
    """Problems with one manifest; empty when it is valid."""
    manifest = without_nulls(manifest)
    api_version, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
    metadata = manifest.get("metadata") or {}
    if not metadata.get("name"):
        return ["metadata.name is missing"]
    group, _, version = api_version.rpartition("/")
    if not is_builtin_group(group):
        validator = crds.validator((group, version, kind))
        if validator is None:
            return [f"{api_version} {kind}: no CustomResourceDefinition for this kind and version"]
        problems = [f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}" for error in validator.iter_errors(manifest)]
        if crds.namespaced.get((group, kind), True) and not metadata.get("namespace"):
            problems.append("a namespaced custom resource without metadata.namespace")
        return problems
    try:
        k8s_utils.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'.'.join(str(p) for p in err.path)}: {err.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as err:
        return [f"{api_version} {kind}: {err}"]
    return []
