"""Prometheus, Alertmanager and Pushgateway on 127.0.0.1 free ports, for tests and the drill.

Each context manager starts the real program from .tools/bin (see devservices.tools) in a fresh
directory under `workdir`, waits for its /-/ready endpoint, yields a small client and stops the
process on exit. Example:

    with pushgateway(tmp) as pg, alertmanager(tmp, am_yaml) as am, prometheus(
        tmp, [{"job_name": "pg", "honor_labels": True, "static_configs": [{"targets": [pg.address]}]}],
        rule_files=[rules_yaml], alertmanager_url=am.url,
    ) as prom:
        prom.wait_for_targets_up()
        prom.query("up")
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import yaml

from devservices.process import ManagedProcess, ServiceError, free_port
from devservices.tools import INSTALL_HINT, tool

HTTP_TIMEOUT = 10.0
# Debian's alertmanager reads its default notification templates from this fixed path and
# refuses every configuration without them; the setup script installs them on Debian 12.
DEBIAN_AM_TEMPLATES = Path("/usr/share/prometheus/alertmanager/default.tmpl")

T = TypeVar("T")


def _poll(probe: Callable[[], T | None], timeout: float, describe: Callable[[], str]) -> T:
    """Call `probe` every 0.25 s until it returns something other than None, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.0f}s: {describe()}")
        time.sleep(0.25)


