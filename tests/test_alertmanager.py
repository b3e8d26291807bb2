"""The Alertmanager configuration (docs/monitoring/architecture.md#alertmanager): its shape,
`amtool check-config` and `amtool config routes test` on the rendered
build/<stack>/alertmanager/alertmanager.yaml, its inline templates through `amtool template render`,
and a live delivery through a real Alertmanager to the local
Teams and SMTP stand-ins."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtpd.smtp
import pytest
import yaml

from components.alertmanager_config import (
    CRITICAL_RECEIVER,
    HEARTBEAT_SECRET,
    NULL_RECEIVER,
    SECRETS_DIR,
    SMTP_SECRET,
    TEAMS_RECEIVER,
    TEAMS_SECRET,
    alertmanager_config,
    secret_file,
)
from components.topology import HEARTBEAT_RECEIVER
from devservices.prometheus import alertmanager
from devservices.smtp_standin import SmtpStandin
from devservices.teams_standin import TeamsStandin
from devservices.tools import tool
from offline.stackconfig import PLACEHOLDER_SECRETS
from tests.conftest import STACKS, stack_settings

Rendered = Callable[[str], Path]


def config_file(rendered: Rendered, stack: str) -> Path:
    path = rendered(stack) / "alertmanager" / "alertmanager.yaml"
    assert path.is_file()
    return path


def receivers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in config["receivers"]}


# --- the pure function --------------------------------------------------------------------------


def test_routes_by_severity(stack: str) -> None:
    config = alertmanager_config(stack_settings(stack))
    route = config["route"]
    assert route["receiver"] == NULL_RECEIVER
    assert route["group_by"] == ["alertname", "namespace", "severity"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("30s", "5m", "4h")
    by_matcher = {tuple(r["matchers"]): r["receiver"] for r in route["routes"]}
    assert by_matcher[('alertname = "Watchdog"',)] == HEARTBEAT_RECEIVER
    assert by_matcher[('severity = "critical"',)] == CRITICAL_RECEIVER
    assert by_matcher[('severity = "warning"',)] == TEAMS_RECEIVER
    assert by_matcher[('severity = "info"',)] == NULL_RECEIVER
    # Watchdog is matched before the severity routes.
    assert route["routes"][0]["matchers"] == ['alertname = "Watchdog"']


def test_receivers_and_secret_files(stack: str) -> None:
    settings = stack_settings(stack)
    found = receivers(alertmanager_config(settings))
    assert set(found) == {NULL_RECEIVER, TEAMS_RECEIVER, CRITICAL_RECEIVER, HEARTBEAT_RECEIVER}
    assert set(found[NULL_RECEIVER]) == {"name"}
    assert set(found[TEAMS_RECEIVER]) == {"name", "msteamsv2_configs"}
    assert set(found[CRITICAL_RECEIVER]) == {"name", "msteamsv2_configs", "email_configs"}
    for receiver in (found[TEAMS_RECEIVER], found[CRITICAL_RECEIVER]):
        (teams,) = receiver["msteamsv2_configs"]
        assert teams["webhook_url_file"] == f"{SECRETS_DIR}/{TEAMS_SECRET}/url"
        assert "webhook_url" not in teams
        assert teams["send_resolved"] is True
    (email,) = found[CRITICAL_RECEIVER]["email_configs"]
    assert email["auth_password_file"] == secret_file(SMTP_SECRET, "password") == "/etc/alertmanager/secrets/alertmanager-smtp/password"
    assert "auth_password" not in email
    assert email["send_resolved"] is True
    assert email["to"] == ", ".join(settings.alert_email_to)
    assert (email["from"], email["smarthost"], email["require_tls"]) == (
        settings.alert_email_from,
        settings.smtp_smarthost,
        settings.smtp_require_tls,
    )
    assert email["auth_username"] == settings.smtp_auth_username
    text = yaml.safe_dump(alertmanager_config(settings))
    for secret in PLACEHOLDER_SECRETS.values():
        assert secret not in text


def test_inhibit_critical_mutes_warning_of_same_alert() -> None:
    rules = alertmanager_config(stack_settings("dev"))["inhibit_rules"]
    critical = next(r for r in rules if r["source_matchers"] == ['severity = "critical"'])
    assert critical["target_matchers"] == ['severity =~ "warning|info"']
    assert "alertname" in critical["equal"]


def test_templates_carry_summary_severity_environment_and_links() -> None:
    settings = stack_settings("prod", {"grafanaExternalUrl": "https://grafana.ipa.example.com"})
    found = receivers(alertmanager_config(settings))
    teams = found[CRITICAL_RECEIVER]["msteamsv2_configs"][0]
    email = found[CRITICAL_RECEIVER]["email_configs"][0]
    for text in (teams["title"], email["headers"]["Subject"]):
        assert "[prod]" in text and ".CommonLabels.severity" in text and ".CommonAnnotations.summary" in text
    for text in (teams["text"], email["html"], email["text"]):
        assert ".Annotations.runbook_url" in text
        assert "https://grafana.ipa.example.com/dashboards" in text and ".Annotations.dashboard_url" in text
        assert ".Annotations.summary" in text


# --- amtool on the rendered file ---------------------------------------------------------------


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool"), *args], capture_output=True, text=True, timeout=60, check=False)


def test_amtool_is_new_enough() -> None:
    result = amtool("--version")
    version = (result.stdout + result.stderr).split("version ")[1].split()[0]
    major, minor = (int(part) for part in version.split(".")[:2])
    assert (major, minor) >= (0, 28), f"amtool {version} cannot read msteamsv2_configs"


@pytest.mark.parametrize("stack", STACKS)
def test_amtool_check_config(stack: str, rendered: Rendered) -> None:
    path = config_file(rendered, stack)
    result = amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "4 receivers" in result.stdout
    assert yaml.safe_load(path.read_text()) == alertmanager_config(stack_settings(stack))


def test_amtool_check_config_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The check can fail: a misspelt field is refused."""
    config = alertmanager_config(stack_settings("dev"))
    config["receivers"][1]["msteamsv2_configs"][0]["webhook_url_fil"] = "/x"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    assert amtool("check-config", str(bad)).returncode != 0


