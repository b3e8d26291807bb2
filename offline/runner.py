"""Runs __main__.py under the recording mocks, as `pulumi up` would run it, minus the cloud."""

from __future__ import annotations

import asyncio
import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor, set_mocks
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.settings import PROJECT
from offline.mocks import Recorded, RecordingMocks, RecordingMonitor
from offline.stackconfig import REPO_ROOT

MAIN = REPO_ROOT / "__main__.py"


@dataclass
class Run:
    stack: str
    recorded: list[Recorded]
    exports: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.recorded if r.type == typ]

    def one(self, typ: str, name: str | None = None) -> Recorded:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r.name for r in found]}"
        return found[0]


def start_runtime(stack: str, config: dict[str, str], secret_keys: list[str]) -> RecordingMocks:
    """A fresh event loop, fresh mocks and fresh config, with preview=False so apply() runs."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    runtime_settings.ROOT.set(None)
    mocks = RecordingMocks()
    monitor: MockMonitor = RecordingMonitor(mocks)
    set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    runtime_config.set_all_config(dict(config), secret_keys)
    return mocks


def run_program(stack: str, config: dict[str, str], secret_keys: list[str], main: Path | Callable[[], object] = MAIN) -> Run:
    """Runs the program (or any callable that declares resources) to completion and returns
    every recorded resource and the stack exports."""
    mocks = start_runtime(stack, config, secret_keys)

    def program() -> None:
        if callable(main):
            main()
        else:
            runpy.run_path(str(main), run_name="__main__")

    loop = asyncio.get_event_loop()
    try:
        _sync_await(run_pulumi_func(program))
        root = runtime_settings.get_root_resource()
        exports: dict[str, Any] = {}
        outputs = getattr(root, "outputs", None) or {}
        for key, value in outputs.items():
            exports[key] = _sync_await(pulumi.Output.from_input(value).future())
    finally:
        loop.close()
    return Run(stack=stack, recorded=list(mocks.recorded), exports=exports)
