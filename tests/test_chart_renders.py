"""Every Helm release of both stacks rendered through its real chart (pinned Helm, chart cache; no
service), and the checks of offline/manifest_checks.py on what would really be applied: the chart
renders plus the program's own objects. Each check also gets a broken object and must fail.

Needs .tools/bin/helm (make setup-helm) and the chart cache (`$IPA_CHART_CACHE` or ../shared/charts):
without the cache these tests fail, naming the folder.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.topology import RELEASE_NAME, Flow, Peer
from offline import charts
from offline import manifest_checks as mc
from offline.manifest_checks import Placed
from tests.conftest import STACKS, stack_settings

Rendered = Callable[[str], Path]
pytestmark = pytest.mark.charts
HELM_VERSION = "v3.17.3"


@pytest.fixture(scope="session")
def with_charts(rendered: Rendered) -> Rendered:
    """`rendered`, after checking that the chart cache exists (the render adds the charts when it does)."""
    charts.require_cache(charts.chart_cache())

    def get(stack: str) -> Path:
        out = rendered(stack)
        assert (out / "charts").is_dir(), f"the {stack} render has no charts/ although {charts.chart_cache()} exists"
        return out

    return get


@cache
def _combined(out: Path) -> tuple[Placed, ...]:
    return tuple(mc.load_combined(out))


def combined(with_charts: Rendered, stack: str) -> list[Placed]:
    """The stack's objects (copies: tests may break them)."""
    return copy.deepcopy(list(_combined(with_charts(stack))))


def find(objects: list[Placed], kind: str, name_part: str = "", source: str | None = None) -> Placed:
    found = [o for o in objects if o.kind == kind and name_part in o.name and (source is None or o.source == source)]
    assert found, f"no {kind} *{name_part}* ({source})"
    return found[0]


# --- Helm, the cache, the renders ------------------------------------------------------------


