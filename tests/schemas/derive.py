"""Derives the Prometheus Operator CRD schemas in this folder from the operator's CRDs.

    .venv/bin/python tests/schemas/derive.py /path/to/reference/crds

Input: `<kind>.v1.schema.json`, i.e. spec.versions[served].schema.openAPIV3Schema of the CRDs
of prometheus-operator 0.93.1 (the CRDs of kube-prometheus-stack 88.5.3). Two changes:
- Go/RE2 puts inline flags anywhere (`^(?i)(abort|warn)?$`); Python's `re` wants them first,
  so a leading `^(?i)` becomes `(?i)^` (same language).
- `additionalProperties: false` on every object that lists `properties` and neither preserves
  unknown fields nor sets additionalProperties: the API server's strict field validation
  (kubectl's default) rejects unknown fields, so a typo must fail here too.
Only run by hand when the chart version changes; the tests read the derived files.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KINDS = ("podmonitor", "servicemonitor", "prometheusrule")


def derive(node: Any) -> Any:
    if isinstance(node, list):
        return [derive(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: derive(value) for key, value in node.items()}
    pattern = out.get("pattern")
    if isinstance(pattern, str):
        out["pattern"] = re.sub(r"^\^\(\?([a-z]+)\)", r"(?\1)^", pattern)
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def main(source: Path) -> None:
    for kind in KINDS:
        schema = derive(json.loads((source / f"{kind}.v1.schema.json").read_text()))
        (HERE / f"{kind}.v1.schema.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
