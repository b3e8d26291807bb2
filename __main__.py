"""ipa-ops: the wiring diagram. Settings are read once, each component gets the `<Name>Args` it
needs built from them, and one component's outputs feed the next. Nothing else happens here."""

import pulumi

from components.backup_identity import BackupIdentity, BackupIdentityArgs
from components.backup_image import BackupImage, BackupImageArgs
from components.backup_schedule import BackupSchedule, BackupScheduleArgs
from components.backup_storage import BackupStorage, BackupStorageArgs
from components.exporter_credentials import ExporterCredentials, ExporterCredentialsArgs
from components.grafana_dashboards import GrafanaDashboards, GrafanaDashboardsArgs
from components.monitoring import MonitoringStack, MonitoringStackArgs
from components.network_policies import NetworkPolicies, NetworkPoliciesArgs
from components.pushgateway import Pushgateway, PushgatewayArgs
from components.rules import AlertRules, AlertRulesArgs
from components.settings import load_settings
from components.wal_stream import WalStream, WalStreamArgs

settings = load_settings()

# Monitoring: the stack first; rules, dashboards and the Pushgateway go into its namespace and
# wait for all of it, since they need the release's CRDs and Grafana's dashboard sidecar.
monitoring = MonitoringStack("monitoring", MonitoringStackArgs.from_settings(settings))
monitoring.export()
AlertRules(
    "alert-rules",
    AlertRulesArgs.from_settings(settings),
    namespace=monitoring.namespace_name,
    opts=pulumi.ResourceOptions(depends_on=[monitoring]),
)
GrafanaDashboards(
    "grafana-dashboards",
    GrafanaDashboardsArgs.from_settings(settings),
    namespace=monitoring.namespace_name,
    opts=pulumi.ResourceOptions(depends_on=[monitoring]),
)
pushgateway = Pushgateway(
    "pushgateway",
    PushgatewayArgs.from_settings(settings),
    namespace=monitoring.namespace_name,
    opts=pulumi.ResourceOptions(depends_on=[monitoring]),
)
# Default deny in the monitoring and node-exporter namespaces, then the stack's flows.
NetworkPolicies("network-policies", NetworkPoliciesArgs.from_settings(settings), pulumi.ResourceOptions(depends_on=[monitoring]))

# Backups: storage -> identity allowed into its container -> CronJobs that run the image as
# that identity, write to the container and push their results to the Pushgateway.
backup_storage = BackupStorage("backup-storage", BackupStorageArgs.from_settings(settings))
backup_identity = BackupIdentity(
    "backup-identity",
    BackupIdentityArgs.from_settings(settings),
    resource_group_name=backup_storage.resource_group_name,
    container_scope=backup_storage.container_scope,
)
backup_image = BackupImage("backup-image", BackupImageArgs.from_settings(settings))
backup_schedule = backup_schedule = BackupSchedule(
    "backup-schedule",
    BackupScheduleArgs.from_settings(settings),
    image=backup_image.ref,
    client_id=backup_identity.client_id,
    blob_account_url=backup_storage.blob_endpoint,
    container=backup_storage.container_name,
    pushgateway_url=pushgateway.url,
)
# The state stores' credentials from the Key Vault into both namespaces; the exporter pods wait
# for this (their CSI mount), so it depends on the monitoring namespace, not on the whole stack.
if settings.credentials_key_vault_id:
    ExporterCredentials(
        "state-store-credentials",
        ExporterCredentialsArgs.from_settings(settings),
        pulumi.ResourceOptions(depends_on=[monitoring.namespace, backup_schedule]),
    )
# Point-in-time recovery: in the backup namespace, as its ServiceAccount (after BackupSchedule); its
# PodMonitor needs the monitoring stack's CRDs.
if settings.pitr_enabled:
    WalStream(
        "wal-stream",
        WalStreamArgs.from_settings(settings),
        image=backup_image.ref,
        blob_account_url=backup_storage.blob_endpoint,
        container=backup_storage.container_name,
        pushgateway_url=pushgateway.url,
        opts=pulumi.ResourceOptions(depends_on=[backup_schedule, monitoring]),
    )

pulumi.export("environment", settings.environment)
pulumi.export("backupStorageAccount", backup_storage.account_name)
pulumi.export("backupIdentityClientId", backup_identity.client_id)
pulumi.export("backupImage", backup_image.ref)
