"""The backup tool's container image: backup_image/Dockerfile over the rootfs tarball that
`make image-tar` builds (the very userland the tests run), pushed to the stack's Azure Container
Registry; or a prebuilt reference from settings.

The CronJobs run the image by digest (`<registry>/ipa-backup@sha256:...`), so a re-pushed tag
never changes what a backup runs. Pushing authenticates with the deployer's Entra ID login
(`az acr login --name <registry>` before `pulumi up`, which buildx reads from the Docker
credential store): no admin user, no registry password in the stack.
"""

from __future__ import annotations

import pulumi
import pulumi_docker_build as docker_build

from components.settings import Settings

REPOSITORY = "ipa-backup"
CONTEXT = "."  # the repository root; backup_image/Dockerfile.dockerignore admits only build/image-rootfs.tar
DOCKERFILE = "./backup_image/Dockerfile"


def login_server(settings: Settings) -> str:
    """ACR login servers are `<lowercase name>.azurecr.io` in Azure's public cloud."""
    return f"{settings.container_registry.lower()}.azurecr.io"


def image_tag(settings: Settings) -> str:
    """A moving tag for people browsing the registry; the CronJobs use the digest."""
    return f"{login_server(settings)}/{REPOSITORY}:{settings.environment}"


def pinned_ref(repository: str, digest: str) -> str:
    """`<registry>/<repository>@sha256:<digest>`: what the CronJobs run."""
    if not digest.startswith("sha256:"):
        raise ValueError(f"the image build returned no sha256 digest ({digest!r}); was it pushed?")
    return f"{repository}@{digest}"


class BackupImage(pulumi.ComponentResource):
    """`ref` is the image reference the CronJobs run."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ipa-ops:backup:BackupImage", name, None, opts)
        if settings.backup_image:
            # Settings already refuse a prod reference without a digest.
            self.ref: pulumi.Output[str] = pulumi.Output.from_input(settings.backup_image)
        else:
            image = docker_build.Image(
                f"{name}-build",
                context=docker_build.BuildContextArgs(location=CONTEXT),
                dockerfile=docker_build.DockerfileArgs(location=DOCKERFILE),
                platforms=[docker_build.Platform.LINUX_AMD64],
                push=True,
                tags=[image_tag(settings)],
                labels={
                    "org.opencontainers.image.title": REPOSITORY,
                    "org.opencontainers.image.source": "ipa-ops/backup_image",
                },
                opts=pulumi.ResourceOptions(parent=self),
            )
            repository = f"{login_server(settings)}/{REPOSITORY}"
            self.ref = image.digest.apply(lambda digest: pinned_ref(repository, digest))
        self.register_outputs({"ref": self.ref})
