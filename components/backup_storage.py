"""Backup storage on Azure: a hardened StorageV2 account, one private container, lifecycle rules.

The backup tool writes sets as `<tier>/<set id>/<file>` inside the container, tier being
`frequent`, `daily` or `weekly` (backup_image/ipa_backup/storage.py). The lifecycle policy
keeps each tier for its own time with prefix filters. See docs/operations/disaster-recovery-plan.md
for how immutability and lifecycle deletion interact.
"""

from __future__ import annotations

import math
from typing import Any, cast

import pulumi
from pulumi_azure_native import authorization, resources, storage

from components.settings import Settings

TIERS = ("frequent", "daily", "weekly")
# Blob storage bills a cool blob for at least 30 days: tiering pays only if it stays that long.
COOL_MINIMUM_DAYS = 30
# Sets older than this are rarely the restore candidate; cool keeps millisecond reads (archive never).
COOL_AFTER_DAYS = 7


def tier_retention_days(settings: Settings) -> dict[str, int]:
    """Days each tier must be kept, as the backup tool's retention settings ask."""
    return {
        "frequent": math.ceil(settings.backup_frequent_retention_hours / 24),
        "daily": settings.backup_retention_days,
        "weekly": settings.backup_weekly_retention_weeks * 7,
    }


def effective_retention_days(settings: Settings) -> dict[str, int]:
    """Days after which lifecycle deletes a tier: never before an immutability lock expires,
    because Azure refuses to delete a locked version (the rule would only fail daily)."""
    return {tier: max(days, settings.storage_immutability_days) for tier, days in tier_retention_days(settings).items()}


def lifecycle_rules(settings: Settings) -> list[dict[str, Any]]:
    """Lifecycle management rules (azure-native input shape, snake_case) for the set layout.

    Each tier: delete the current blob after its retention, and delete previous versions
    (left by an overwrite or a delete, e.g. by an attacker) after the same time, so a delete
    never shortens how long a set survives. Cool only when the blob stays cool >= 30 days;
    archive never (rehydration takes up to 15 h, longer than the RTO).
    """
    rules = []
    for tier, days in effective_retention_days(settings).items():
        base_blob: dict[str, Any] = {"delete": {"days_after_modification_greater_than": days}}
        version: dict[str, Any] = {"delete": {"days_after_creation_greater_than": days}}
        if days - COOL_AFTER_DAYS >= COOL_MINIMUM_DAYS:
            base_blob["tier_to_cool"] = {"days_after_modification_greater_than": COOL_AFTER_DAYS}
            version["tier_to_cool"] = {"days_after_creation_greater_than": COOL_AFTER_DAYS}
        rules.append(
            {
                "name": f"backup-{tier}",
                "type": "Lifecycle",
                "enabled": True,
                "definition": {
                    "filters": {"blob_types": ["blockBlob"], "prefix_match": [f"{settings.backup_container}/{tier}/"]},
                    "actions": {"base_blob": base_blob, "version": version},
                },
            }
        )
    return rules


def change_feed_days(settings: Settings) -> int:
    """The change feed (who wrote or deleted what) covers the life of the longest-kept set."""
    return max(effective_retention_days(settings).values())


def account_args(settings: Settings) -> dict[str, Any]:
    """Storage account inputs (snake_case) apart from the resource group."""
    args: dict[str, Any] = {
        "account_name": settings.storage_account_name,
        "location": settings.location,
        "kind": "StorageV2",
        "sku": {"name": settings.storage_redundancy},
        "access_tier": "Hot",
        "enable_https_traffic_only": True,
        "minimum_tls_version": "TLS1_2",
        "allow_blob_public_access": False,
        # Entra ID (workload identity) is the only way in: no account keys, no SAS.
        "allow_shared_key_access": False,
        "default_to_o_auth_authentication": True,
        "allow_cross_tenant_replication": False,
        "encryption": {
            "key_source": "Microsoft.Storage",
            "require_infrastructure_encryption": True,
            "services": {"blob": {"enabled": True, "key_type": "Account"}},
        },
        "network_rule_set": {
            "default_action": "Deny",
            "bypass": "AzureServices",
            "virtual_network_rules": [{"virtual_network_resource_id": subnet, "action": "Allow"} for subnet in settings.aks_subnet_ids],
            "ip_rules": [],
        },
        "tags": {"app": "ipa", "purpose": "backup", "environment": settings.environment},
    }
    if settings.storage_immutability_days:
        # Version-level WORM for every new blob version: nobody (not even an owner) deletes or
        # overwrites a backup before this many days. "Unlocked" lets an owner shorten the
        # period in an emergency; lock it with `az storage account blob-service-properties`
        # only after the first successful cycle (a locked policy can never be shortened).
        args["immutable_storage_with_versioning"] = {
            "enabled": True,
            "immutability_policy": {
                "immutability_period_since_creation_in_days": settings.storage_immutability_days,
                "state": "Unlocked",
                "allow_protected_append_writes": False,
            },
        }
    return args


