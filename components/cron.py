"""A small parser for the 5-field cron expressions a Kubernetes CronJob accepts.

It exists to answer one question the RPO check asks: what is the longest gap between
two runs of a schedule? The answer is computed exactly over an 8-year window, which
covers every leap-year and weekday combination that matters for a backup schedule.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}

# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


class CronError(ValueError):
    """The expression is not a valid 5-field cron schedule."""


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    dom_star: bool
    dow_star: bool

    def runs_on(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        dow = (day.isoweekday() % 7) in self.days_of_week
        # Vixie-cron rule, also Kubernetes': when both day fields are restricted, either may match.
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def longest_gap_minutes(self, start: dt.date = dt.date(2024, 1, 1), years: int = 8) -> int:
        """The longest time between two consecutive runs, in minutes (wall clock, no DST shifts)."""
        times = sorted(h * 60 + m for h in self.hours for m in self.minutes)
        within_day = max((b - a for a, b in itertools.pairwise(times)), default=0)
        longest = within_day
        previous: int | None = None
        total_days = (dt.date(start.year + years, start.month, start.day) - start).days
        for offset in range(total_days):
            if not self.runs_on(start + dt.timedelta(days=offset)):
                continue
            if previous is not None:
                longest = max(longest, (offset - previous) * 1440 + times[0] - times[-1])
            previous = offset
        if previous is None:
            raise CronError(f"{self.expression!r} never runs")
        return longest


def _parse_value(text: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    value = names.get(text.lower()) if names else None
    if value is None:
        if not text.isdigit():
            raise CronError(f"{field} field: {text!r} is not a number")
        value = int(text)
    if not low <= value <= high:
        raise CronError(f"{field} field: {value} is outside {low}-{high}")
    return value


def _parse_field(text: str, field: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field} field: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first = _parse_value(a, low, high, names, field)
            last = _parse_value(b, low, high, names, field)
            if first > last:
                raise CronError(f"{field} field: range {base!r} runs backwards")
        else:
            first = _parse_value(base, low, high, names, field)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse_cron(expression: str) -> CronSchedule:
    text = _MACROS.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"found {len(parts)} fields")
    parsed = [_parse_field(part, name, low, high, names) for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)]
    days_of_week = frozenset(d % 7 for d in parsed[4])  # 7 is Sunday too
    return CronSchedule(
        expression=expression,
        minutes=parsed[0],
        hours=parsed[1],
        days_of_month=parsed[2],
        months=parsed[3],
        days_of_week=days_of_week,
        dom_star=parts[2].startswith(("*", "?")),
        dow_star=parts[4].startswith(("*", "?")),
    )
