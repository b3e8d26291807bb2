"""The PostgreSQL and Redis credentials of the exporters (monitoring namespace) and of the backup
and drill Jobs (backup namespace), from one source of truth: an Azure Key Vault.

The AKS Key Vault Secrets Store CSI driver (add-on `azure-keyvault-secrets-provider`) mounts the
vault's secrets into each pod that uses the SecretProviderClass below, and syncs them into the
Kubernetes Secrets named by `postgresCredentialsSecret` and `redisCredentialsSecret` of that
namespace (docs/monitoring/exporter-credentials.md). A rotation in the vault reaches both
namespaces; nobody copies a password by hand. The driver fetches the secrets with workload
identity: a managed identity, federated with the ServiceAccounts of the pods that mount the class,
allowed to read the vault's secrets and nothing else.

With `credentialsKeyVaultId` empty, the Secrets are created by hand in both namespaces instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol

import pulumi
import pulumi_kubernetes as k8s
from pulumi_azure_native import authorization, managedidentity

from components.args import args_from_settings
from components.settings import Settings
from components.topology import POSTGRES_EXPORTER_RELEASE

KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"  # built-in role: read secret values
TOKEN_AUDIENCE = "api://AzureADTokenExchange"
CSI_DRIVER = "secrets-store.csi.k8s.io"
PROVIDER_CLASS = "ipa-state-store-credentials"
CSI_VOLUME = "key-vault-credentials"
CSI_MOUNT = "/var/run/secrets/ipa/key-vault"
# Where the pods read the synced Kubernetes Secrets (the same files with or without the vault).
CREDENTIALS_DIR = "/var/run/secrets/ipa"
POSTGRES = "postgres"
REDIS = "redis"
# The keys each Secret carries.
SECRET_KEYS = {POSTGRES: ("username", "password"), REDIS: ("password",)}
# Secret volumes are made group-readable for fsGroup anyway (0440); only the pod's group may read.
SECRET_FILE_MODE = 0o440
KEY_VAULT_ID = re.compile(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/Microsoft\.KeyVault/vaults/([^/]+)", re.IGNORECASE)


class CredentialSettings(Protocol):
    """What the credential builders read: Settings and the Args of the components that use them."""

    @property
    def postgres_credentials_secret(self) -> str: ...
    @property
    def redis_credentials_secret(self) -> str: ...
    @property
    def credentials_key_vault_id(self) -> str: ...


def secret_names(settings: CredentialSettings) -> dict[str, str]:
    return {POSTGRES: settings.postgres_credentials_secret, REDIS: settings.redis_credentials_secret}


def key_vault_secret_name(secret: str, key: str) -> str:
    """The vault secret holding key `key` of Kubernetes Secret `secret`: ipa-postgres-credentials-password."""
    return f"{secret}-{key}"


def key_vault_parts(key_vault_id: str) -> tuple[str, str, str]:
    """(subscription, resource group, vault name) of a Key Vault resource id."""
    match = KEY_VAULT_ID.fullmatch(key_vault_id)
    if not match:
        raise ValueError(f"not a Key Vault resource id: {key_vault_id!r}")
    subscription, group, name = match.groups()
    return subscription, group, name


def credential_dir(store: str) -> str:
    """Where a pod finds the Secret of one store: /var/run/secrets/ipa/postgres."""
    return f"{CREDENTIALS_DIR}/{store}"


def credential_file(store: str, key: str) -> str:
    """Path of one credential inside a pod: /var/run/secrets/ipa/postgres/password."""
    return f"{credential_dir(store)}/{key}"


def credential_volumes(settings: CredentialSettings, stores: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) that give a pod the credentials of `stores` as files: the Kubernetes
    Secrets, plus, with a Key Vault, the CSI volume whose mount syncs those Secrets from the vault."""
    names = secret_names(settings)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for store in stores:
        volumes.append(
            {
                "name": f"{store}-credentials",
                "secret": {
                    "secretName": names[store],
                    "defaultMode": SECRET_FILE_MODE,
                    "items": [{"key": key, "path": key} for key in SECRET_KEYS[store]],
                },
            }
        )
        mounts.append({"name": f"{store}-credentials", "mountPath": credential_dir(store), "readOnly": True})
    if settings.credentials_key_vault_id:
        volumes.append(
            {
                "name": CSI_VOLUME,
                "csi": {"driver": CSI_DRIVER, "readOnly": True, "volumeAttributes": {"secretProviderClass": PROVIDER_CLASS}},
            }
        )
        mounts.append({"name": CSI_VOLUME, "mountPath": CSI_MOUNT, "readOnly": True})
    return volumes, mounts


