"""Stand-in for the standard exporters of the cluster, for a local Prometheus on loopback.

kube-state-metrics, node-exporter, the kubelet (its own metrics and cAdvisor's), postgres-exporter
and redis-exporter are served from one HTTP server, each under its own path, with the metric
names and labels the real exporters use, so dashboards and rules that read them can be run
against a real Prometheus. A background thread advances the counters (CPU seconds, bytes, ...).
`scrape_configs()` gives one Prometheus job per exporter, named like kube-prometheus-stack's.
`push_backup_metrics()` pushes what the backup and drill jobs push to the Pushgateway.

Usage::

    with StandinExporters(namespace="ipa") as exporters:
        with prometheus(workdir, exporters.scrape_configs()) as prom: ...
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, push_to_gateway
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from components.metrics_contract import BACKUP, BACKUP_METRICS, BACKUP_TARGETS, BASE_BACKUP_METRICS, WAL_STREAM_METRICS
from components.topology import BACKEND_APP, CRONJOB_NAMES, GRAFANA_SERVICE, RELEASE_NAME, WAL_STREAM_JOB, WAL_STREAM_PVC
from components.topology import BACKUP as BACKUP_CRONJOB
from components.topology import DRILL as DRILL_CRONJOB
from devservices.httpserver import LoopbackServer, QuietHandler
from devservices.process import ServiceError, free_port

NODE = "aks-system-38217465-vmss000000"
NODE_IP = "10.224.0.4"
CPU_MODES = ("idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice")
GiB = 1024**3
TICK_SECONDS = 0.2

# Prometheus job name -> URL path on the stand-in server.
JOBS = {
    "kube-state-metrics": "/kube-state-metrics/metrics",
    "node-exporter": "/node-exporter/metrics",
    "kubelet": "/metrics/cadvisor",
    "kubelet-metrics": "/metrics",  # kubelet's own metrics (volume stats); in-cluster also job="kubelet"
    "postgres-exporter": "/postgres-exporter/metrics",
    "redis-exporter": "/redis-exporter/metrics",
    WAL_STREAM_JOB: "/ipa-wal-stream/metrics",  # the `ipa-backup wal-stream` pod's own metrics port
}


class _Exporters:
    """The metric families, one registry per exporter."""

    def __init__(
        self,
        namespace: str,
        backup_namespace: str,
        monitoring_namespace: str,
        database: str,
        now: float,
        backend_app: str = BACKEND_APP,
        cronjob_names: dict[str, str] | None = None,
    ) -> None:
        # The backend pods carry the label app=<backend_app> (rules and dashboards select on it); their container has that name too.
        self.backend_app = backend_app
        self.backend_pods = (f"{backend_app}-0", f"{backend_app}-1")
        self.cronjob_names = dict(cronjob_names or CRONJOB_NAMES)
        self.registries = {job: CollectorRegistry() for job in JOBS}
        ksm = self.registries["kube-state-metrics"]
        node = self.registries["node-exporter"]
        cadvisor = self.registries["kubelet"]
        kubelet = self.registries["kubelet-metrics"]
        pg = self.registries["postgres-exporter"]
        redis = self.registries["redis-exporter"]
        # The WAL stream's families, straight from the contract: a healthy stream a few seconds behind.
        self.wal = {m.name: Gauge(m.name, m.help, m.labels, registry=self.registries[WAL_STREAM_JOB]) for m in WAL_STREAM_METRICS}

        # --- kube-state-metrics -------------------------------------------------------------
        pod_labels = ["namespace", "pod", "uid"]
        self.pod_info = Gauge(
            "kube_pod_info",
            "Information about pod.",
            [
                "namespace",
                "pod",
                "uid",
                "host_ip",
                "pod_ip",
                "node",
                "created_by_kind",
                "created_by_name",
                "priority_class",
                "host_network",
            ],
            registry=ksm,
        )
        # Only the labels allowed by kube-state-metrics' metricLabelsAllowlist (pods=[app]) appear.
        self.pod_labels = Gauge(
            "kube_pod_labels", "Kubernetes labels converted to Prometheus labels.", [*pod_labels, "label_app"], registry=ksm
        )
        self.pod_ready = Gauge(
            "kube_pod_status_ready", "Describes whether the pod is ready to serve requests.", [*pod_labels, "condition"], registry=ksm
        )
        self.requests = Gauge(
            "kube_pod_container_resource_requests",
            "The number of requested request resource by a container.",
            [*pod_labels, "container", "node", "resource", "unit"],
            registry=ksm,
        )
        self.limits = Gauge(
            "kube_pod_container_resource_limits",
            "The number of requested limit resource by a container.",
            [*pod_labels, "container", "node", "resource", "unit"],
            registry=ksm,
        )
        self.restarts = Counter(
            "kube_pod_container_status_restarts",
            "The number of container restarts per container.",
            [*pod_labels, "container"],
            registry=ksm,
        )
        self.waiting = Gauge(
            "kube_pod_container_status_waiting_reason",
            "Describes the reason the container is currently in waiting state.",
            [*pod_labels, "container", "reason"],
            registry=ksm,
        )
        self.job_failed = Gauge(
            "kube_job_status_failed",
            "The number of pods which reached Phase Failed and the reason for failure.",
            ["namespace", "job_name", "reason"],
            registry=ksm,
        )
        self.job_failed_condition = Gauge(
            "kube_job_failed", "The job has failed its execution.", ["namespace", "job_name", "condition"], registry=ksm
        )
        self.job_succeeded = Gauge(
            "kube_job_status_succeeded", "The number of pods which reached Phase Succeeded.", ["namespace", "job_name"], registry=ksm
        )
        self.job_start = Gauge(
            "kube_job_status_start_time",
            "StartTime represents time when the job was acknowledged by the Job Manager.",
            ["namespace", "job_name"],
            registry=ksm,
        )
        self.job_owner = Gauge(
            "kube_job_owner",
            "Information about the Job's owner.",
            ["namespace", "job_name", "owner_kind", "owner_name", "owner_is_controller"],
            registry=ksm,
        )
        self.cron_last_success = Gauge(
            "kube_cronjob_status_last_successful_time",
            "LastSuccessfulTime keeps information of when was the last time the job was completed successfully.",
            ["namespace", "cronjob"],
            registry=ksm,
        )
        self.cron_last_schedule = Gauge(
            "kube_cronjob_status_last_schedule_time",
            "LastScheduleTime keeps information of when was the last time the job was successfully scheduled.",
            ["namespace", "cronjob"],
            registry=ksm,
        )

        # --- node-exporter -------------------------------------------------------------------
        self.node_cpu = Counter("node_cpu_seconds", "Seconds the CPUs spent in each mode.", ["cpu", "mode"], registry=node)
        self.mem_total = Gauge("node_memory_MemTotal_bytes", "Memory information field MemTotal_bytes.", registry=node)
        self.mem_available = Gauge("node_memory_MemAvailable_bytes", "Memory information field MemAvailable_bytes.", registry=node)
        self.net_rx = Counter("node_network_receive_bytes", "Network device statistic receive_bytes.", ["device"], registry=node)
        self.net_tx = Counter("node_network_transmit_bytes", "Network device statistic transmit_bytes.", ["device"], registry=node)
        fs_labels = ["device", "fstype", "mountpoint", "device_error"]
        self.fs_avail = Gauge(
            "node_filesystem_avail_bytes", "Filesystem space available to non-root users in bytes.", fs_labels, registry=node
        )
        self.fs_size = Gauge("node_filesystem_size_bytes", "Filesystem size in bytes.", fs_labels, registry=node)
        self.disk_read = Counter("node_disk_read_bytes", "The total number of bytes read successfully.", ["device"], registry=node)
        self.disk_written = Counter("node_disk_written_bytes", "The total number of bytes written successfully.", ["device"], registry=node)
        self.uname = Gauge(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            ["domainname", "machine", "nodename", "release", "sysname", "version"],
            registry=node,
        )

        # --- kubelet: cAdvisor and volume stats ------------------------------------------------
        container_labels = ["container", "id", "image", "name", "namespace", "pod"]
        self.cpu = Counter("container_cpu_usage_seconds", "Cumulative cpu time consumed in seconds.", container_labels, registry=cadvisor)
        self.cfs_periods = Counter(
            "container_cpu_cfs_periods", "Number of elapsed enforcement period intervals.", container_labels, registry=cadvisor
        )
        self.cfs_throttled = Counter(
            "container_cpu_cfs_throttled_periods", "Number of throttled period intervals.", container_labels, registry=cadvisor
        )
        self.working_set = Gauge("container_memory_working_set_bytes", "Current working set in bytes.", container_labels, registry=cadvisor)
        self.fs_reads = Counter(
            "container_fs_reads_bytes", "Cumulative count of bytes read.", [*container_labels, "device"], registry=cadvisor
        )
        self.fs_writes = Counter(
            "container_fs_writes_bytes", "Cumulative count of bytes written.", [*container_labels, "device"], registry=cadvisor
        )
        # Network counters exist per pod only (the pause container's network namespace): container="".
        self.pod_rx = Counter(
            "container_network_receive_bytes", "Cumulative count of bytes received.", [*container_labels, "interface"], registry=cadvisor
        )
        self.pod_tx = Counter(
            "container_network_transmit_bytes",
            "Cumulative count of bytes transmitted.",
            [*container_labels, "interface"],
            registry=cadvisor,
        )
        pvc_labels = ["namespace", "persistentvolumeclaim"]
        self.vol_used = Gauge("kubelet_volume_stats_used_bytes", "Number of used bytes in the volume", pvc_labels, registry=kubelet)
        self.vol_capacity = Gauge("kubelet_volume_stats_capacity_bytes", "Capacity in bytes of the volume", pvc_labels, registry=kubelet)
        self.vol_available = Gauge(
            "kubelet_volume_stats_available_bytes", "Number of available bytes in the volume", pvc_labels, registry=kubelet
        )

        # --- postgres-exporter and redis-exporter --------------------------------------------
        self.pg_up = Gauge(
            "pg_up",
            "Whether the last scrape of metrics from PostgreSQL was able to connect to the server (1 for yes, 0 for no).",
            registry=pg,
        )
        self.pg_backends = Gauge(
            "pg_stat_database_numbackends", "Number of backends currently connected to this database.", ["datid", "datname"], registry=pg
        )
        self.pg_size = Gauge("pg_database_size_bytes", "Disk space used by the database", ["datname"], registry=pg)
        self.pg_activity = Gauge(
            "pg_stat_activity_count",
            "number of connections in this state",
            ["application_name", "backend_type", "datname", "state", "usename"],
            registry=pg,
        )
        self.pg_max_connections = Gauge(
            "pg_settings_max_connections", "Sets the maximum number of concurrent connections.", ["server"], registry=pg
        )
        self.pg_lag = Gauge("pg_replication_lag_seconds", "Replication lag behind master in seconds", ["server"], registry=pg)
        # The replication_slot collector: one healthy slot, the WAL stream's.
        slot_labels = ["slot_name", "slot_type"]
        self.pg_slot_active = Gauge(
            "pg_replication_slot_slot_is_active", "whether the replication slot is active or not", slot_labels, registry=pg
        )
        self.pg_slot_safe_wal = Gauge(
            "pg_replication_slot_safe_wal_size_bytes",
            "number of bytes that can be written to WAL such that this slot is not in danger of getting in state lost",
            slot_labels,
            registry=pg,
        )
        self.pg_slot_wal_status = Gauge(
            "pg_replication_slot_wal_status", "availability of WAL files claimed by this slot", [*slot_labels, "wal_status"], registry=pg
        )
        self.redis_up = Gauge("redis_up", "Information about the Redis instance", registry=redis)
        self.redis_memory = Gauge("redis_memory_used_bytes", "memory_used_bytes metric", registry=redis)
        self.redis_memory_max = Gauge("redis_memory_max_bytes", "memory_max_bytes metric", registry=redis)
        self.redis_clients = Gauge("redis_connected_clients", "connected_clients metric", registry=redis)
        self.redis_maxclients = Gauge("redis_config_maxclients", "config_maxclients metric", registry=redis)
        self.redis_rejected = Counter("redis_rejected_connections", "rejected_connections metric", registry=redis)

        self._declare(namespace, backup_namespace, monitoring_namespace, database, now)

    def _declare(self, namespace: str, backup_namespace: str, monitoring_namespace: str, database: str, now: float) -> None:
        app = self.backend_app
        for index, pod in enumerate(self.backend_pods):
            uid = f"5b0c6d2e-0000-4000-8000-00000000000{index}"
            self.pod_info.labels(namespace, pod, uid, NODE_IP, f"10.244.0.{10 + index}", NODE, "StatefulSet", app, "", "false").set(1)
            self.pod_labels.labels(namespace, pod, uid, app).set(1)
            for condition, value in (("true", 1), ("false", 0), ("unknown", 0)):
                self.pod_ready.labels(namespace, pod, uid, condition).set(value)
            for gauge, cpu, memory in ((self.requests, 0.5, 512 * 1024**2), (self.limits, 1.0, GiB)):
                gauge.labels(namespace, pod, uid, app, NODE, "cpu", "core").set(cpu)
                gauge.labels(namespace, pod, uid, app, NODE, "memory", "byte").set(memory)
            self.restarts.labels(namespace, pod, uid, app)
            for reason in ("ContainerCreating", "CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError"):
                self.waiting.labels(namespace, pod, uid, app, reason).set(0)
            cid = f"/kubepods/burstable/pod{uid}"
            image = f"ipaopsacr.azurecr.io/{app}:1.4.2"
            self.working_set.labels(app, cid + "/c1", image, "c1", namespace, pod).set(300 * 1024**2 + index * 20 * 1024**2)
            self.pod_rx.labels("", cid, "", "", namespace, pod, "eth0")
            self.pod_tx.labels("", cid, "", "", namespace, pod, "eth0")
        # One finished backup and one finished drill Job, as the CronJobs leave them.
        ages = {BACKUP_CRONJOB: 600, DRILL_CRONJOB: 86400}  # the backup CronJob ran 10 minutes ago, the restore drill a day ago
        for cronjob, started in ((self.cronjob_names[part], now - age) for part, age in ages.items()):
            job = f"{cronjob}-{int(started) // 60}"
            self.job_succeeded.labels(backup_namespace, job).set(1)
            self.job_failed.labels(backup_namespace, job, "").set(0)
            for condition in ("true", "false", "unknown"):
                self.job_failed_condition.labels(backup_namespace, job, condition).set(1 if condition == "false" else 0)
            self.job_start.labels(backup_namespace, job).set(started)
            self.job_owner.labels(backup_namespace, job, "CronJob", cronjob, "true").set(1)
            self.cron_last_schedule.labels(backup_namespace, cronjob).set(started)
            self.cron_last_success.labels(backup_namespace, cronjob).set(started + 120)

        self.mem_total.set(16 * GiB)
        self.mem_available.set(9 * GiB)
        for device, fstype, mountpoint, size, avail in (
            ("/dev/sda1", "ext4", "/", 128 * GiB, 80 * GiB),
            ("tmpfs", "tmpfs", "/run", 2 * GiB, 2 * GiB),
        ):
            self.fs_size.labels(device, fstype, mountpoint, "0").set(size)
            self.fs_avail.labels(device, fstype, mountpoint, "0").set(avail)
        self.uname.labels("(none)", "x86_64", NODE, "5.15.0-1075-azure", "Linux", "#84-Ubuntu SMP").set(1)

        for pvc_namespace, pvc, capacity, used in (
            (monitoring_namespace, f"prometheus-{RELEASE_NAME}-prometheus-db-prometheus-{RELEASE_NAME}-prometheus-0", 50 * GiB, 21 * GiB),
            (monitoring_namespace, GRAFANA_SERVICE, 10 * GiB, 1 * GiB),
            (namespace, "data-ipa-postgres-0", 64 * GiB, 22 * GiB),
            (backup_namespace, WAL_STREAM_PVC, 20 * GiB, 1 * GiB),
        ):
            self.vol_capacity.labels(pvc_namespace, pvc).set(capacity)
            self.vol_used.labels(pvc_namespace, pvc).set(used)
            self.vol_available.labels(pvc_namespace, pvc).set(capacity - used)

        self.pg_up.set(1)
        self.pg_size.labels(database).set(20 * GiB)
        self.pg_backends.labels("16384", database).set(12)
        self.pg_activity.labels(app, "client backend", database, "active", "ipa").set(3)
        self.pg_activity.labels(app, "client backend", database, "idle", "ipa").set(9)
        self.pg_max_connections.labels("ipa-postgres:5432").set(100)
        self.pg_lag.labels("ipa-postgres:5432").set(0)
        self.pg_slot_active.labels("ipa_wal_stream", "physical").set(1)
        self.pg_slot_safe_wal.labels("ipa_wal_stream", "physical").set(15 * GiB)
        self.pg_slot_wal_status.labels("ipa_wal_stream", "physical", "reserved").set(1)
        self.wal["ipa_wal_stream_up"].set(1)
        self.wal["ipa_wal_stream_lag_seconds"].set(4)
        self.wal["ipa_wal_stream_lag_bytes"].set(256 * 1024)
        self.wal["ipa_wal_stream_uploaded_lsn"].set(0x3_0000_0000)
        self.wal["ipa_wal_last_upload_timestamp_seconds"].set(now - 4)
        self.redis_up.set(1)
        self.redis_memory.set(180 * 1024**2)
        self.redis_memory_max.set(GiB)
        self.redis_clients.set(14)
        self.redis_maxclients.set(10000)
        self.redis_rejected.inc(0)

    def tick(self, dt: float, namespace: str) -> None:
        """Advance every counter as a lightly loaded node would."""
        self.wal["ipa_wal_stream_uploaded_lsn"].inc(2e5 * dt)  # about 17 GB of WAL a day
        self.wal["ipa_wal_last_upload_timestamp_seconds"].set(time.time() - 4)
        for cpu in ("0", "1"):
            for mode, share in (("idle", 0.6), ("user", 0.25), ("system", 0.1), ("iowait", 0.05)):
                self.node_cpu.labels(cpu, mode).inc(share * dt)
            for mode in CPU_MODES[4:]:
                self.node_cpu.labels(cpu, mode).inc(0)
        for device, rate in (("eth0", 2e6), ("lo", 5e5)):
            self.net_rx.labels(device).inc(rate * dt)
            self.net_tx.labels(device).inc(rate * 0.6 * dt)
        self.disk_read.labels("sda").inc(4e5 * dt)
        self.disk_written.labels("sda").inc(1.2e6 * dt)
        app = self.backend_app
        for index, pod in enumerate(self.backend_pods):
            uid = f"5b0c6d2e-0000-4000-8000-00000000000{index}"
            cid = f"/kubepods/burstable/pod{uid}"
            labels = (app, cid + "/c1", f"ipaopsacr.azurecr.io/{app}:1.4.2", "c1", namespace, pod)
            self.cpu.labels(*labels).inc((0.2 + 0.05 * index) * dt)
            self.cfs_periods.labels(*labels).inc(10 * dt)  # 100ms periods
            self.cfs_throttled.labels(*labels).inc(0.3 * dt)
            self.fs_reads.labels(*labels, "/dev/sda").inc(1e4 * dt)
            self.fs_writes.labels(*labels, "/dev/sda").inc(5e4 * dt)
            self.pod_rx.labels("", cid, "", "", namespace, pod, "eth0").inc(3e5 * dt)
            self.pod_tx.labels("", cid, "", "", namespace, pod, "eth0").inc(8e5 * dt)


JOB_BY_PATH = {path: job for job, path in JOBS.items()}


class _Handler(QuietHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's method name
        job = JOB_BY_PATH.get(self.path.split("?")[0])
        if job is None:
            self.reply(404, b"not found\n")
        else:
            self.reply(200, generate_latest(self.server.owner.registries[job]), CONTENT_TYPE_LATEST)


class StandinExporters:
    """The stand-in exporters: `start()`, `stop()`, `url`, `scrape_configs()`; also a context manager."""

    def __init__(
        self,
        namespace: str = "ipa",
        backup_namespace: str = "ipa-backup",
        monitoring_namespace: str = "monitoring",
        database: str = "ipa",
        port: int | None = None,
        max_runtime_seconds: float = 3600.0,
        backend_app: str = BACKEND_APP,
        cronjob_names: dict[str, str] | None = None,
        wal_stream: bool = True,
    ) -> None:
        """Namespaces, database, backend app label and CronJob names as the render states them
        (settings.json, topology.json); the defaults are the dev stack's. `wal_stream=False` leaves the
        WAL stream's job out of `scrape_configs()`, for a caller that runs the real `ipa-backup wal-stream`."""
        self.namespace = namespace
        self.jobs = {job: path for job, path in JOBS.items() if wal_stream or job != WAL_STREAM_JOB}
        self.port = port or free_port()
        self.max_runtime_seconds = max_runtime_seconds
        self.exporters = _Exporters(namespace, backup_namespace, monitoring_namespace, database, time.time(), backend_app, cronjob_names)
        self._stop = threading.Event()
        self._server: LoopbackServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def scrape_configs(self, scrape_interval: str = "1s") -> list[dict[str, Any]]:
        """One Prometheus job per exporter (kubelet's two endpoints share job="kubelet", as in-cluster)."""
        configs = []
        for job, path in self.jobs.items():
            labels = {"instance": NODE} if job in ("node-exporter", "kubelet", "kubelet-metrics") else {}
            if job.startswith("kubelet"):
                labels["metrics_path"] = path  # as kube-prometheus-stack's kubelet ServiceMonitor adds it
            configs.append(
                {
                    "job_name": job,
                    "scrape_interval": scrape_interval,
                    "metrics_path": path,
                    # honor_labels: kube-state-metrics and cAdvisor series carry their own namespace/pod labels.
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{self.port}"], "labels": labels}],
                    "relabel_configs": [{"target_label": "job", "replacement": "kubelet" if job.startswith("kubelet") else job}],
                }
            )
        return configs

    def start(self) -> StandinExporters:
        try:
            self._server = LoopbackServer(self.port, _Handler, self.exporters)
        except OSError as err:
            raise ServiceError(f"stand-in exporters cannot listen on 127.0.0.1:{self.port}: {err}") from err
        self.exporters.tick(TICK_SECONDS, self.namespace)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._advance, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _advance(self) -> None:
        deadline = time.monotonic() + self.max_runtime_seconds
        while not self._stop.wait(TICK_SECONDS) and time.monotonic() < deadline:
            self.exporters.tick(TICK_SECONDS, self.namespace)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> StandinExporters:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def push_backup_metrics(
    pushgateway_url: str, now: float, backup_age_seconds: float = 900.0, drill_age_seconds: float = 86400.0, restore_seconds: float = 420.0
) -> None:
    """Push what a successful backup run and a successful drill push (the contract's backup metrics, job="ipa-backup")."""
    registry = CollectorRegistry()
    gauges = {m.name: Gauge(m.name, m.help, m.labels, registry=registry) for m in BACKUP_METRICS}
    backup_seconds, backup_bytes = {"postgres": 95.0, "redis": 12.0}, {"postgres": 2.1e9, "redis": 1.8e8}
    for target in BACKUP_TARGETS:
        gauges["ipa_backup_last_success_timestamp_seconds"].labels(target).set(now - backup_age_seconds)
        gauges["ipa_backup_duration_seconds"].labels(target).set(backup_seconds[target])
        gauges["ipa_backup_size_bytes"].labels(target).set(backup_bytes[target])
        gauges["ipa_restore_drill_duration_seconds"].labels(target).set(restore_seconds if target == "postgres" else restore_seconds / 10)
    gauges["ipa_restore_drill_last_success_timestamp_seconds"].set(now - drill_age_seconds)
    # And what the nightly base backup pushed (point-in-time recovery).
    base = {m.name: Gauge(m.name, m.help, m.labels, registry=registry) for m in BASE_BACKUP_METRICS}
    base["ipa_base_backup_last_success_timestamp_seconds"].set(now - 6 * 3600)
    base["ipa_base_backup_size_bytes"].set(9.4e9)
    base["ipa_base_backup_duration_seconds"].set(640)
    push_to_gateway(pushgateway_url, job=BACKUP, registry=registry)
