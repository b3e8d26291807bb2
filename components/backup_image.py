"""The backup tool's container image: backup_image/Dockerfile over the rootfs tarball that
`make image-tar` builds (the very userland the tests run), pushed to the stack's Azure Container
Registry; or a prebuilt reference from settings.

The CronJobs run the image by digest (`<registry>/ipa-backup@sha256:...`), so a re-pushed tag
never changes what a backup runs. Pushing authenticates with the deployer's Entra ID login
(`az acr login --name <registry>` before `pulumi up`, which buildx reads from the Docker
credential store): no admin user, no registry password in the stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker_build as docker_build

from components.args import args_from_settings
from components.settings import Settings

REPOSITORY = "ipa-backup"
CONTEXT = "."  # the repository root; backup_image/Dockerfile.dockerignore admits only build/image-rootfs.tar
DOCKERFILE = "./backup_image/Dockerfile"


@dataclass(frozen=True)
class BackupImageArgs:
    """A prebuilt image reference, or where to push the one built here."""

    backup_image: str  # prebuilt reference; empty: build and push
    container_registry: str
    environment: str

    @classmethod
    def from_settings(cls, settings: Settings) -> BackupImageArgs:
        return args_from_settings(cls, settings)


def login_server(args: BackupImageArgs) -> str:
    """ACR login servers are `<lowercase name>.azurecr.io` in Azure's public cloud."""
    return f"{args.container_registry.lower()}.azurecr.io"


def image_tag(args: BackupImageArgs) -> str:
    """A moving tag for people browsing the registry; the CronJobs use the digest."""
    return f"{login_server(args)}/{REPOSITORY}:{args.environment}"


def pinned_ref(repository: str, digest: str) -> str:
    """`<registry>/<repository>@sha256:<digest>`: what the CronJobs run."""
    if not digest.startswith("sha256:"):
        raise ValueError(f"the image build returned no sha256 digest ({digest!r}); was it pushed?")
    return f"{repository}@{digest}"


class BackupImage(pulumi.ComponentResource):
    """`ref` is the image reference the CronJobs run."""

    def __init__(self, name: str, args: BackupImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:backup:BackupImage", name, None, opts)
        if args.backup_image:
            # Settings already refuse a prod reference without a digest.
            self.ref: pulumi.Output[str] = pulumi.Output.from_input(args.backup_image)
        else:
            image = docker_build.Image(
                f"{name}-build",
                context=docker_build.BuildContextArgs(location=CONTEXT),
                dockerfile=docker_build.DockerfileArgs(location=DOCKERFILE),
                platforms=[docker_build.Platform.LINUX_AMD64],
                push=True,
                tags=[image_tag(args)],
                labels={
                    "org.opencontainers.image.title": REPOSITORY,
                    "org.opencontainers.image.source": "ipa-ops/backup_image",
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
            repository = f"{login_server(args)}/{REPOSITORY}"
            self.ref = image.digest.apply(lambda digest: pinned_ref(repository, digest))
        self.register_outputs({"ref": self.ref})