def provider_objects(objects: list[dict[str, str]]) -> str:
    """The Azure provider's `objects` parameter: YAML whose `array` holds one YAML document per secret."""
    items = "".join("  - |\n" + "".join(f"    {k}: {v}\n" for k, v in o.items()) for o in objects)
    return "array:\n" + items


def secret_provider_class(settings: CredentialSettings, namespace: str, client_id: Any, tenant_id: Any) -> dict[str, Any]:
    """The SecretProviderClass of one namespace: every credential, mounted and synced into its Secret."""
    _, _, vault = key_vault_parts(settings.credentials_key_vault_id)
    names = secret_names(settings)
    objects = [
        {"objectName": key_vault_secret_name(names[store], key), "objectType": "secret", "objectAlias": f"{store}-{key}"}
        for store in (POSTGRES, REDIS)
        for key in SECRET_KEYS[store]
    ]
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": PROVIDER_CLASS, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "ipa-ops"}},
        "spec": {
            "provider": "azure",
            "parameters": {
                "usePodIdentity": "false",
                "clientID": client_id,  # workload identity: the pod's ServiceAccount token is exchanged for this identity
                "keyvaultName": vault,
                "tenantId": tenant_id,
                "objects": provider_objects(objects),
            },
            "secretObjects": [
                {
                    "secretName": names[store],
                    "type": "Opaque",
                    "data": [{"objectName": f"{store}-{key}", "key": key} for key in SECRET_KEYS[store]],
                }
                for store in (POSTGRES, REDIS)
            ],
        },
    }


def federated_subjects(settings: ExporterCredentialsArgs) -> dict[str, str]:
    """The ServiceAccounts whose pods mount the class, by a short name for the federated credential."""
    return {
        "postgres-exporter": f"system:serviceaccount:{settings.monitoring_namespace}:{POSTGRES_EXPORTER_RELEASE}",
        "backup": f"system:serviceaccount:{settings.backup_namespace}:{settings.backup_service_account}",
    }


@dataclass(frozen=True)
class ExporterCredentialsArgs:
    """The settings the Key Vault sync reads."""

    environment: str
    cluster_name: str
    location: str
    aks_oidc_issuer_url: str
    credentials_key_vault_id: str
    monitoring_namespace: str
    backup_namespace: str
    backup_service_account: str
    postgres_credentials_secret: str
    redis_credentials_secret: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ExporterCredentialsArgs:
        return args_from_settings(cls, settings)


class ExporterCredentials(pulumi.ComponentResource):
    """The identity that reads the vault, its federations and role, and a SecretProviderClass in
    the monitoring and backup namespaces (which must exist first: depends_on from the caller)."""

    def __init__(self, name: str, args: ExporterCredentialsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:monitoring:ExporterCredentials", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        _, group, vault = key_vault_parts(args.credentials_key_vault_id)
        # Next to the vault: whoever owns the vault's resource group owns who may read it.
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_name_=f"id-ipa-credentials-{args.environment}",
            resource_group_name=group,
            location=args.location,
            tags={"app": "ipa", "purpose": "state-store-credentials", "environment": args.environment},
            opts=child,
        )
        for short, subject in federated_subjects(args).items():
            managedidentity.FederatedIdentityCredential(
                f"{name}-federation-{short}",
                federated_identity_credential_resource_name=f"aks-{args.cluster_name}-{short}",
                resource_name_=identity.name,
                resource_group_name=group,
                issuer=args.aks_oidc_issuer_url,
                subject=subject,
                audiences=[TOKEN_AUDIENCE],
                opts=child,
            )
        client = authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        authorization.RoleAssignment(
            f"{name}-key-vault-secrets-user",
            principal_id=identity.principal_id,
            principal_type="ServicePrincipal",
            role_definition_id=client.subscription_id.apply(
                lambda sub: f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{KEY_VAULT_SECRETS_USER}"
            ),
            scope=args.credentials_key_vault_id,
            description=f"The exporters and backup Jobs of {args.cluster_name} read the state stores' credentials from {vault}.",
            opts=child,
        )
        for namespace in (args.monitoring_namespace, args.backup_namespace):
            spc = secret_provider_class(args, namespace, identity.client_id, client.tenant_id)
            k8s.apiextensions.CustomResource(
                f"{name}-{namespace}-secret-provider-class",
                api_version=spc["apiVersion"],
                kind=spc["kind"],
                metadata=spc["metadata"],
                spec=spc["spec"],
                opts=child,
            )
        self.client_id: pulumi.Output[str] = identity.client_id
        self.register_outputs({"clientId": self.client_id})
