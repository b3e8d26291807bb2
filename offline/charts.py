"""Every Helm release of a render, rendered through its real chart: build/<stack>/charts/<release>.yaml.

    python -m offline.charts build/dev          (`make render` does it when the chart cache is there)
    python -m offline.charts --pull build/dev   (fills the cache from the chart repositories; needs network)

The releases, charts, versions and namespaces come from build/<stack>/resources.json, the values
from build/<stack>/helm/<release>.values.yaml. Charts come from a local cache (no network):
`$IPA_CHART_CACHE`, else `<repo>/../shared/charts`: packaged charts (`<chart>-<version>.tgz`),
with an `index.yaml` whose digests are checked when present. A machine that reaches the chart
repositories fills it with `helm pull <chart> --version <v> --repo <url> -d <cache>`.
Helm is the pinned binary in .tools/bin/helm (scripts/setup/helm.sh).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from offline.kube_schema import KUBERNETES_VERSION, Manifest, load_manifests
from offline.stackconfig import REPO_ROOT

CHART_CACHE_ENV = "IPA_CHART_CACHE"
HELM = REPO_ROOT / ".tools" / "bin" / "helm"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
# Kubernetes version of `helm template` (Capabilities.KubeVersion): the clusters' (AKS 1.33).
HELM_KUBE_VERSION = KUBERNETES_VERSION.rsplit(".", 1)[0]
# API groups the cluster serves besides the built-in ones: the Prometheus Operator CRDs, which the
# kube-prometheus-stack release installs. Charts render their ServiceMonitors only when they see them.
EXTRA_API_VERSIONS = ("monitoring.coreos.com/v1", "monitoring.coreos.com/v1alpha1")
# Kinds the API server keeps outside namespaces; Helm sends every other object of a release to
# the release namespace when its template names none, and so does this render.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "ClusterRole",
        "ClusterRoleBinding",
        "CSIDriver",
        "CustomResourceDefinition",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)
SOURCE_ANNOTATION = "# Source: "


class ChartError(RuntimeError):
    """A chart that is missing from the cache, fails its digest, or that Helm cannot render."""


@dataclass(frozen=True)
class HelmRelease:
    name: str
    chart: str
    version: str
    namespace: str
    repo: str
    include_crds: bool
    hooks: bool


def _origin_checkout() -> Path | None:
    """The local checkout this one was cloned from (`git clone /path/to/ipa-ops`), if any."""
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"], capture_output=True, text=True, check=False
    )
    url = result.stdout.strip().removeprefix("file://")
    return Path(url) if url.startswith("/") else None


def chart_cache() -> Path:
    """The chart cache folder (it may not exist): $IPA_CHART_CACHE (a relative path is read from the
    repository's root), else `shared/charts` beside this checkout, or beside the local checkout it was
    cloned from (a fresh clone in a scratch folder still finds the developers' cache)."""
    configured = os.environ.get(CHART_CACHE_ENV)
    if configured:
        return REPO_ROOT / configured
    beside = REPO_ROOT.parent / "shared" / "charts"
    origin = _origin_checkout()
    if not beside.is_dir() and origin is not None and (origin.parent / "shared" / "charts").is_dir():
        return origin.parent / "shared" / "charts"
    return beside


def require_cache(cache: Path) -> Path:
    if not cache.is_dir():
        raise ChartError(
            f"no chart cache at {cache}: set {CHART_CACHE_ENV} to a folder of packaged charts, "
            "filled with `helm pull <chart> --version <v> --repo <url> -d <folder>` (docs/operations/chart-renders.md)"
        )
    return cache


def releases(resources: list[dict[str, Any]]) -> list[HelmRelease]:
    """The Helm releases declared in a render's resources.json, sorted by name."""
    found = []
    for resource in resources:
        if resource["type"] != HELM_RELEASE:
            continue
        inputs = resource["inputs"]
        found.append(
            HelmRelease(
                name=inputs.get("name") or resource["name"],
                chart=inputs["chart"],
                version=inputs["version"],
                namespace=inputs.get("namespace") or "default",
                repo=(inputs.get("repositoryOpts") or {}).get("repo", ""),
                include_crds=not inputs.get("skipCrds", False),
                hooks=not inputs.get("disableHooks", False),
            )
        )
    return sorted(found, key=lambda r: r.name)


def chart_archive(cache: Path, chart: str, version: str) -> Path:
    """`<chart>-<version>.tgz` of the cache, as its index.yaml names it (digest checked) or by file name."""
    require_cache(cache)
    index_file = cache / "index.yaml"
    if index_file.is_file():
        index = yaml.safe_load(index_file.read_text()) or {}
        for entry in (index.get("entries") or {}).get(chart, []):
            if str(entry.get("version")) != version:
                continue
            path = cache / str(entry["urls"][0])
            if not path.is_file():
                raise ChartError(f"{index_file} lists {chart} {version} as {path}, which is missing")
            digest = entry.get("digest")
            if digest and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise ChartError(f"{path} does not match the digest {digest} of {index_file}")
            return path
    path = cache / f"{chart}-{version}.tgz"
    if not path.is_file():
        raise ChartError(f"chart {chart} {version} is not in the chart cache {cache} (expected {path.name})")
    return path


def helm_template(release: HelmRelease, archive: Path, values: Path, helm: Path = HELM) -> str:
    if not os.access(helm, os.X_OK):
        raise ChartError(f"no Helm binary at {helm}: run `make setup-helm`")
    args = [str(helm), "template", release.name, str(archive), "--namespace", release.namespace, "--values", str(values)]
    args += ["--kube-version", HELM_KUBE_VERSION, "--skip-tests"]
    args += [f"--api-versions={v}" for v in EXTRA_API_VERSIONS]
    if release.include_crds:
        args.append("--include-crds")
    if not release.hooks:
        args.append("--no-hooks")
    with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
        # Helm reads and writes nothing of the user's: no repositories, no cache, no registry logins.
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": home,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise ChartError(f"helm template {release.name} ({release.chart} {release.version}) failed:\n{done.stderr.strip()}")
    return done.stdout


def split_sources(text: str) -> list[tuple[str, Manifest]]:
    """(template path, object) for each document of `helm template` output."""
    found = []
    # A line "---" at column 0 always starts a document: block scalars are indented.
    for document in re.split(r"^---[ \t]*$", text, flags=re.MULTILINE):
        source = ""
        for line in document.splitlines():
            if line.startswith(SOURCE_ANNOTATION):
                source = line[len(SOURCE_ANNOTATION) :].strip()
                break
        for manifest in load_manifests(document):
            found.append((source, manifest))
    return found


def place(manifest: Manifest, namespace: str, cluster_kinds: frozenset[str]) -> Manifest:
    """The object as the release applies it: namespaced objects without a namespace land in the release namespace."""
    metadata = manifest.setdefault("metadata", {})
    if manifest.get("kind") not in cluster_kinds and not metadata.get("namespace"):
        metadata["namespace"] = namespace
    return manifest


def cluster_scoped_kinds(objects: list[Manifest]) -> frozenset[str]:
    """The built-in cluster-scoped kinds plus those of the CRDs among `objects` with scope Cluster."""
    crd_kinds = {
        (o.get("spec") or {}).get("names", {}).get("kind")
        for o in objects
        if o.get("kind") == "CustomResourceDefinition" and (o.get("spec") or {}).get("scope") == "Cluster"
    }
    return CLUSTER_SCOPED_KINDS | {k for k in crd_kinds if k}


def render_release(release: HelmRelease, values: Path, cache: Path, helm: Path = HELM) -> list[tuple[str, Manifest]]:
    text = helm_template(release, chart_archive(cache, release.chart, release.version), values, helm)
    found = split_sources(text)
    kinds = cluster_scoped_kinds([m for _, m in found])
    return [(source, place(manifest, release.namespace, kinds)) for source, manifest in found]


def dump_release(objects: list[tuple[str, Manifest]]) -> str:
    """Helm's order, each object under a `# Source:` comment naming its template; keys sorted, in
    the style of the render's other YAML files (libyaml's emitter: the charts are megabytes)."""
    from offline.render import _str  # offline.render imports this module

    class Dumper(yaml.CSafeDumper):
        pass

    Dumper.add_representer(str, _str)  # type: ignore[arg-type]  # the stubs do not make CSafeDumper a SafeDumper

    def dump(manifest: Manifest) -> str:
        return yaml.dump(manifest, Dumper=Dumper, sort_keys=True, allow_unicode=True, width=120)

    return "".join(f"---\n{SOURCE_ANNOTATION}{source}\n{dump(manifest)}" for source, manifest in objects)


def write_chart_renders(out: Path, cache: Path, helm: Path = HELM) -> dict[str, int]:
    """Renders each release of the render in `out` into out/charts/<release>.yaml; object count by release."""
    resources = json.loads((out / "resources.json").read_text())
    counts: dict[str, int] = {}
    folder = out / "charts"
    folder.mkdir(parents=True, exist_ok=True)
    for release in releases(resources):
        objects = render_release(release, out / "helm" / f"{release.name}.values.yaml", cache, helm)
        (folder / f"{release.name}.yaml").write_text(dump_release(objects))
        counts[release.name] = len(objects)
    return counts


def pull_charts(out: Path, cache: Path, helm: Path = HELM) -> list[Path]:
    """Fills `cache` with the chart of each release of the render in `out` that it lacks, from the release's
    own repository (`helm pull --repo`), and indexes it; returns the archives pulled."""
    cache.mkdir(parents=True, exist_ok=True)
    pulled = []
    for release in releases(json.loads((out / "resources.json").read_text())):
        archive = cache / f"{release.chart}-{release.version}.tgz"
        if archive.is_file():
            continue
        if not release.repo:
            raise ChartError(f"release {release.name} names no chart repository to pull {release.chart} {release.version} from")
        command = [str(helm), "pull", release.chart, "--version", release.version, "--repo", release.repo, "-d", str(cache)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not archive.is_file():
            raise ChartError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
        pulled.append(archive)
    subprocess.run([str(helm), "repo", "index", str(cache)], check=True, capture_output=True)
    return pulled


def read_chart_renders(out: Path) -> dict[str, list[Manifest]]:
    """The objects of build/<stack>/charts/<release>.yaml, by release."""
    return {path.name.removesuffix(".yaml"): load_manifests(path.read_text()) for path in sorted((out / "charts").glob("*.yaml"))}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    pull = args[:1] == ["--pull"]
    args = args[1:] if pull else args
    if len(args) != 1:
        print("usage: python -m offline.charts [--pull] build/<stack>", file=sys.stderr)
        return 2
    try:
        if pull:
            for archive in pull_charts(Path(args[0]), chart_cache()):
                print(f"charts: pulled {archive}")
            return 0
        counts = write_chart_renders(Path(args[0]), chart_cache())
    except ChartError as err:
        print(f"charts: {err}", file=sys.stderr)
        return 1
    for name, count in counts.items():
        print(f"charts: {name}: {count} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