def test_helm_is_the_pinned_version() -> None:
    done = subprocess.run([str(charts.HELM), "version", "--template", "{{.Version}}"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == HELM_VERSION


def test_chart_cache_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(charts.CHART_CACHE_ENV, str(tmp_path))
    assert charts.chart_cache() == tmp_path
    monkeypatch.setenv(charts.CHART_CACHE_ENV, ".chart-cache")
    assert charts.chart_cache() == charts.REPO_ROOT / ".chart-cache"
    monkeypatch.delenv(charts.CHART_CACHE_ENV)
    beside = charts.REPO_ROOT.parent / "shared" / "charts"
    origin = charts._origin_checkout()
    if beside.is_dir() or origin is None:
        assert charts.chart_cache() == beside
    else:  # a clone in a scratch folder: the cache beside the checkout it came from
        assert charts.chart_cache() == origin.parent / "shared" / "charts"


def test_a_missing_cache_or_chart_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(charts.ChartError, match=str(missing)):
        charts.chart_archive(missing, "prometheus-pushgateway", "3.8.0")
    with pytest.raises(charts.ChartError, match=r"prometheus-pushgateway 9\.9\.9"):
        charts.chart_archive(tmp_path, "prometheus-pushgateway", "9.9.9")


def test_the_index_digest_is_checked(tmp_path: Path) -> None:
    source = charts.chart_archive(charts.require_cache(charts.chart_cache()), "prometheus-pushgateway", "3.8.0")
    shutil.copy(source, tmp_path / source.name)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    entry = {"version": "3.8.0", "urls": [source.name], "digest": digest}
    (tmp_path / "index.yaml").write_text(yaml.safe_dump({"entries": {"prometheus-pushgateway": [entry]}}))
    assert charts.chart_archive(tmp_path, "prometheus-pushgateway", "3.8.0") == tmp_path / source.name
    (tmp_path / "index.yaml").write_text(yaml.safe_dump({"entries": {"prometheus-pushgateway": [{**entry, "digest": "0" * 64}]}}))
    with pytest.raises(charts.ChartError, match="digest"):
        charts.chart_archive(tmp_path, "prometheus-pushgateway", "3.8.0")


def test_pull_fills_a_cache_from_the_release_repositories(with_charts: Rendered, tmp_path: Path) -> None:
    """`--pull` takes each release's chart from its own repository: here the chart cache served as a Helm
    repository on loopback, so the pulled files must equal the cache's byte for byte."""
    import functools
    import http.server
    import json
    import threading

    source = charts.require_cache(charts.chart_cache())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        render = tmp_path / "render"
        render.mkdir()
        resources = json.loads((with_charts("dev") / "resources.json").read_text())
        for resource in resources:
            if resource["type"] == charts.HELM_RELEASE:
                resource["inputs"]["repositoryOpts"] = {"repo": f"http://127.0.0.1:{server.server_port}"}
        (render / "resources.json").write_text(json.dumps(resources))
        cache = tmp_path / "cache"
        pulled = charts.pull_charts(render, cache)
        assert sorted(p.name for p in pulled) == sorted(f"{r.chart}-{r.version}.tgz" for r in charts.releases(resources))
        for archive in pulled:
            assert archive.read_bytes() == (source / archive.name).read_bytes()
        assert (cache / "index.yaml").is_file()
        assert charts.pull_charts(render, cache) == []  # what is there is not pulled again
        # A repository without the chart: the error names the command.
        (cache / pulled[0].name).unlink()
        for resource in resources:
            if resource["type"] == charts.HELM_RELEASE:
                resource["inputs"]["repositoryOpts"] = {"repo": f"http://127.0.0.1:{server.server_port}/missing"}
        (render / "resources.json").write_text(json.dumps(resources))
        with pytest.raises(charts.ChartError, match="helm pull"):
            charts.pull_charts(render, cache)
    finally:
        server.shutdown()


@pytest.mark.parametrize("stack", STACKS)
def test_every_release_renders_through_its_chart(stack: str, with_charts: Rendered) -> None:
    out = with_charts(stack)
    resources = yaml.safe_load((out / "resources.json").read_text())
    declared = {r.name: r for r in charts.releases(resources)}
    rendered = charts.read_chart_renders(out)
    assert set(rendered) == set(declared) and len(declared) >= 4, (set(rendered), set(declared))
    for name, objects in rendered.items():
        assert objects, f"{name} renders no object"
        kinds = {o["kind"] for o in objects}
        assert kinds & {"Deployment", "StatefulSet", "DaemonSet"}, f"{name} runs nothing: {kinds}"
        namespaced = [o for o in objects if o["kind"] not in charts.cluster_scoped_kinds(objects)]
        assert all(o["metadata"].get("namespace") for o in namespaced), f"{name}: an object without a namespace"
    assert any(o["kind"] == "CustomResourceDefinition" for o in rendered[RELEASE_NAME]), "CRDs are part of the release"


def test_objects_without_a_namespace_land_in_the_release_namespace() -> None:
    kinds = charts.cluster_scoped_kinds([])
    deployment = charts.place({"kind": "Deployment", "metadata": {"name": "x"}}, "monitoring", kinds)
    role = charts.place({"kind": "ClusterRole", "metadata": {"name": "x"}}, "monitoring", kinds)
    elsewhere = charts.place({"kind": "Service", "metadata": {"name": "x", "namespace": "kube-system"}}, "monitoring", kinds)
    assert deployment["metadata"]["namespace"] == "monitoring"
    assert "namespace" not in role["metadata"]
    assert elsewhere["metadata"]["namespace"] == "kube-system"


def test_helm_failures_are_reported(tmp_path: Path) -> None:
    release = charts.HelmRelease("x", "prometheus-pushgateway", "3.8.0", "monitoring", "", True, True)
    values = tmp_path / "values.yaml"
    values.write_text("extraArgs: {not: a list}\nserviceMonitor: [1]\n")
    archive = charts.chart_archive(charts.require_cache(charts.chart_cache()), "prometheus-pushgateway", "3.8.0")
    with pytest.raises(charts.ChartError, match="helm template x"):
        charts.helm_template(release, archive, values)


# --- the checks pass on both stacks ----------------------------------------------------------


CHECKS = ("schemas", "pod security", "prometheus selection", "alertmanager", "grafana dashboards", "exporters", "network policies")


@pytest.fixture(scope="session")
def problems(with_charts: Rendered) -> Callable[[str], dict[str, list[str]]]:
    found: dict[str, dict[str, list[str]]] = {}

    def get(stack: str) -> dict[str, list[str]]:
        if stack not in found:
            found[stack] = mc.stack_problems(with_charts(stack), stack_settings(stack))
        return found[stack]

    return get


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("stack", STACKS)
def test_check_passes(stack: str, check: str, problems: Callable[[str], dict[str, list[str]]]) -> None:
    assert set(problems(stack)) == set(CHECKS)
    assert problems(stack)[check] == [], "\n".join(problems(stack)[check])


# --- each check fails on a broken object -----------------------------------------------------


def test_schema_check_fails_on_broken_objects(with_charts: Rendered) -> None:
    objects = combined(with_charts, "dev")
    assert mc.schema_problems(objects, mc.addon_schemas()) == []
    deployment = find(objects, "Deployment", "operator")
    deployment.manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    prometheus = find(objects, "Prometheus")
    prometheus.manifest["spec"]["replicas"] = "two"
    alertmanager = find(objects, "Alertmanager")
    alertmanager.manifest["spec"]["retentionn"] = "1h"
    unknown = Placed(mc.PROGRAM, {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "x"}})
    found = "\n".join(mc.schema_problems([*objects, unknown], mc.addon_schemas()))
    assert "imagePullPolicyy" in found
    assert "Prometheus" in found and "'two'" in found
    assert "retentionn" in found
    assert "Widget: no CustomResourceDefinition" in found
    # Without the chart's CRDs, its custom resources have no schema.
    without_crds = [o for o in objects if o.kind != "CustomResourceDefinition"]
    assert any("monitoring.coreos.com/v1 Prometheus: no CustomResourceDefinition" in p for p in mc.schema_problems(without_crds))


def _pod(**spec: Any) -> dict[str, Any]:
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {"containers": [{"name": "c", "image": "i", "securityContext": restricted}], **spec}


def test_pod_security_rules() -> None:
    assert mc.pod_security_violations("restricted", {}, _pod()) == []
    assert mc.pod_security_violations("privileged", {}, _pod(hostNetwork=True)) == []
    assert mc.pod_security_violations("baseline", {}, _pod(hostNetwork=True)) == ["spec.hostNetwork=true"]
    assert mc.pod_security_violations("baseline", {}, _pod(volumes=[{"name": "h", "hostPath": {"path": "/"}}]))
    loose = _pod()
    loose["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_ADMIN"]}}
    baseline = mc.pod_security_violations("baseline", {}, loose)
    assert baseline == ["container c adds capabilities ['NET_ADMIN']"]
    restricted = "\n".join(mc.pod_security_violations("restricted", {}, loose))
    for expected in ("allowPrivilegeEscalation", "runAsNonRoot", "seccompProfile", "drop ALL"):
        assert expected in restricted
    # Pod-level settings cover the containers.
    pod_level = _pod(securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}})
    pod_level["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert mc.pod_security_violations("restricted", {}, pod_level) == []
    assert mc.pod_security_violations("restricted", {}, _pod(volumes=[{"name": "n", "nfs": {"server": "s", "path": "/"}}]))


def test_pod_security_check_fails_on_broken_objects(with_charts: Rendered) -> None:
    objects = combined(with_charts, "dev")
    grafana = find(objects, "StatefulSet", "grafana")
    grafana.manifest["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    exporter = find(objects, "Deployment", "postgres-exporter")
    exporter.manifest["metadata"]["namespace"] = "nowhere"
    found = "\n".join(mc.pod_security_problems(objects))
    assert f"StatefulSet monitoring/{RELEASE_NAME}-grafana: violates Pod Security 'restricted'" in found
    assert "namespace 'nowhere'" in found
    # node-exporter needs host access: admitted only because its namespace is privileged.
    objects = combined(with_charts, "dev")
    node_exporter = find(objects, "DaemonSet", "node-exporter")
    namespace = find(objects, "Namespace", node_exporter.namespace)
    namespace.manifest["metadata"]["labels"][mc.PSA_ENFORCE_LABEL] = "restricted"
    assert any("node-exporter" in p and "hostNetwork" in p for p in mc.pod_security_problems(objects))


def test_selectors() -> None:
    labels = {"app": "a", "tier": "x"}
    assert mc.selects({}, labels) and mc.selects(None, labels)
    assert mc.selects({"matchLabels": {"app": "a"}}, labels)
    assert not mc.selects({"matchLabels": {"app": "b"}}, labels)
    assert mc.selects({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x", "y"]}]}, labels)
    assert not mc.selects({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}, labels)
    assert mc.selects({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, labels)
    assert not mc.selects({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)


def test_prometheus_selection_fails_on_broken_objects(with_charts: Rendered) -> None:
    objects = combined(with_charts, "dev")
    rule = find(objects, "PrometheusRule", source=mc.PROGRAM)
    rule.manifest["metadata"]["labels"].pop("release")
    pod_monitor = find(objects, "PodMonitor", source=mc.PROGRAM)
    found = "\n".join(mc.prometheus_selection_problems(objects))
    assert f"PrometheusRule {rule.namespace}/{rule.name}: no Prometheus selects it" in found
    assert pod_monitor.name not in found
    # A namespace selector the monitor's namespace does not match.
    prometheus = find(objects, "Prometheus")
    prometheus.manifest["spec"]["podMonitorNamespaceSelector"] = {"matchLabels": {"team": "other"}}
    assert any(pod_monitor.name in p for p in mc.prometheus_selection_problems(objects))
    # No namespace selector: only the Prometheus's own namespace.
    prometheus.manifest["spec"].pop("podMonitorNamespaceSelector")
    pod_monitor.manifest["metadata"]["namespace"] = "elsewhere"
    assert any(pod_monitor.name in p for p in mc.prometheus_selection_problems(objects))
    # A ServiceMonitor whose port its Service does not have, and one that selects no Service.
    objects = combined(with_charts, "dev")
    monitor = find(objects, "ServiceMonitor", source="prometheus-pushgateway")
    monitor.manifest["spec"]["endpoints"][0]["port"] = "nope"
    other = find(objects, "ServiceMonitor", source="prometheus-redis-exporter")
    other.manifest["spec"]["selector"] = {"matchLabels": {"app": "none"}}
    found = "\n".join(mc.service_monitor_problems(objects))
    assert "port 'nope'" in found and f"{other.name}: selects no Service" in found


def test_alertmanager_check_fails_on_broken_objects(with_charts: Rendered) -> None:
    out = with_charts("dev")
    expected = yaml.safe_load((out / "alertmanager" / "alertmanager.yaml").read_text())
    files = list(mc.file_settings(expected))
    assert files, "the stack's Alertmanager config reads its secrets from files"
    objects = combined(with_charts, "dev")
    assert mc.alertmanager_problems(objects, expected) == []
    changed = {**expected, "route": {**expected["route"], "group_wait": "17s"}}
    assert any("differs" in p for p in mc.alertmanager_problems(objects, changed))
    alertmanager = find(objects, "Alertmanager")
    secret = find(objects, "Secret", f"alertmanager-{alertmanager.name}")
    secret.manifest["data"]["extra.yaml"] = base64.b64encode(b"x").decode()
    assert any("not exactly" in p for p in mc.alertmanager_problems(objects, expected))
    # A *_file in a folder nothing mounts; a Secret that lacks the key; a mounted Secret nobody declares.
    objects = combined(with_charts, "dev")
    where, path = files[0]
    moved = copy.deepcopy(expected)
    _set_path(moved, where, "/etc/alertmanager/elsewhere/x")
    alertmanager = find(objects, "Alertmanager")
    secret = find(objects, "Secret", f"alertmanager-{alertmanager.name}")
    secret.manifest["data"]["alertmanager.yaml"] = base64.b64encode(yaml.safe_dump(moved).encode()).decode()
    assert any("is not a file of a Secret" in p for p in mc.alertmanager_problems(objects, moved))
    objects = combined(with_charts, "dev")
    mounted = mc.alertmanager_file(path, find(objects, "Alertmanager").manifest["spec"])
    assert mounted is not None and mounted.source_kind == "Secret"
    source = find(objects, "Secret", mounted.source_name, source=mc.PROGRAM)
    source.manifest.setdefault("data", {}).pop(mounted.key, None)
    source.manifest.setdefault("stringData", {}).pop(mounted.key, None)
    assert any(f"has no key {mounted.key!r}" in p for p in mc.alertmanager_problems(objects, expected))
    objects = [o for o in combined(with_charts, "dev") if not (o.kind == "Secret" and o.name == mounted.source_name)]
    assert any("is not declared" in p for p in mc.alertmanager_problems(objects, expected))


def _set_path(config: Any, where: str, value: str) -> None:
    """Sets `receivers[1].email_configs[0].auth_password_file`-style paths of file_settings()."""
    node = config
    parts = where.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value


def test_grafana_dashboard_check_fails_on_broken_objects(with_charts: Rendered) -> None:
    objects = combined(with_charts, "dev")
    dashboards = [o for o in objects if o.kind == "ConfigMap" and o.source == mc.PROGRAM and mc.is_dashboard(o)]
    assert len(dashboards) >= 5
    grafana = find(objects, "StatefulSet", "grafana")
    (sidecar,) = [c for c in mc.containers(grafana.manifest["spec"]["template"]["spec"]) if c["name"] == "grafana-sc-dashboard"]
    env = {e["name"]: e for e in sidecar["env"] if "value" in e}
    dashboards[0].manifest["metadata"]["labels"].pop(env["LABEL"]["value"])
    dashboards[1].manifest["metadata"]["annotations"].pop(env["FOLDER_ANNOTATION"]["value"])
    dashboards[2].manifest["metadata"]["namespace"] = "elsewhere"
    found = "\n".join(mc.grafana_dashboard_problems(objects))
    assert f"{dashboards[0].name}: lacks the sidecar's label" in found
    assert f"{dashboards[1].name}: lacks the folder annotation" in found
    assert f"{dashboards[2].name}: the sidecar watches namespaces" in found
    env["RESOURCE"]["value"] = "secret"
    assert any("does not watch ConfigMaps" in p for p in mc.grafana_dashboard_problems(objects))


def test_exporter_check_fails_on_broken_objects(with_charts: Rendered) -> None:
    objects = combined(with_charts, "dev")
    expected = mc.exporter_credentials(stack_settings("dev"))
    assert mc.exporter_secret_problems(objects, expected) == []
    release = next(iter(expected))
    secret, keys = expected[release]
    wrong = {release: (secret + "-other", keys)}
    assert any("does not read key" in p for p in mc.exporter_secret_problems(objects, wrong))
    # The exporter reads a file from a folder nothing mounts.
    workload = next(o for o in objects if o.source == release and mc.pod_templates(o.manifest))
    pod = workload.manifest["spec"]["template"]["spec"]
    for container in mc.containers(pod):
        container["volumeMounts"] = []
    found = "\n".join(mc.exporter_secret_problems(objects, expected))
    assert "is not a mounted file" in found or "does not read key" in found


def test_mounted_files_resolve_like_the_kubelet() -> None:
    pod = {
        "volumes": [
            {"name": "all", "secret": {"secretName": "s1"}},
            {"name": "some", "secret": {"secretName": "s2", "items": [{"key": "password", "path": "pw"}]}},
            {"name": "proj", "projected": {"sources": [{"configMap": {"name": "c", "items": [{"key": "k", "path": "d/k"}]}}]}},
        ]
    }
    container = {
        "volumeMounts": [
            {"name": "all", "mountPath": "/a"},
            {"name": "some", "mountPath": "/b/"},
            {"name": "proj", "mountPath": "/c"},
        ]
    }
    assert mc.resolve_file("/a/anything", pod, container) == mc.Mounted("Secret", "s1", "anything")
    assert mc.resolve_file("/b/pw", pod, container) == mc.Mounted("Secret", "s2", "password")
    assert mc.resolve_file("/b/password", pod, container) is None
    assert mc.resolve_file("/c/d/k", pod, container) == mc.Mounted("ConfigMap", "c", "k")
    assert mc.resolve_file("/elsewhere/x", pod, container) is None


# --- NetworkPolicies -------------------------------------------------------------------------


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> Placed:
    return Placed(
        "test",
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec},
    )


def _deployment(namespace: str, name: str, labels: dict[str, str], ports: dict[str, int]) -> Placed:
    container = {"name": "c", "image": "i", "ports": [{"name": n, "containerPort": p} for n, p in ports.items()]}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [container]}}
    return Placed(
        "test",
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace}, "spec": {"template": template}},
    )


def _egress_to(cidr: str) -> dict[str, Any]:
    return {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}]}


