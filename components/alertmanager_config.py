"""The Alertmanager configuration, built by a pure function from the settings
(documented in docs/monitoring/architecture.md#alertmanager).

critical -> Microsoft Teams (Workflows webhook, `msteamsv2_configs`) and e-mail;
warning -> Teams; Watchdog -> the outside heartbeat service (the dead man's switch);
info and InfoInhibitor -> the `null` receiver.
Secrets never appear here: the Teams and heartbeat webhook URLs and the SMTP password are Kubernetes
Secrets that the Prometheus Operator mounts under /etc/alertmanager/secrets/<secret>/<key>
(listed in `alertmanagerSpec.secrets`), referenced by `webhook_url_file` / `auth_password_file`.
Templates are inline in the text fields, so the one rendered alertmanager.yaml is complete
(no template files to ship next to it, for amtool and the local drill alike).
"""

from __future__ import annotations

from typing import Any

from components.settings import Settings
from components.topology import HEARTBEAT_RECEIVER, topology

SECRETS_DIR = "/etc/alertmanager/secrets"
TEAMS_SECRET = "alertmanager-teams-webhook"
TEAMS_SECRET_KEY = "url"
SMTP_SECRET = "alertmanager-smtp"
SMTP_SECRET_KEY = "password"
HEARTBEAT_SECRET = "alertmanager-heartbeat"
HEARTBEAT_SECRET_KEY = "url"
# Every Secret the config reads a file of, mounted by the operator (alertmanagerSpec.secrets).
ALERTMANAGER_SECRETS = (TEAMS_SECRET, SMTP_SECRET, HEARTBEAT_SECRET)
# The Watchdog route is flushed this often; a heartbeat goes out at the first flush at least
# heartbeatInterval after the last one. Flushing only every heartbeatInterval would skip a beat
# whenever the last send was logged a moment after its flush began.
HEARTBEAT_GROUP_WAIT = "0s"
HEARTBEAT_GROUP_INTERVAL = "30s"

NULL_RECEIVER = "null"
TEAMS_RECEIVER = "teams"
CRITICAL_RECEIVER = "teams-and-email"


def secret_file(secret: str, key: str) -> str:
    """Where the operator mounts key `key` of Secret `secret` inside the Alertmanager pods."""
    return f"{SECRETS_DIR}/{secret}/{key}"


def grafana_base_url(settings: Settings) -> str:
    """The Grafana URL used in links (the external URL, else the in-cluster service)."""
    return topology(settings).grafana_url


def _title(settings: Settings) -> str:
    return (
        f'[{{{{ .Status | toUpper }}}}{{{{ if eq .Status "firing" }}}}:{{{{ .Alerts.Firing | len }}}}{{{{ end }}}}] '
        f"[{settings.environment}] [{{{{ .CommonLabels.severity }}}}] {{{{ .CommonLabels.alertname }}}}"
        f"{{{{ with .CommonAnnotations.summary }}}}: {{{{ . }}}}{{{{ end }}}}"
    )


def _teams_text(settings: Settings) -> str:
    """Markdown body of the Teams card: one block per alert, then the links."""
    return (
        f"**Environment:** {settings.environment} · **Cluster:** {settings.cluster_name}\n\n"
        "{{ range .Alerts }}"
        "**{{ .Labels.alertname }}** ({{ .Labels.severity }}, {{ .Status }})"
        "{{ with .Labels.namespace }} in namespace {{ . }}{{ end }}\n\n"
        "{{ with .Annotations.summary }}{{ . }}\n\n{{ end }}"
        "{{ with .Annotations.description }}{{ . }}\n\n{{ end }}"
        "{{ with .Annotations.runbook_url }}[Runbook]({{ . }}) · {{ end }}"
        f'[Dashboard]({{{{ or .Annotations.dashboard_url "{grafana_base_url(settings)}/dashboards" }}}})\n\n'
        "{{ end }}"
    )


def _email_html(settings: Settings) -> str:
    return (
        f"<h2>{_title(settings)}</h2>\n"
        f"<p>Environment: <b>{settings.environment}</b>, cluster: <b>{settings.cluster_name}</b></p>\n"
        "{{ range .Alerts }}<hr>\n"
        "<p><b>{{ .Labels.alertname }}</b> ({{ .Labels.severity }}, {{ .Status }}), since {{ .StartsAt }}</p>\n"
        "<p>{{ .Annotations.summary }}</p>\n<p>{{ .Annotations.description }}</p>\n"
        '<p>{{ with .Annotations.runbook_url }}<a href="{{ . }}">Runbook</a> | {{ end }}'
        f'<a href="{{{{ or .Annotations.dashboard_url "{grafana_base_url(settings)}/dashboards" }}}}">Dashboard</a> | '
        '<a href="{{ .GeneratorURL }}">Source</a></p>\n'
        "{{ end }}"
    )


