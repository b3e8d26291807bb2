"""Checks on what a stack would really apply: the program's own objects (build/<stack>/kubernetes/)
plus every Helm release rendered through its chart (build/<stack>/charts/).

Each check is a pure function of the objects (and of the data it compares them with) that returns
its problems, one line each, empty when all is well. docs/operations/chart-renders.md says what each
proves and what it cannot.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.exporter_credentials import POSTGRES, REDIS, SECRET_KEYS
from components.settings import Settings
from components.topology import POSTGRES_EXPORTER_RELEASE, REDIS_EXPORTER_RELEASE, Flow, Peer, network_flows, topology
from offline.charts import read_chart_renders
from offline.kube_schema import CrdKey, CrdSchemas, Manifest, addon_schemas, load_manifests, validate

PROGRAM = "program"  # source of the objects the program declares itself
OPERATOR_GROUP = "monitoring.coreos.com"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # the API server sets it on every Namespace
PSA_ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"


@dataclass(frozen=True)
class Placed:
    """One object and where it comes from: PROGRAM or the name of the Helm release that renders it."""

    source: str
    manifest: Manifest

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.manifest.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str((self.manifest.get("metadata") or {}).get("namespace") or "")

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.manifest.get("metadata") or {}).get("labels") or {})

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.source}: {self.kind} {where}{self.name}"


def load_combined(out: Path) -> list[Placed]:
    """The program's objects and the chart renders of a render folder (build/<stack>)."""
    objects = [Placed(PROGRAM, m) for path in sorted((out / "kubernetes").glob("*.yaml")) for m in load_manifests(path.read_text())]
    for release, manifests in read_chart_renders(out).items():
        objects += [Placed(release, m) for m in manifests]
    return objects


def of_kind(objects: Iterable[Placed], *kinds: str) -> list[Placed]:
    return [o for o in objects if o.kind in kinds]


# --- schemas ---------------------------------------------------------------------------------


def schema_problems(objects: list[Placed], addon_schemas: Mapping[CrdKey, dict[str, Any]] | None = None) -> list[str]:
    """Every object valid against the Kubernetes schema (strict), every custom resource against the
    schema of its CustomResourceDefinition among `objects` (the charts install them), or, for kinds
    that a cluster add-on defines, against `addon_schemas`."""
    crds = CrdSchemas(o.manifest for o in of_kind(objects, "CustomResourceDefinition"))
    for key, schema in (addon_schemas or {}).items():
        crds.schemas.setdefault(key, schema)
        crds.namespaced.setdefault((key[0], key[2]), True)
    return [f"{o.ref}: {problem}" for o in objects for problem in validate(o.manifest, crds)]


# --- pod templates ---------------------------------------------------------------------------


