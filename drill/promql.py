"""Time compression of the drill's copy of the rules, on the PromQL syntax tree (promql-parser).

One drill second stands for `TIME_SCALE` production seconds. Divided by it: every `for:` and
`keep_firing_for:`, every range window (never below `MIN_RANGE_SECONDS`, so `rate()` still sees
several scrapes), subquery range and step, offset, and every number an age is compared with
(`time() - x > 3600`: a threshold in seconds). Strings, label matchers and other numbers are
nodes of other kinds, so they are never touched.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import promql_parser as pp

TIME_SCALE = 60.0
MIN_RANGE_SECONDS = 5.0
MIN_FOR_SECONDS = 1.0
DRILL_RULE_INTERVAL = "1s"
_ORDERING = (">", "<", ">=", "<=")


class CompressionError(RuntimeError):
    """A rule the drill cannot compress as it must (names the rule and what was expected)."""


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration such as `5m`, `1h30m`, `250ms`, `0s` (ValueError otherwise)."""
    text = text.strip()
    if text.lstrip("0") in ("ms", "s", "m", "h", "d", "w", "y"):  # zero, which promql-parser refuses
        return 0.0
    # As a range of the syntax tree: promql-parser 0.11's parse_duration() reads "250ms" as 250 µs.
    window = pp.parse(f"x[{text}]")
    assert isinstance(window, pp.MatrixSelector)
    return float(window.range.total_seconds())


def format_duration(seconds: float) -> str:
    """A Prometheus duration of `seconds`, to the millisecond (at least 1ms)."""
    return str(pp.display_duration(dt.timedelta(milliseconds=max(1, round(seconds * 1000)))))


def _scaled(value: dt.timedelta, scale: float, floor: float) -> dt.timedelta:
    seconds = value.total_seconds()
    sign = -1.0 if seconds < 0 else 1.0
    return dt.timedelta(milliseconds=round(sign * max(floor, abs(seconds) / scale) * 1000))


def _has_time_call(node: Any) -> bool:
    found = False

    def visit(n: Any) -> bool:
        nonlocal found
        if isinstance(n, pp.Call) and n.func.name == "time":
            found = True
            return False
        return True

    pp.walk(node, visit)
    return found


_MATCH_OPS = ((pp.MatchOp.Equal, "="), (pp.MatchOp.NotEqual, "!="), (pp.MatchOp.Re, "=~"), (pp.MatchOp.NotRe, "!~"))


def _match_op(op: Any) -> str:
    return next(text for known, text in _MATCH_OPS if op == known)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _offset(value: dt.timedelta | None) -> str:
    if value is None:
        return ""
    seconds = value.total_seconds()
    return f" offset {'-' if seconds < 0 else ''}{format_duration(abs(seconds))}"


def _selector(vs: Any, window: dt.timedelta | None = None) -> str:
    """PromQL text of a vector selector (with a range: a matrix selector).

    Written here because promql-parser's str() of a changed node does not escape label values.
    """
    if vs.at is not None:
        raise ValueError(f"the drill does not compress selectors with @: {vs.prettify()}")
    groups = [vs.matchers.matchers] if vs.matchers.matchers or not vs.matchers.or_matchers else []
    groups += list(vs.matchers.or_matchers)
    inner = " or ".join(",".join(f"{m.name}{_match_op(m.op)}{_quoted(m.value)}" for m in group) for group in groups)
    text = f"{vs.name or ''}{{{inner}}}" if inner or not vs.name else str(vs.name)
    if window is not None:
        text += f"[{format_duration(window.total_seconds())}]"
    return text + _offset(vs.offset)


@dataclass(frozen=True)
class CompressedExpr:
    text: str
    durations: int  # ranges, steps and offsets divided
    thresholds: tuple[tuple[float, float], ...]  # (before, after) of each compressed age threshold


