"""System Resources: CPU, memory, network and disk of the ipa-backend pods, the nodes, the volumes
and the state stores, from cAdvisor/kubelet, node-exporter, kube-state-metrics and the
PostgreSQL and Redis exporters."""

from __future__ import annotations

from typing import Any

from components.rules.groups import backend_pods
from components.settings import Settings
from components.topology import BACKEND_APP, SYSTEM_DASHBOARD
from dashboards.common import Board, Query, datasource_variable, floor_steps, graph, limit_steps, query_variable, single

UID = SYSTEM_DASHBOARD
PODS = 'namespace="$namespace"'
CONTAINERS = f'{PODS}, container!="", container!="POD"'
NODES = 'instance=~"$instance"'
# Virtual and loopback interfaces would count pod traffic twice.
PHYSICAL_NICS = 'device!~"lo|veth.*|cali.*|azv.*|cni.*|flannel.*|docker.*|br-.*"'
REAL_FILESYSTEMS = 'fstype!~"tmpfs|overlay|squashfs|nsfs|ramfs"'
UTILISATION = limit_steps(0.8, 0.9)


READY = f'kube_pod_status_ready{{{PODS}, condition="true"}}'
RESTARTS = f"increase(kube_pod_container_status_restarts_total{{{PODS}}}[$__range])"


def backend(expr: str) -> str:
    """`expr` kept for the ipa-backend pods only: found by their label app=ipa-backend, not by name."""
    return f"{expr} * on (namespace, pod) group_left () {backend_pods('$namespace')}"


def per_pod(expr: str) -> str:
    return f"sum by (pod) ({backend(expr)})"


