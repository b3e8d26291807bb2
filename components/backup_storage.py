"""Backup storage on Azure: a hardened StorageV2 account, one private container, lifecycle rules.

The backup tool writes sets as `<tier>/<set id>/<file>` inside the container, tier being
`frequent`, `daily` or `weekly` (backup_image/ipa_backup/storage.py), and with point-in-time recovery
base backups as `base/<tier>/<id>/` and WAL under `wal/`. The lifecycle policy keeps each tier for its
own time with prefix filters. See docs/operations/disaster-recovery-plan.md
for how immutability and lifecycle deletion interact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import pulumi
from pulumi_azure_native import authorization, resources, storage

from components.args import args_from_settings
from components.settings import Settings

TIERS = ("frequent", "daily", "weekly")
# Blob storage bills a cool blob for at least 30 days: tiering pays only if it stays that long.
COOL_MINIMUM_DAYS = 30
# Sets older than this are rarely the restore candidate; cool keeps millisecond reads (archive never).
COOL_AFTER_DAYS = 7


@dataclass(frozen=True)
class BackupStorageArgs:
    """The settings the storage account, its container, lifecycle and lock read."""

    environment: str
    location: str
    existing_resource_group: str
    storage_account_name: str
    storage_redundancy: str
    aks_subnet_ids: tuple[str, ...]
    backup_container: str
    blob_soft_delete_days: int
    storage_immutability_days: int
    storage_delete_lock: bool
    backup_frequent_retention_hours: int
    backup_retention_days: int
    backup_weekly_retention_weeks: int
    pitr_enabled: bool
    wal_retention_days: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BackupStorageArgs:
        return args_from_settings(cls, settings)


def tier_retention_days(args: BackupStorageArgs) -> dict[str, int]:
    """Days each tier (a prefix of the container) must be kept, as the backup tool's retention settings ask."""
    days = {
        "frequent": math.ceil(args.backup_frequent_retention_hours / 24),
        "daily": args.backup_retention_days,
        "weekly": args.backup_weekly_retention_weeks * 7,
    }
    if args.pitr_enabled:
        # Base backups (`base/<tier>/<id>/`) keep the logical tiers' times; the WAL (`wal/`) reaches back
        # to the oldest daily base backup (backup_image/ipa_backup/basebackup.py and wal.py).
        days |= {
            "base/daily": args.backup_retention_days,
            "base/weekly": args.backup_weekly_retention_weeks * 7,
            "wal": args.wal_retention_days,
        }
    return days


def effective_retention_days(args: BackupStorageArgs) -> dict[str, int]:
    """Days after which lifecycle deletes a tier: never before an immutability lock expires,
    because Azure refuses to delete a locked version (the rule would only fail daily)."""
    return {tier: max(days, args.storage_immutability_days) for tier, days in tier_retention_days(args).items()}


def lifecycle_rules(args: BackupStorageArgs) -> list[dict[str, Any]]:
    """Lifecycle management rules (azure-native input shape, snake_case) for the set layout.

    Each tier: delete the current blob after its retention, and delete previous versions
    (left by an overwrite or a delete, e.g. by an attacker) after the same time, so a delete
    never shortens how long a set survives. Cool only when the blob stays cool >= 30 days;
    archive never (rehydration takes up to 15 h, longer than the RTO).
    """
    rules = []
    for tier, days in effective_retention_days(args).items():
        base_blob: dict[str, Any] = {"delete": {"days_after_modification_greater_than": days}}
        version: dict[str, Any] = {"delete": {"days_after_creation_greater_than": days}}
        if days - COOL_AFTER_DAYS >= COOL_MINIMUM_DAYS:
            base_blob["tier_to_cool"] = {"days_after_modification_greater_than": COOL_AFTER_DAYS}
            version["tier_to_cool"] = {"days_after_creation_greater_than": COOL_AFTER_DAYS}
        rules.append(
            {
                "name": f"backup-{tier.replace('/', '-')}",
                "type": "Lifecycle",
                "enabled": True,
                "definition": {
                    "filters": {"blob_types": ["blockBlob"], "prefix_match": [f"{args.backup_container}/{tier}/"]},
                    "actions": {"base_blob": base_blob, "version": version},
                },
            }
        )
    return rules


def change_feed_days(args: BackupStorageArgs) -> int:
    """The change feed (who wrote or deleted what) covers the life of the longest-kept set."""
    return max(effective_retention_days(args).values())


