"""Workload identity of the backup pods (mocks): identity, federation, container-scoped role."""

from __future__ import annotations

from components.backup_identity import STORAGE_BLOB_DATA_CONTRIBUTOR, role_definition_id, service_account_subject
from offline.mocks import SUBSCRIPTION_ID
from tests.conftest import RunStack, stack_settings

IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
FEDERATION = "azure-native:managedidentity:FederatedIdentityCredential"
ROLE = "azure-native:authorization:RoleAssignment"
ACCOUNT = "azure-native:storage:StorageAccount"
COMPONENT = "ipa-ops:backup:BackupIdentity"


def test_user_assigned_identity(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    identity = run.one(IDENTITY)
    assert identity.parent_type == COMPONENT
    assert identity.inputs["resourceName"] == f"id-ipa-backup-{stack}"
    assert identity.inputs["location"] == stack_settings(stack).location
    assert identity.inputs["resourceGroupName"] == run.one(ACCOUNT).inputs["resourceGroupName"]


def test_federated_credential_trusts_only_the_backup_service_account(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    federation = run.one(FEDERATION)
    assert federation.parent_type == COMPONENT
    assert federation.inputs["issuer"] == settings.aks_oidc_issuer_url
    assert federation.inputs["subject"] == f"system:serviceaccount:{settings.backup_namespace}:{settings.backup_service_account}"
    assert federation.inputs["subject"] == service_account_subject(settings)
    assert federation.inputs["audiences"] == ["api://AzureADTokenExchange"]
    assert federation.inputs["resourceName"] == run.one(IDENTITY).outputs["name"]


def test_federation_follows_the_settings(run_stack: RunStack) -> None:
    issuer = "https://northeurope.oic.prod-aks.azure.com/tenant/cluster/"
    run = run_stack("dev", {"aksOidcIssuerUrl": issuer, "backupNamespace": "dr", "backupServiceAccount": "dr-runner"})
    federation = run.one(FEDERATION)
    assert federation.inputs["issuer"] == issuer
    assert federation.inputs["subject"] == "system:serviceaccount:dr:dr-runner"


def test_blob_data_contributor_scoped_to_the_container(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_stack(stack)
    role = run.one(ROLE)
    account_id = run.one(ACCOUNT).outputs["id"]
    assert role.parent_type == COMPONENT
    assert role.inputs["roleDefinitionId"] == (
        f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{STORAGE_BLOB_DATA_CONTRIBUTOR}"
    )
    assert STORAGE_BLOB_DATA_CONTRIBUTOR == "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    assert role.inputs["scope"] == f"{account_id}/blobServices/default/containers/{settings.backup_container}"
    # Not the account, the resource group or the subscription.
    assert role.inputs["scope"] != account_id
    assert "/blobServices/default/containers/" in role.inputs["scope"]
    assert role.inputs["principalId"] == run.one(IDENTITY).outputs["principalId"]
    assert role.inputs["principalType"] == "ServicePrincipal"
    assert len(run.of_type(ROLE)) == 1  # no other grant to this identity


def test_role_definition_id_is_subscription_scoped() -> None:
    assert (
        role_definition_id("sub-1")
        == f"/subscriptions/sub-1/providers/Microsoft.Authorization/roleDefinitions/{STORAGE_BLOB_DATA_CONTRIBUTOR}"
    )