def pod_templates(manifest: Manifest) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod metadata, pod spec) of each pod an object runs."""
    spec = manifest.get("spec") or {}
    kind = manifest.get("kind")
    if kind == "Pod":
        return [(manifest.get("metadata") or {}, spec)]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"):
        template = spec.get("template") or {}
        return [(template.get("metadata") or {}, template.get("spec") or {})]
    if kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return [(template.get("metadata") or {}, template.get("spec") or {})]
    return []


def containers(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers") for c in pod.get(key) or []]


# --- Pod Security Standards ------------------------------------------------------------------
# The "baseline" and "restricted" levels of https://kubernetes.io/docs/concepts/security/pod-security-standards/
# as Kubernetes 1.33 enforces them (pod-security.kubernetes.io/enforce-version: latest).

LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP"}
    | {"SETUID", "SYS_CHROOT"}
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def baseline_violations(metadata: Mapping[str, Any], pod: Mapping[str, Any]) -> list[str]:
    found = [f"spec.{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    pod_context = pod.get("securityContext") or {}
    contexts = [("pod", pod_context)] + [(f"container {c.get('name')}", c.get("securityContext") or {}) for c in containers(pod)]
    if (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        found.append("pod windowsOptions.hostProcess=true")
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            found.append(f"hostPath volume {volume.get('name')}")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl.get('name')}")
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and value != "runtime/default" and not str(value).startswith("localhost/"):
            found.append(f"AppArmor annotation {key}={value}")
    for container in containers(pod):
        name = container.get("name")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"container {name} hostPort {port['hostPort']}")
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            found.append(f"container {name} privileged")
        added = set((context.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            found.append(f"container {name} adds capabilities {sorted(added)}")
        if context.get("procMount") not in (None, "Default"):
            found.append(f"container {name} procMount {context['procMount']}")
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            found.append(f"container {name} windowsOptions.hostProcess=true")
    for where, context in contexts:
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where} seLinuxOptions {selinux}")
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where} seccompProfile Unconfined")
        apparmor = (context.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"{where} appArmorProfile {apparmor}")
    return found


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    found = []
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')} of type {sorted(kinds - RESTRICTED_VOLUMES)}")
    pod_context = pod.get("securityContext") or {}
    if pod_context.get("runAsUser") == 0:
        found.append("pod runAsUser=0")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    for container in containers(pod):
        name = container.get("name")
        context = container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"container {name} does not set allowPrivilegeEscalation=false")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            found.append(f"container {name} does not set runAsNonRoot=true (nor does the pod)")
        if context.get("runAsUser") == 0:
            found.append(f"container {name} runAsUser=0")
        seccomp = (context.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"container {name} seccompProfile is {seccomp or 'unset'} (nor set on the pod)")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"container {name} does not drop ALL capabilities")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            found.append(f"container {name} adds capabilities {sorted(added)}")
    return found


def pod_security_violations(level: str, metadata: Mapping[str, Any], pod: Mapping[str, Any]) -> list[str]:
    if level == "privileged":
        return []
    found = baseline_violations(metadata, pod)
    if level == "restricted":
        found += restricted_violations(pod)
    return found


def namespace_labels(objects: Iterable[Placed]) -> dict[str, dict[str, str]]:
    """Labels of each Namespace the objects declare (with the one the API server adds)."""
    return {o.name: {**o.labels, NAMESPACE_NAME_LABEL: o.name} for o in of_kind(objects, "Namespace")}


def pod_security_problems(objects: list[Placed]) -> list[str]:
    """Every pod template admitted by the Pod Security level (`enforce` label) of the namespace it
    lands in. A namespace the objects do not declare has no level we can know: a problem too."""
    namespaces = namespace_labels(objects)
    problems = []
    for o in objects:
        for metadata, pod in pod_templates(o.manifest):
            if o.namespace not in namespaces:
                problems.append(f"{o.ref}: lands in namespace {o.namespace!r}, which no render declares (Pod Security level unknown)")
                continue
            level = namespaces[o.namespace].get(PSA_ENFORCE_LABEL, "privileged")
            if level not in LEVELS:
                problems.append(f"{o.ref}: namespace {o.namespace} has an unknown Pod Security level {level!r}")
                continue
            problems += [f"{o.ref}: violates Pod Security {level!r}: {v}" for v in pod_security_violations(level, metadata, pod)]
    return problems


# --- label selectors -------------------------------------------------------------------------


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector; an empty selector selects everything. None is handled by callers."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def namespace_labels_of(namespace: str, namespaces: Mapping[str, dict[str, str]]) -> dict[str, str]:
    return namespaces.get(namespace) or {NAMESPACE_NAME_LABEL: namespace}


# --- Prometheus selection --------------------------------------------------------------------

SELECTORS = {
    "ServiceMonitor": ("serviceMonitorSelector", "serviceMonitorNamespaceSelector"),
    "PodMonitor": ("podMonitorSelector", "podMonitorNamespaceSelector"),
    "PrometheusRule": ("ruleSelector", "ruleNamespaceSelector"),
    "Probe": ("probeSelector", "probeNamespaceSelector"),
    "ScrapeConfig": ("scrapeConfigSelector", "scrapeConfigNamespaceSelector"),
}


def prometheus_selects(prometheus: Placed, target: Placed, namespaces: Mapping[str, dict[str, str]]) -> bool:
    """The Prometheus Operator's rules: a missing object selector selects nothing, a missing
    namespace selector means the Prometheus's own namespace, `{}` means every namespace."""
    spec = prometheus.manifest.get("spec") or {}
    selector_key, namespace_key = SELECTORS[target.kind]
    if spec.get(selector_key) is None or not selects(spec[selector_key], target.labels):
        return False
    namespace_selector = spec.get(namespace_key)
    if namespace_selector is None:
        return target.namespace == prometheus.namespace
    return selects(namespace_selector, namespace_labels_of(target.namespace, namespaces))


