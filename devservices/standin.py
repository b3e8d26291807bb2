"""A stand-in IPA backend: serves every backend metric of the metrics contract (docs/monitoring/metrics.md) on loopback.

A background thread generates realistic traffic (HTTP requests, workflow executions, Claude calls
and tokens) at a configurable rate; fault switches change what that traffic looks like so that
alerts can be rehearsed against a real Prometheus:

| fault                | value                          | effect                                           |
|----------------------|--------------------------------|--------------------------------------------------|
| `errors_5xx`         | share 0..1                     | that share of requests answers 500/503           |
| `slow`               | seconds (0 = off)              | every request takes about that long              |
| `claude_errors`      | errors per second              | Claude API errors of every error type            |
| `execution_failures` | share 0..1                     | that share of executions fails or times out      |
| `token_multiplier`   | factor (1 = normal)            | multiplies Claude token usage (cost budget)      |
| `down`               | bool                           | stops serving /metrics (the target goes down)    |

Usage::

    with StandinBackend(traffic_per_second=20) as backend:
        backend.set_fault("errors_5xx", 0.5)
        requests.get(backend.url + "/metrics")
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from components.metrics_contract import CLAUDE_ERROR_TYPES, EXECUTION_STATUSES, METRICS, TOKEN_TYPES
from devservices.httpserver import LoopbackServer, QuietHandler
from devservices.process import ServiceError, free_port

# (method, handler, share of traffic, success status)
ENDPOINTS: tuple[tuple[str, str, float, str], ...] = (
    ("GET", "/api/v1/executions", 0.25, "200"),
    ("POST", "/api/v1/executions", 0.15, "201"),
    ("GET", "/api/v1/executions/{id}", 0.2, "200"),
    ("GET", "/api/v1/workflows", 0.1, "200"),
    ("GET", "/api/v1/workflows/{id}", 0.1, "200"),
    ("POST", "/api/v1/workflows", 0.05, "201"),
    ("GET", "/healthz", 0.15, "200"),
)
STATUSES = ("200", "201", "400", "404", "500", "503")
WORKFLOWS = ("invoice-intake", "email-triage", "report-digest")
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-5")
MODEL_SHARE = (0.6, 0.3, 0.1)
# Tokens per Claude call by type (rough shape of a document-processing workload).
TOKENS_PER_CALL = {"input": 1200, "output": 300, "cache_read": 2000, "cache_write": 400}

FAULTS: dict[str, float | bool] = {
    "errors_5xx": 0.0,
    "slow": 0.0,
    "claude_errors": 0.0,
    "execution_failures": 0.0,
    "token_multiplier": 1.0,
    "down": False,
}

TICK_SECONDS = 0.1


class StandinMetrics:
    """The backend's metric families in their own registry (never the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests: Counter = self._family("http_requests_total")
        self.http_duration: Histogram = self._family("http_request_duration_seconds")
        self.executions: Counter = self._family("ipa_executions_total")
        self.execution_duration: Histogram = self._family("ipa_execution_duration_seconds")
        self.in_progress: Gauge = self._family("ipa_executions_in_progress")
        self.claude_requests: Counter = self._family("claude_api_requests_total")
        self.claude_errors: Counter = self._family("claude_api_errors_total")
        self.claude_duration: Histogram = self._family("claude_api_request_duration_seconds")
        self.claude_tokens: Counter = self._family("claude_tokens_total")
        self._declare_all_series()

    def _family(self, name: str) -> Any:
        """A metric family with the type, help, labels and buckets of the contract."""
        metric = METRICS[name]
        if metric.type == "histogram":
            return Histogram(metric.name, metric.help, metric.labels, buckets=metric.buckets, registry=self.registry)
        kind = Counter if metric.type == "counter" else Gauge
        return kind(metric.name, metric.help, metric.labels, registry=self.registry)

    def _declare_all_series(self) -> None:
        # Every enumerated label value exists from the first scrape, as a real backend's would after warm-up.
        for method, handler, _share, _ok in ENDPOINTS:
            self.http_duration.labels(method, handler)
            for status in STATUSES:
                self.http_requests.labels(method, handler, status)
        for workflow in WORKFLOWS:
            self.execution_duration.labels(workflow)
            self.in_progress.labels(workflow).set(0)
            for status in EXECUTION_STATUSES:
                self.executions.labels(workflow, status)
        for model in MODELS:
            self.claude_requests.labels(model)
            self.claude_duration.labels(model)
            for error_type in CLAUDE_ERROR_TYPES:
                self.claude_errors.labels(model, error_type)
            for token_type in TOKEN_TYPES:
                self.claude_tokens.labels(model, token_type)


