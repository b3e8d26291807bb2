"""Recording mocks: every resource's type, name, parent and inputs, with realistic outputs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

SUBSCRIPTION_ID = "00000000-0000-4000-8000-000000000001"
TENANT_ID = "00000000-0000-4000-8000-000000000002"
SECRET_MARK = "[secret]"


def _uuid(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"


def _number(value: Any) -> Any:
    # The wire format has only doubles; 2.0 replicas should read as 2.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def unwrap_secrets(value: Any) -> Any:
    """The value with Pulumi's secret wrappers removed."""
    if rpc.is_rpc_secret(value):
        return unwrap_secrets(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return _number(value)


def mask_secrets(value: Any, inside_secret: bool = False) -> Any:
    """The value with every secret leaf replaced by "[secret]"; the keys of secret maps stay visible."""
    if rpc.is_rpc_secret(value):
        return mask_secrets(rpc.unwrap_rpc_secret(value), inside_secret=True)
    if isinstance(value, dict):
        return {k: mask_secrets(v, inside_secret) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, inside_secret) for v in value]
    return SECRET_MARK if inside_secret else _number(value)


@dataclass
class Recorded:
    type: str
    name: str
    inputs: dict[str, Any]  # secrets revealed: for assertions
    masked_inputs: dict[str, Any]  # secrets as "[secret]": for the render
    parent: str  # parent URN; "" for the stack's direct children
    urn: str
    custom: bool
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def parent_type(self) -> str:
        return self.parent.rsplit("::", 2)[-2].split("$")[-1] if "::" in self.parent else ""


def _azure_id(typ: str, name: str, inputs: dict[str, Any]) -> str:
    group = inputs.get("resourceGroupName", "rg-" + name)
    provider = typ.split(":")[1]
    kind = typ.split(":")[2]
    return (
        f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group}/providers/Microsoft.{provider.capitalize()}/"
        f"{kind[0].lower() + kind[1:]}s/{name}"
    )


class RecordingMocks(pulumi.runtime.Mocks):
    """Returns outputs shaped like the providers' real ones, deterministic per resource name."""

    def __init__(self) -> None:
        self.recorded: list[Recorded] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = unwrap_secrets(args.inputs)
        typ, name = args.typ, args.name
        outputs: dict[str, Any] = dict(inputs)
        resource_id = f"{name}-id"
        if typ.startswith("azure-native:"):
            physical = next(
                (
                    inputs[k]
                    # A container's own name before its account's (it carries both).
                    for k in (
                        "containerName",
                        "accountName",
                        "resourceName",
                        "registryName",
                        "lockName",
                        "federatedIdentityCredentialResourceName",
                    )
                    if isinstance(inputs.get(k), str)
                ),
                inputs.get("resourceGroupName") if typ.endswith(":ResourceGroup") else f"{name}{_uuid(name)[:8]}",
            )
            resource_id = _azure_id(typ, physical, inputs)
            outputs.update({"name": physical, "id": resource_id, "type": typ.split(":")[2]})
            if typ.endswith(":UserAssignedIdentity"):
                outputs.update({"principalId": _uuid("principal-" + name), "clientId": _uuid("client-" + name), "tenantId": TENANT_ID})
            if typ.endswith(":StorageAccount"):
                outputs["primaryEndpoints"] = {"blob": f"https://{physical}.blob.core.windows.net/"}
            if typ.endswith(":Registry"):
                outputs["loginServer"] = f"{physical}.azurecr.io"
        elif typ == "random:index/randomPassword:RandomPassword":
            length = int(inputs.get("length", 32))
            outputs["result"] = (hashlib.sha256(name.encode()).hexdigest() * 4)[:length]
        elif typ == "kubernetes:helm.sh/v3:Release":
            outputs["status"] = {
                "name": inputs.get("name", name),
                "namespace": inputs.get("namespace", "default"),
                "chart": inputs.get("chart"),
                "version": inputs.get("version"),
                "revision": 1,
                "status": "deployed",
                "appVersion": "",
            }
        elif typ.startswith("kubernetes:"):
            metadata = dict(inputs.get("metadata") or {})
            metadata.setdefault("name", name)
            metadata.setdefault("namespace", "default")
            metadata["uid"] = _uuid("uid-" + name)
            outputs["metadata"] = metadata
            resource_id = f"{metadata['namespace']}/{metadata['name']}"
        elif typ == "docker-build:index:Image":
            digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            tags = inputs.get("tags") or [f"{name}:latest"]
            outputs.update({"digest": digest, "ref": f"{tags[0].split(':')[0]}@{digest}"})
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "subscriptionId": SUBSCRIPTION_ID,
                "tenantId": TENANT_ID,
                "objectId": _uuid("deployer"),
                "clientId": _uuid("deployer-client"),
            }, []
        return {}, []


class RecordingMonitor(MockMonitor):
    """Adds the parent URN, which Pulumi's MockResourceArgs does not carry, to each record."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]  # pulumi's mock monitor is unannotated
        if request.type != "pulumi:pulumi:Stack":
            raw = rpc.deserialize_properties(request.object)
            registered = self.resources.get(response.urn)
            self.recording.recorded.append(
                Recorded(
                    type=request.type,
                    name=request.name,
                    inputs=unwrap_secrets(raw),
                    masked_inputs=mask_secrets(raw),
                    parent=request.parent,
                    urn=response.urn,
                    custom=bool(request.custom),
                    outputs=dict(registered.state) if registered is not None else {},
                )
            )
        return response
