"""The state every part of a drill run shares: its input, clock, budget, randomness and results."""

from __future__ import annotations

import datetime as dt
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drill.rendered import Rendered
from drill.report import Report, Timeline

TOTAL_BUDGET_SECONDS = 14 * 60  # the limit is 15 minutes, with a margin for the report
POLL_SECONDS = 0.25


@dataclass
class RunContext:
    rendered: Rendered
    out_dir: Path
    seed: int
    started: float = field(default_factory=time.time)
    report: Report = field(default_factory=Report)
    timeline: Timeline = field(init=False)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.timeline = Timeline(self.started)
        self.rng = random.Random(self.seed)

    @property
    def work(self) -> Path:
        return self.out_dir / "work"

    def say(self, message: str) -> None:
        print(f"[{time.time() - self.started:6.1f}s] {message}", flush=True)

    def remaining(self) -> float:
        return TOTAL_BUDGET_SECONDS - (time.time() - self.started)

    def wait_for(self, condition: Callable[[], bool], timeout: float, step: float = POLL_SECONDS) -> bool:
        """Poll `condition` until it holds or `timeout` (capped by the run's budget) passes; its last value."""
        deadline = time.monotonic() + max(0.0, min(timeout, self.remaining()))
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(step)
        return condition()


def rfc3339_seconds(text: str) -> float:
    """Unix time of the RFC 3339 timestamps of Prometheus' and Alertmanager's APIs (nanoseconds cut to microseconds)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(text).timestamp()