class _Handler(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's method name
        if self.path.split("?")[0] == "/metrics":
            self.reply(200, generate_latest(self.server.owner.metrics.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            self.reply(200, b"ok\n")
        else:
            self.reply(404, b"not found\n")


class StandinBackend:
    """The stand-in backend: `start()`, `stop()`, `url`, `port`, `set_fault(name, value)`; also a context manager."""

    def __init__(
        self,
        port: int | None = None,
        traffic_per_second: float = 20.0,
        executions_per_second: float = 1.0,
        claude_calls_per_second: float = 1.0,
        seed: int = 86,
        max_runtime_seconds: float = 3600.0,
    ) -> None:
        self.port = port or free_port()
        self.traffic_per_second = traffic_per_second
        self.executions_per_second = executions_per_second
        self.claude_calls_per_second = claude_calls_per_second
        self.max_runtime_seconds = max_runtime_seconds
        self.metrics = StandinMetrics()
        self.faults: dict[str, float | bool] = dict(FAULTS)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: LoopbackServer | None = None
        self._server_thread: threading.Thread | None = None
        self._traffic_thread: threading.Thread | None = None
        self._carry = {"http": 0.0, "exec": 0.0, "claude": 0.0, "claude_err": 0.0}
        self.generated = {"http": 0, "exec": 0, "claude": 0, "claude_err": 0}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> StandinBackend:
        self._stop.clear()
        self._serve()
        self._traffic_thread = threading.Thread(target=self._traffic_loop, name="standin-traffic", daemon=True)
        self._traffic_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._traffic_thread is not None:
            self._traffic_thread.join(timeout=5)
            self._traffic_thread = None
        self._unserve()

    def __enter__(self) -> StandinBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        if self._server is not None:
            return
        try:
            self._server = LoopbackServer(self.port, _Handler, self)
        except OSError as err:
            raise ServiceError(f"stand-in backend cannot listen on 127.0.0.1:{self.port}: {err}") from err
        self._server_thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._server_thread.start()

    def _unserve(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._server_thread is not None:
            self._server_thread.join(timeout=5)
        self._server = None
        self._server_thread = None

    @property
    def serving(self) -> bool:
        return self._server is not None

    # --- faults ----------------------------------------------------------------------------------

    def set_fault(self, name: str, value: float | bool) -> None:
        """Switch a fault on or off (see the module docstring); unknown names are an error."""
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self.faults[name] = value
        if name == "down":
            if value:
                self._unserve()
            else:
                self._serve()

    def clear_faults(self) -> None:
        for name, value in FAULTS.items():
            self.set_fault(name, value)

    # --- traffic ---------------------------------------------------------------------------------

    def _traffic_loop(self) -> None:
        deadline = time.monotonic() + self.max_runtime_seconds
        last = time.monotonic()
        while not self._stop.wait(TICK_SECONDS) and time.monotonic() < deadline:
            now = time.monotonic()
            self.tick(now - last)
            last = now

    def _count(self, key: str, per_second: float, dt: float) -> int:
        # Fractional carry keeps the long-run rate exact at any tick length.
        self._carry[key] += per_second * dt
        whole = int(self._carry[key])
        self._carry[key] -= whole
        self.generated[key] += whole
        return whole

    def tick(self, dt: float) -> None:
        """Generate `dt` seconds worth of traffic (called by the traffic thread; public for tests)."""
        with self._lock:
            faults = dict(self.faults)
        m, rng = self.metrics, self._rng
        error_share = float(faults["errors_5xx"])
        slow = float(faults["slow"])
        for _ in range(self._count("http", self.traffic_per_second, dt)):
            method, handler, ok = self._pick_endpoint()
            roll = rng.random()
            if roll < error_share:
                status = rng.choice(("500", "503"))
            elif roll < error_share + 0.002:
                status = rng.choice(("500", "503"))  # a trickle of baseline errors
            elif roll < error_share + 0.03:
                status = "404"
            elif roll < error_share + 0.05:
                status = "400"
            else:
                status = ok
            latency = slow * rng.uniform(0.9, 1.3) if slow > 0 else rng.lognormvariate(-2.6, 0.7)
            m.http_requests.labels(method, handler, status).inc()
            m.http_duration.labels(method, handler).observe(latency)

        failure_share = float(faults["execution_failures"])
        for _ in range(self._count("exec", self.executions_per_second, dt)):
            workflow = rng.choice(WORKFLOWS)
            roll = rng.random()
            if roll < failure_share:
                status = rng.choice(("failure", "timeout"))
            elif roll < failure_share + 0.003:
                status = rng.choice(("failure", "timeout"))  # a trickle of baseline failures
            elif roll < failure_share + 0.01:
                status = "cancelled"
            else:
                status = "success"
            m.executions.labels(workflow, status).inc()
            m.execution_duration.labels(workflow).observe(rng.lognormvariate(3.0, 0.6))
        for workflow in WORKFLOWS:
            m.in_progress.labels(workflow).set(rng.randint(0, 4))

        multiplier = float(faults["token_multiplier"])
        for _ in range(self._count("claude", self.claude_calls_per_second, dt)):
            model = rng.choices(MODELS, weights=MODEL_SHARE)[0]
            m.claude_requests.labels(model).inc()
            m.claude_duration.labels(model).observe(rng.lognormvariate(1.0, 0.5))
            for token_type, mean in TOKENS_PER_CALL.items():
                m.claude_tokens.labels(model, token_type).inc(int(mean * multiplier * rng.uniform(0.5, 1.5)))
        # Baseline: a rare error (0.005/s) well below any alert threshold; the fault adds its rate on top.
        for _ in range(self._count("claude_err", 0.005 + float(faults["claude_errors"]), dt)):
            model = rng.choices(MODELS, weights=MODEL_SHARE)[0]
            m.claude_requests.labels(model).inc()
            m.claude_errors.labels(model, rng.choice(CLAUDE_ERROR_TYPES)).inc()

    def _pick_endpoint(self) -> tuple[str, str, str]:
        roll = self._rng.random()
        acc = 0.0
        for method, handler, share, ok in ENDPOINTS:
            acc += share
            if roll < acc:
                return method, handler, ok
        method, handler, _share, ok = ENDPOINTS[-1]
        return method, handler, ok


def main() -> None:
    """Run the stand-in in the foreground: `python -m devservices.standin [port]`."""
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else None
    with StandinBackend(port=port) as backend:
        print(f"stand-in backend on {backend.url}/metrics (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)


if __name__ == "__main__":
    main()
