"""Derives the Prometheus Operator CRD schemas in this folder from the operator's CRDs.

    .venv/bin/python tests/schemas/derive.py /path/to/reference/crds

Input: `<kind>.v1.schema.json`, i.e. spec.versions[served].schema.openAPIV3Schema of the CRDs
of prometheus-operator 0.93.1 (the CRDs of kube-prometheus-stack 88.5.3). Two changes, made by
offline/kube_schema.py's `strict_crd_schema` (the chart checks apply it to the CRDs of the chart render):
- Go/RE2 puts inline flags anywhere (`^(?i)(abort|warn)?$`); Python's `re` wants them first,
  so a leading `^(?i)` becomes `(?i)^` (same language).
- `additionalProperties: false` on every object that lists `properties` and neither preserves
  unknown fields nor sets additionalProperties: the API server's strict field validation
  (kubectl's default) rejects unknown fields, so a typo must fail here too.
Only run by hand when the chart version changes; the tests read the derived files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from offline.kube_schema import strict_crd_schema

HERE = Path(__file__).resolve().parent
KINDS = ("podmonitor", "servicemonitor", "prometheusrule")


def derive(node: Any) -> Any:
    return strict_crd_schema(node)


def main(source: Path) -> None:
    for kind in KINDS:
        schema = derive(json.loads((source / f"{kind}.v1.schema.json").read_text()))
        (HERE / f"{kind}.v1.schema.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
