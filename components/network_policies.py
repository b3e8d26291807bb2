"""NetworkPolicies of the monitoring and node-exporter namespaces: default deny, then exactly the
flows of `topology.network_flows` (docs/monitoring/network-policies.md).

Each flow becomes an egress policy on its source pods and an ingress policy on its destination
pods, each in its own namespace when that namespace is one of those governed here (the backup
namespace writes its own egress policies; the backend and kube-system namespaces are not ours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.settings import Settings
from components.topology import Flow, Peer, topology

PART_OF = {"app.kubernetes.io/part-of": "ipa-ops"}
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace


def _pod_selector(labels: dict[str, str]) -> dict[str, Any]:
    return {"matchLabels": dict(labels)} if labels else {}


def policy_peer(peer: Peer) -> dict[str, Any]:
    """A NetworkPolicyPeer. Host-network pods answer on their node's address, which no pod
    selector matches: they are reached as an address block."""
    if peer.cidr or peer.host_network:
        return {"ipBlock": {"cidr": peer.cidr or "0.0.0.0/0"}}
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: peer.namespace}}, "podSelector": _pod_selector(peer.pod_labels)}


def _ports(flow: Flow) -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": port} for protocol, port in flow.ports]


def _policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(PART_OF)},
        "spec": spec,
    }


def default_deny(namespace: str) -> dict[str, Any]:
    return _policy("default-deny-all", namespace, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def network_policies(flows: tuple[Flow, ...], namespaces: tuple[str, ...]) -> list[dict[str, Any]]:
    """Default deny in each of `namespaces`, then one egress and/or ingress policy per flow."""
    policies = [default_deny(ns) for ns in namespaces]
    for flow in flows:
        source, destination = flow.source, flow.destination
        if source.namespace in namespaces and not source.cidr:
            spec = {
                "podSelector": _pod_selector(source.pod_labels),
                "policyTypes": ["Egress"],
                "egress": [{"to": [policy_peer(destination)], "ports": _ports(flow)}],
            }
            policies.append(_policy(f"{flow.name}-egress", source.namespace, spec))
        if destination.namespace in namespaces and not destination.cidr:
            spec = {
                "podSelector": _pod_selector(destination.pod_labels),
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [policy_peer(source)], "ports": _ports(flow)}],
            }
            policies.append(_policy(f"{flow.name}-ingress", destination.namespace, spec))
    return policies


def monitoring_network_policies(settings: Settings) -> list[dict[str, Any]]:
    top = topology(settings)
    return network_policies(top.network_flows, (top.monitoring_namespace, top.node_exporter_namespace))


@dataclass(frozen=True)
class NetworkPoliciesArgs:
    """The NetworkPolicy manifests, built by `monitoring_network_policies`."""

    policies: list[dict[str, Any]]

    @classmethod
    def from_settings(cls, settings: Settings) -> NetworkPoliciesArgs:
        return cls(policies=monitoring_network_policies(settings))


class NetworkPolicies(pulumi.ComponentResource):
    """Declares the policies; their namespaces must exist first (depends_on from the caller)."""

    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:monitoring:NetworkPolicies", name, None, opts)
        for policy in args.policies:
            meta = policy["metadata"]
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{meta['namespace']}-{meta['name']}",
                metadata=meta,
                spec=policy["spec"],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"count": len(args.policies)})
