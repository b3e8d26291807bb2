"""ipa-ops: reads the stack settings once and wires the components. Nothing else happens here."""

import pulumi

from components.backup_identity import BackupIdentity
from components.backup_image import BackupImage
from components.backup_schedule import BackupSchedule
from components.backup_storage import BackupStorage
from components.grafana_dashboards import GrafanaDashboards
from components.monitoring import MonitoringStack
from components.pushgateway import Pushgateway
from components.rules import AlertRules
from components.settings import load_settings

settings = load_settings()

monitoring = MonitoringStack("monitoring", settings)
monitoring.export()
AlertRules("alert-rules", settings, pulumi.ResourceOptions(depends_on=[monitoring]))
GrafanaDashboards("grafana-dashboards", settings, pulumi.ResourceOptions(depends_on=[monitoring]))

backup_storage = BackupStorage("backup-storage", settings)
backup_identity = BackupIdentity("backup-identity", settings, backup_storage.resource_group_name, backup_storage.container_scope)
backup_image = BackupImage("backup-image", settings)
# After the monitoring stack: its namespace and the ServiceMonitor CRD must exist first.
Pushgateway("pushgateway", settings, pulumi.ResourceOptions(depends_on=[monitoring]))
BackupSchedule("backup-schedule", settings, backup_image.ref, backup_identity.client_id, backup_storage.blob_endpoint)

pulumi.export("environment", settings.environment)
pulumi.export("backupStorageAccount", backup_storage.account_name)
pulumi.export("backupIdentityClientId", backup_identity.client_id)
pulumi.export("backupImage", backup_image.ref)
