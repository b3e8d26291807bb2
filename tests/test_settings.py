"""Stack settings: defaults like the CLI, types, and one clear message per invalid key."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from components.cron import CronError, parse_cron
from components.settings import FIELDS, Secret, Settings, SettingsError, parse_settings
from offline.stackconfig import REPO_ROOT, load_stack_config, stack_file
from tests.conftest import stack_config, stack_settings


def refuse(overrides: dict[str, object], stack: str = "dev") -> str:
    config, _ = stack_config(stack, overrides)
    with pytest.raises(SettingsError) as err:
        parse_settings(config)
    return str(err.value)


# (overrides, fragments every one of which the message must contain)
INVALID = [
    ({"backupSchedule": "every hour"}, ["ipa-ops:backupSchedule", "'every hour'", "5-field cron"]),
    (
        {"backupSchedule": "0 */3 * * *"},
        ["ipa-ops:backupSchedule", "'0 */3 * * *'", "longest gap between runs (180 min)", "rpoTargetMinutes (60 min)"],
    ),
    ({"backupSchedule": "61 * * * *"}, ["ipa-ops:backupSchedule", "'61 * * * *'", "61 is outside 0-59"]),
    ({"backupSchedule": "*/30 * * 13 *"}, ["ipa-ops:backupSchedule", "13 is outside 1-12"]),
    ({"backupSchedule": "*/0 * * * *"}, ["ipa-ops:backupSchedule", "step '0' must be a positive number"]),
    ({"backupSchedule": "0 0 30 2 *"}, ["ipa-ops:backupSchedule", "never runs"]),
    ({"backupShedule": "*/30 * * * *"}, ["ipa-ops:backupShedule", "unknown setting", "did you mean backupSchedule"]),
    ({"rpoTargetMinutes": "-5"}, ["ipa-ops:rpoTargetMinutes", "'-5'", "greater than 0"]),
    ({"rtoTargetMinutes": "four hours"}, ["ipa-ops:rtoTargetMinutes", "'four hours'", "a whole number"]),
    ({"backupRetentionDays": "3"}, ["ipa-ops:backupRetentionDays", "'3'", ">= 30"]),
    ({"alertEmailTo": ["not-an-address"]}, ["ipa-ops:alertEmailTo", "not-an-address", "e-mail address"]),
    ({"alertEmailTo": []}, ["ipa-ops:alertEmailTo", "a non-empty list"]),
    ({"alertEmailTo": "ops@example.com"}, ["ipa-ops:alertEmailTo", "valid JSON/YAML data"]),
    ({"errorRateThreshold": "5"}, ["ipa-ops:errorRateThreshold", "strictly between 0 and 1"]),
    ({"availabilitySlo": "1"}, ["ipa-ops:availabilitySlo", "strictly between 0 and 1"]),
    ({"latencyP95ThresholdSeconds": "0"}, ["ipa-ops:latencyP95ThresholdSeconds", "greater than 0"]),
    ({"latencySloThresholdSeconds": "0.7"}, ["ipa-ops:latencySloThresholdSeconds", "histogram bucket"]),
    ({"minRequestRate": "-1"}, ["ipa-ops:minRequestRate", ">= 0"]),
    ({"claudeDailyBudgetUsd": "lots"}, ["ipa-ops:claudeDailyBudgetUsd", "a number"]),
    ({"claudePricing": {"claude-x": {"input": -1, "output": 1, "cacheRead": 0, "cacheWrite": 0}}}, ["ipa-ops:claudePricing", ">= 0 USD"]),
    (
        {"claudePricing": {"claude-x": {"input": 1, "output": 1, "cache_read": 0, "cacheWrite": 0}}},
        ["ipa-ops:claudePricing", "unknown field", "cacheRead"],
    ),
    ({"backupDeadlineMinutes": "45"}, ["ipa-ops:backupSchedule", "backupDeadlineMinutes (45 min)"]),
    ({"backupTimeZone": "Mars/Olympus"}, ["ipa-ops:backupTimeZone", "IANA time zone"]),
    ({"backupFrequentRetentionHours": "24"}, ["ipa-ops:backupFrequentRetentionHours", ">= 48"]),
    ({"backupWeeklyRetentionWeeks": "4"}, ["ipa-ops:backupWeeklyRetentionWeeks", ">= 12"]),
    ({"drillSchedule": "0 3 1 * *"}, ["ipa-ops:drillSchedule", "restoreDrillPeriodDays (7 days)"]),
    ({"prometheusRetention": "fifteen days"}, ["ipa-ops:prometheusRetention", "Prometheus duration"]),
    ({"prometheusRetentionSize": "49GB"}, ["ipa-ops:prometheusRetentionSize", "90 % of prometheusStorageSize"]),
    ({"prometheusStorageSize": "lots"}, ["ipa-ops:prometheusStorageSize", "Kubernetes quantity"]),
    ({"prometheusReplicas": "0"}, ["ipa-ops:prometheusReplicas", "greater than 0"]),
    ({"monitoringNamespace": "Monitoring_NS"}, ["ipa-ops:monitoringNamespace", "RFC 1123"]),
    ({"storageAccountName": "Ipa-Ops-Backup"}, ["ipa-ops:storageAccountName", "3-24 lowercase"]),
    ({"storageRedundancy": "Premium_LRS"}, ["ipa-ops:storageRedundancy", "'Standard_RAGZRS'"]),
    ({"aksOidcIssuerUrl": "http://issuer"}, ["ipa-ops:aksOidcIssuerUrl", "https:// URL"]),
    ({"aksSubnetIds": ["subnet-1"]}, ["ipa-ops:aksSubnetIds", "subnet resource id"]),
    ({"storageImmutabilityDays": "10"}, ["ipa-ops:storageImmutabilityDays", "at least backupRetentionDays (30)"]),
    ({"smtpSmarthost": "smtp.example.com"}, ["ipa-ops:smtpSmarthost", "host:port"]),
    ({"smtpRequireTls": "yes"}, ["ipa-ops:smtpRequireTls", "true or false"]),
    ({"postgresPort": "70000"}, ["ipa-ops:postgresPort", "1-65535"]),
    ({"environment": "staging"}, ["ipa-ops:environment", "'dev', 'prod'"]),
    ({"teamsWebhookUrl": "http://example.com/hook"}, ["ipa-ops:teamsWebhookUrl", "'[secret]'", "https:// URL"]),
    ({"remoteWrite": [{"name": "amw", "endpoint": "https://x"}]}, ["ipa-ops:remoteWrite", "unknown field"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), INVALID, ids=[next(iter(o)) + f"-{i}" for i, (o, _) in enumerate(INVALID)])
def test_invalid_setting_is_refused_with_its_key_value_and_what_is_accepted(overrides: dict[str, object], fragments: list[str]) -> None:
    message = refuse(overrides)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"


def test_at_least_twenty_distinct_keys_are_covered() -> None:
    keys = {next(iter(o)) for o, _ in INVALID}
    assert len(keys) >= 20, keys


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"storageRedundancy": "Standard_ZRS"}, "ipa-ops:storageRedundancy"),
        ({"storageImmutabilityDays": "0"}, "ipa-ops:storageImmutabilityDays"),
        ({"storageDeleteLock": "false"}, "ipa-ops:storageDeleteLock"),
        ({"backupImage": "ipaopsacr.azurecr.io/ipa-backup:1.0"}, "ipa-ops:backupImage"),
    ],
)
def test_prod_is_stricter_than_dev(overrides: dict[str, object], key: str) -> None:
    assert key in refuse(overrides, stack="prod")
    parse_settings(stack_config("dev", overrides)[0])  # the same value is fine in dev


def test_secret_values_never_appear_in_messages() -> None:
    message = refuse({"teamsWebhookUrl": "http://leaky.example/should-not-show"})
    assert "leaky" not in message


def test_several_problems_come_in_one_message() -> None:
    message = refuse({"rpoTargetMinutes": "-5", "backupRetentionDays": "3"})
    assert "rpoTargetMinutes" in message and "backupRetentionDays" in message


def test_other_namespaces_are_accepted() -> None:
    settings = parse_settings(stack_config("dev", {"azure-native:location": "westeurope", "kubernetes:context": "aks"})[0])
    assert settings.environment == "dev"


def test_missing_required_setting_names_the_key() -> None:
    config, _ = stack_config("dev")
    del config["ipa-ops:aksOidcIssuerUrl"]
    with pytest.raises(SettingsError, match=r"ipa-ops:aksOidcIssuerUrl is required"):
        parse_settings(config)


def test_stacks_parse_with_typed_values(stack: str) -> None:
    settings = stack_settings(stack)
    assert isinstance(settings, Settings)
    assert settings.environment == stack
    assert settings.rpo_target_minutes == 60 and settings.rto_target_minutes == 240
    assert settings.backup_schedule == "*/30 * * * *" and settings.backup_retention_days == 30
    assert settings.alert_email_to and all("@" in a for a in settings.alert_email_to)
    assert isinstance(settings.teams_webhook_url, Secret)
    assert "placeholder" not in repr(settings)  # secrets never show in repr
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.environment = "x"  # type: ignore[misc]


def test_prod_differs_where_the_issue_says() -> None:
    dev, prod = stack_settings("dev"), stack_settings("prod")
    assert (dev.prometheus_replicas, prod.prometheus_replicas) == (1, 2)
    assert (dev.alertmanager_replicas, prod.alertmanager_replicas) == (1, 3)
    assert prod.storage_redundancy == "Standard_RAGZRS" and dev.storage_redundancy == "Standard_ZRS"
    assert prod.storage_immutability_days >= prod.backup_retention_days and prod.storage_delete_lock


def test_defaults_come_from_pulumi_yaml_like_the_cli() -> None:
    # A stack file without the backup target keys gets the CLI's defaults from Pulumi.yaml.
    text = yaml.safe_load(stack_file("dev").read_text())
    for key in ("rpoTargetMinutes", "rtoTargetMinutes", "backupSchedule", "backupRetentionDays"):
        text["config"].pop(f"ipa-ops:{key}")
    slim = REPO_ROOT / "build" / "test-slim" / "Pulumi.slim.yaml"
    slim.parent.mkdir(parents=True, exist_ok=True)
    slim.write_text(yaml.safe_dump(text))
    config, secret_keys = load_stack_config(slim)
    settings = parse_settings(config)
    assert (settings.rpo_target_minutes, settings.rto_target_minutes) == (60, 240)
    assert settings.backup_schedule == "*/30 * * * *" and settings.backup_retention_days == 30
    assert "ipa-ops:teamsWebhookUrl" in secret_keys and "ipa-ops:smtpPassword" in secret_keys


def test_pulumi_yaml_names_the_project_and_runtime() -> None:
    # Its config schema is generated; tests/test_generate.py checks it is current.
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "ipa-ops"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}


def test_stack_files_hold_every_non_secret_setting(stack: str) -> None:
    config = yaml.safe_load(stack_file(stack).read_text())["config"]
    expected = {f"ipa-ops:{key}" for key, f in FIELDS.items() if not f.metadata["secret"]}
    assert set(config) == expected
    assert not any(isinstance(v, dict) and "secure" in v for v in config.values())


@pytest.mark.parametrize(
    ("expression", "gap"),
    [
        ("*/30 * * * *", 30),
        ("*/15 * * * *", 15),
        ("0 * * * *", 60),
        ("5,35 * * * *", 30),
        ("0 */3 * * *", 180),
        ("@hourly", 60),
        ("@daily", 1440),
        ("0 0 * * 0", 10080),
        ("*/20 8-17 * * 1-5", 14 * 60 + 20 + 2 * 1440),
        ("0 0 1 * *", 31 * 1440),
        ("0 3 * * SUN", 10080),
    ],
)
def test_cron_longest_gap(expression: str, gap: int) -> None:
    assert parse_cron(expression).longest_gap_minutes() == gap


def test_cron_day_fields_follow_kubernetes_semantics() -> None:
    # Both day fields restricted: either may match (1st of the month OR any Monday).
    both = parse_cron("0 0 1 * 1")
    assert both.longest_gap_minutes() <= 7 * 1440
    with pytest.raises(CronError):
        parse_cron("0 0 * *")
