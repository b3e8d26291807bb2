"""Workload identity of the backup pods (the component alone, under mocks): identity, federation,
container-scoped role; and the program hands it the storage's resource group and container."""

from __future__ import annotations

from typing import Any

import pulumi

from components.backup_identity import (
    STORAGE_BLOB_DATA_CONTRIBUTOR,
    BackupIdentity,
    BackupIdentityArgs,
    role_definition_id,
    service_account_subject,
)
from components.settings import load_settings
from offline.mocks import SUBSCRIPTION_ID
from offline.runner import Run
from tests.conftest import RunStack, stack_settings

IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
FEDERATION = "azure-native:managedidentity:FederatedIdentityCredential"
ROLE = "azure-native:authorization:RoleAssignment"
ACCOUNT = "azure-native:storage:StorageAccount"
COMPONENT = "ipa-ops:backup:BackupIdentity"
# What BackupStorage hands over, as plain values.
RESOURCE_GROUP = "rg-backup-test"
CONTAINER_SCOPE = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Storage/storageAccounts/acct"
    "/blobServices/default/containers/backup-sets"
)


def identity_only() -> None:
    identity = BackupIdentity(
        "backup-identity",
        BackupIdentityArgs.from_settings(load_settings()),
        resource_group_name=RESOURCE_GROUP,
        container_scope=CONTAINER_SCOPE,
    )
    pulumi.export("clientId", identity.client_id)


def run_identity(run_stack: RunStack, stack: str, overrides: dict[str, Any] | None = None) -> Run:
    return run_stack(stack, overrides, program=identity_only)


def test_user_assigned_identity(run_stack: RunStack, stack: str) -> None:
    run = run_identity(run_stack, stack)
    identity = run.one(IDENTITY)
    assert identity.parent_type == COMPONENT
    assert identity.inputs["resourceName"] == f"id-ipa-backup-{stack}"
    assert identity.inputs["location"] == stack_settings(stack).location
    assert identity.inputs["resourceGroupName"] == RESOURCE_GROUP
    assert run.exports["clientId"] == identity.outputs["clientId"]


def test_federated_credential_trusts_only_the_backup_service_account(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_identity(run_stack, stack)
    federation = run.one(FEDERATION)
    assert federation.parent_type == COMPONENT
    assert federation.inputs["issuer"] == settings.aks_oidc_issuer_url
    assert federation.inputs["subject"] == f"system:serviceaccount:{settings.backup_namespace}:{settings.backup_service_account}"
    assert federation.inputs["subject"] == service_account_subject(BackupIdentityArgs.from_settings(settings))
    assert federation.inputs["audiences"] == ["api://AzureADTokenExchange"]
    assert federation.inputs["resourceName"] == run.one(IDENTITY).outputs["name"]
    assert federation.inputs["resourceGroupName"] == RESOURCE_GROUP


def test_federation_follows_the_settings(run_stack: RunStack) -> None:
    issuer = "https://northeurope.oic.prod-aks.azure.com/tenant/cluster/"
    run = run_identity(run_stack, "dev", {"aksOidcIssuerUrl": issuer, "backupNamespace": "dr", "backupServiceAccount": "dr-runner"})
    federation = run.one(FEDERATION)
    assert federation.inputs["issuer"] == issuer
    assert federation.inputs["subject"] == "system:serviceaccount:dr:dr-runner"


def test_blob_data_contributor_scoped_to_the_given_container(run_stack: RunStack, stack: str) -> None:
    run = run_identity(run_stack, stack)
    role = run.one(ROLE)
    assert role.parent_type == COMPONENT
    assert role.inputs["roleDefinitionId"] == (
        f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{STORAGE_BLOB_DATA_CONTRIBUTOR}"
    )
    assert STORAGE_BLOB_DATA_CONTRIBUTOR == "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    assert role.inputs["scope"] == CONTAINER_SCOPE
    assert role.inputs["principalId"] == run.one(IDENTITY).outputs["principalId"]
    assert role.inputs["principalType"] == "ServicePrincipal"
    assert len(run.of_type(ROLE)) == 1  # no other grant to this identity


def test_main_program_scopes_the_role_to_the_backup_container(run_stack: RunStack, stack: str) -> None:
    """The program hands the identity the storage's resource group and container: not the account,
    the resource group or the subscription."""
    settings = stack_settings(stack)
    run = run_stack(stack)
    account = run.one(ACCOUNT)
    role = run.one(ROLE, "backup-identity-blob-contributor")  # the credentials sync has a role of its own
    assert role.inputs["scope"] == f"{account.outputs['id']}/blobServices/default/containers/{settings.backup_container}"
    assert role.inputs["scope"] != account.outputs["id"]
    identity = run.one(IDENTITY, "backup-identity-identity")
    assert identity.inputs["resourceGroupName"] == account.inputs["resourceGroupName"]
    assert run.exports["backupIdentityClientId"] == identity.outputs["clientId"]


def test_role_definition_id_is_subscription_scoped() -> None:
    assert (
        role_definition_id("sub-1")
        == f"/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/{STORAGE_BLOB_DATA_CONTRIBUTOR}"
    )