class _Service:
    """A started process plus an HTTP session to its base URL."""

    def __init__(self, name: str, process: ManagedProcess, port: int, config_path: Path | None) -> None:
        self.name = name
        self.process = process
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        self.config_path = config_path
        self.session = requests.Session()

    def _get(self, path: str, **params: Any) -> Any:
        response = self.session.get(self.url + path, params=params, timeout=HTTP_TIMEOUT)
        return self._json(response)

    def _json(self, response: requests.Response) -> Any:
        if response.status_code >= 300:
            raise ServiceError(f"{self.name} {response.request.method} {response.url}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def ready(self) -> bool:
        """True when /-/ready answers 200."""
        try:
            return self.session.get(self.url + "/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def reload(self) -> None:
        """Reread the configuration file (and, for Prometheus, its rule files); fails if it is invalid."""
        response = self.session.post(self.url + "/-/reload", timeout=HTTP_TIMEOUT)
        if response.status_code != 200:
            raise ServiceError(
                f"{self.name} reload failed: HTTP {response.status_code}: {response.text.strip()}\n{self.process.log_tail(10)}"
            )


class Prometheus(_Service):
    """Client of a running Prometheus (HTTP API v1)."""

    def _api(self, path: str, **params: Any) -> Any:
        body = self._get("/api/v1/" + path, **params)
        if body.get("status") != "success":
            raise ServiceError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[Any]:
        """Instant query; the `result` list (for a vector: dicts with `metric` and `value`)."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        return list(self._api("query", **params)["result"])

    def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        """Range query over unix times; dicts with `metric` and `values`."""
        return list(self._api("query_range", query=promql, start=start, end=end, step=step)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing): dicts with `labels`, `annotations`, `state`, `activeAt`."""
        return list(self._api("alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        """Loaded rule groups with each rule's `health`, `lastError` and `state`."""
        return list(self._api("rules")["groups"])

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with `health`, `lastError` and `labels`."""
        return list(self._api("targets", state="active")["activeTargets"])

    def wait_for_targets_up(self, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least `count` targets are active and every active target is up."""

        def probe() -> list[dict[str, Any]] | None:
            targets = self.targets()
            if len(targets) >= count and all(t["health"] == "up" for t in targets):
                return targets
            return None

        def describe() -> str:
            states = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.targets()]
            return f"prometheus targets not all up (want >= {count}): {states}"

        return _poll(probe, timeout, describe)

    def wait_for_series(self, promql: str, timeout: float = 30.0) -> list[Any]:
        """Wait until an instant query returns a non-empty result; return it."""
        return _poll(lambda: self.query(promql) or None, timeout, lambda: f"no result for {promql!r}")

    def wait_for_alert(self, alertname: str, state: str = "firing", timeout: float = 60.0) -> dict[str, Any]:
        """Wait until an alert named `alertname` is in `state` (`pending` or `firing`); return it."""

        def probe() -> dict[str, Any] | None:
            for alert in self.alerts():
                if alert["labels"].get("alertname") == alertname and alert["state"] == state:
                    return alert
            return None

        return _poll(probe, timeout, lambda: f"alert {alertname} not {state}; active: {self.alerts()}")


class Alertmanager(_Service):
    """Client of a running Alertmanager (API v2)."""

    def alerts(self, active: bool = True, silenced: bool = True, inhibited: bool = True) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds: dicts with `labels`, `annotations`, `status`, `receivers`."""
        flags = {"active": active, "silenced": silenced, "inhibited": inhibited}
        return list(self._get("/api/v2/alerts", **{k: str(v).lower() for k, v in flags.items()}))

    def wait_for_alert(self, alertname: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until Alertmanager holds an alert named `alertname`; return it."""

        def probe() -> dict[str, Any] | None:
            return next((a for a in self.alerts() if a["labels"].get("alertname") == alertname), None)

        return _poll(probe, timeout, lambda: f"alertmanager has no alert {alertname}; it has: {self.alerts()}")

    def post_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        """Send alerts the way Prometheus does (each needs `labels`; `annotations`, `startsAt` optional)."""
        response = self.session.post(self.url + "/api/v2/alerts", json=list(alerts), timeout=HTTP_TIMEOUT)
        self._json(response)


class Pushgateway(_Service):
    """A running Pushgateway; push to `url + "/metrics/job/<job>"`, scrape `address` with honor_labels."""


def _start(name: str, argv: list[str], service_dir: Path, port: int, timeout: float) -> ManagedProcess:
    process = ManagedProcess(name, argv, service_dir / f"{name}.log", cwd=service_dir).start()
    ready_url = f"http://127.0.0.1:{port}/-/ready"
    try:
        process.wait_until(lambda: requests.get(ready_url, timeout=2).status_code == 200, timeout, what=f"ready on 127.0.0.1:{port}")
    except BaseException:
        process.stop()
        raise
    return process


def prometheus_config(
    scrape_configs: Sequence[dict[str, Any]],
    rule_files: Sequence[Path],
    alertmanager_url: str | None,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
) -> dict[str, Any]:
    """The prometheus.yml content `prometheus()` runs with."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": list(scrape_configs),
    }
    if alertmanager_url:
        parts = urlsplit(alertmanager_url)
        target: dict[str, Any] = {"scheme": parts.scheme or "http", "api_version": "v2", "static_configs": [{"targets": [parts.netloc]}]}
        if parts.path.strip("/"):
            target["path_prefix"] = parts.path
        config["alerting"] = {"alertmanagers": [target]}
    return config


@contextmanager
def prometheus(
    workdir: Path,
    scrape_configs: Sequence[dict[str, Any]],
    rule_files: Sequence[Path] = (),
    alertmanager_url: str | None = None,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    resend_delay: str = "1s",
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> Iterator[Prometheus]:
    """Run Prometheus with these scrape configs and rule files, sending alerts to `alertmanager_url`.

    `resend_delay` is short (Prometheus' default is 1m) because the first notification of an alert
    that fires right at start-up is dropped while the Alertmanager is still being discovered.
    The lifecycle API is on, so after rewriting a rule file (or `config_path`) call `.reload()`.
    """
    service_dir = Path(tempfile.mkdtemp(prefix="prometheus-", dir=workdir))
    config_path = service_dir / "prometheus.yml"
    config = prometheus_config(scrape_configs, rule_files, alertmanager_url, scrape_interval, evaluation_interval)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [
        tool("prometheus"),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={service_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        f"--rules.alert.resend-delay={resend_delay}",
        *extra_args,
    ]
    process = _start("prometheus", argv, service_dir, port, timeout)
    client = Prometheus("prometheus", process, port, config_path)
    try:
        yield client
    finally:
        client.session.close()
        process.stop()


@contextmanager
def alertmanager(workdir: Path, config_path: Path, extra_args: Sequence[str] = (), timeout: float = 30.0) -> Iterator[Alertmanager]:
    """Run a single Alertmanager (no clustering) with this configuration file."""
    if not DEBIAN_AM_TEMPLATES.is_file():
        raise ServiceError(f"alertmanager needs its default templates at {DEBIAN_AM_TEMPLATES}: {INSTALL_HINT}")
    service_dir = Path(tempfile.mkdtemp(prefix="alertmanager-", dir=workdir))
    port = free_port()
    argv = [
        tool("alertmanager"),
        f"--config.file={Path(config_path).resolve()}",
        f"--storage.path={service_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        *extra_args,
    ]
    process = _start("alertmanager", argv, service_dir, port, timeout)
    client = Alertmanager("alertmanager", process, port, Path(config_path))
    try:
        yield client
    finally:
        client.session.close()
        process.stop()


@contextmanager
def pushgateway(workdir: Path, extra_args: Sequence[str] = (), timeout: float = 30.0) -> Iterator[Pushgateway]:
    """Run a Pushgateway keeping pushed metrics in memory."""
    service_dir = Path(tempfile.mkdtemp(prefix="pushgateway-", dir=workdir))
    port = free_port()
    argv = [tool("pushgateway"), f"--web.listen-address=127.0.0.1:{port}", *extra_args]
    process = _start("pushgateway", argv, service_dir, port, timeout)
    client = Pushgateway("pushgateway", process, port, None)
    try:
        yield client
    finally:
        client.session.close()
        process.stop()