def prometheus_selection_problems(objects: list[Placed]) -> list[str]:
    """Every PodMonitor, ServiceMonitor, PrometheusRule (and Probe, ScrapeConfig) is loaded by a Prometheus."""
    prometheuses = of_kind(objects, "Prometheus")
    if not prometheuses:
        return ["no Prometheus object in the render"]
    namespaces = namespace_labels(objects)
    return [
        f"{target.ref}: no Prometheus selects it (labels {target.labels})"
        for target in of_kind(objects, *SELECTORS)
        if not any(prometheus_selects(p, target, namespaces) for p in prometheuses)
    ]


def service_monitor_problems(objects: list[Placed]) -> list[str]:
    """Each ServiceMonitor finds a Service of the render with the port it scrapes (ServiceMonitors
    that look in other namespaces, for Services outside the render such as the API server's, only
    when they find one)."""
    services = of_kind(objects, "Service")
    problems = []
    for monitor in of_kind(objects, "ServiceMonitor"):
        spec = monitor.manifest.get("spec") or {}
        namespace_selector = spec.get("namespaceSelector") or {}
        allowed = None if namespace_selector.get("any") else set(namespace_selector.get("matchNames") or [monitor.namespace])
        candidates = [s for s in services if (allowed is None or s.namespace in allowed) and selects(spec.get("selector"), s.labels)]
        if not candidates:
            # Monitors of Services the render cannot see (the API server's, the kubelet's) look in
            # other namespaces; one that looks only in its own namespace must find its Service.
            if allowed == {monitor.namespace}:
                problems.append(f"{monitor.ref}: selects no Service in {monitor.namespace}")
            continue
        ports = {p.get("name") for s in candidates for p in (s.manifest.get("spec") or {}).get("ports") or []}
        for endpoint in spec.get("endpoints") or []:
            if endpoint.get("port") and endpoint["port"] not in ports:
                problems.append(f"{monitor.ref}: port {endpoint['port']!r} is not a port of the Services it selects ({sorted(ports)})")
    return problems


# --- mounted files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mounted:
    """A file a container can read, and what it comes from: (Secret|ConfigMap|CSI, name, key)."""

    source_kind: str
    source_name: str
    key: str


def _volume_files(volume: Mapping[str, Any]) -> list[tuple[str, str, str | None, str]]:
    """(kind, name, key or None for every key, path inside the volume) of a volume's sources."""
    found: list[tuple[str, str, str | None, str]] = []
    sources: list[tuple[str, Mapping[str, Any]]] = []
    if "secret" in volume:
        sources.append(("Secret", {**volume["secret"], "name": volume["secret"].get("secretName")}))
    if "configMap" in volume:
        sources.append(("ConfigMap", volume["configMap"]))
    for projected in (volume.get("projected") or {}).get("sources") or []:
        if "secret" in projected:
            sources.append(("Secret", projected["secret"]))
        if "configMap" in projected:
            sources.append(("ConfigMap", projected["configMap"]))
    for kind, source in sources:
        items = source.get("items")
        if items:
            found += [(kind, str(source.get("name")), str(i["key"]), str(i["path"])) for i in items]
        else:
            found.append((kind, str(source.get("name")), None, ""))
    if "csi" in volume:
        attributes = volume["csi"].get("volumeAttributes") or {}
        found.append(("CSI", str(attributes.get("secretProviderClass") or volume["csi"].get("driver")), None, ""))
    return found


def resolve_file(path: str, pod: Mapping[str, Any], container: Mapping[str, Any]) -> Mounted | None:
    """What a file path of a container is, when it lies in a mounted Secret/ConfigMap/CSI volume."""
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    path = posixpath.normpath(path)
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"))
        if volume is None:
            continue
        base = posixpath.normpath(mount.get("mountPath", ""))
        if mount.get("subPath"):
            for kind, name, key, item_path in _volume_files(volume):
                if path == base and ((key is None and item_path == "") or item_path == mount["subPath"]):
                    return Mounted(kind, name, key or mount["subPath"])
            continue
        if not path.startswith(base + "/"):
            continue
        inside = path[len(base) + 1 :]
        for kind, name, key, item_path in _volume_files(volume):
            if key is None and "/" not in inside:
                return Mounted(kind, name, inside)
            if key is not None and inside == item_path:
                return Mounted(kind, name, key)
    return None


