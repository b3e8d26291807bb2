"""The mock test harness.

`run_stack("dev")` runs __main__.py under Pulumi's mocks with Pulumi.dev.yaml loaded the way
the CLI loads it (Pulumi.yaml defaults applied, secrets replaced by placeholders), with a fresh
event loop and fresh mocks, preview=False so apply() callbacks run. `run_stack(..., program=f)`
runs a callable instead: a test of one component builds only that component, as __main__.py
does (`X("x", XArgs.from_settings(load_settings()), upstream=...)`), with the other components'
outputs given as plain values; a test of the wiring runs the whole program. A test that used the
harness but during which no resource (beyond component wrappers) was declared and nothing was
exported fails: a mock test that declares nothing checks nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from components.settings import Settings, parse_settings
from offline.runner import Run, run_program
from offline.stackconfig import load_stack_config, stack_file

STACKS = ("dev", "prod")


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> tuple[dict[str, str], list[str]]:
    """Config of a stack as the CLI passes it, with `{"key": value}` overrides (CLI strings or data)."""
    import json

    config, secret_keys = load_stack_config(stack_file(stack))
    for key, value in (overrides or {}).items():
        full_key = key if ":" in key else f"ipa-ops:{key}"
        config[full_key] = value if isinstance(value, str) else json.dumps(value)
    return config, secret_keys


def stack_settings(stack: str, overrides: dict[str, Any] | None = None) -> Settings:
    """The typed settings of a stack, for pure-function tests."""
    return parse_settings(stack_config(stack, overrides)[0])


RunStack = Callable[..., Run]


@pytest.fixture
def run_stack() -> Iterator[RunStack]:
    runs: list[Run] = []

    def run(stack: str, overrides: dict[str, Any] | None = None, program: Callable[[], object] | None = None) -> Run:
        config, secret_keys = stack_config(stack, overrides)
        result = run_program(stack, config, secret_keys, **({"main": program} if program else {}))
        runs.append(result)
        return result

    yield run
    guard_recorded(runs)


def guard_recorded(runs: list[Run]) -> None:
    """Fails the test when it ran the program but nothing was declared: no resource other than a
    ComponentResource wrapper, and no stack output."""
    if runs and not any(any(r.custom for r in run.recorded) or run.exports for run in runs):
        pytest.fail("no resource was recorded during this test: the mock test checked nothing")


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Callable[[str], Any]:
    """`rendered("dev")` is the folder of a fresh offline render of that stack (docs/operations/render.md),
    made once per test run, for the validators (promtool, amtool, schemas). Under pytest-xdist the
    workers share one render per stack (the first makes it under a lock): each costs seconds."""
    import fcntl
    from pathlib import Path

    from offline.render import render

    # The base temp folder is per worker; its parent is this run's, shared by the workers.
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    cache: dict[str, Path] = {}

    def get(stack: str) -> Path:
        if stack not in cache:
            out = shared / "renders" / stack
            out.parent.mkdir(exist_ok=True)
            with open(shared / "renders" / f"{stack}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                done = shared / "renders" / f"{stack}.done"
                if not done.exists():
                    run = render(stack, stack_file(stack), out)
                    assert run.recorded, f"the {stack} render declared no resource"
                    done.touch()
            cache[stack] = out
        return cache[stack]

    return get