# critical -> Teams and e-mail, warning -> Teams only, the rest -> no one.
CHANNELS = {
    CRITICAL_RECEIVER: {"msteamsv2_configs", "email_configs"},
    TEAMS_RECEIVER: {"msteamsv2_configs"},
    NULL_RECEIVER: set(),
    HEARTBEAT_RECEIVER: {"webhook_configs"},
}
ROUTE_CASES = [
    (["alertname=HighErrorRate", "severity=critical", "namespace=ipa"], CRITICAL_RECEIVER),
    (["alertname=HighResponseTime", "severity=warning", "namespace=ipa"], TEAMS_RECEIVER),
    (["alertname=Watchdog", "severity=none"], HEARTBEAT_RECEIVER),
    (["alertname=SomethingInformational", "severity=info"], NULL_RECEIVER),
    (["alertname=NoSeverity"], NULL_RECEIVER),
]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize(("labels", "expected"), ROUTE_CASES)
def test_amtool_routes(stack: str, labels: list[str], expected: str, rendered: Rendered) -> None:
    path = config_file(rendered, stack)
    result = amtool("config", "routes", "test", f"--config.file={path}", f"--verify.receivers={expected}", *labels)
    assert result.returncode == 0, f"{labels}: {result.stdout}{result.stderr}"
    assert result.stdout.strip() == expected
    channels = {k for k in receivers(yaml.safe_load(path.read_text()))[expected] if k.endswith("_configs")}
    assert channels == CHANNELS[expected]


def test_amtool_routes_detects_a_wrong_receiver(rendered: Rendered) -> None:
    path = config_file(rendered, "dev")
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={path}",
        f"--verify.receivers={TEAMS_RECEIVER}",
        "alertname=HighErrorRate",
        "severity=critical",
    )
    assert result.returncode != 0


@pytest.mark.parametrize("stack", STACKS)
def test_inline_templates_render(stack: str, rendered: Rendered, tmp_path: Path) -> None:
    """Each inline template parses and executes (amtool's example alert data)."""
    empty = tmp_path / "none.tmpl"
    empty.write_text("")
    config = yaml.safe_load(config_file(rendered, stack).read_text())
    critical = receivers(config)[CRITICAL_RECEIVER]
    teams, email = critical["msteamsv2_configs"][0], critical["email_configs"][0]
    for text in (teams["title"], teams["text"], email["headers"]["Subject"], email["html"], email["text"]):
        result = amtool("template", "render", f"--template.glob={empty}", f"--template.text={text}")
        assert result.returncode == 0, result.stderr
        assert f"[{stack}]" in result.stdout or f"Environment: {stack}" in result.stdout or f"Environment:** {stack}" in result.stdout


# --- live delivery ------------------------------------------------------------------------------