def secret_keys(objects: Iterable[Placed], namespace: str, name: str) -> set[str] | None:
    """Keys of Secret namespace/name among the objects, None when the objects do not declare it."""
    for secret in of_kind(objects, "Secret"):
        if secret.namespace == namespace and secret.name == name:
            return set(secret.manifest.get("data") or {}) | set(secret.manifest.get("stringData") or {})
    return None


def secret_data(secret: Manifest, key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


# --- Alertmanager ----------------------------------------------------------------------------

ALERTMANAGER_CONFIG_KEY = "alertmanager.yaml"
ALERTMANAGER_SECRETS_DIR = "/etc/alertmanager/secrets"
ALERTMANAGER_CONFIGMAPS_DIR = "/etc/alertmanager/configmaps"


def file_settings(config: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, value) of every `*_file` setting of an Alertmanager configuration."""
    if isinstance(config, dict):
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).endswith("_file") and isinstance(value, str):
                yield where, value
            else:
                yield from file_settings(value, where)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield from file_settings(value, f"{path}[{i}]")


def alertmanager_file(path: str, spec: Mapping[str, Any]) -> Mounted | None:
    """Where the operator mounts `spec.secrets`, `spec.configMaps` and `spec.volumes` of an Alertmanager."""
    for kind, folder, names in (
        ("Secret", ALERTMANAGER_SECRETS_DIR, spec.get("secrets") or []),
        ("ConfigMap", ALERTMANAGER_CONFIGMAPS_DIR, spec.get("configMaps") or []),
    ):
        for name in names:
            prefix = f"{folder}/{name}/"
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                return Mounted(kind, name, path[len(prefix) :])
    pod = {"volumes": spec.get("volumes") or []}
    return resolve_file(path, pod, {"volumeMounts": spec.get("volumeMounts") or []})


def alertmanager_problems(objects: list[Placed], expected_config: Mapping[str, Any]) -> list[str]:
    """The configuration Secret of each Alertmanager holds exactly `alertmanager.yaml`, equal to
    the stack's build/<stack>/alertmanager/alertmanager.yaml, and every `*_file` in it is a key of a
    Secret (or ConfigMap) that the Alertmanager mounts and that the render declares."""
    alertmanagers = of_kind(objects, "Alertmanager")
    if not alertmanagers:
        return ["no Alertmanager object in the render"]
    problems = []
    for am in alertmanagers:
        spec = am.manifest.get("spec") or {}
        secret_name = spec.get("configSecret") or f"alertmanager-{am.name}"
        found = [s for s in of_kind(objects, "Secret") if s.namespace == am.namespace and s.name == secret_name]
        if not found:
            problems.append(f"{am.ref}: its configuration Secret {am.namespace}/{secret_name} is not in the render")
            continue
        secret = found[0].manifest
        keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        if keys != {ALERTMANAGER_CONFIG_KEY}:
            problems.append(f"{am.ref}: Secret {secret_name} holds {sorted(keys)}, not exactly [{ALERTMANAGER_CONFIG_KEY!r}]")
        text = secret_data(secret, ALERTMANAGER_CONFIG_KEY)
        config = yaml.safe_load(text) if text else None
        if config != expected_config:
            problems.append(f"{am.ref}: {secret_name}/{ALERTMANAGER_CONFIG_KEY} differs from the stack's alertmanager/alertmanager.yaml")
        for where, path in file_settings(config or {}):
            mounted = alertmanager_file(path, spec)
            if mounted is None:
                problems.append(f"{am.ref}: {where}={path} is not a file of a Secret or ConfigMap the Alertmanager mounts")
            elif mounted.source_kind == "Secret":
                keys_found = secret_keys(objects, am.namespace, mounted.source_name)
                if keys_found is None:
                    problems.append(f"{am.ref}: {where}={path}: Secret {am.namespace}/{mounted.source_name} is not declared")
                elif mounted.key not in keys_found:
                    problems.append(f"{am.ref}: {where}={path}: Secret {mounted.source_name} has no key {mounted.key!r}")
    return problems


# --- Grafana dashboards ----------------------------------------------------------------------


def is_dashboard(configmap: Placed) -> bool:
    """A ConfigMap that carries a Grafana dashboard (a JSON model with panels)."""
    for key, text in (configmap.manifest.get("data") or {}).items():
        if key.endswith(".json"):
            try:
                model = json.loads(text)
            except ValueError:
                continue
            if isinstance(model, dict) and "panels" in model:
                return True
    return False


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if "value" in e}


def grafana_dashboard_problems(objects: list[Placed], source: str = PROGRAM) -> list[str]:
    """Grafana's dashboard sidecar loads every dashboard ConfigMap of `source` (label, label value,
    namespace, resource type) and files it in the folder its annotation names."""
    sidecars = [
        (o, pod, c)
        for o in objects
        for _, pod in pod_templates(o.manifest)
        for c in containers(pod)
        if "LABEL" in _env(c) and "dashboard" in str(c.get("name", ""))
    ]
    dashboards = [c for c in of_kind(objects, "ConfigMap") if c.source == source and is_dashboard(c)]
    if not sidecars:
        return ["no Grafana dashboard sidecar in the render"] if dashboards else []
    problems = []
    providers = [
        provider
        for cm in of_kind(objects, "ConfigMap")
        for text in (cm.manifest.get("data") or {}).values()
        if "providers:" in str(text)
        for provider in (yaml.safe_load(str(text)) or {}).get("providers") or []
    ]
    for workload, _, sidecar in sidecars:
        env = _env(sidecar)
        where = f"{workload.ref} container {sidecar.get('name')}"
        namespaces = env.get("NAMESPACE", workload.namespace)
        folder_annotation = env.get("FOLDER_ANNOTATION")
        if env.get("RESOURCE", "configmap") not in ("configmap", "both"):
            problems.append(f"{where}: RESOURCE={env['RESOURCE']} does not watch ConfigMaps")
        if folder_annotation and not any((p.get("options") or {}).get("foldersFromFilesStructure") for p in providers):
            problems.append(f"{where}: no dashboard provider has foldersFromFilesStructure, so folder annotations are ignored")
        for dashboard in dashboards:
            labels = dashboard.labels
            annotations = (dashboard.manifest.get("metadata") or {}).get("annotations") or {}
            if env["LABEL"] not in labels or ("LABEL_VALUE" in env and labels[env["LABEL"]] != env["LABEL_VALUE"]):
                problems.append(f"{dashboard.ref}: lacks the sidecar's label {env['LABEL']}={env.get('LABEL_VALUE', '<any>')}")
            if namespaces != "ALL" and dashboard.namespace not in namespaces.split(","):
                problems.append(f"{dashboard.ref}: the sidecar watches namespaces {namespaces}, not {dashboard.namespace}")
            if not folder_annotation:
                problems.append(f"{dashboard.ref}: the sidecar sets no FOLDER_ANNOTATION, so the dashboard lands in no folder")
            elif not annotations.get(folder_annotation):
                problems.append(f"{dashboard.ref}: lacks the folder annotation {folder_annotation}")
    return problems


# --- exporters -------------------------------------------------------------------------------


def exporter_secret_problems(objects: list[Placed], expected: Mapping[str, tuple[str, tuple[str, ...]]]) -> list[str]:
    """Each exporter release ({release: (Secret, keys)}) reads exactly the Secret and keys the
    settings name (as files of a mounted Secret volume, or env from the Secret), and every path that a
    `*_FILE` variable names is a mounted file."""
    problems = []
    for release, (secret, keys) in expected.items():
        workloads = [o for o in objects if o.source == release and pod_templates(o.manifest)]
        if not workloads:
            problems.append(f"{release}: no workload in its chart render")
            continue
        read: set[tuple[str, str]] = set()
        for workload in workloads:
            for _, pod in pod_templates(workload.manifest):
                for container in containers(pod):
                    for env in container.get("env") or []:
                        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                        if ref:
                            read.add((str(ref.get("name")), str(ref.get("key"))))
                        if env["name"].endswith("_FILE") and env.get("value", "").startswith("/"):
                            mounted = resolve_file(env["value"], pod, container)
                            if mounted is None:
                                problems.append(f"{workload.ref}: {env['name']}={env['value']} is not a mounted file")
                            elif mounted.source_kind == "Secret":
                                read.add((mounted.source_name, mounted.key))
                    for source in container.get("envFrom") or []:
                        if "secretRef" in source:
                            read |= {(str(source["secretRef"].get("name")), key) for key in keys}
        for key in keys:
            if (secret, key) not in read:
                problems.append(f"{release}: does not read key {key!r} of Secret {secret!r} (it reads {sorted(read)})")
        others = {name for name, _ in read} - {secret}
        if others:
            problems.append(f"{release}: reads other Secrets than {secret!r}: {sorted(others)}")
    return problems


# --- NetworkPolicies -------------------------------------------------------------------------
# Evaluated as Kubernetes does: a pod that no policy of a type selects is open for that direction;
# a selected pod accepts what any selecting policy's rules allow.


@dataclass(frozen=True)
class Pod:
    """A pod the stack runs (from a workload, or what the operator makes of a Prometheus/Alertmanager)."""

    ref: str
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)  # container port name -> number


# The pods the Prometheus Operator makes of its custom resources: their labels and ports are the operator's
# (prometheus-operator 0.93), not the chart's, so they are written here.
OPERATOR_PODS: dict[str, tuple[Callable[[str], dict[str, str]], dict[str, int]]] = {
    "Prometheus": (
        lambda name: {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/managed-by": "prometheus-operator",
                      "app.kubernetes.io/instance": name, "operator.prometheus.io/name": name, "operator.prometheus.io/shard": "0",
                      "prometheus": name},
        {"web": 9090, "reloader-web": 8080},
    ),
    "Alertmanager": (
        lambda name: {"app.kubernetes.io/name": "alertmanager", "app.kubernetes.io/managed-by": "prometheus-operator",
                      "app.kubernetes.io/instance": name, "alertmanager": name},
        {"web": 9093, "mesh-tcp": 9094, "mesh-udp": 9094, "reloader-web": 8080},
    ),
}  # fmt: skip


def pods(objects: Iterable[Placed]) -> list[Pod]:
    found = []
    for o in objects:
        for metadata, pod in pod_templates(o.manifest):
            ports = {p["name"]: int(p["containerPort"]) for c in containers(pod) for p in c.get("ports") or [] if p.get("name")}
            found.append(Pod(o.ref, o.namespace, dict(metadata.get("labels") or {}), ports))
        if o.kind in OPERATOR_PODS:
            labels, ports = OPERATOR_PODS[o.kind]
            extra = ((o.manifest.get("spec") or {}).get("podMetadata") or {}).get("labels") or {}
            found.append(Pod(o.ref, o.namespace, {**labels(o.name), **extra}, ports))
    return found


def _policy_types(policy: Manifest) -> set[str]:
    spec = policy.get("spec") or {}
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress"} | ({"Egress"} if "egress" in spec else set())


def _port_matches(rule_ports: list[dict[str, Any]] | None, protocol: str, port: int | str, named: Mapping[str, int]) -> bool:
    if not rule_ports:
        return True
    number = named.get(port) if isinstance(port, str) else port
    for rule in rule_ports:
        if rule.get("protocol", "TCP") != protocol:
            continue
        wanted = rule.get("port")
        if wanted is None or wanted == port:
            return True
        wanted_number = named.get(wanted) if isinstance(wanted, str) else wanted
        if number is not None and wanted_number is not None and wanted_number <= number <= rule.get("endPort", wanted_number):
            return True
    return False


def _cidr_within(inner: str, block: Mapping[str, Any]) -> bool:
    net = ipaddress.ip_network(inner)
    outer = ipaddress.ip_network(block["cidr"])
    if net.version != outer.version or not net.subnet_of(outer):  # type: ignore[arg-type]
        return False
    return not any(net.overlaps(ipaddress.ip_network(e)) for e in block.get("except") or [])


# The address of a node (host-network pods): in the nodes' subnet, which the render does not know,
# so any ipBlock peer counts.
NODE_ADDRESS = "node"


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, end: Pod | str, namespaces: Mapping[str, dict[str, str]]) -> bool:
    """Whether one `from`/`to` entry covers a pod, or an outside address block (str)."""
    if end == NODE_ADDRESS:
        return "ipBlock" in peer
    if isinstance(end, str):
        return "ipBlock" in peer and _cidr_within(end, peer["ipBlock"])
    if "ipBlock" in peer:
        return False  # pod addresses are not a policy's business through ipBlock
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels_of(end.namespace, namespaces)):
            return False
    elif end.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], end.labels)


def allowed(
    policies: list[Placed],
    direction: str,
    pod: Pod,
    other: Pod | str,
    protocol: str,
    port: int | str,
    named: Mapping[str, int],
    namespaces: Mapping[str, dict[str, str]],
) -> tuple[bool, str]:
    """Whether `pod` may send (Egress) to / receive (Ingress) from `other` on protocol/port."""
    selecting = [
        p
        for p in policies
        if p.namespace == pod.namespace
        and direction in _policy_types(p.manifest)
        and selects((p.manifest.get("spec") or {}).get("podSelector"), pod.labels)
    ]
    if not selecting:
        return True, "no policy selects it"
    rules_key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in (policy.manifest.get("spec") or {}).get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(peer, policy.namespace, other, namespaces) for peer in peers)) and _port_matches(
                rule.get("ports"), protocol, port, named
            ):
                return True, f"allowed by {policy.name}"
    return False, f"selected by {', '.join(p.name for p in selecting)}, no rule allows it"


def _ends(peer: Peer, known: list[Pod], render_namespaces: set[str]) -> tuple[list[Pod | str], str]:
    """The concrete ends of a flow's peer, or a problem when the render has none where it should."""
    if peer.cidr:
        return [peer.cidr], ""
    matching: list[Pod | str] = [
        p for p in known if p.namespace == peer.namespace and all(p.labels.get(k) == v for k, v in peer.pod_labels.items())
    ]
    if matching:
        return matching, ""
    if peer.namespace in render_namespaces and peer.pod_labels:
        return [], f"no pod of the render in {peer.namespace} carries {peer.pod_labels}"
    # Pods outside the render (the backend, kube-dns, the servers): known by namespace and labels only.
    return [Pod(f"pods {peer.pod_labels or 'any'} of {peer.namespace}", peer.namespace, dict(peer.pod_labels))], ""