def compress_expr(expr: str, scale: float = TIME_SCALE, min_range: float = MIN_RANGE_SECONDS) -> CompressedExpr:
    """`expr` with its durations and age thresholds divided by `scale` (see the module docstring)."""
    durations = 0
    thresholds: list[tuple[float, float]] = []

    # promql-parser's nodes are copies: a changed node goes back into the tree as a new parse of its text.
    def post(node: Any) -> Any:
        nonlocal durations
        if isinstance(node, pp.MatrixSelector):
            durations += 1
            return pp.parse(_selector(node.vector_selector, _scaled(node.range, scale, min_range)))
        if isinstance(node, pp.SubqueryExpr):
            if node.at is not None or node.range is None:
                raise ValueError(f"the drill compresses subqueries with a range and without @ only: {node.prettify()}")
            step = format_duration(_scaled(node.step, scale, 1.0).total_seconds()) if node.step is not None else ""
            durations += 1
            window = format_duration(_scaled(node.range, scale, min_range).total_seconds())
            offset = _offset(_scaled(node.offset, scale, 1.0) if node.offset is not None else None)
            return pp.parse(f"({node.expr.prettify()})[{window}:{step}]{offset}")
        if isinstance(node, pp.VectorSelector) and node.offset is not None:
            node.offset = _scaled(node.offset, scale, 1.0)
            durations += 1
            return pp.parse(_selector(node))
        if isinstance(node, pp.BinaryExpr) and str(node.op) in _ORDERING:
            sides = [node.lhs.prettify(), node.rhs.prettify()]
            for i, (number, other) in enumerate(((node.lhs, node.rhs), (node.rhs, node.lhs))):
                if isinstance(number, pp.NumberLiteral) and _has_time_call(other):
                    after = number.val / scale
                    thresholds.append((number.val, after))
                    sides[i] = f"{after:.15g}"
                    modifier = " bool" if node.modifier is not None and node.modifier.return_bool else ""
                    return pp.parse(f"{sides[0]} {node.op}{modifier} {sides[1]}")
        return None

    tree = pp.transform(pp.parse(expr), post_visit=post)
    return CompressedExpr(tree.prettify(), durations, tuple(thresholds))


@dataclass
class DrillRules:
    content: dict[str, Any]
    alerts: dict[str, dict[str, Any]]  # alertname -> the (compressed) rule
    longest_for: dict[str, float] = field(default_factory=dict)  # alertname -> compressed `for:` in seconds
    changes: list[str] = field(default_factory=list)


def compress_rules(rules: Mapping[str, Any], age_thresholds: Mapping[str, float], scale: float = TIME_SCALE) -> DrillRules:
    """The drill copy of a rendered rule file.

    `age_thresholds` names, per alert, the age threshold in seconds the settings give it (BackupTooOld:
    the RPO of settings.json). Each such alert must compare an age with exactly that number; the copy
    compares with it divided by `scale`.
    """
    content = copy.deepcopy(dict(rules))
    groups = content.get("groups") or []
    if not groups:
        raise CompressionError("prometheus/rules.yaml has no rule groups")
    alerts: dict[str, dict[str, Any]] = {}
    fors: dict[str, float] = {}
    found: dict[str, tuple[tuple[float, float], ...]] = {}
    windows = 0
    for group in groups:
        group["interval"] = DRILL_RULE_INTERVAL
        for rule in group.get("rules") or []:
            name = str(rule.get("alert") or rule.get("record"))
            try:
                compressed = compress_expr(str(rule["expr"]), scale)
            except ValueError as err:
                raise CompressionError(f"rule {name}: promql-parser cannot read its expression: {err}") from err
            windows += compressed.durations > 0
            rule["expr"] = compressed.text
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = format_duration(max(MIN_FOR_SECONDS, parse_duration(str(rule[key])) / scale))
            if "alert" in rule:
                alerts[name] = rule
                fors[name] = parse_duration(str(rule["for"])) if "for" in rule else 0.0
                found[name] = compressed.thresholds
    changes = [
        f"rules: time compressed {scale:g}x (one drill second = {scale:g} production seconds) on the PromQL syntax tree: "
        f"{sum(1 for r in alerts.values() if 'for' in r)} `for:` durations and the ranges, steps and offsets of {windows} expressions "
        f"divided by {scale:g} (windows at least {MIN_RANGE_SECONDS:g}s); every group evaluated every {DRILL_RULE_INTERVAL}",
    ]
    for name, thresholds in sorted(found.items()):
        if thresholds and name not in age_thresholds:
            changes.append(f"rules: {name} age threshold(s) {', '.join(f'{b:g}s -> {a:g}s' for b, a in thresholds)}")
    for name, expected in age_thresholds.items():
        if name not in alerts:
            continue
        before = [b for b, _a in found[name]]
        if not before or any(b != expected for b in before):
            raise CompressionError(
                f"{name} must compare an age (time() - ...) with {expected:g}s, the value of the settings; "
                f"it compares with {', '.join(f'{b:g}s' for b in before) or 'no number'}: {alerts[name]['expr']}"
            )
        changes.append(f"rules: {name} threshold {expected:g}s (from settings.json) -> {expected / scale:g}s")
    return DrillRules(content, alerts, fors, changes)