def blob_service_args(settings: Settings) -> dict[str, Any]:
    days = settings.blob_soft_delete_days
    return {
        "blob_services_name": "default",
        "is_versioning_enabled": True,
        "delete_retention_policy": {"enabled": True, "days": days, "allow_permanent_delete": False},
        "container_delete_retention_policy": {"enabled": True, "days": days},
        "change_feed": {"enabled": True, "retention_in_days": change_feed_days(settings)},
    }


def container_scope(account_id: str, container: str) -> str:
    """ARM id of a blob container: the scope of the backup identity's role assignment."""
    return f"{account_id}/blobServices/default/containers/{container}"


class BackupStorage(pulumi.ComponentResource):
    """Resource group (or an existing one), storage account, blob service, container, lifecycle, lock."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:backup:BackupStorage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if settings.existing_resource_group:
            self.resource_group_name: pulumi.Output[str] = pulumi.Output.from_input(settings.existing_resource_group)
        else:
            group = resources.ResourceGroup(
                f"{name}-rg",
                resource_group_name=f"rg-ipa-backup-{settings.environment}",
                location=settings.location,
                tags={"app": "ipa", "purpose": "backup", "environment": settings.environment},
                opts=child,
            )
            self.resource_group_name = group.name
        account = storage.StorageAccount(
            f"{name}-account", resource_group_name=self.resource_group_name, **account_args(settings), opts=child
        )
        blob_service = storage.BlobServiceProperties(
            f"{name}-blob-service",
            account_name=account.name,
            resource_group_name=self.resource_group_name,
            **blob_service_args(settings),
            opts=child,
        )
        container = storage.BlobContainer(
            f"{name}-container",
            account_name=account.name,
            resource_group_name=self.resource_group_name,
            container_name=settings.backup_container,
            public_access=storage.PublicAccess.NONE,
            immutable_storage_with_versioning={"enabled": True} if settings.storage_immutability_days else None,
            metadata={"purpose": "ipa-backup-sets"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[blob_service]),
        )
        storage.ManagementPolicy(
            f"{name}-lifecycle",
            account_name=account.name,
            resource_group_name=self.resource_group_name,
            management_policy_name="default",
            policy=cast(Any, {"rules": lifecycle_rules(settings)}),  # plain dicts: the pure function is tested without the SDK types
            opts=pulumi.ResourceOptions(parent=self, depends_on=[container]),
        )
        if settings.storage_delete_lock:
            authorization.ManagementLockByScope(
                f"{name}-delete-lock",
                lock_name="ipa-backup-storage-cannot-delete",
                scope=account.id,
                level="CanNotDelete",
                notes="Holds the IPA disaster-recovery backups; see docs/operations/disaster-recovery-plan.md before removing.",
                opts=child,
            )
        self.account_name: pulumi.Output[str] = account.name
        self.account_id: pulumi.Output[str] = account.id
        self.container_name: str = settings.backup_container
        # Waits for the container's id so the role assignment is made after the container exists.
        self.container_scope: pulumi.Output[str] = pulumi.Output.all(account.id, container.id).apply(
            lambda v: container_scope(v[0], settings.backup_container)
        )
        self.blob_endpoint: pulumi.Output[str] = account.primary_endpoints.apply(lambda e: e.blob)
        self.register_outputs(
            {
                "accountName": self.account_name,
                "containerName": self.container_name,
                "blobEndpoint": self.blob_endpoint,
            }
        )