def network_policy_problems(objects: list[Placed], flows: Iterable[Flow]) -> list[str]:
    """Each flow the stack needs is allowed by the NetworkPolicies of the render, at both ends:
    egress of its source pods and ingress of its destination pods. Host-network destinations are
    reached at node addresses, which only an ipBlock covers; their own ingress is not policed."""
    policies = of_kind(objects, "NetworkPolicy")
    namespaces = namespace_labels(objects)
    known = pods(objects)
    render_namespaces = {p.namespace for p in known}
    problems = []
    for flow in flows:
        sources, problem = _ends(flow.source, known, render_namespaces)
        destinations, problem2 = _ends(flow.destination, known, render_namespaces)
        problems += [f"flow {flow.name}: {p}" for p in (problem, problem2) if p]
        for destination in destinations:
            target: Pod | str = NODE_ADDRESS if flow.destination.host_network else destination
            named = destination.ports if isinstance(destination, Pod) else {}
            for protocol, port in flow.ports:
                for source in sources:
                    if isinstance(source, Pod):
                        ok, why = allowed(policies, "Egress", source, target, protocol, port, named, namespaces)
                        if not ok:
                            problems.append(f"flow {flow.name}: {source.ref} may not send to {_name(target)} {protocol}/{port}: {why}")
                    if isinstance(destination, Pod) and not flow.destination.host_network:
                        ok, why = allowed(policies, "Ingress", destination, source, protocol, port, named, namespaces)
                        if not ok:
                            problems.append(
                                f"flow {flow.name}: {destination.ref} may not receive from {_name(source)} {protocol}/{port}: {why}"
                            )
    return problems


