"""Backup storage on Azure (the component alone, under mocks): the hardened account, blob service,
container, lifecycle, lock, and the outputs the identity and the Jobs take."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components.backup_storage import (
    COOL_MINIMUM_DAYS,
    BackupStorage,
    BackupStorageArgs,
    effective_retention_days,
    lifecycle_rules,
    tier_retention_days,
)
from components.settings import load_settings
from offline.runner import Run
from tests.conftest import RunStack, stack_settings

ACCOUNT = "azure-native:storage:StorageAccount"
BLOB_SERVICE = "azure-native:storage:BlobServiceProperties"
CONTAINER = "azure-native:storage:BlobContainer"
POLICY = "azure-native:storage:ManagementPolicy"
LOCK = "azure-native:authorization:ManagementLockByScope"
GROUP = "azure-native:resources:ResourceGroup"
COMPONENT = "ipa-ops:backup:BackupStorage"


def storage_only() -> None:
    """The component alone, as __main__.py declares it, its outputs exported for the tests."""
    storage = BackupStorage("backup-storage", BackupStorageArgs.from_settings(load_settings()))
    pulumi.export("resourceGroupName", storage.resource_group_name)
    pulumi.export("containerScope", storage.container_scope)
    pulumi.export("containerName", storage.container_name)
    pulumi.export("blobEndpoint", storage.blob_endpoint)


def run_storage(run_stack: RunStack, stack: str, overrides: dict[str, Any] | None = None) -> Run:
    return run_stack(stack, overrides, program=storage_only)


def storage_args(stack: str, overrides: dict[str, Any] | None = None) -> BackupStorageArgs:
    return BackupStorageArgs.from_settings(stack_settings(stack, overrides))


def _rules(run: Run) -> dict[str, dict[str, Any]]:
    rules = run.one(POLICY).inputs["policy"]["rules"]
    return {rule["name"]: rule for rule in rules}


def test_account_is_hardened(run_stack: RunStack, stack: str) -> None:
    run = run_storage(run_stack, stack)
    settings = stack_settings(stack)
    account = run.one(ACCOUNT)
    inputs = account.inputs
    assert account.parent_type == COMPONENT
    assert inputs["accountName"] == settings.storage_account_name
    assert inputs["kind"] == "StorageV2"
    assert inputs["enableHttpsTrafficOnly"] is True
    assert inputs["minimumTlsVersion"] == "TLS1_2"
    assert inputs["allowBlobPublicAccess"] is False
    assert inputs["allowSharedKeyAccess"] is False
    assert inputs["defaultToOAuthAuthentication"] is True
    assert inputs["allowCrossTenantReplication"] is False
    assert inputs["encryption"]["requireInfrastructureEncryption"] is True
    assert inputs["encryption"]["services"]["blob"]["enabled"] is True
    rules = inputs["networkRuleSet"]
    assert rules["defaultAction"] == "Deny"
    assert rules["bypass"] == "AzureServices"
    assert rules["ipRules"] == []
    assert [r["virtualNetworkResourceId"] for r in rules["virtualNetworkRules"]] == list(settings.aks_subnet_ids)
    assert all(r["action"] == "Allow" for r in rules["virtualNetworkRules"])
    assert settings.aks_subnet_ids, "the stack file must name the AKS subnet, or nothing in the cluster gets in"


def test_redundancy_prod_geo_zone_redundant_with_read_access_dev_zone_redundant(run_stack: RunStack) -> None:
    assert run_storage(run_stack, "prod").one(ACCOUNT).inputs["sku"] == {"name": "Standard_RAGZRS"}
    assert run_storage(run_stack, "dev").one(ACCOUNT).inputs["sku"] == {"name": "Standard_ZRS"}


def test_blob_service_versioning_soft_delete_change_feed(run_stack: RunStack, stack: str) -> None:
    run = run_storage(run_stack, stack)
    settings = stack_settings(stack)
    service = run.one(BLOB_SERVICE)
    inputs = service.inputs
    assert service.parent_type == COMPONENT
    assert inputs["accountName"] == settings.storage_account_name
    assert inputs["blobServicesName"] == "default"
    assert inputs["isVersioningEnabled"] is True
    assert inputs["deleteRetentionPolicy"] == {"enabled": True, "days": settings.blob_soft_delete_days, "allowPermanentDelete": False}
    assert inputs["containerDeleteRetentionPolicy"] == {"enabled": True, "days": settings.blob_soft_delete_days}
    assert inputs["changeFeed"]["enabled"] is True
    # The audit trail covers every set's whole life.
    assert inputs["changeFeed"]["retentionInDays"] >= settings.backup_weekly_retention_weeks * 7


def test_prod_keeps_deleted_blobs_longer_than_dev(run_stack: RunStack) -> None:
    prod = run_storage(run_stack, "prod").one(BLOB_SERVICE).inputs["deleteRetentionPolicy"]["days"]
    dev = run_storage(run_stack, "dev").one(BLOB_SERVICE).inputs["deleteRetentionPolicy"]["days"]
    assert prod > dev


def test_container_is_private(run_stack: RunStack, stack: str) -> None:
    container = run_storage(run_stack, stack).one(CONTAINER)
    assert container.inputs["containerName"] == stack_settings(stack).backup_container
    assert container.inputs["publicAccess"] == "None"
    assert container.parent_type == COMPONENT


def test_prod_has_version_level_immutability_at_least_the_daily_retention(run_stack: RunStack) -> None:
    settings = stack_settings("prod")
    run = run_storage(run_stack, "prod")
    worm = run.one(ACCOUNT).inputs["immutableStorageWithVersioning"]
    assert worm["enabled"] is True
    policy = worm["immutabilityPolicy"]
    assert policy["immutabilityPeriodSinceCreationInDays"] >= settings.backup_retention_days
    assert policy["allowProtectedAppendWrites"] is False
    assert policy["state"] in ("Unlocked", "Locked")
    assert run.one(CONTAINER).inputs["immutableStorageWithVersioning"] == {"enabled": True}


def test_dev_has_no_immutability(run_stack: RunStack) -> None:
    run = run_storage(run_stack, "dev")
    assert "immutableStorageWithVersioning" not in run.one(ACCOUNT).inputs
    assert "immutableStorageWithVersioning" not in run.one(CONTAINER).inputs


def test_lifecycle_implements_the_set_layout(run_stack: RunStack, stack: str) -> None:
    settings = stack_settings(stack)
    run = run_storage(run_stack, stack)
    policy = run.one(POLICY)
    assert policy.inputs["managementPolicyName"] == "default"
    assert policy.inputs["accountName"] == settings.storage_account_name
    rules = _rules(run)
    pitr = {"backup-base-daily", "backup-base-weekly", "backup-wal"} if settings.pitr_enabled else set()
    assert set(rules) == {"backup-frequent", "backup-daily", "backup-weekly"} | pitr
    for tier in ("frequent", "daily", "weekly"):
        rule = rules[f"backup-{tier}"]
        assert rule["enabled"] is True and rule["type"] == "Lifecycle"
        # The backup tool writes `<tier>/<set id>/<file>` into the container.
        assert rule["definition"]["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": [f"{settings.backup_container}/{tier}/"]}
    days = {
        tier: rules[f"backup-{tier}"]["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
        for tier in ("frequent", "daily", "weekly")
    }
    assert days["frequent"] * 24 >= settings.backup_frequent_retention_hours >= 48
    assert days["daily"] >= settings.backup_retention_days >= 30
    assert days["weekly"] >= settings.backup_weekly_retention_weeks * 7 >= 12 * 7
    if stack == "dev":  # no lock to wait for: exactly the configured retention
        assert days == {"frequent": 2, "daily": settings.backup_retention_days, "weekly": settings.backup_weekly_retention_weeks * 7}


def test_lifecycle_deletes_old_versions_like_their_blobs(run_stack: RunStack, stack: str) -> None:
    """A delete (by mistake or an attacker) leaves a previous version that lives as long as the set would have."""
    for rule in _rules(run_storage(run_stack, stack)).values():
        actions = rule["definition"]["actions"]
        assert (
            actions["version"]["delete"]["daysAfterCreationGreaterThan"]
            == actions["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
        )


def test_lifecycle_never_archives_and_cools_only_long_lived_sets(run_stack: RunStack, stack: str) -> None:
    rules = _rules(run_storage(run_stack, stack))
    for rule in rules.values():
        actions = rule["definition"]["actions"]
        for target in (actions["baseBlob"], actions["version"]):
            assert "tierToArchive" not in target  # rehydration up to 15 h breaks the 4 h RTO
            assert "tierToCold" not in target
            if "tierToCool" in target:
                cool = next(iter(target["tierToCool"].values()))
                delete = next(iter(target["delete"].values()))
                assert delete - cool >= COOL_MINIMUM_DAYS
    assert "tierToCool" in rules["backup-weekly"]["definition"]["actions"]["baseBlob"]
    assert "tierToCool" not in rules["backup-frequent"]["definition"]["actions"]["baseBlob"]


def test_lifecycle_never_fights_the_immutability_lock() -> None:
    args = storage_args("prod")
    assert args.storage_immutability_days > 0
    for tier, days in effective_retention_days(args).items():
        assert days >= args.storage_immutability_days
        assert days >= tier_retention_days(args)[tier]
    longer = storage_args("prod", {"storageImmutabilityDays": 60})
    delete_days = {
        r["name"]: r["definition"]["actions"]["base_blob"]["delete"]["days_after_modification_greater_than"]
        for r in lifecycle_rules(longer)
    }
    assert delete_days == {
        "backup-frequent": 60,
        "backup-daily": 60,
        "backup-weekly": 84,
        # point-in-time recovery: base backups like the daily and weekly sets, WAL like the daily ones
        "backup-base-daily": 60,
        "backup-base-weekly": 84,
        "backup-wal": 60,
    }


def test_cool_tier_pure_rule() -> None:
    short = storage_args("dev")
    rules = {r["name"]: r["definition"]["actions"]["base_blob"] for r in lifecycle_rules(short)}
    assert "tier_to_cool" not in rules["backup-daily"]  # 30 days total: cool would be billed as if longer
    longer = storage_args("dev", {"backupRetentionDays": 90})
    rules = {r["name"]: r["definition"]["actions"]["base_blob"] for r in lifecycle_rules(longer)}
    assert rules["backup-daily"]["tier_to_cool"] == {"days_after_modification_greater_than": 7}


def test_prod_account_has_a_cannot_delete_lock(run_stack: RunStack) -> None:
    run = run_storage(run_stack, "prod")
    lock = run.one(LOCK)
    assert lock.inputs["level"] == "CanNotDelete"
    assert lock.inputs["scope"] == run.one(ACCOUNT).outputs["id"]
    assert lock.parent_type == COMPONENT


def test_dev_has_no_lock(run_stack: RunStack) -> None:
    assert run_storage(run_stack, "dev").of_type(LOCK) == []


def test_resource_group_created_or_existing(run_stack: RunStack, stack: str) -> None:
    run = run_storage(run_stack, stack)
    group = run.one(GROUP)
    assert run.one(ACCOUNT).inputs["resourceGroupName"] == group.inputs["resourceGroupName"]
    assert group.inputs["location"] == stack_settings(stack).location
    existing = run_storage(run_stack, stack, {"existingResourceGroup": "rg-platform-shared"})
    assert existing.of_type(GROUP) == []
    for typ in (ACCOUNT, BLOB_SERVICE, CONTAINER, POLICY):
        assert existing.one(typ).inputs["resourceGroupName"] == "rg-platform-shared"
    assert (run.exports["resourceGroupName"], existing.exports["resourceGroupName"]) == (group.outputs["name"], "rg-platform-shared")


def test_outputs_name_the_container_and_its_endpoint(run_stack: RunStack, stack: str) -> None:
    """What the identity (its role's scope) and the Jobs (where to write) take from this component."""
    settings = stack_settings(stack)
    run = run_storage(run_stack, stack)
    account = run.one(ACCOUNT).outputs
    assert run.exports["containerScope"] == f"{account['id']}/blobServices/default/containers/{settings.backup_container}"
    assert run.exports["containerName"] == run.one(CONTAINER).outputs["name"] == settings.backup_container
    assert (
        run.exports["blobEndpoint"]
        == account["primaryEndpoints"]["blob"]
        == f"https://{settings.storage_account_name}.blob.core.windows.net/"
    )


@pytest.mark.parametrize("redundancy", ["Standard_LRS", "Standard_ZRS", "Standard_RAGRS"])
def test_prod_refuses_storage_without_geo_zone_redundancy(redundancy: str) -> None:
    from components.settings import SettingsError

    with pytest.raises(SettingsError, match="storageRedundancy"):
        stack_settings("prod", {"storageRedundancy": redundancy})
    assert stack_settings("dev", {"storageRedundancy": redundancy}).storage_redundancy == redundancy