def build(settings: Settings) -> dict[str, Any]:
    board = Board(
        settings,
        UID,
        "CPU, memory, network and disk of the ipa-backend pods, the nodes, persistent volumes and the PostgreSQL and Redis state stores.",
        [
            datasource_variable(),
            query_variable(
                "namespace",
                "Namespace",
                f'label_values(kube_pod_labels{{label_app="{BACKEND_APP}"}}, namespace)',
                "Namespace of the ipa-backend pods.",
                default=settings.backend_namespace,
            ),
            query_variable(
                "instance", "Node", "label_values(node_uname_info, instance)", "Nodes to show (node-exporter instances).", multi=True
            ),
        ],
    )

    board.row("ipa-backend pods")
    board.add(
        graph(
            settings,
            "CPU by pod (cores)",
            "CPU cores each backend pod uses, with its requests and limits.",
            "short",
            [
                Query(per_pod(f"rate(container_cpu_usage_seconds_total{{{CONTAINERS}}}[$__rate_interval])"), "{{pod}}"),
                Query(per_pod(f'kube_pod_container_resource_requests{{{PODS}, resource="cpu"}}'), "request {{pod}}"),
                Query(per_pod(f'kube_pod_container_resource_limits{{{PODS}, resource="cpu"}}'), "limit {{pod}}"),
            ],
        )
    )
    board.add(
        graph(
            settings,
            "CPU throttling by pod",
            "Share of CFS periods in which the pod hit its CPU limit; throttling adds latency.",
            "percentunit",
            [
                Query(
                    per_pod(f"rate(container_cpu_cfs_throttled_periods_total{{{CONTAINERS}}}[$__rate_interval])")
                    + f" / (sum by (pod) (rate(container_cpu_cfs_periods_total{{{CONTAINERS}}}[$__rate_interval])) > 0)",
                    "{{pod}}",
                )
            ],
            limit_steps(0.1, 0.25),
            max_value=1,
        )
    )
    board.add(
        graph(
            settings,
            "Memory by pod",
            "Working-set memory of each backend pod (what the OOM killer counts), with requests and limits.",
            "bytes",
            [
                Query(per_pod(f"container_memory_working_set_bytes{{{CONTAINERS}}}"), "{{pod}}"),
                Query(per_pod(f'kube_pod_container_resource_requests{{{PODS}, resource="memory"}}'), "request {{pod}}"),
                Query(per_pod(f'kube_pod_container_resource_limits{{{PODS}, resource="memory"}}'), "limit {{pod}}"),
            ],
        )
    )
    board.add(
        graph(
            settings,
            "Network by pod",
            "Bytes per second each backend pod receives and sends.",
            "Bps",
            [
                Query(per_pod(f"rate(container_network_receive_bytes_total{{{PODS}}}[$__rate_interval])"), "in {{pod}}"),
                Query(per_pod(f"rate(container_network_transmit_bytes_total{{{PODS}}}[$__rate_interval])"), "out {{pod}}"),
            ],
        )
    )
    board.add(
        graph(
            settings,
            "Container disk I/O by pod",
            "Bytes per second each backend pod reads from and writes to its disks.",
            "Bps",
            [
                Query(per_pod(f"rate(container_fs_reads_bytes_total{{{CONTAINERS}}}[$__rate_interval])"), "read {{pod}}"),
                Query(per_pod(f"rate(container_fs_writes_bytes_total{{{CONTAINERS}}}[$__rate_interval])"), "write {{pod}}"),
            ],
        )
    )
    board.add(
        single(
            settings, "Pods ready", "Backend pods whose readiness probe passes.", "short", Query(f"sum({backend(READY)})"), floor_steps(1)
        ),
        6,
        8,
    )
    board.add(
        single(
            settings,
            "Container restarts (time range)",
            "Container restarts of backend pods in the selected time range; crash loops show here.",
            "short",
            Query(f"sum({backend(RESTARTS)})"),
            limit_steps(1, 5),
        ),
        6,
        8,
    )

    board.row("Nodes")
    board.add(
        graph(
            settings,
            "Node CPU utilisation",
            "Share of each node's CPU time that is not idle.",
            "percentunit",
            [Query(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{{NODES}, mode="idle"}}[$__rate_interval]))', "{{instance}}")],
            UTILISATION,
            max_value=1,
        )
    )
    board.add(
        graph(
            settings,
            "Node memory utilisation",
            "Share of each node's memory not available to new processes.",
            "percentunit",
            [Query(f"1 - node_memory_MemAvailable_bytes{{{NODES}}} / node_memory_MemTotal_bytes{{{NODES}}}", "{{instance}}")],
            UTILISATION,
            max_value=1,
        )
    )
    board.add(
        graph(
            settings,
            "Node network",
            "Bytes per second through each node's physical interfaces.",
            "Bps",
            [
                Query(
                    f"sum by (instance) (rate(node_network_receive_bytes_total{{{NODES}, {PHYSICAL_NICS}}}[$__rate_interval]))",
                    "in {{instance}}",
                ),
                Query(
                    f"sum by (instance) (rate(node_network_transmit_bytes_total{{{NODES}, {PHYSICAL_NICS}}}[$__rate_interval]))",
                    "out {{instance}}",
                ),
            ],
        )
    )
    board.add(
        graph(
            settings,
            "Node filesystem usage",
            "Share of each real filesystem of the nodes that is used; a full node disk evicts pods.",
            "percentunit",
            [
                Query(
                    f"1 - node_filesystem_avail_bytes{{{NODES}, {REAL_FILESYSTEMS}}} / "
                    f"node_filesystem_size_bytes{{{NODES}, {REAL_FILESYSTEMS}}}",
                    "{{instance}} {{mountpoint}}",
                )
            ],
            UTILISATION,
            max_value=1,
        )
    )
    board.add(
        graph(
            settings,
            "Node disk I/O",
            "Bytes per second read from and written to each node's disks.",
            "Bps",
            [
                Query(f"sum by (instance) (rate(node_disk_read_bytes_total{{{NODES}}}[$__rate_interval]))", "read {{instance}}"),
                Query(f"sum by (instance) (rate(node_disk_written_bytes_total{{{NODES}}}[$__rate_interval]))", "write {{instance}}"),
            ],
        ),
        24,
    )

    board.row("Persistent volumes")
    board.add(
        graph(
            settings,
            "Volume usage",
            "Share of each persistent volume claim that is used (Prometheus, Grafana, Alertmanager, databases).",
            "percentunit",
            [
                Query(
                    "max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes / kubelet_volume_stats_capacity_bytes)",
                    "{{namespace}}/{{persistentvolumeclaim}}",
                )
            ],
            UTILISATION,
            max_value=1,
        )
    )
    board.add(
        graph(
            settings,
            "Volume free space",
            "Bytes still free on each persistent volume claim.",
            "bytes",
            [
                Query(
                    "max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_available_bytes)",
                    "{{namespace}}/{{persistentvolumeclaim}}",
                )
            ],
        )
    )

    board.row("State stores")
    database = settings.postgres_database
    board.add(
        single(settings, "PostgreSQL up", "1 when postgres-exporter can reach PostgreSQL.", "short", Query("min(pg_up)"), floor_steps(1)),
        6,
        4,
    )
    board.add(single(settings, "Redis up", "1 when redis-exporter can reach Redis.", "short", Query("min(redis_up)"), floor_steps(1)), 6, 4)
    board.add(
        single(
            settings,
            "PostgreSQL database size",
            f"Size of the {database} database on disk.",
            "bytes",
            Query(f'max(pg_database_size_bytes{{datname="{database}"}})'),
        ),
        6,
        4,
    )
    board.add(single(settings, "Redis memory", "Memory Redis uses for its data set.", "bytes", Query("max(redis_memory_used_bytes)")), 6, 4)
    board.add(
        graph(
            settings,
            "PostgreSQL connections",
            f"Open connections to the {database} database.",
            "short",
            [Query(f'sum by (datname) (pg_stat_database_numbackends{{datname="{database}"}})', "{{datname}}")],
        )
    )
    board.add(
        graph(
            settings,
            "Redis clients",
            "Clients connected to Redis (the backend and its workers).",
            "short",
            [Query("sum(redis_connected_clients)", "clients")],
        )
    )
    return board.build()
