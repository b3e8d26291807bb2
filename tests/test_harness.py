"""The harness itself: it records, gives realistic outputs, runs apply(), and refuses empty tests."""

from __future__ import annotations

import pulumi
import pulumi_azure_native as azure_native
import pulumi_kubernetes as k8s
import pulumi_random as random
import pytest

from offline.runner import Run
from tests.conftest import RunStack, guard_recorded


class _Probe(pulumi.ComponentResource):
    def __init__(self, name: str) -> None:
        super().__init__("ipa-ops:test:Probe", name)
        child = pulumi.ResourceOptions(parent=self)
        self.password = random.RandomPassword("probe-password", length=24, special=False, opts=child)
        self.identity = azure_native.managedidentity.UserAssignedIdentity(
            "probe-identity", resource_group_name="rg-probe", resource_name_="id-probe", opts=child
        )
        self.release = k8s.helm.v3.Release(
            "probe-release", name="probe", chart="probe", version="1.0.0", namespace="monitoring", opts=child
        )
        # apply() callbacks run only when preview=False: this secret exists only if they ran.
        self.secret = k8s.core.v1.Secret(
            "probe-secret",
            metadata={"name": "probe", "namespace": "monitoring"},
            string_data=self.password.result.apply(lambda pw: {"password": pw, "length": str(len(pw))}),
            opts=child,
        )
        self.register_outputs({})


def test_records_type_name_parent_and_inputs(run_stack: RunStack) -> None:
    run = run_stack("dev", program=lambda: _Probe("probe"))
    secret = run.one("kubernetes:core/v1:Secret")
    assert secret.parent_type == "ipa-ops:test:Probe"
    assert secret.inputs["metadata"] == {"name": "probe", "namespace": "monitoring"}
    assert secret.masked_inputs["stringData"] == {"password": "[secret]", "length": "[secret]"}
    assert secret.inputs["stringData"]["length"] == "24"  # apply() ran


def test_outputs_are_realistic(run_stack: RunStack) -> None:
    run = run_stack("dev", program=lambda: _Probe("probe"))
    identity = run.one("azure-native:managedidentity:UserAssignedIdentity")
    assert identity.outputs["id"].startswith("/subscriptions/") and identity.outputs["name"] == "id-probe"
    assert len(identity.outputs["principalId"]) == 36 and len(identity.outputs["clientId"]) == 36
    password = run.one("random:index/randomPassword:RandomPassword")
    assert len(password.outputs["result"]) == 24
    release = run.one("kubernetes:helm.sh/v3:Release")
    assert release.outputs["status"]["status"] == "deployed"


def test_each_run_starts_fresh(run_stack: RunStack) -> None:
    first = run_stack("dev", program=lambda: _Probe("probe"))
    second = run_stack("prod", program=lambda: _Probe("probe"))
    assert len(first.recorded) == len(second.recorded) == 5


def test_the_guard_fails_a_test_that_recorded_nothing() -> None:
    with pytest.raises(pytest.fail.Exception, match="no resource was recorded"):
        guard_recorded([Run(stack="dev", recorded=[])])


def test_the_guard_fails_a_test_whose_component_declared_nothing(run_stack: RunStack) -> None:
    """A component wrapper alone is not a resource: its test would check nothing."""
    empty = run_stack("dev", program=lambda: pulumi.ComponentResource("ipa-ops:test:Empty", "empty"))
    assert [r.type for r in empty.recorded] == ["ipa-ops:test:Empty"]
    with pytest.raises(pytest.fail.Exception, match="no resource was recorded"):
        guard_recorded([empty])
    guard_recorded([empty, run_stack("dev", program=lambda: _Probe("probe"))])  # one run that declared something suffices


def test_the_program_declares_resources_and_exports(run_stack: RunStack, stack: str) -> None:
    run = run_stack(stack)
    assert run.exports["environment"] == stack
    assert len(run.recorded) > 0