def test_network_policies_are_evaluated_like_kubernetes() -> None:
    server = _deployment("a", "server", {"app": "server"}, {"http": 8080})
    client = _deployment("b", "client", {"app": "client"}, {})
    namespaces = [
        Placed("test", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {"team": n}}}) for n in ("a", "b")
    ]
    flow = Flow("client-server", Peer("b", {"app": "client"}), Peer("a", {"app": "server"}), (("TCP", 8080),), "test")
    base = [server, client, *namespaces]
    assert mc.network_policy_problems(base, [flow]) == []  # no policy: open
    deny_ingress = _policy("a", "deny", {"podSelector": {}, "policyTypes": ["Ingress"]})
    assert any("may not receive" in p for p in mc.network_policy_problems([*base, deny_ingress], [flow]))
    allow_named_port = _policy(
        "a",
        "allow",
        {
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "client"}}}],
                    "ports": [{"port": "http"}],
                }
            ],
        },
    )
    assert mc.network_policy_problems([*base, deny_ingress, allow_named_port], [flow]) == []
    # The same rule without the namespace selector means the policy's own namespace: the client is not in it.
    same_namespace = copy.deepcopy(allow_named_port)
    same_namespace.manifest["spec"]["ingress"][0]["from"] = [{"podSelector": {"matchLabels": {"app": "client"}}}]
    assert mc.network_policy_problems([*base, deny_ingress, same_namespace], [flow])
    # Egress: a default deny of the client's namespace, then an allow to the server's namespace on the wrong port.
    deny_egress = _policy("b", "deny", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert any("may not send" in p for p in mc.network_policy_problems([*base, deny_egress], [flow]))
    wrong_port = _policy(
        "b",
        "egress",
        {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": 9090}]}]},
    )
    assert mc.network_policy_problems([*base, deny_egress, wrong_port], [flow])
    any_port = copy.deepcopy(wrong_port)
    any_port.manifest["spec"]["egress"][0].pop("ports")
    assert mc.network_policy_problems([*base, deny_egress, any_port], [flow]) == []
    # Outside addresses: only an ipBlock that holds the whole block, without exceptions in it.
    outside = Flow("client-out", Peer("b", {"app": "client"}), Peer(cidr="0.0.0.0/0"), (("TCP", 443),), "test")
    everywhere = _policy(
        "b", "out", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}
    )
    assert mc.network_policy_problems([*base, deny_egress, everywhere], [outside]) == []
    private = _policy("b", "out", _egress_to("10.0.0.0/8"))
    assert mc.network_policy_problems([*base, deny_egress, private], [outside])
    # A flow naming pods the render does not have, in a namespace it does, is a problem of its own.
    ghost = Flow("ghost", Peer("a", {"app": "ghost"}), Peer("a", {"app": "server"}), (("TCP", 8080),), "test")
    assert any("no pod of the render" in p for p in mc.network_policy_problems(base, [ghost]))


def test_network_policy_check_fails_on_a_default_deny(with_charts: Rendered) -> None:
    objects = combined(with_charts, "dev")
    settings = stack_settings("dev")
    from components.topology import network_flows, topology

    flows = network_flows(settings, topology(settings).node_exporter_namespace)
    namespace = settings.monitoring_namespace
    deny = _policy(namespace, "test-deny-everything", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    # Only this policy in the namespace: drop the stack's own allows there.
    objects = [o for o in objects if not (o.kind == "NetworkPolicy" and o.namespace == namespace)]
    found = "\n".join(mc.network_policy_problems([*objects, deny], flows))
    assert "flow grafana-prometheus" in found and "flow dns" in found