def _email_text(settings: Settings) -> str:
    return (
        f"{_title(settings)}\n\nEnvironment: {settings.environment}, cluster: {settings.cluster_name}\n"
        "{{ range .Alerts }}\n- {{ .Labels.alertname }} ({{ .Labels.severity }}, {{ .Status }}): {{ .Annotations.summary }}\n"
        "  {{ .Annotations.description }}\n"
        "  Runbook: {{ .Annotations.runbook_url }}\n"
        f'  Dashboard: {{{{ or .Annotations.dashboard_url "{grafana_base_url(settings)}/dashboards" }}}}\n'
        "{{ end }}"
    )


def _teams(settings: Settings) -> dict[str, Any]:
    return {
        "send_resolved": True,
        "webhook_url_file": secret_file(TEAMS_SECRET, TEAMS_SECRET_KEY),
        "title": _title(settings),
        "text": _teams_text(settings),
    }


def _email(settings: Settings) -> dict[str, Any]:
    return {
        "send_resolved": True,
        "to": ", ".join(settings.alert_email_to),
        "from": settings.alert_email_from,
        "smarthost": settings.smtp_smarthost,
        "auth_username": settings.smtp_auth_username,
        "auth_password_file": secret_file(SMTP_SECRET, SMTP_SECRET_KEY),
        "require_tls": settings.smtp_require_tls,
        "headers": {"Subject": _title(settings)},
        "html": _email_html(settings),
        "text": _email_text(settings),
    }


def _heartbeat() -> dict[str, Any]:
    """The dead man's switch: the outside service pages when these POSTs stop. Only firing
    notifications count as heartbeats, so a resolved Watchdog must not send one."""
    return {"send_resolved": False, "url_file": secret_file(HEARTBEAT_SECRET, HEARTBEAT_SECRET_KEY), "max_alerts": 1}


def heartbeat_route(settings: Settings) -> dict[str, Any]:
    return {
        "receiver": HEARTBEAT_RECEIVER,
        "matchers": ['alertname = "Watchdog"'],
        "group_by": ["alertname"],
        "group_wait": HEARTBEAT_GROUP_WAIT,
        "group_interval": HEARTBEAT_GROUP_INTERVAL,
        "repeat_interval": settings.heartbeat_interval,
    }


def alertmanager_config(settings: Settings) -> dict[str, Any]:
    """The whole alertmanager.yaml. Every top-level key of the chart's default config is set,
    so Helm's map merge with the chart defaults adds nothing: what renders is what deploys."""
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": NULL_RECEIVER,
            "group_by": ["alertname", "namespace", "severity"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                # Watchdog always fires: its heartbeats stop when Prometheus, Alertmanager or their
                # nodes die. InfoInhibitor only feeds inhibition.
                heartbeat_route(settings),
                {"receiver": NULL_RECEIVER, "matchers": ['alertname = "InfoInhibitor"']},
                {"receiver": CRITICAL_RECEIVER, "matchers": ['severity = "critical"'], "group_wait": "10s", "repeat_interval": "1h"},
                {"receiver": TEAMS_RECEIVER, "matchers": ['severity = "warning"']},
                {"receiver": NULL_RECEIVER, "matchers": ['severity = "info"']},
            ],
        },
        "inhibit_rules": [
            # A critical alert mutes the warning (and info) of the same alert in the same namespace.
            {
                "source_matchers": ['severity = "critical"'],
                "target_matchers": ['severity =~ "warning|info"'],
                "equal": ["alertname", "namespace"],
            },
            {"source_matchers": ['severity = "warning"'], "target_matchers": ['severity = "info"'], "equal": ["alertname", "namespace"]},
            {"source_matchers": ['alertname = "InfoInhibitor"'], "target_matchers": ['severity = "info"'], "equal": ["namespace"]},
        ],
        "receivers": [
            {"name": NULL_RECEIVER},
            {"name": TEAMS_RECEIVER, "msteamsv2_configs": [_teams(settings)]},
            {"name": CRITICAL_RECEIVER, "msteamsv2_configs": [_teams(settings)], "email_configs": [_email(settings)]},
            {"name": HEARTBEAT_RECEIVER, "webhook_configs": [_heartbeat()]},
        ],
        # The chart's default template glob would be merged in by Helm; templates are inline instead.
        "templates": [],
    }