def _name(end: Pod | str) -> str:
    return end.ref if isinstance(end, Pod) else end


# --- everything, for one stack ---------------------------------------------------------------


def exporter_credentials(settings: Settings) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{exporter release: (Secret, keys)} as the settings name them."""
    return {
        POSTGRES_EXPORTER_RELEASE: (settings.postgres_credentials_secret, SECRET_KEYS[POSTGRES]),
        REDIS_EXPORTER_RELEASE: (settings.redis_credentials_secret, SECRET_KEYS[REDIS]),
    }


def stack_problems(out: Path, settings: Settings) -> dict[str, list[str]]:
    """Every check on a render folder (build/<stack>) with its chart renders, by check."""
    objects = load_combined(out)
    expected_alertmanager = yaml.safe_load((out / "alertmanager" / "alertmanager.yaml").read_text())
    top = topology(settings)
    return {
        "schemas": schema_problems(objects, addon_schemas()),
        "pod security": pod_security_problems(objects),
        "prometheus selection": prometheus_selection_problems(objects) + service_monitor_problems(objects),
        "alertmanager": alertmanager_problems(objects, expected_alertmanager),
        "grafana dashboards": grafana_dashboard_problems(objects),
        "exporters": exporter_secret_problems(objects, exporter_credentials(settings)),
        "network policies": network_policy_problems(objects, network_flows(settings, top.node_exporter_namespace)),
    }