def account_args(args: BackupStorageArgs) -> dict[str, Any]:
    """Storage account inputs (snake_case) apart from the resource group."""
    inputs: dict[str, Any] = {
        "account_name": args.storage_account_name,
        "location": args.location,
        "kind": "StorageV2",
        "sku": {"name": args.storage_redundancy},
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
            "virtual_network_rules": [{"virtual_network_resource_id": subnet, "action": "Allow"} for subnet in args.aks_subnet_ids],
            "ip_rules": [],
        },
        "tags": {"app": "ipa", "purpose": "backup", "environment": args.environment},
    }
    if args.storage_immutability_days:
        # Version-level WORM for every new blob version: nobody (not even an owner) deletes or
        # overwrites a backup before this many days. "Unlocked" lets an owner shorten the
        # period in an emergency; lock it with `az storage account blob-service-properties`
        # only after the first successful cycle (a locked policy can never be shortened).
        inputs["immutable_storage_with_versioning"] = {
            "enabled": True,
            "immutability_policy": {
                "immutability_period_since_creation_in_days": args.storage_immutability_days,
                "state": "Unlocked",
                "allow_protected_append_writes": False,
            },
        }
    return inputs


def blob_service_args(args: BackupStorageArgs) -> dict[str, Any]:
    days = args.blob_soft_delete_days
    return {
        "blob_services_name": "default",
        "is_versioning_enabled": True,
        "delete_retention_policy": {"enabled": True, "days": days, "allow_permanent_delete": False},
        "container_delete_retention_policy": {"enabled": True, "days": days},
        "change_feed": {"enabled": True, "retention_in_days": change_feed_days(args)},
    }


def container_scope(account_id: str, container: str) -> str:
    """ARM id of a blob container: the scope of the backup identity's role assignment."""
    return f"{account_id}/blobServices/default/containers/{container}"


class BackupStorage(pulumi.ComponentResource):
    """Resource group (or an existing one), storage account, blob service, container, lifecycle, lock."""

    def __init__(self, name: str, args: BackupStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:backup:BackupStorage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if args.existing_resource_group:
            self.resource_group_name: pulumi.Output[str] = pulumi.Output.from_input(args.existing_resource_group)
        else:
            group = resources.ResourceGroup(
                f"{name}-rg",
                resource_group_name=f"rg-ipa-backup-{args.environment}",
                location=args.location,
                tags={"app": "ipa", "purpose": "backup", "environment": args.environment},
                opts=child,
            )
            self.resource_group_name = group.name
        account = storage.StorageAccount(f"{name}-account", resource_group_name=self.resource_group_name, **account_args(args), opts=child)
        blob_service = storage.BlobServiceProperties(
            f"{name}-blob-service",
            account_name=account.name,
            resource_group_name=self.resource_group_name,
            **blob_service_args(args),
            opts=child,
        )
        container = storage.BlobContainer(
            f"{name}-container",
            account_name=account.name,
            resource_group_name=self.resource_group_name,
            container_name=args.backup_container,
            public_access=storage.PublicAccess.NONE,
            immutable_storage_with_versioning={"enabled": True} if args.storage_immutability_days else None,
            metadata={"purpose": "ipa-backup-sets"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[blob_service]),
        )
        storage.ManagementPolicy(
            f"{name}-lifecycle",
            account_name=account.name,
            resource_group_name=self.resource_group_name,
            management_policy_name="default",
            policy=cast(Any, {"rules": lifecycle_rules(args)}),  # plain dicts: the pure function is tested without the SDK types
            opts=pulumi.ResourceOptions(parent=self, depends_on=[container]),
        )
        if args.storage_delete_lock:
            authorization.ManagementLockByScope(
                f"{name}-delete-lock",
                lock_name="ipa-backup-storage-cannot-delete",
                scope=account.id,
                level="CanNotDelete",
                notes="Holds the IPA disaster-recovery backups; see docs/operations/disaster-recovery-plan.md before removing.",
                opts=child,
            )
        self.account_name: pulumi.Output[str] = account.name
        # The Jobs write here; taking it from the container makes them wait until it exists.
        self.container_name: pulumi.Output[str] = container.name
        # Waits for the container's id so the role assignment is made after the container exists.
        self.container_scope: pulumi.Output[str] = pulumi.Output.all(account.id, container.id).apply(
            lambda v: container_scope(v[0], args.backup_container)
        )
        self.blob_endpoint: pulumi.Output[str] = account.primary_endpoints.apply(lambda e: e.blob)
        self.register_outputs(
            {
                "accountName": self.account_name,
                "containerName": self.container_name,
                "blobEndpoint": self.blob_endpoint,
            }
        )
