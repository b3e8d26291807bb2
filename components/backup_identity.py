"""Workload identity of the backup pods: a user-assigned managed identity, trusted by the AKS
OIDC issuer for exactly one ServiceAccount, allowed to read and write blobs of one container."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import authorization, managedidentity

from components.args import args_from_settings
from components.settings import Settings

STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
TOKEN_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True)
class BackupIdentityArgs:
    """The settings the identity and its federation with the AKS OIDC issuer read."""

    environment: str
    location: str
    cluster_name: str
    aks_oidc_issuer_url: str
    backup_namespace: str
    backup_service_account: str

    @classmethod
    def from_settings(cls, settings: Settings) -> BackupIdentityArgs:
        return args_from_settings(cls, settings)


def service_account_subject(args: BackupIdentityArgs) -> str:
    return f"system:serviceaccount:{args.backup_namespace}:{args.backup_service_account}"


def role_definition_id(subscription_id: str, role: str = STORAGE_BLOB_DATA_CONTRIBUTOR) -> str:
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{role}"


class BackupIdentity(pulumi.ComponentResource):
    """`client_id` is what the backup ServiceAccount names to get this identity's tokens."""

    def __init__(
        self,
        name: str,
        args: BackupIdentityArgs,
        *,
        resource_group_name: pulumi.Input[str],
        container_scope: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ipa-ops:backup:BackupIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # `resource_name_` (trailing underscore): the SDK's keyword for the Azure name, since
        # `resource_name` is the Pulumi name; its Args classes clash on it, so keywords it is.
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_name_=f"id-ipa-backup-{args.environment}",
            resource_group_name=resource_group_name,
            location=args.location,
            tags={"app": "ipa", "purpose": "backup", "environment": args.environment},
            opts=child,
        )
        managedidentity.FederatedIdentityCredential(
            f"{name}-federation",
            federated_identity_credential_resource_name=f"aks-{args.cluster_name}-{args.backup_service_account}",
            resource_name_=identity.name,
            resource_group_name=resource_group_name,
            issuer=args.aks_oidc_issuer_url,
            subject=service_account_subject(args),
            audiences=[TOKEN_AUDIENCE],
            opts=child,
        )
        client = authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        # Scoped to the container: the identity can't touch any other container or the account.
        authorization.RoleAssignment(
            f"{name}-blob-contributor",
            principal_id=identity.principal_id,
            principal_type="ServicePrincipal",
            role_definition_id=client.subscription_id.apply(role_definition_id),
            scope=container_scope,
            description="ipa-backup CronJobs write and read backup sets of this container only.",
            opts=child,
        )
        self.client_id: pulumi.Output[str] = identity.client_id
        self.register_outputs({"clientId": self.client_id})