def local_config(
    config: dict[str, Any], tmp_path: Path, teams_url: str, smarthost: str, password: str, heartbeat_url: str = "http://127.0.0.1:9/"
) -> Path:
    """The rendered config with its secret files and SMTP relay pointed at local stand-ins.
    Timing is shortened (group_wait) so the test finishes in seconds; routing is unchanged."""
    secrets = tmp_path / "secrets"
    for secret in (TEAMS_SECRET, SMTP_SECRET, HEARTBEAT_SECRET):
        (secrets / secret).mkdir(parents=True)
    (secrets / TEAMS_SECRET / "url").write_text(teams_url)
    (secrets / HEARTBEAT_SECRET / "url").write_text(heartbeat_url)
    (secrets / SMTP_SECRET / "password").write_text(password)
    text = yaml.safe_dump(config).replace(SECRETS_DIR + "/", str(secrets) + "/")
    local = yaml.safe_load(text)
    local["route"]["group_wait"] = "1s"
    for route in local["route"]["routes"]:
        route.pop("group_wait", None)
    for receiver in local["receivers"]:
        for email in receiver.get("email_configs", []):
            email["smarthost"] = smarthost
            email["require_tls"] = False
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(local))
    return path


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting for a delivery"
        time.sleep(0.25)


def alert(name: str, severity: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, "namespace": "ipa"},
        "annotations": {
            "summary": f"{name} summary text",
            "description": f"{name} description",
            "runbook_url": f"https://runbooks.example.com/{name}.md",
            "dashboard_url": "https://grafana.example.com/d/api-performance",
        },
    }


@pytest.mark.services
def test_delivery_to_teams_and_email(rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Alertmanager picks AUTH LOGIN and expects the usual "Username:"/"Password:" challenges;
    # aiosmtpd's defaults ("User Name\0") make it give up with "unexpected server challenge".
    monkeypatch.setattr(aiosmtpd.smtp.SMTP, "AuthLoginUsernameChallenge", "Username:")
    monkeypatch.setattr(aiosmtpd.smtp.SMTP, "AuthLoginPasswordChallenge", "Password:")
    settings = stack_settings("dev")
    config = yaml.safe_load(config_file(rendered, "dev").read_text())
    with TeamsStandin() as teams, SmtpStandin(settings.smtp_auth_username, "local-smtp-password") as smtp:
        path = local_config(
            config, tmp_path, teams.webhook_url("ipa"), smtp.smarthost, "local-smtp-password", teams.webhook_url(HEARTBEAT_RECEIVER)
        )
        with alertmanager(tmp_path, path) as am:
            am.post_alerts(
                [
                    alert("HighErrorRate", "critical"),
                    alert("HighResponseTime", "warning"),
                    {"labels": {"alertname": "Watchdog", "severity": "none"}},
                ]
            )
            wait_until(lambda: len(teams.posts) >= 3 and len(smtp.messages) >= 1)
            time.sleep(2)  # anything else (a second heartbeat, a second mail) would arrive by now
    heartbeats = [post for post in teams.posts if post.path.endswith(f"/{HEARTBEAT_RECEIVER}")]
    assert len(heartbeats) == 1, [p.path for p in teams.posts]
    # The dead man's switch: the Watchdog alone, as Alertmanager's webhook JSON, firing.
    assert heartbeats[0].body["receiver"] == HEARTBEAT_RECEIVER and heartbeats[0].body["status"] == "firing"
    assert [a["labels"]["alertname"] for a in heartbeats[0].body["alerts"]] == ["Watchdog"]
    bodies = [post.text for post in teams.posts if post not in heartbeats]
    assert len(bodies) == 2, bodies
    critical = next(b for b in bodies if "HighErrorRate" in b)
    warning = next(b for b in bodies if "HighResponseTime" in b)
    for body, severity in ((critical, "critical"), (warning, "warning")):
        assert "[dev]" in body and f"[{severity}]" in body
        assert "summary text" in body
        assert "https://runbooks.example.com/" in body and "https://grafana.example.com/d/api-performance" in body
    assert not any("Watchdog" in b for b in bodies)
    (mail,) = smtp.messages
    assert "HighErrorRate" in mail.subject and "[dev]" in mail.subject and "[critical]" in mail.subject
    assert "HighErrorRate summary text" in mail.subject
    assert set(mail.rcpt_tos) == set(settings.alert_email_to)
    assert mail.login == settings.smtp_auth_username  # the relay accepts only the password from the secret file
    assert "https://runbooks.example.com/HighErrorRate.md" in mail.text
